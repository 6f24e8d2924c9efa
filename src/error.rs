//! Error types: one enum per domain plus [`Denied`], the refusals a client causes.
//!
//! `Denied` carries, for every refusal, the three things the gateway needs to answer it: an HTTP
//! status (before the upgrade), a close code (after it) and a short static reason label used in
//! logs and metrics. The mapping is exhaustive on purpose: adding a variant forces a decision
//! for each of the three.

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

/// A refusal the client caused, at the handshake or during the session.
///
/// `reason()` is the bounded label used in logs and metrics; the client only ever sees the
/// status/close code and a short fixed text, never internal details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    // --- handshake (docs/protocol.md, in check order) ---
    /// The global connection cap is reached.
    Overloaded,
    /// The gateway is draining: no new connections; open ones close with 1001.
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
    // --- in the session (docs/protocol.md) ---
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
    /// An operator closed the connection (`DELETE /admin/connections/{id}`).
    Kicked,
    /// The gateway hit an internal error.
    Internal,
}

// === impl Denied ===

impl Denied {
    /// The bounded label used in logs and in the `reason`/`result` metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Overloaded => "overloaded",
            Self::Draining => "draining",
            Self::Revoked => "revoked",
            Self::Kicked => "kicked",
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
            Self::IpConnections => "ip_connections",
            Self::SubjectConnections => "subject_connections",
            Self::UpstreamFailed => "upstream_failed",
            Self::UpstreamTimeout => "upstream_timeout",
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
            Self::Internal => "internal",
        }
    }

    /// The HTTP status answered when the refusal happens before the upgrade.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Overloaded | Self::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Self::Revoked => StatusCode::UNAUTHORIZED,
            Self::Kicked => StatusCode::FORBIDDEN,
            Self::HandshakeRate | Self::IpConnections | Self::SubjectConnections => StatusCode::TOO_MANY_REQUESTS,
            Self::BadUpgrade
            | Self::BadRequest
            | Self::Subprotocol
            | Self::MultipleTokens
            | Self::Protocol
            | Self::InvalidUtf8
            | Self::MessageTooBig => StatusCode::BAD_REQUEST,
            Self::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::Origin | Self::ConnectScope | Self::PolicyViolations => StatusCode::FORBIDDEN,
            Self::MissingToken | Self::InvalidToken | Self::ExpiredToken | Self::TokenExpired => {
                StatusCode::UNAUTHORIZED
            }
            Self::UpstreamFailed | Self::UpstreamLost => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::RateViolations => StatusCode::TOO_MANY_REQUESTS,
            Self::FrameTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::SlowConsumer | Self::Idle | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The WebSocket close code (RFC 6455 §7.4 plus the 4xxx codes of docs/protocol.md) sent when
    /// the refusal ends an open session.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::Overloaded | Self::Draining => 1001,
            Self::Revoked | Self::Kicked => 4003,
            Self::MessageTooBig => 1009,
            Self::InvalidUtf8 => 1007,
            Self::Protocol
            | Self::BadUpgrade
            | Self::BadRequest
            | Self::HeaderTooLarge
            | Self::RequestTimeout
            | Self::UnsupportedVersion
            | Self::Subprotocol
            | Self::NoRoute => 1002,
            // A frame trickled in past its deadline is a policy decision (RFC 6455 §7.4.1:
            // 1008), not malformed framing (1002): the bytes themselves were valid.
            Self::PolicyViolations
            | Self::FrameTimeout
            | Self::Origin
            | Self::ConnectScope
            | Self::HandshakeRate
            | Self::IpConnections
            | Self::SubjectConnections => 1008,
            Self::RateViolations => 4029,
            Self::MissingToken | Self::MultipleTokens | Self::InvalidToken => 4003,
            Self::ExpiredToken | Self::TokenExpired => 4001,
            Self::SlowConsumer => 4008,
            Self::Idle => 1001,
            Self::UpstreamFailed | Self::UpstreamTimeout | Self::UpstreamLost => 1014,
            Self::Internal => 1011,
        }
    }

    /// A short fixed text for the client (HTTP body or close reason). Never contains details.
    pub fn client_text(&self) -> &'static str {
        match self {
            Self::Overloaded => "gateway is at capacity",
            Self::Draining => "gateway is shutting down",
            // A revoked token is refused exactly like any invalid one.
            Self::Revoked => "invalid token",
            Self::Kicked => "closed by operator",
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
            Self::InvalidToken => "invalid token",
            Self::ExpiredToken | Self::TokenExpired => "token expired",
            Self::ConnectScope => "insufficient scope",
            Self::IpConnections | Self::SubjectConnections => "too many connections",
            Self::UpstreamFailed | Self::UpstreamLost => "upstream unavailable",
            Self::UpstreamTimeout => "upstream timeout",
            Self::MessageTooBig => "message too big",
            Self::InvalidUtf8 => "invalid utf-8",
            Self::Protocol => "protocol error",
            Self::PolicyViolations => "too many rejected messages",
            Self::RateViolations => "rate limit exceeded",
            Self::SlowConsumer => "slow consumer",
            Self::Idle => "idle timeout",
            Self::FrameTimeout => "frame not completed in time",
            Self::Internal => "internal error",
        }
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}
