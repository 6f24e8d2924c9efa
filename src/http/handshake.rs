//! The handshake policy of docs/protocol.md, in its order (cheapest first): admission, the
//! RFC 6455 upgrade, the route, origin, subprotocol, token (one, verified, not revoked),
//! connect scope, the connection caps, the upstream. [`negotiate`] runs the stages; a refusal
//! comes back as [`Refused`] with its status, log detail, `Retry-After` and body, and is
//! counted in `wsgate_handshakes_total{result}` and logged once with client IP, route,
//! origin, user agent and reason — never the token (nor the query string, which may carry
//! one).
//!
//! Owns: the order of the checks and the refusal's HTTP answer. Does not own: the sockets
//! (`ws.rs`), the checks themselves (`policy/`, `auth/`), the counts (`store::admission`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_http::header::{self, HeaderMap};
use actix_http::{HttpMessage, Method, Request, Response, Version};
use base64::Engine;

use crate::auth::{jwt, unix_now, AuthError};
use crate::error::HandshakeRefusal;
use crate::log_text::log_text;
use crate::metrics::{self as m, NO_ROUTE};
use crate::policy::origin::OriginVerdict;
use crate::policy::token_source::{extract_token, select_subprotocol, TokenCarriers, TokenProblem};
use crate::session::SessionHandles;
use crate::state::{JwksDemand, Policy};
use crate::store::admission::{Admission, Admitted, Lease, Refusal};
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

/// A refusal on its way to the client: why, a detail for the log, `Retry-After`, and a body
/// that tells the client more than the fixed text when that helps it (which subprotocols
/// the route accepts, which header is repeated). Bodies never carry a client's input.
pub(crate) struct Refused {
    pub(crate) denied: HandshakeRefusal,
    pub(crate) detail: String,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Option<String>,
}

impl Refused {
    pub(crate) fn new(denied: HandshakeRefusal, detail: impl Into<String>) -> Self {
        Self { denied, detail: detail.into(), retry_after: None, body: None }
    }

    fn with_body(mut self, body: String) -> Self {
        self.body = Some(body);
        self
    }
}

impl From<Refusal> for Refused {
    fn from(r: Refusal) -> Self {
        Self { denied: r.denied, detail: String::new(), retry_after: r.retry_after, body: None }
    }
}

/// What the log and metrics need to know about a handshake.
pub(crate) struct Attempt<'a> {
    pub(crate) started: Instant,
    pub(crate) ip: IpAddr,
    pub(crate) route_path: Option<&'a str>,
    pub(crate) path: &'a str,
    /// The `Origin` as the policy reads it: `None` when absent or not visible ASCII (see
    /// `origin_raw`).
    pub(crate) origin: Option<&'a str>,
    /// The raw `Origin` and `User-Agent` values, for logs (escaped and bounded there).
    pub(crate) origin_raw: Option<&'a [u8]>,
    pub(crate) user_agent_raw: Option<&'a [u8]>,
    /// Token subject and id, once the token verified.
    pub(crate) subject: Option<String>,
    pub(crate) jti: Option<String>,
}

impl<'a> Attempt<'a> {
    pub(crate) fn new(req: &'a Request, ip: IpAddr, route_path: Option<&'a str>) -> Self {
        let headers = req.headers();
        Self {
            started: Instant::now(),
            ip,
            route_path,
            path: req.path(),
            origin: header_str(headers, header::ORIGIN),
            origin_raw: headers.get(header::ORIGIN).map(|v| v.as_bytes()),
            user_agent_raw: headers.get(header::USER_AGENT).map(|v| v.as_bytes()),
            subject: None,
            jti: None,
        }
    }

    pub(crate) fn route_label(&self) -> &str {
        self.route_path.unwrap_or(NO_ROUTE)
    }

    /// Count and log a refusal.
    pub(crate) fn log_refusal(&self, r: &Refused) {
        m::handshake(self.route_label(), r.denied.reason(), self.started.elapsed());
        tracing::warn!(
            event = "handshake_refused",
            reason = r.denied.reason(),
            status = r.denied.status().as_u16(),
            detail = r.detail.as_str(),
            route = self.route_label(),
            path = &*log_text(self.path.as_bytes()),
            client_ip = %self.ip,
            origin = &*self.origin_log(),
            user_agent = &*self.user_agent_log(),
            subject = &*log_text(self.subject.as_deref().unwrap_or("").as_bytes()),
            jti = &*log_text(self.jti.as_deref().unwrap_or("").as_bytes()),
        );
    }

    pub(crate) fn origin_log(&self) -> std::borrow::Cow<'a, str> {
        log_text(self.origin_raw.unwrap_or_default())
    }

    pub(crate) fn user_agent_log(&self) -> std::borrow::Cow<'a, str> {
        log_text(self.user_agent_raw.unwrap_or_default())
    }
}

/// The headers a refusal carries besides content type, length and `Connection: close`.
fn refusal_headers(denied: HandshakeRefusal, retry_after: Option<Duration>) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    let auth = match denied {
        HandshakeRefusal::UnsupportedVersion => {
            headers.push(("sec-websocket-version", "13".to_string()));
            None
        }
        HandshakeRefusal::MissingToken => Some("Bearer realm=\"wsgate\""),
        // A revoked token is refused exactly like any invalid one.
        HandshakeRefusal::InvalidToken | HandshakeRefusal::Revoked => {
            Some("Bearer realm=\"wsgate\", error=\"invalid_token\"")
        }
        HandshakeRefusal::ExpiredToken => {
            Some("Bearer realm=\"wsgate\", error=\"invalid_token\", error_description=\"token expired\"")
        }
        HandshakeRefusal::ConnectScope => Some("Bearer realm=\"wsgate\", error=\"insufficient_scope\""),
        _ => None,
    };
    if let Some(value) = auth {
        headers.push(("www-authenticate", value.to_string()));
    }
    if let Some(wait) = retry_after {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        headers.push(("retry-after", secs.to_string()));
    }
    headers
}

/// A refusal as an HTTP/1.1 response on the wire. A refused client gets no keep-alive: its
/// next attempt pays the admission checks again and a refused connection holds nothing here.
pub(crate) fn refusal_bytes(denied: HandshakeRefusal, retry_after: Option<Duration>, body: Option<&str>) -> Vec<u8> {
    let status = denied.status();
    let body = format!("{}\n", body.unwrap_or(denied.client_text()));
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    for (name, value) in refusal_headers(denied, retry_after) {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// A refusal as an actix-http response (for requests that are not upgrades).
pub(crate) fn refusal_response(
    denied: HandshakeRefusal,
    retry_after: Option<Duration>,
    body: Option<&str>,
) -> Response<String> {
    let mut resp = Response::with_body(denied.status(), format!("{}\n", body.unwrap_or(denied.client_text())));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    for (name, value) in refusal_headers(denied, retry_after) {
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            headers.insert(header::HeaderName::from_static(name), value);
        }
    }
    resp.head_mut().set_connection_type(actix_http::ConnectionType::Close);
    resp
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

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
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
    let mut verified = jwt::verify(token, &policy.keys, auth, SystemTime::now());
    if let (Err(AuthError::Invalid("unknown_kid")), Some(jwks)) = (&verified, &gw.jwks) {
        // Perhaps the IdP rotated its keys: one bounded, rate-limited look at its JWKS.
        if jwks.refetch_for_unknown_kid(auth.jwks_timeout).await {
            verified = jwt::verify(token, &gw.session.policy.load().keys, auth, SystemTime::now());
        }
    }
    let claims = match verified {
        Ok(c) => c,
        Err(AuthError::Expired) => return Err(Refused::new(HandshakeRefusal::ExpiredToken, source.name())),
        Err(AuthError::Invalid(why)) => return Err(Refused::new(HandshakeRefusal::InvalidToken, why)),
        Err(_) => return Err(Refused::new(HandshakeRefusal::InvalidToken, "verification failed")),
    };
    attempt.subject = Some(claims.sub.clone());
    attempt.jti.clone_from(&claims.jti);
    if gw.session.revocations.check(&claims, unix_now()) {
        return Err(Refused::new(HandshakeRefusal::Revoked, ""));
    }
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
    fn a_revoked_token_is_answered_like_an_invalid_one() {
        assert_eq!(
            refusal_bytes(HandshakeRefusal::Revoked, None, None),
            refusal_bytes(HandshakeRefusal::InvalidToken, None, None)
        );
    }

    #[test]
    fn another_version_gets_426() {
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

    #[test]
    fn refusals_on_the_wire_are_complete_responses() {
        let bytes = refusal_bytes(HandshakeRefusal::HandshakeRate, Some(Duration::from_millis(1500)), None);
        let text = String::from_utf8(bytes).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{head}");
        assert!(head.contains("\r\nretry-after: 2"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())), "{head}");
        let text = String::from_utf8(refusal_bytes(HandshakeRefusal::InvalidToken, None, None)).expect("ascii");
        assert!(text.contains("www-authenticate: Bearer realm=\"wsgate\", error=\"invalid_token\"\r\n"), "{text}");
    }
}
