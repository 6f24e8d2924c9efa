//! The handshake policy of docs/protocol.md, in its order (cheapest first): admission, the
//! RFC 6455 upgrade, the route, origin, subprotocol, token (one, verified, not revoked; or a
//! one-time ticket, redeemed in `redeem.rs`), connect scope, the connection caps, the
//! upstream. [`negotiate`] runs the stages; a refusal comes back as [`Refused`] with its
//! status, log detail, `Retry-After` and body, and is counted in
//! `wsgate_handshakes_total{result}` and logged once with client IP, route, origin, user agent
//! and reason — never the token (nor the query string, which may carry one or a ticket).
//!
//! Owns: the order of the checks. Does not own: the sockets (`ws.rs`), the refusal's HTTP
//! form (`refusal.rs`), the checks themselves (`policy/`, `auth/`), the counts
//! (`store::admission`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_http::header::{self, HeaderMap};
use actix_http::{HttpMessage, Method, Request, Version};
use base64::Engine;

use super::redeem::redeem;
use super::refusal::{Attempt, Refused};
use crate::auth::{jwt, unix_now, AuthError, Claims};
use crate::error::HandshakeRefusal;
use crate::metrics as m;
use crate::policy::origin::OriginVerdict;
use crate::policy::token_source::{extract_token, select_subprotocol, TokenCarriers, TokenProblem, TokenSource};
use crate::session::SessionHandles;
use crate::state::{JwksDemand, Policy};
use crate::store::admission::{Admission, Admitted, Lease, Refusal};
use crate::store::tickets::TicketStore;
use crate::upstream::{self, Identity};

/// `Retry-After` of the 503 answered while draining: the process is going away, so a client
/// should come back soon, through the load balancer, to another node.
pub const DRAIN_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What the handshake path uses of the process's shared state.
#[derive(Clone)]
pub struct EntryHandles {
    /// What each session it starts follows (the policy in force, revocations, the index,
    /// the drain signal); the handshake reads the same.
    pub session: SessionHandles,
    /// Connection caps and handshake rates.
    pub admission: Arc<Admission>,
    /// Asks the JWKS URL fetcher for a fetch (when `auth.jwks_url` is set).
    pub jwks: Option<Arc<JwksDemand>>,
    /// `wsgate demo` only: the demo's browser page is served at `/`.
    pub demo_page: bool,
    /// Fleet mode: this node's id, which prefixes connection ids (`<node>-<n>`).
    pub node: Option<Arc<str>>,
    /// One-time tickets (issued at `POST /v1/ws-ticket`, redeemed at the token stage); used
    /// only while `[tickets]` is in force.
    pub tickets: Arc<dyn TicketStore>,
}

impl EntryHandles {
    /// Early admission of a connection from `ip` (the admission stage of docs/protocol.md),
    /// refused outright while draining.
    pub(crate) async fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        if self.session.drain.is_draining() {
            return Err(Refusal { denied: HandshakeRefusal::Draining, retry_after: Some(DRAIN_RETRY_AFTER) });
        }
        self.admission.admit(ip).await
    }
}

/// The client's address: the TCP peer, or from a trusted proxy the rightmost untrusted
/// `X-Forwarded-For` entry (`policy::client_ip`).
pub(crate) fn client_ip(req: &Request, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if trusted.is_empty() {
        return Some(peer);
    }
    let forwarded = header_values(req.headers(), header::HeaderName::from_static("x-forwarded-for"));
    Some(crate::policy::client_ip::client_ip(peer, &forwarded, trusted))
}

pub(crate) fn header_values(headers: &HeaderMap, name: header::HeaderName) -> Vec<&str> {
    headers.get_all(name).filter_map(|v| v.to_str().ok()).collect()
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The body of a refused subprotocol offer: what the route accepts.
fn subprotocol_refusal(accepted: &[String]) -> String {
    if accepted.is_empty() {
        "no acceptable subprotocol offered: this route selects none, so offer no subprotocol \
         (a token goes in the Authorization header)"
            .into()
    } else {
        format!(
            "no acceptable subprotocol offered: this route accepts {} (offer one of them beside a bearer.<token> entry)",
            accepted.join(", ")
        )
    }
}

/// Header fields a handshake carries at most once: two of them mean two parsers may read two
/// different requests (the first `Origin` deciding here, the last one elsewhere).
const SINGLE_HEADERS: [header::HeaderName; 6] = [
    header::ORIGIN,
    header::HOST,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::UPGRADE,
    header::AUTHORIZATION,
];

/// The first of [`SINGLE_HEADERS`] that appears more than once.
fn repeated_header(headers: &HeaderMap) -> Option<&'static str> {
    SINGLE_HEADERS.iter().find(|name| headers.get_all(*name).nth(1).is_some()).map(|name| match *name {
        header::ORIGIN => "Origin",
        header::HOST => "Host",
        header::SEC_WEBSOCKET_KEY => "Sec-WebSocket-Key",
        header::SEC_WEBSOCKET_VERSION => "Sec-WebSocket-Version",
        header::UPGRADE => "Upgrade",
        _ => "Authorization",
    })
}

/// The body of a refused upgrade: the repeated header or the missing `Host` when that was
/// the cause (so a client author sees what to fix), else the fixed text.
pub(crate) fn upgrade_refusal(denied: HandshakeRefusal, headers: &HeaderMap) -> Refused {
    let refused = Refused::new(denied, "");
    if denied != HandshakeRefusal::BadUpgrade {
        return refused;
    }
    if let Some(name) = repeated_header(headers) {
        return Refused::new(denied, format!("repeated {name} header"))
            .with_body(format!("not a valid websocket upgrade: the {name} header appears more than once"));
    }
    if has_token(headers, header::CONNECTION, "close") {
        return Refused::new(denied, "Connection: close")
            .with_body("not a valid websocket upgrade: Connection must not carry close".into());
    }
    refused
}

/// RFC 6455 §4.2.1 checks, done here because actix accepts HTTP/1.0 upgrades, a wrong
/// `Upgrade` token, duplicate keys and upgrade requests with a body.
pub fn check_upgrade(method: &Method, version: Version, headers: &HeaderMap) -> Result<(), HandshakeRefusal> {
    if method != Method::GET || version != Version::HTTP_11 {
        return Err(HandshakeRefusal::BadUpgrade);
    }
    if repeated_header(headers).is_some() || !headers.contains_key(header::HOST) {
        return Err(HandshakeRefusal::BadUpgrade);
    }
    if has_token(headers, header::CONNECTION, "close") {
        return Err(HandshakeRefusal::BadUpgrade);
    }
    if headers.get_all(header::UPGRADE).count() != 1 || !has_token(headers, header::UPGRADE, "websocket") {
        return Err(HandshakeRefusal::BadUpgrade);
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(HandshakeRefusal::BadUpgrade);
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY);
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return Err(HandshakeRefusal::BadUpgrade);
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.as_bytes());
    if decoded.map(|k| k.len()) != Ok(16) {
        return Err(HandshakeRefusal::BadUpgrade);
    }
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION);
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes() == b"13" => {}
        (None, _) => return Err(HandshakeRefusal::BadUpgrade),
        _ => return Err(HandshakeRefusal::UnsupportedVersion),
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(HandshakeRefusal::BadUpgrade);
    }
    Ok(())
}

/// Verify `token` (found in `source`) with the keys in force, and once more after a JWKS
/// fetch when it names an unknown `kid` (perhaps the IdP rotated its keys). Revocation is the
/// caller's next check.
///
/// # Errors
/// A 401 [`Refused`]: `ExpiredToken` past `exp` + leeway, `InvalidToken` otherwise.
pub(crate) async fn verify_jwt(
    gw: &EntryHandles,
    policy: &Policy,
    token: &str,
    source: TokenSource,
) -> Result<Claims, Refused> {
    let auth = &policy.config.auth;
    let mut verified = jwt::verify(token, &policy.keys, auth, SystemTime::now());
    if let (Err(AuthError::Invalid("unknown_kid")), Some(jwks)) = (&verified, &gw.jwks) {
        // One bounded, rate-limited look at the IdP's JWKS.
        if jwks.refetch_for_unknown_kid(auth.jwks_timeout).await {
            verified = jwt::verify(token, &gw.session.policy.load().keys, auth, SystemTime::now());
        }
    }
    match verified {
        Ok(c) => Ok(c),
        Err(AuthError::Expired) => Err(Refused::new(HandshakeRefusal::ExpiredToken, source.name())),
        Err(AuthError::Invalid(why)) => Err(Refused::new(HandshakeRefusal::InvalidToken, why)),
        Err(_) => Err(Refused::new(HandshakeRefusal::InvalidToken, "verification failed")),
    }
}

/// A handshake that passed every check, with its upstream open.
pub(crate) struct Accepted {
    pub(crate) route: Arc<crate::config::Route>,
    pub(crate) claims: crate::auth::Claims,
    pub(crate) lease: Lease,
    pub(crate) dialed: upstream::Dialed,
    pub(crate) selected: Option<String>,
    pub(crate) token_source: &'static str,
    pub(crate) accept_key: [u8; 28],
}

/// The handshake stages of docs/protocol.md, in their order.
pub(crate) async fn negotiate(
    gw: &EntryHandles,
    upstream_client: &awc::Client,
    policy: &Policy,
    req: &Request,
    attempt: &mut Attempt<'_>,
    route: Option<&Arc<crate::config::Route>>,
) -> Result<Accepted, Refused> {
    let headers = req.headers();
    let ip = attempt.ip;
    // 1–2: draining, global cap, per-IP handshake rate.
    let admitted = gw.admit(ip).await?;
    // 3: a valid RFC 6455 upgrade.
    check_upgrade(req.method(), req.version(), headers).map_err(|d| upgrade_refusal(d, headers))?;
    // 4: the route.
    let Some(route) = route else {
        attempt.route_path = None;
        return Err(Refused::new(HandshakeRefusal::NoRoute, ""));
    };
    // 5: origin. An Origin that is present but not readable is no allowed origin (never a
    // missing one); cookies are browser credentials, so a request carrying one must say
    // where it comes from, whatever the route's token sources.
    if attempt.origin.is_none() && attempt.origin_raw.is_some() {
        return Err(Refused::new(HandshakeRefusal::Origin, "origin not visible ascii"));
    }
    if attempt.origin.is_none() && headers.contains_key(header::COOKIE) {
        return Err(Refused::new(HandshakeRefusal::Origin, "cookie without origin"));
    }
    if route.origins.check(attempt.origin) == OriginVerdict::Refused {
        return Err(Refused::new(HandshakeRefusal::Origin, ""));
    }
    // 5b: a subprotocol offer the gateway can answer (a 101 without Sec-WebSocket-Protocol
    // after a non-empty offer is failed by browsers).
    let protocols = header_values(headers, header::SEC_WEBSOCKET_PROTOCOL);
    let selected = select_subprotocol(&protocols, &route.subprotocols).map(str::to_string);
    if selected.is_none() && headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        return Err(Refused::new(HandshakeRefusal::Subprotocol, "").with_body(subprotocol_refusal(&route.subprotocols)));
    }
    // 6: token.
    let auth = &policy.config.auth;
    let authorization = header_values(headers, header::AUTHORIZATION);
    let cookies = header_values(headers, header::COOKIE);
    let carriers = TokenCarriers {
        authorization: &authorization,
        protocols: &protocols,
        cookies: &cookies,
        query: req.uri().query().unwrap_or(""),
    };
    let (token, source) = match extract_token(&route.token_sources, &carriers, &auth.cookie_name, &auth.query_param) {
        Ok(Some(found)) => found,
        Ok(None) => return Err(Refused::new(HandshakeRefusal::MissingToken, "no token in the route's token sources")),
        Err(TokenProblem::Multiple) => return Err(Refused::new(HandshakeRefusal::MultipleTokens, "")),
        Err(TokenProblem::Oversized) => return Err(Refused::new(HandshakeRefusal::InvalidToken, "oversized")),
        Err(TokenProblem::Empty) => return Err(Refused::new(HandshakeRefusal::InvalidToken, "empty")),
    };
    let claims = if source == TokenSource::Ticket {
        let revocations = gw.session.revocations.as_ref();
        redeem(gw.tickets.as_ref(), revocations, auth, token, route, attempt).await?
    } else {
        let claims = verify_jwt(gw, policy, token, source).await?;
        attempt.subject = Some(claims.sub.clone());
        attempt.jti.clone_from(&claims.jti);
        if gw.session.revocations.check(&claims, unix_now()) {
            return Err(Refused::new(HandshakeRefusal::Revoked, ""));
        }
        claims
    };
    // 7: connect scope.
    if let Some(scope) = &route.connect_scope {
        if !claims.has_scope(scope) {
            return Err(Refused::new(HandshakeRefusal::ConnectScope, ""));
        }
    }
    // 8: per-IP / per-subject / global caps.
    let lease = gw.admission.try_acquire(admitted, &claims).await?;
    // 9: the upstream.
    let identity = Identity { subject: &claims.sub, scopes: &claims.scopes, client_ip: ip };
    let timeout = policy.config.timeouts.upstream_connect;
    let dialed = upstream::dial(upstream_client, route, &identity, selected.as_deref(), timeout).await.map_err(
        |(denied, detail)| {
            m::upstream_error(if denied == HandshakeRefusal::UpstreamTimeout {
                "connect_timeout"
            } else {
                "connect_failed"
            });
            Refused::new(denied, detail)
        },
    )?;
    let key = headers.get(header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes()).unwrap_or_default();
    Ok(Accepted {
        route: Arc::clone(route),
        claims,
        lease,
        dialed,
        selected,
        token_source: source.name(),
        accept_key: actix_http::ws::hash_key(key),
    })
}

#[cfg(test)]
mod tests {
    use actix_http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    const OK: [(&str, &str); 5] = [
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
        ("host", "gw.example.com"),
    ];

    #[test]
    fn a_valid_upgrade_passes() {
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_11, &headers(&OK)), Ok(()));
    }

    #[test]
    fn what_actix_lets_through_is_refused() {
        let h = headers(&OK);
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_10, &h), Err(HandshakeRefusal::BadUpgrade));
        assert_eq!(check_upgrade(&Method::POST, Version::HTTP_11, &h), Err(HandshakeRefusal::BadUpgrade));
        let mut bad = OK.to_vec();
        bad[0] = ("upgrade", "notwebsocket");
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_11, &headers(&bad)), Err(HandshakeRefusal::BadUpgrade));
        let mut dup = OK.to_vec();
        dup.push(("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_11, &headers(&dup)), Err(HandshakeRefusal::BadUpgrade));
        let mut body = OK.to_vec();
        body.push(("content-length", "5"));
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_11, &headers(&body)), Err(HandshakeRefusal::BadUpgrade));
        let mut short = OK.to_vec();
        short[2] = ("sec-websocket-key", "c2hvcnQ=");
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_11, &headers(&short)), Err(HandshakeRefusal::BadUpgrade));
    }

    #[test]
    fn headers_that_must_appear_once_and_connection_close_are_refused() {
        for name in ["origin", "host", "sec-websocket-key", "sec-websocket-version", "upgrade", "authorization"] {
            let mut h = OK.to_vec();
            h.push((name, "x"));
            h.push((name, "x"));
            assert_eq!(
                check_upgrade(&Method::GET, Version::HTTP_11, &headers(&h)),
                Err(HandshakeRefusal::BadUpgrade),
                "{name}"
            );
            let body =
                upgrade_refusal(HandshakeRefusal::BadUpgrade, &headers(&h)).body.expect("a body naming the header");
            assert!(body.to_ascii_lowercase().contains(name), "{body}");
        }
        let no_host: Vec<_> = OK.iter().copied().filter(|(k, _)| *k != "host").collect();
        assert_eq!(
            check_upgrade(&Method::GET, Version::HTTP_11, &headers(&no_host)),
            Err(HandshakeRefusal::BadUpgrade)
        );
        for connection in ["close, Upgrade", "Upgrade, close", "upgrade,CLOSE", "keep-alive"] {
            let mut h = OK.to_vec();
            h[1] = ("connection", connection);
            assert_eq!(
                check_upgrade(&Method::GET, Version::HTTP_11, &headers(&h)),
                Err(HandshakeRefusal::BadUpgrade),
                "{connection}"
            );
        }
        let mut two_lines = OK.to_vec();
        two_lines.push(("connection", "close"));
        assert_eq!(
            check_upgrade(&Method::GET, Version::HTTP_11, &headers(&two_lines)),
            Err(HandshakeRefusal::BadUpgrade)
        );
    }

    #[test]
    fn another_version_gets_426() {
        use crate::http::refusal::refusal_response;
        let mut v = OK.to_vec();
        v[3] = ("sec-websocket-version", "8");
        assert_eq!(
            check_upgrade(&Method::GET, Version::HTTP_11, &headers(&v)),
            Err(HandshakeRefusal::UnsupportedVersion)
        );
        let resp = refusal_response(HandshakeRefusal::UnsupportedVersion, None, None);
        assert_eq!(resp.status().as_u16(), 426);
        assert_eq!(resp.headers().get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()), Some(&b"13"[..]));
    }
}
