//! The public WebSocket entry: the handshake policy of docs/protocol.md, in its order (cheapest
//! first), then the switch to a [`WsSession`] that owns both sockets.
//!
//! The public listener is actix-http's HTTP/1.1 service with an upgrade hook: a request with
//! `Upgrade: websocket` arrives here as the request plus its raw connection ([`upgrade`]);
//! anything else gets the same admission checks and a refusal ([`plain`]). Every refusal is
//! answered with its HTTP status and a short fixed body, counted in
//! `wsgate_handshakes_total{result}` and logged once with client IP, route, origin, user
//! agent and reason — never the token (nor the query string, which may carry one).

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_codec::Framed;
use actix_http::header::{self, HeaderMap};
use actix_http::{h1, HttpMessage, Method, Request, Response, Version};
use actix_service::{fn_factory, fn_service, ServiceFactory};
use base64::Engine;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::actors::messages::Refusal;
use crate::actors::registry::Lease;
use crate::actors::relay::{Io, Side};
use crate::actors::session::{SessionParams, WsSession};
use crate::app::{Gateway, Policy};
use crate::auth::revocation::unix_now;
use crate::auth::{jwt, AuthError};
use crate::error::Denied;
use crate::http::accept::{Watch, Watched};
use crate::log_text::log_text;
use crate::metrics::{self as m, NO_ROUTE};
use crate::policy::origin::OriginVerdict;
use crate::policy::token_source::{extract_token, select_subprotocol, TokenCarriers, TokenProblem};
use crate::upstream::{self, Identity};

/// Longest time spent writing a refusal to a client that does not read it.
const REFUSAL_WRITE_LIMIT: Duration = Duration::from_secs(5);

/// What the public listener's services share on one worker thread.
pub struct Entry {
    /// Config, keys, registry.
    pub gateway: Arc<Gateway>,
    /// The worker's upstream WebSocket client for `ws://` (awc's client is `!Send`).
    pub upstream: awc::Client,
    /// Clients for `wss://` upstreams, one per TLS client config (routes of one config share
    /// theirs; a reload brings new ones).
    secure: RefCell<Vec<(Arc<rustls::ClientConfig>, awc::Client)>>,
}

/// An upstream client whose connector has no pool limit (each upgraded connection is owned by
/// its session, never pooled); the connect timeout is applied per dial. Upstream sockets get
/// `TCP_NODELAY` (see [`crate::http::accept::set_nodelay`]).
fn upstream_client(tls: Option<Arc<rustls::ClientConfig>>) -> awc::Client {
    use actix_service::ServiceExt;
    let tcp = actix_tls::connect::Connector::new(actix_tls::connect::Resolver::default()).service().map(
        |conn: actix_tls::connect::Connection<actix_http::Uri, tokio::net::TcpStream>| {
            crate::http::accept::set_nodelay(conn.io_ref());
            conn
        },
    );
    let connector = awc::Connector::new().connector(tcp).limit(0);
    let connector = match tls {
        Some(tls) => connector.rustls_0_23(tls),
        None => connector,
    };
    awc::Client::builder().connector(connector).disable_timeout().finish()
}

/// How many `wss://` clients a worker keeps (older ones belong to configs reloaded away).
const SECURE_CLIENTS_KEPT: usize = 16;

impl Entry {
    /// The entry of one worker.
    pub fn new(gateway: Arc<Gateway>) -> Rc<Self> {
        Rc::new(Self { gateway, upstream: upstream_client(None), secure: RefCell::new(Vec::new()) })
    }

    /// The client that dials `route`'s upstream.
    fn client_for(&self, route: &crate::config::Route) -> awc::Client {
        let Some(tls) = &route.upstream_tls else {
            return self.upstream.clone();
        };
        let mut secure = self.secure.borrow_mut();
        if let Some((_, c)) = secure.iter().find(|(t, _)| Arc::ptr_eq(t, tls)) {
            return c.clone();
        }
        let client = upstream_client(Some(Arc::clone(tls)));
        if secure.len() >= SECURE_CLIENTS_KEPT {
            secure.remove(0);
        }
        secure.push((Arc::clone(tls), client.clone()));
        client
    }
}

/// A refusal on its way to the client: why, a detail for the log, `Retry-After`, and a body
/// that tells the client more than the fixed text when that helps it (which subprotocols
/// the route accepts, which header is repeated). Bodies never carry a client's input.
struct Refused {
    denied: Denied,
    detail: String,
    retry_after: Option<Duration>,
    body: Option<String>,
}

impl Refused {
    fn new(denied: Denied, detail: impl Into<String>) -> Self {
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
struct Attempt<'a> {
    started: Instant,
    ip: IpAddr,
    route_path: Option<&'a str>,
    path: &'a str,
    /// The `Origin` as the policy reads it: `None` when absent or not visible ASCII (see
    /// `origin_raw`).
    origin: Option<&'a str>,
    /// The raw `Origin` and `User-Agent` values, for logs (escaped and bounded there).
    origin_raw: Option<&'a [u8]>,
    user_agent_raw: Option<&'a [u8]>,
    /// Token subject and id, once the token verified.
    subject: Option<String>,
    jti: Option<String>,
}

impl<'a> Attempt<'a> {
    fn new(req: &'a Request, ip: IpAddr, route_path: Option<&'a str>) -> Self {
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

    fn route_label(&self) -> &str {
        self.route_path.unwrap_or(NO_ROUTE)
    }

    /// Count and log a refusal.
    fn log_refusal(&self, r: &Refused) {
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

    fn origin_log(&self) -> std::borrow::Cow<'a, str> {
        log_text(self.origin_raw.unwrap_or_default())
    }

    fn user_agent_log(&self) -> std::borrow::Cow<'a, str> {
        log_text(self.user_agent_raw.unwrap_or_default())
    }
}

/// The headers a refusal carries besides content type, length and `Connection: close`.
fn refusal_headers(denied: Denied, retry_after: Option<Duration>) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    let auth = match denied {
        Denied::UnsupportedVersion => {
            headers.push(("sec-websocket-version", "13".to_string()));
            None
        }
        Denied::MissingToken => Some("Bearer realm=\"wsgate\""),
        // A revoked token is refused exactly like any invalid one.
        Denied::InvalidToken | Denied::Revoked => Some("Bearer realm=\"wsgate\", error=\"invalid_token\""),
        Denied::ExpiredToken => {
            Some("Bearer realm=\"wsgate\", error=\"invalid_token\", error_description=\"token expired\"")
        }
        Denied::ConnectScope => Some("Bearer realm=\"wsgate\", error=\"insufficient_scope\""),
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
fn refusal_bytes(denied: Denied, retry_after: Option<Duration>, body: Option<&str>) -> Vec<u8> {
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
fn refusal_response(denied: Denied, retry_after: Option<Duration>, body: Option<&str>) -> Response<String> {
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
fn client_ip(req: &Request, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
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

fn header_values(headers: &HeaderMap, name: header::HeaderName) -> Vec<&str> {
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
fn upgrade_refusal(denied: Denied, headers: &HeaderMap) -> Refused {
    let refused = Refused::new(denied, "");
    if denied != Denied::BadUpgrade {
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
pub fn check_upgrade(method: &Method, version: Version, headers: &HeaderMap) -> Result<(), Denied> {
    if method != Method::GET || version != Version::HTTP_11 {
        return Err(Denied::BadUpgrade);
    }
    if repeated_header(headers).is_some() || !headers.contains_key(header::HOST) {
        return Err(Denied::BadUpgrade);
    }
    if has_token(headers, header::CONNECTION, "close") {
        return Err(Denied::BadUpgrade);
    }
    if headers.get_all(header::UPGRADE).count() != 1 || !has_token(headers, header::UPGRADE, "websocket") {
        return Err(Denied::BadUpgrade);
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(Denied::BadUpgrade);
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY);
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return Err(Denied::BadUpgrade);
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.as_bytes());
    if decoded.map(|k| k.len()) != Ok(16) {
        return Err(Denied::BadUpgrade);
    }
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION);
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes() == b"13" => {}
        (None, _) => return Err(Denied::BadUpgrade),
        _ => return Err(Denied::UnsupportedVersion),
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(Denied::BadUpgrade);
    }
    Ok(())
}

/// The upgrade hook of one worker's HTTP service, over connections of type `T`.
pub fn upgrade_service<T: Io>(
    entry: Rc<Entry>,
) -> impl ServiceFactory<
    (Request, Framed<Watched<T>, h1::Codec>),
    Config = (),
    Response = (),
    Error = actix_http::Error,
    InitError = (),
> {
    fn_factory(move || {
        let entry = Rc::clone(&entry);
        async move { Ok(fn_service(move |(req, framed)| upgrade(Rc::clone(&entry), req, framed))) }
    })
}

/// The service of one worker for requests that are not WebSocket upgrades.
pub fn plain_service(
    entry: Rc<Entry>,
) -> impl ServiceFactory<Request, Config = (), Response = Response<String>, Error = actix_http::Error, InitError = ()> {
    fn_factory(move || {
        let entry = Rc::clone(&entry);
        async move { Ok(fn_service(move |req| plain(Rc::clone(&entry), req))) }
    })
}

/// A request without `Upgrade: websocket` on the public listener: admission (so floods of
/// plain requests are rate-limited like handshakes), then `400`.
///
/// # Errors
/// Never; the signature is what actix-http's service wants.
pub async fn plain(entry: Rc<Entry>, req: Request) -> Result<Response<String>, actix_http::Error> {
    if let Some(watch) = req.conn_data::<Rc<Watch>>() {
        watch.served();
    }
    let gw = &entry.gateway;
    if gw.demo_page && req.method() == Method::GET && req.path() == "/" {
        return Ok(demo_page());
    }
    let policy = gw.policy();
    let Some(ip) = client_ip(&req, &policy.config.trusted_proxies) else {
        return Ok(refusal_response(Denied::Internal, None, None));
    };
    let route = policy.config.route(req.path());
    let attempt = Attempt::new(&req, ip, route.map(|r| r.path.as_str()));
    let refused = match gw.admit(ip) {
        Ok(()) => match check_upgrade(req.method(), req.version(), req.headers()) {
            Err(denied) => upgrade_refusal(denied, req.headers()),
            Ok(()) => Refused::new(Denied::BadUpgrade, "upgrade header not usable"),
        },
        Err(r) => r.into(),
    };
    attempt.log_refusal(&refused);
    Ok(refusal_response(refused.denied, refused.retry_after, refused.body.as_deref()))
}

/// The browser page of `wsgate demo` (served at `/` in demo mode only): it connects to `/ws`
/// on its own origin, which the demo's route allows. The page loads nothing from elsewhere.
fn demo_page() -> Response<String> {
    let mut resp = Response::with_body(actix_http::StatusCode::OK, DEMO_PAGE.to_string());
    let headers = resp.headers_mut();
    for (name, value) in [
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        (
            "content-security-policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
        ),
    ] {
        headers.insert(header::HeaderName::from_static(name), header::HeaderValue::from_static(value));
    }
    resp
}

const DEMO_PAGE: &str = include_str!("../demo_page.html");

/// A request with `Upgrade: websocket` and its connection: the policy, then either a refusal
/// written to the socket or the 101 and a [`WsSession`] owning both sockets.
///
/// # Errors
/// Never; the signature is what actix-http's upgrade hook wants.
pub async fn upgrade<T: Io>(
    entry: Rc<Entry>,
    req: Request,
    framed: Framed<Watched<T>, h1::Codec>,
) -> Result<(), actix_http::Error> {
    let parts = framed.into_parts();
    let (mut io, read_ahead) = (parts.io.into_inner(), parts.read_buf);
    let gw = &entry.gateway;
    let policy = gw.policy();
    let Some(ip) = client_ip(&req, &policy.config.trusted_proxies) else {
        let _ = write_refusal(&mut io, &Refused::new(Denied::Internal, "")).await;
        return Ok(());
    };
    let route = policy.config.route(req.path()).cloned();
    let mut attempt = Attempt::new(&req, ip, route.as_ref().map(|r| r.path.as_str()));
    match negotiate(&entry, &policy, &req, &mut attempt, route.as_ref()).await {
        Ok(accepted) => start_session(gw, &policy, &attempt, accepted, Box::new(io), read_ahead),
        Err(refused) => {
            attempt.log_refusal(&refused);
            let _ = write_refusal(&mut io, &refused).await;
        }
    }
    Ok(())
}

async fn write_refusal<T: Io>(io: &mut T, refused: &Refused) -> std::io::Result<()> {
    let bytes = refusal_bytes(refused.denied, refused.retry_after, refused.body.as_deref());
    let write = async {
        io.write_all(&bytes).await?;
        io.shutdown().await
    };
    tokio::time::timeout(REFUSAL_WRITE_LIMIT, write).await.unwrap_or(Ok(()))
}

/// A handshake that passed every check, with its upstream open.
struct Accepted {
    route: Arc<crate::config::Route>,
    claims: crate::auth::Claims,
    lease: Lease,
    dialed: upstream::Dialed,
    selected: Option<String>,
    token_source: &'static str,
    accept_key: [u8; 28],
}

/// The handshake stages of docs/protocol.md, in their order.
async fn negotiate(
    entry: &Entry,
    policy: &Policy,
    req: &Request,
    attempt: &mut Attempt<'_>,
    route: Option<&Arc<crate::config::Route>>,
) -> Result<Accepted, Refused> {
    let gw = &entry.gateway;
    let headers = req.headers();
    let ip = attempt.ip;
    // 1–2: draining, global cap, per-IP handshake rate.
    gw.admit(ip)?;
    // 3: a valid RFC 6455 upgrade.
    check_upgrade(req.method(), req.version(), headers).map_err(|d| upgrade_refusal(d, headers))?;
    // 4: the route.
    let Some(route) = route else {
        attempt.route_path = None;
        return Err(Refused::new(Denied::NoRoute, ""));
    };
    // 5: origin. An Origin that is present but not readable is no allowed origin (never a
    // missing one); cookies are browser credentials, so a request carrying one must say
    // where it comes from, whatever the route's token sources.
    if attempt.origin.is_none() && attempt.origin_raw.is_some() {
        return Err(Refused::new(Denied::Origin, "origin not visible ascii"));
    }
    if attempt.origin.is_none() && headers.contains_key(header::COOKIE) {
        return Err(Refused::new(Denied::Origin, "cookie without origin"));
    }
    if route.origins.check(attempt.origin) == OriginVerdict::Refused {
        return Err(Refused::new(Denied::Origin, ""));
    }
    // 5b: a subprotocol offer the gateway can answer (a 101 without Sec-WebSocket-Protocol
    // after a non-empty offer is failed by browsers).
    let protocols = header_values(headers, header::SEC_WEBSOCKET_PROTOCOL);
    let selected = select_subprotocol(&protocols, &route.subprotocols).map(str::to_string);
    if selected.is_none() && headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        return Err(Refused::new(Denied::Subprotocol, "").with_body(subprotocol_refusal(&route.subprotocols)));
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
        Ok(None) => return Err(Refused::new(Denied::MissingToken, "no token in the route's token sources")),
        Err(TokenProblem::Multiple) => return Err(Refused::new(Denied::MultipleTokens, "")),
        Err(TokenProblem::Oversized) => return Err(Refused::new(Denied::InvalidToken, "oversized")),
        Err(TokenProblem::Empty) => return Err(Refused::new(Denied::InvalidToken, "empty")),
    };
    let mut verified = jwt::verify(token, &policy.keys, auth, SystemTime::now());
    if let (Err(AuthError::Invalid("unknown_kid")), Some(jwks)) = (&verified, &gw.jwks) {
        // Perhaps the IdP rotated its keys: one bounded, rate-limited look at its JWKS.
        if jwks.refetch_for_unknown_kid(auth.jwks_timeout).await {
            verified = jwt::verify(token, &gw.policy().keys, auth, SystemTime::now());
        }
    }
    let claims = match verified {
        Ok(c) => c,
        Err(AuthError::Expired) => return Err(Refused::new(Denied::ExpiredToken, source.name())),
        Err(AuthError::Invalid(why)) => return Err(Refused::new(Denied::InvalidToken, why)),
        Err(_) => return Err(Refused::new(Denied::InvalidToken, "verification failed")),
    };
    attempt.subject = Some(claims.sub.clone());
    attempt.jti.clone_from(&claims.jti);
    if gw.revocations.revokes(&claims, unix_now()) {
        return Err(Refused::new(Denied::Revoked, ""));
    }
    // 7: connect scope.
    if let Some(scope) = &route.connect_scope {
        if !claims.has_scope(scope) {
            return Err(Refused::new(Denied::ConnectScope, ""));
        }
    }
    // 8: per-IP / per-subject / global caps.
    let lease = gw.admission.acquire(ip, &claims.sub)?;
    // 9: the upstream.
    let identity = Identity { subject: &claims.sub, scopes: &claims.scopes, client_ip: ip };
    let timeout = policy.config.timeouts.upstream_connect;
    let dialed = upstream::dial(&entry.client_for(route), route, &identity, selected.as_deref(), timeout)
        .await
        .map_err(|(denied, detail)| {
            m::upstream_error(if denied == Denied::UpstreamTimeout { "connect_timeout" } else { "connect_failed" });
            Refused::new(denied, detail)
        })?;
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

/// Queue the 101 and start the session on this worker.
fn start_session(
    gw: &Arc<Gateway>,
    policy: &Policy,
    attempt: &Attempt<'_>,
    a: Accepted,
    io: Box<dyn Io>,
    read_ahead: BytesMut,
) {
    let id = a.lease.id;
    let mut head = BytesMut::with_capacity(256);
    head.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ",
    );
    head.extend_from_slice(&a.accept_key);
    if let Some(p) = &a.selected {
        head.extend_from_slice(b"\r\nsec-websocket-protocol: ");
        head.extend_from_slice(p.as_bytes());
    }
    head.extend_from_slice(format!("\r\nx-wsgate-connection-id: {id}\r\n\r\n").as_bytes());
    m::handshake(&a.route.path, "accepted", attempt.started.elapsed());
    let (origin, user_agent) = (attempt.origin_log().into_owned(), attempt.user_agent_log().into_owned());
    tracing::info!(event = "connection_opened", conn_id = id, route = %a.route.path, client_ip = %attempt.ip, origin = origin.as_str(), user_agent = user_agent.as_str(), token_source = a.token_source, subprotocol = &*log_text(a.selected.as_deref().unwrap_or("").as_bytes()));
    let params = SessionParams {
        lease: a.lease,
        route: a.route,
        config: Arc::clone(&policy.config),
        gateway: Arc::clone(gw),
        claims: a.claims,
        client_ip: attempt.ip,
        origin: attempt.origin_raw.map(|_| origin),
        user_agent: attempt.user_agent_raw.map(|_| user_agent),
    };
    let client = Side::new(io, read_ahead, head);
    let upstream = Side::new(Box::new(a.dialed.io), a.dialed.read_ahead, BytesMut::new());
    actix::Actor::start(WsSession::new(params, client, upstream));
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
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_10, &h), Err(Denied::BadUpgrade));
        assert_eq!(check_upgrade(&Method::POST, Version::HTTP_11, &h), Err(Denied::BadUpgrade));
        let mut bad = OK.to_vec();
        bad[0] = ("upgrade", "notwebsocket");
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_11, &headers(&bad)), Err(Denied::BadUpgrade));
        let mut dup = OK.to_vec();
        dup.push(("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_11, &headers(&dup)), Err(Denied::BadUpgrade));
        let mut body = OK.to_vec();
        body.push(("content-length", "5"));
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_11, &headers(&body)), Err(Denied::BadUpgrade));
        let mut short = OK.to_vec();
        short[2] = ("sec-websocket-key", "c2hvcnQ=");
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_11, &headers(&short)), Err(Denied::BadUpgrade));
    }

    #[test]
    fn headers_that_must_appear_once_and_connection_close_are_refused() {
        for name in ["origin", "host", "sec-websocket-key", "sec-websocket-version", "upgrade", "authorization"] {
            let mut h = OK.to_vec();
            h.push((name, "x"));
            h.push((name, "x"));
            assert_eq!(check_upgrade(&Method::GET, Version::HTTP_11, &headers(&h)), Err(Denied::BadUpgrade), "{name}");
            let body = upgrade_refusal(Denied::BadUpgrade, &headers(&h)).body.expect("a body naming the header");
            assert!(body.to_ascii_lowercase().contains(name), "{body}");
        }
        let no_host: Vec<_> = OK.iter().copied().filter(|(k, _)| *k != "host").collect();
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_11, &headers(&no_host)), Err(Denied::BadUpgrade));
        for connection in ["close, Upgrade", "Upgrade, close", "upgrade,CLOSE", "keep-alive"] {
            let mut h = OK.to_vec();
            h[1] = ("connection", connection);
            assert_eq!(
                check_upgrade(&Method::GET, Version::HTTP_11, &headers(&h)),
                Err(Denied::BadUpgrade),
                "{connection}"
            );
        }
        let mut two_lines = OK.to_vec();
        two_lines.push(("connection", "close"));
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_11, &headers(&two_lines)), Err(Denied::BadUpgrade));
    }

    #[test]
    fn a_revoked_token_is_answered_like_an_invalid_one() {
        assert_eq!(refusal_bytes(Denied::Revoked, None, None), refusal_bytes(Denied::InvalidToken, None, None));
    }

    #[test]
    fn another_version_gets_426() {
        let mut v = OK.to_vec();
        v[3] = ("sec-websocket-version", "8");
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_11, &headers(&v)), Err(Denied::UnsupportedVersion));
        let resp = refusal_response(Denied::UnsupportedVersion, None, None);
        assert_eq!(resp.status().as_u16(), 426);
        assert_eq!(resp.headers().get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()), Some(&b"13"[..]));
    }

    #[test]
    fn refusals_on_the_wire_are_complete_responses() {
        let bytes = refusal_bytes(Denied::HandshakeRate, Some(Duration::from_millis(1500)), None);
        let text = String::from_utf8(bytes).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{head}");
        assert!(head.contains("\r\nretry-after: 2"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())), "{head}");
        let text = String::from_utf8(refusal_bytes(Denied::InvalidToken, None, None)).expect("ascii");
        assert!(text.contains("www-authenticate: Bearer realm=\"wsgate\", error=\"invalid_token\"\r\n"), "{text}");
    }
}
