//! The public WebSocket entry: the handshake policy of DESIGN.md §1, in its order (cheapest
//! first), then the upgrade into a [`WsSession`].
//!
//! Every refusal is answered with its HTTP status and a short fixed body, counted in
//! `wsgate_handshakes_total{result}` and logged once with client IP, route, origin, user agent
//! and reason — never the token (nor the query string, which may carry one).

use std::cell::Cell;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use actix_http::header::{self, HeaderMap, HeaderValue};
use actix_http::{Method, Version};
use actix_web::error::PayloadError;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::WsResponseBuilder;
use base64::Engine;
use bytes::Bytes;
use futures_util::Stream;

use crate::actors::messages::{Acquire, Admit, Refusal};
use crate::actors::registry::Lease;
use crate::actors::session::{SessionParams, WsSession};
use crate::app::Gateway;
use crate::auth::{jwt, AuthError};
use crate::error::Denied;
use crate::metrics::{self as m, NO_ROUTE};
use crate::policy::framing::{FrameGuard, FrameViolation};
use crate::policy::origin::OriginVerdict;
use crate::policy::token_source::{extract_token, select_subprotocol, TokenCarriers};
use crate::upstream::{self, Identity};

/// The upstream WebSocket client of one worker thread (awc's client is `!Send`).
pub struct UpstreamClient(pub awc::Client);

impl UpstreamClient {
    /// A client whose connector applies `connect_timeout` and has no pool limit (each
    /// upgraded connection is owned by its session, never pooled).
    pub fn new(connect_timeout: Duration) -> Self {
        let connector = awc::Connector::new().timeout(connect_timeout).limit(0);
        Self(awc::Client::builder().connector(connector).timeout(connect_timeout).finish())
    }
}

/// What the log and metrics need to know about a handshake.
struct Attempt<'a> {
    started: Instant,
    ip: IpAddr,
    route_path: Option<&'a str>,
    path: &'a str,
    origin: Option<&'a str>,
    user_agent: Option<&'a str>,
}

impl Attempt<'_> {
    fn route_label(&self) -> &str {
        self.route_path.unwrap_or(NO_ROUTE)
    }

    /// Answer, count and log a refusal.
    fn refuse(&self, denied: Denied, detail: &str, retry_after: Option<Duration>) -> HttpResponse {
        m::handshake(self.route_label(), denied.reason(), self.started.elapsed());
        tracing::warn!(
            event = "handshake_refused",
            reason = denied.reason(),
            status = denied.status().as_u16(),
            detail,
            route = self.route_label(),
            path = self.path,
            client_ip = %self.ip,
            origin = self.origin.unwrap_or(""),
            user_agent = self.user_agent.unwrap_or(""),
        );
        refusal_response(denied, retry_after)
    }
}

fn refusal_response(denied: Denied, retry_after: Option<Duration>) -> HttpResponse {
    let mut resp = HttpResponse::build(denied.status());
    // A refused client gets no keep-alive: its next attempt pays the admission checks again
    // and an idle refused connection holds nothing here.
    resp.content_type("text/plain; charset=utf-8").force_close();
    match denied {
        Denied::UnsupportedVersion => {
            resp.insert_header((header::SEC_WEBSOCKET_VERSION, "13"));
        }
        Denied::MissingToken => {
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"wsgate\""));
        }
        Denied::InvalidToken => {
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"wsgate\", error=\"invalid_token\""));
        }
        Denied::ExpiredToken => {
            resp.insert_header((
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"wsgate\", error=\"invalid_token\", error_description=\"token expired\"",
            ));
        }
        Denied::ConnectScope => {
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"wsgate\", error=\"insufficient_scope\""));
        }
        _ => {}
    }
    if let Some(wait) = retry_after {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        resp.insert_header((header::RETRY_AFTER, secs.to_string()));
    }
    resp.body(format!("{}\n", denied.client_text()))
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

/// RFC 6455 §4.2.1 checks, done here because actix accepts HTTP/1.0 upgrades, a wrong
/// `Upgrade` token, duplicate keys and upgrade requests with a body.
pub fn check_upgrade(method: &Method, version: Version, headers: &HeaderMap) -> Result<(), Denied> {
    if method != Method::GET || version != Version::HTTP_11 {
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

/// `GET <route>`: the handshake policy, then the upgrade.
pub async fn entry(req: HttpRequest, payload: web::Payload, gw: web::Data<Gateway>) -> HttpResponse {
    let headers = req.headers();
    let Some(ip) = req.peer_addr().map(|a| a.ip()) else {
        return refusal_response(Denied::Internal, None);
    };
    let route = gw.config.route(req.path()).cloned();
    let mut attempt = Attempt {
        started: Instant::now(),
        ip,
        route_path: route.as_ref().map(|r| r.path.as_str()),
        path: req.path(),
        origin: header_str(headers, header::ORIGIN),
        user_agent: header_str(headers, header::USER_AGENT),
    };
    // 1–2: global cap, per-IP handshake rate.
    match gw.registry.send(Admit { ip }).await {
        Ok(Ok(())) => {}
        Ok(Err(Refusal { denied, retry_after })) => return attempt.refuse(denied, "", retry_after),
        Err(_) => return attempt.refuse(Denied::Overloaded, "registry unavailable", Some(Duration::from_secs(1))),
    }
    // 3: a valid RFC 6455 upgrade.
    if let Err(denied) = check_upgrade(req.method(), req.version(), headers) {
        return attempt.refuse(denied, "", None);
    }
    // 4: the route.
    let Some(route) = route.as_ref() else {
        attempt.route_path = None;
        return attempt.refuse(Denied::NoRoute, "", None);
    };
    // 5: origin.
    if route.origins.check(attempt.origin) == OriginVerdict::Refused {
        return attempt.refuse(Denied::Origin, "", None);
    }
    // 6: token.
    let auth = &gw.config.auth;
    let authorization = header_values(headers, header::AUTHORIZATION);
    let protocols = header_values(headers, header::SEC_WEBSOCKET_PROTOCOL);
    let cookies = header_values(headers, header::COOKIE);
    let carriers = TokenCarriers {
        authorization: &authorization,
        protocols: &protocols,
        cookies: &cookies,
        query: req.query_string(),
    };
    let Some((token, source)) = extract_token(&route.token_sources, &carriers, &auth.cookie_name, &auth.query_param)
    else {
        return attempt.refuse(Denied::MissingToken, "no token in the route's token sources", None);
    };
    let claims = match jwt::verify(token, &gw.keys, auth, SystemTime::now()) {
        Ok(c) => c,
        Err(AuthError::Expired) => return attempt.refuse(Denied::ExpiredToken, source.name(), None),
        Err(AuthError::Invalid(why)) => return attempt.refuse(Denied::InvalidToken, why, None),
        Err(_) => return attempt.refuse(Denied::InvalidToken, "verification failed", None),
    };
    // 7: connect scope.
    if let Some(scope) = &route.connect_scope {
        if !claims.has_scope(scope) {
            return attempt.refuse(Denied::ConnectScope, "", None);
        }
    }
    // 8: per-IP / per-subject / global caps.
    let id = match gw.registry.send(Acquire { ip, subject: claims.sub.clone() }).await {
        Ok(Ok(id)) => id,
        Ok(Err(Refusal { denied, retry_after })) => return attempt.refuse(denied, "", retry_after),
        Err(_) => return attempt.refuse(Denied::Overloaded, "registry unavailable", Some(Duration::from_secs(1))),
    };
    let lease = Lease::new(gw.registry.clone(), id, ip, claims.sub.clone());
    // 9: the upstream.
    let selected = select_subprotocol(&protocols, &route.subprotocols).map(str::to_string);
    let Some(client) = req.app_data::<UpstreamClient>() else {
        return attempt.refuse(Denied::Internal, "no upstream client", None);
    };
    let identity = Identity { subject: &claims.sub, scopes: &claims.scopes, client_ip: ip };
    let limits = &gw.config.limits;
    let timeout = Duration::from_secs(gw.config.timeouts.upstream_connect_seconds);
    let dialed =
        match upstream::dial(&client.0, route, &identity, selected.as_deref(), limits.max_message_bytes, timeout).await
        {
            Ok(d) => d,
            Err((denied, detail)) => return attempt.refuse(denied, &detail, None),
        };
    let guard_verdict = Rc::new(Cell::new(None));
    let payload = GuardedPayload {
        inner: payload,
        guard: FrameGuard::new(limits.max_message_bytes),
        verdict: Rc::clone(&guard_verdict),
        failed: false,
    };
    let params = SessionParams {
        lease,
        route: Arc::clone(route),
        config: Arc::clone(&gw.config),
        keys: Arc::clone(&gw.keys),
        claims,
        client_ip: ip,
        origin: attempt.origin.map(str::to_string),
        user_agent: attempt.user_agent.map(str::to_string),
        guard_verdict,
    };
    let session = WsSession::new(params, dialed.framed);
    let offered: Vec<&str> = selected.iter().map(String::as_str).collect();
    let started =
        WsResponseBuilder::new(session, &req, payload).frame_size(limits.max_message_bytes).protocols(&offered).start();
    match started {
        Ok(mut resp) => {
            m::handshake(&route.path, "accepted", attempt.started.elapsed());
            tracing::info!(event = "connection_opened", conn_id = id, route = %route.path, client_ip = %ip, origin = attempt.origin.unwrap_or(""), user_agent = attempt.user_agent.unwrap_or(""), token_source = source.name(), subprotocol = selected.as_deref().unwrap_or(""));
            resp.headers_mut().insert(header::HeaderName::from_static("x-wsgate-connection-id"), HeaderValue::from(id));
            resp
        }
        Err(e) => attempt.refuse(Denied::BadUpgrade, &e.to_string(), None),
    }
}

/// The client's byte stream, watched by a [`FrameGuard`] before actix's codec buffers it.
struct GuardedPayload {
    inner: web::Payload,
    guard: FrameGuard,
    /// Shared with the session, which reads it to pick the close code.
    verdict: Rc<Cell<Option<FrameViolation>>>,
    failed: bool,
}

impl Stream for GuardedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match self.guard.feed(&chunk) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(v) => {
                    self.verdict.set(Some(v));
                    self.failed = true;
                    Poll::Ready(Some(Err(PayloadError::Overflow)))
                }
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_http::header::HeaderName;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    const OK: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
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
    fn another_version_gets_426() {
        let mut v = OK.to_vec();
        v[3] = ("sec-websocket-version", "8");
        assert_eq!(check_upgrade(&Method::GET, Version::HTTP_11, &headers(&v)), Err(Denied::UnsupportedVersion));
        let resp = refusal_response(Denied::UnsupportedVersion, None);
        assert_eq!(resp.status().as_u16(), 426);
        assert_eq!(resp.headers().get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()), Some(&b"13"[..]));
    }
}
