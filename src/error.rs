//! Error types, by phase: [`Error`] for the process (config, keys, binding, TLS material),
//! [`HandshakeRefusal`] for a request refused before any 101 (an HTTP status), [`SessionClose`]
//! for an open connection the gateway ends (a close code), [`TicketRefusal`] for a refused
//! request to the ticket endpoint (`POST /v1/ws-ticket`).
//!
//! Each refusal carries what the gateway needs to answer it and nothing meaningless: a
//! handshake refusal an HTTP status, a session close a close code, both a short static reason
//! label (logs and metrics) and a fixed client text. The mappings are exhaustive on purpose:
//! adding a variant forces a decision for each.

use actix_http::StatusCode;

use crate::auth::AuthError;
use crate::config::ConfigError;
use crate::tls::TlsError;

/// Result alias for library code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Top-level error of the library: wraps each domain's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file or value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Key material could not be loaded or a token could not be made.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A listen address could not be bound (`server.listen 127.0.0.1:8080: address in use`).
    #[error("{key} {addr}: {}", bind_reason(cause))]
    Bind {
        /// The config key naming the address.
        key: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why (not a `source`: the message already says it, in one line).
        cause: std::io::Error,
    },
    /// A socket could not be served.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// Fleet mode could not be set up (`[fleet]`).
    #[error("fleet: {0}")]
    Fleet(String),
}

/// The OS error of a failed bind, in the words an operator searches for.
fn bind_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "address already in use".into(),
        std::io::ErrorKind::AddrNotAvailable => "address not available on this host".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied (ports below 1024 need privileges)".into(),
        _ => e.to_string(),
    }
}

/// A handshake the gateway refuses before any 101, answered with an HTTP status.
///
/// `reason()` is the bounded label used in logs and metrics; the client only ever sees the
/// status and a short fixed text, never internal details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRefusal {
    // (docs/protocol.md, in check order)
    /// The global connection cap is reached.
    Overloaded,
    /// The gateway is draining: no new connections.
    Draining,
    /// Too many handshakes from this IP in a short time.
    HandshakeRate,
    /// An HTTP request the server's parser refused before any policy ran (bad bytes, a missing
    /// or repeated `Host`, a malformed request line).
    BadRequest,
    /// The request line or header block is larger than the parser accepts.
    HeaderTooLarge,
    /// The request did not arrive completely within `timeouts.handshake_seconds`.
    RequestTimeout,
    /// Not a valid RFC 6455 upgrade request.
    BadUpgrade,
    /// `Sec-WebSocket-Version` is not 13.
    UnsupportedVersion,
    /// No route serves this path.
    NoRoute,
    /// The `Origin` is not on the route's allowlist (or missing where the route requires it).
    Origin,
    /// The client offered subprotocols and none of them can be selected (only credential
    /// entries, or names the route does not list).
    Subprotocol,
    /// No token was found in the route's token sources.
    MissingToken,
    /// More than one token in the request (two sources, two entries of one source).
    MultipleTokens,
    /// The token failed verification (signature, algorithm, kid, iss, aud, nbf, claims).
    InvalidToken,
    /// The token's `exp` (plus leeway) has passed.
    ExpiredToken,
    /// The token lacks the route's connect scope.
    ConnectScope,
    /// The token (its `jti`, or its subject as issued before a revocation) is revoked.
    Revoked,
    /// This IP holds its maximum number of live connections.
    IpConnections,
    /// This subject holds its maximum number of live connections.
    SubjectConnections,
    /// The upstream refused the WebSocket upgrade or could not be reached.
    UpstreamFailed,
    /// The upstream did not accept the WebSocket within the connect timeout.
    UpstreamTimeout,
    /// Fleet mode with `on_redis_down = "refuse"`: Redis cannot be reached, so no fleet-wide
    /// cap or rate can be checked.
    FleetUnavailable,
    /// The gateway hit an internal error.
    Internal,
}

// === impl HandshakeRefusal ===

impl HandshakeRefusal {
    /// Every refusal (metric labels are registered from this list).
    pub const ALL: [Self; 23] = [
        Self::Overloaded,
        Self::Draining,
        Self::HandshakeRate,
        Self::BadRequest,
        Self::HeaderTooLarge,
        Self::RequestTimeout,
        Self::BadUpgrade,
        Self::UnsupportedVersion,
        Self::NoRoute,
        Self::Origin,
        Self::Subprotocol,
        Self::MissingToken,
        Self::MultipleTokens,
        Self::InvalidToken,
        Self::ExpiredToken,
        Self::ConnectScope,
        Self::Revoked,
        Self::IpConnections,
        Self::SubjectConnections,
        Self::UpstreamFailed,
        Self::UpstreamTimeout,
        Self::FleetUnavailable,
        Self::Internal,
    ];

    /// The bounded label used in logs and in the `result` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Overloaded => "overloaded",
            Self::Draining => "draining",
            Self::HandshakeRate => "handshake_rate",
            Self::BadRequest => "bad_request",
            Self::HeaderTooLarge => "header_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::BadUpgrade => "bad_upgrade",
            Self::UnsupportedVersion => "unsupported_version",
            Self::NoRoute => "no_route",
            Self::Origin => "origin",
            Self::Subprotocol => "subprotocol",
            Self::MissingToken => "missing_token",
            Self::MultipleTokens => "multiple_tokens",
            Self::InvalidToken => "invalid_token",
            Self::ExpiredToken => "expired_token",
            Self::ConnectScope => "connect_scope",
            Self::Revoked => "revoked",
            Self::IpConnections => "ip_connections",
            Self::SubjectConnections => "subject_connections",
            Self::UpstreamFailed => "upstream_failed",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::FleetUnavailable => "fleet_unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status answered.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Overloaded | Self::Draining | Self::FleetUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::HandshakeRate | Self::IpConnections | Self::SubjectConnections => StatusCode::TOO_MANY_REQUESTS,
            Self::BadUpgrade | Self::BadRequest | Self::Subprotocol | Self::MultipleTokens => StatusCode::BAD_REQUEST,
            Self::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::Origin | Self::ConnectScope => StatusCode::FORBIDDEN,
            Self::MissingToken | Self::InvalidToken | Self::ExpiredToken | Self::Revoked => StatusCode::UNAUTHORIZED,
            Self::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short fixed text for the client (the HTTP body). Never contains details.
    pub fn client_text(&self) -> &'static str {
        match self {
            Self::Overloaded => "gateway is at capacity",
            Self::Draining => "gateway is shutting down",
            Self::HandshakeRate => "too many handshakes",
            Self::BadUpgrade => "not a valid websocket upgrade",
            Self::BadRequest => "bad request",
            Self::HeaderTooLarge => "request header too large",
            Self::RequestTimeout => "request timeout",
            Self::Subprotocol => "no acceptable subprotocol offered",
            Self::MultipleTokens => "more than one token in the request",
            Self::UnsupportedVersion => "websocket version 13 required",
            Self::NoRoute => "no such route",
            Self::Origin => "origin not allowed",
            Self::MissingToken => "missing token",
            // A revoked token is refused exactly like any invalid one.
            Self::InvalidToken | Self::Revoked => "invalid token",
            Self::ExpiredToken => "token expired",
            Self::ConnectScope => "insufficient scope",
            Self::IpConnections | Self::SubjectConnections => "too many connections",
            Self::UpstreamFailed => "upstream unavailable",
            Self::UpstreamTimeout => "upstream timeout",
            Self::FleetUnavailable => "gateway is temporarily unavailable",
            Self::Internal => "internal error",
        }
    }
}

impl std::fmt::Display for HandshakeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// A request to the ticket endpoint (`POST /v1/ws-ticket` and its CORS preflight) the gateway
/// refuses. What a handshake would refuse (admission, origin, token, connect scope) is
/// answered as the handshake answers it; the rest is the endpoint's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketRefusal {
    /// Refused as a handshake would be, with its status and text.
    Handshake(HandshakeRefusal),
    /// A method other than `POST` (and `OPTIONS` for the preflight).
    Method,
    /// A body over the endpoint's limit.
    BodyTooLarge,
    /// The body did not arrive within `timeouts.handshake_seconds`.
    BodyTimeout,
    /// The body is not empty and not `{"route": "<path>"}`.
    BadBody,
    /// The route named is not one that accepts tickets.
    UnknownRoute,
    /// No route named, and more than one route accepts tickets.
    RouteRequired,
    /// A CORS preflight from an origin no ticket route allows (or for another method).
    Preflight,
    /// The subject's issue rate (`tickets.issue_per_subject_per_minute`).
    Rate,
    /// The subject holds `tickets.max_outstanding_per_subject` tickets already.
    Outstanding,
    /// The ticket store cannot take one (Redis unreachable in fleet mode): fail closed.
    Unavailable,
}

// === impl TicketRefusal ===

impl TicketRefusal {
    /// The bounded label used in logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Handshake(h) => h.reason(),
            Self::Method => "method_not_allowed",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::BadBody => "bad_body",
            Self::UnknownRoute => "unknown_route",
            Self::RouteRequired => "route_required",
            Self::Preflight => "preflight_refused",
            Self::Rate => "ticket_rate",
            Self::Outstanding => "tickets_outstanding",
            Self::Unavailable => "ticket_store_unavailable",
        }
    }

    /// The HTTP status answered.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Handshake(h) => h.status(),
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BadBody | Self::UnknownRoute | Self::RouteRequired => StatusCode::BAD_REQUEST,
            Self::Preflight => StatusCode::FORBIDDEN,
            Self::Rate | Self::Outstanding => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short fixed text for the client (the HTTP body). Never contains details.
    pub fn client_text(&self) -> &'static str {
        match self {
            Self::Handshake(h) => h.client_text(),
            Self::Method => "use POST",
            Self::BodyTooLarge => "request body too large",
            Self::BodyTimeout => "request timeout",
            Self::BadBody => "the body must be empty or {\"route\": \"<path>\"}",
            Self::UnknownRoute => "no route accepting tickets at that path",
            Self::RouteRequired => "several routes accept tickets: name one, {\"route\": \"<path>\"}",
            Self::Preflight => "origin not allowed",
            Self::Rate => "too many tickets",
            Self::Outstanding => "too many tickets outstanding",
            Self::Unavailable => "gateway is temporarily unavailable",
        }
    }
}

impl std::fmt::Display for TicketRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// Why the gateway ends an open connection, sent to the client as a close code (RFC 6455
/// §7.4 plus the 4xxx codes of docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionClose {
    /// A message over `max_message_bytes`.
    MessageTooBig,
    /// Invalid UTF-8 in a text message.
    InvalidUtf8,
    /// A WebSocket protocol violation (bad framing, oversized control frame, ...).
    Protocol,
    /// Too many rejected frames other than rate limiting.
    PolicyViolations,
    /// Too many rate-limited frames.
    RateViolations,
    /// The token expired and no refresh arrived in time.
    TokenExpired,
    /// The client stopped reading and its outbound buffer passed the limit.
    SlowConsumer,
    /// The client did not answer pings within the idle timeout.
    Idle,
    /// A client frame (header or payload) did not arrive completely within
    /// `timeouts.frame_seconds`.
    FrameTimeout,
    /// The upstream failed or closed abnormally mid-session.
    UpstreamLost,
    /// The token in force was revoked (`POST /admin/revoke`).
    Revoked,
    /// An operator closed the connection (`DELETE /admin/connections/{id}`).
    Kicked,
    /// The gateway is draining.
    Draining,
    /// The gateway hit an internal error.
    Internal,
}

// === impl SessionClose ===

impl SessionClose {
    /// Every close the gateway makes (metric labels are registered from this list).
    pub const ALL: [Self; 14] = [
        Self::Revoked,
        Self::Kicked,
        Self::Draining,
        Self::MessageTooBig,
        Self::InvalidUtf8,
        Self::Protocol,
        Self::PolicyViolations,
        Self::RateViolations,
        Self::TokenExpired,
        Self::SlowConsumer,
        Self::Idle,
        Self::FrameTimeout,
        Self::UpstreamLost,
        Self::Internal,
    ];

    /// The bounded label used in logs and in the disconnect `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MessageTooBig => "message_too_big",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::Protocol => "protocol_error",
            Self::PolicyViolations => "policy_violations",
            Self::RateViolations => "rate_limited",
            Self::TokenExpired => "token_expired",
            Self::SlowConsumer => "slow_consumer",
            Self::Idle => "idle",
            Self::FrameTimeout => "frame_timeout",
            Self::UpstreamLost => "upstream_lost",
            Self::Revoked => "revoked",
            Self::Kicked => "kicked",
            Self::Draining => "draining",
            Self::Internal => "internal",
        }
    }

    /// The WebSocket close code sent to the client.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::MessageTooBig => 1009,
            Self::InvalidUtf8 => 1007,
            Self::Protocol => 1002,
            // A frame trickled in past its deadline is a policy decision (RFC 6455 §7.4.1:
            // 1008), not malformed framing (1002): the bytes themselves were valid.
            Self::PolicyViolations | Self::FrameTimeout => 1008,
            Self::RateViolations => 4029,
            Self::TokenExpired => 4001,
            Self::SlowConsumer => 4008,
            Self::Idle | Self::Draining => 1001,
            Self::UpstreamLost => 1014,
            Self::Revoked | Self::Kicked => 4003,
            Self::Internal => 1011,
        }
    }

    /// A short fixed text for the client (the close reason). Never contains details.
    pub fn client_text(&self) -> &'static str {
        match self {
            Self::MessageTooBig => "message too big",
            Self::InvalidUtf8 => "invalid utf-8",
            Self::Protocol => "protocol error",
            Self::PolicyViolations => "too many rejected messages",
            Self::RateViolations => "rate limit exceeded",
            Self::TokenExpired => "token expired",
            Self::SlowConsumer => "slow consumer",
            Self::Idle => "idle timeout",
            Self::FrameTimeout => "frame not completed in time",
            Self::UpstreamLost => "upstream unavailable",
            Self::Revoked => "invalid token",
            Self::Kicked => "closed by operator",
            Self::Draining => "gateway is shutting down",
            Self::Internal => "internal error",
        }
    }
}

impl std::fmt::Display for SessionClose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The close codes of docs/protocol.md, each from the close that sends it.
    #[test]
    fn session_closes_send_the_documented_codes() {
        let table = [
            (SessionClose::Draining, 1001),
            (SessionClose::Idle, 1001),
            (SessionClose::Protocol, 1002),
            (SessionClose::InvalidUtf8, 1007),
            (SessionClose::PolicyViolations, 1008),
            (SessionClose::FrameTimeout, 1008),
            (SessionClose::MessageTooBig, 1009),
            (SessionClose::Internal, 1011),
            (SessionClose::UpstreamLost, 1014),
            (SessionClose::TokenExpired, 4001),
            (SessionClose::Revoked, 4003),
            (SessionClose::Kicked, 4003),
            (SessionClose::SlowConsumer, 4008),
            (SessionClose::RateViolations, 4029),
        ];
        assert_eq!(table.len(), SessionClose::ALL.len());
        for (close, code) in table {
            assert_eq!(close.close_code(), code, "{close}");
            assert!(SessionClose::ALL.contains(&close));
        }
    }

    #[test]
    fn every_handshake_refusal_is_listed_once_with_a_4xx_or_5xx() {
        for (i, r) in HandshakeRefusal::ALL.iter().enumerate() {
            assert!(!HandshakeRefusal::ALL[i + 1..].contains(r), "{r} twice");
            assert!(r.status().is_client_error() || r.status().is_server_error(), "{r}");
        }
        assert_eq!(HandshakeRefusal::Revoked.client_text(), HandshakeRefusal::InvalidToken.client_text());
    }
}
