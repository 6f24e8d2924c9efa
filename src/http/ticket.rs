//! The ticket endpoint on the public listener (`POST /v1/ws-ticket`, with `[tickets]`): a
//! browser that holds a JWT trades it for a one-time ticket to put in the WebSocket URL, so the
//! long-lived token never appears in a URL, a history or a log.
//!
//! In order: admission (draining, global cap, the IP's handshake rate, as for a handshake),
//! the method (`OPTIONS` is the CORS preflight), the body (at most [`MAX_BODY_BYTES`], empty
//! or `{"route": "<path>"}`), the route (it must list the `ticket` source), the `Origin`
//! (the route's allowlist), the token (`Authorization: Bearer` only: a cookie is never a
//! credential here, so a cross-site page cannot mint a ticket with the browser's cookies),
//! verified like a handshake's (keys, algorithms, claims, revocation), the route's connect
//! scope, then the subject's limits and the store. Refusals answer what the handshake would
//! (401/403/429/503) or the endpoint's own (`TicketRefusal`).
//!
//! CORS: `Access-Control-Allow-Origin` only ever echoes an `Origin` the route (for the
//! preflight: some ticket route) allows, never `*`, never with credentials allowed; a foreign
//! page's preflight is refused, so its script never sends the request nor reads an answer.
//!
//! Owns: the endpoint's order and answers. Does not own: the verification (`handshake.rs`),
//! the ticket (`auth::ticket`), the store (`store::tickets`).

use std::net::IpAddr;
use std::time::Duration;

use actix_http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_http::{BoxedPayloadStream, HttpMessage, Method, Payload, Request, Response, StatusCode};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::Deserialize;

use super::handshake::{header_values, verify_jwt, EntryHandles};
use super::refusal::refusal_headers;
use crate::auth::ticket::{Ticket, TicketRecord};
use crate::auth::{unix_now, Claims};
use crate::config::{Route, Tickets};
use crate::error::{HandshakeRefusal, TicketRefusal};
use crate::log_text::log_text;
use crate::metrics as m;
use crate::policy::origin::OriginVerdict;
use crate::policy::token_source::{extract_token, TokenCarriers, TokenProblem, TokenSource};
use crate::state::Policy;
use crate::store::tickets::{IssueLimits, IssueRefusal};

/// Largest request body accepted: `{"route": "..."}` needs a few dozen bytes.
pub const MAX_BODY_BYTES: usize = 1024;

/// How long a browser may cache an allowed preflight.
const PREFLIGHT_MAX_AGE: &str = "600";

/// `Retry-After` while the ticket store cannot take a ticket.
const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(2);

/// The optional request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    /// The route the ticket is for (default: the only route that accepts tickets).
    route: Option<String>,
}

/// A refusal on its way out: why, a log detail, `Retry-After`.
struct Refused {
    why: TicketRefusal,
    detail: String,
    retry_after: Option<Duration>,
}

impl Refused {
    fn new(why: TicketRefusal, detail: impl Into<String>) -> Self {
        Self { why, detail: detail.into(), retry_after: None }
    }

    fn after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

impl From<super::refusal::Refused> for Refused {
    fn from(r: super::refusal::Refused) -> Self {
        Self { why: TicketRefusal::Handshake(r.denied), detail: r.detail, retry_after: r.retry_after }
    }
}

/// What the log needs to know about one request.
struct IssueAttempt<'a> {
    ip: IpAddr,
    /// The `Origin` as the policy reads it (`None`: absent or not visible ASCII).
    origin: Option<&'a str>,
    origin_raw: Option<&'a [u8]>,
    /// The origin CORS headers may echo (allowed for the route, or before the route is known
    /// for some ticket route).
    cors: Option<&'a str>,
    route: Option<String>,
    subject: Option<String>,
    jti: Option<String>,
}

/// Answer one request to the ticket endpoint from client `ip`.
pub(crate) async fn serve(
    gw: &EntryHandles,
    policy: &Policy,
    tickets: &Tickets,
    mut req: Request,
    ip: IpAddr,
) -> Response<String> {
    let mut payload = req.take_payload();
    let headers = req.headers();
    let repeated = [header::ORIGIN, header::AUTHORIZATION].iter().any(|n| headers.get_all(n).nth(1).is_some());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let cors = origin.filter(|o| !repeated && some_ticket_route_allows(policy, o));
    let mut r = IssueAttempt {
        ip,
        origin,
        origin_raw: headers.get(header::ORIGIN).map(HeaderValue::as_bytes),
        cors,
        route: None,
        subject: None,
        jti: None,
    };
    let answer = match gw.admit(ip).await {
        Err(refusal) => Err(Refused::from(super::refusal::Refused::from(refusal))),
        // Two parsers could read two different requests: one credential, one origin, or none.
        Ok(_) if repeated => Err(Refused::new(
            TicketRefusal::Handshake(HandshakeRefusal::BadRequest),
            "repeated Origin or Authorization",
        )),
        Ok(_) => match *req.method() {
            Method::OPTIONS => preflight(headers, &r).map(|()| preflight_answer(r.cors)),
            Method::POST => issue(gw, policy, tickets, headers, &mut payload, &mut r).await,
            _ => Err(Refused::new(TicketRefusal::Method, "")),
        },
    };
    match answer {
        Ok(resp) => resp,
        Err(refused) => {
            log_refused(&r, &refused);
            m::ticket("refused");
            refusal(&refused, r.cors)
        }
    }
}

fn some_ticket_route_allows(policy: &Policy, origin: &str) -> bool {
    policy.config.ticket_routes().any(|route| route.origins.check(Some(origin)) == OriginVerdict::Allowed)
}

/// The CORS preflight: only from an origin some ticket route allows, only for `POST`.
fn preflight(headers: &HeaderMap, r: &IssueAttempt<'_>) -> Result<(), Refused> {
    if r.cors.is_none() {
        return Err(Refused::new(TicketRefusal::Preflight, "origin"));
    }
    // A preflight names the method it asks for; only POST is ever allowed.
    let method = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD).map(HeaderValue::as_bytes);
    if method != Some(b"POST".as_slice()) {
        return Err(Refused::new(TicketRefusal::Preflight, "method"));
    }
    Ok(())
}

fn preflight_answer(origin: Option<&str>) -> Response<String> {
    let mut resp = Response::with_body(StatusCode::NO_CONTENT, String::new());
    let h = resp.headers_mut();
    cors_headers(h, origin);
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE));
    resp
}

/// `Access-Control-Allow-Origin` for an allowed origin (never `*`, never credentials), and
/// `Vary: Origin` always (the answer depends on it).
fn cors_headers(h: &mut HeaderMap, origin: Option<&str>) {
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    if let Some(value) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        // A page reads how long to wait after a 429 or 503, and why a 401 was answered.
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after, www-authenticate"));
    }
}

/// `POST`: the checks in the module's order, then the ticket.
async fn issue(
    gw: &EntryHandles,
    policy: &Policy,
    tickets: &Tickets,
    headers: &HeaderMap,
    payload: &mut Payload<BoxedPayloadStream>,
    r: &mut IssueAttempt<'_>,
) -> Result<Response<String>, Refused> {
    let body = read_body(headers, payload, policy.config.timeouts.handshake).await?;
    let route = pick_route(policy, &body)?;
    r.route = Some(route.path.clone());
    r.cors = r.origin.filter(|o| route.origins.check(Some(o)) == OriginVerdict::Allowed);
    if r.origin.is_none() && r.origin_raw.is_some() {
        return Err(Refused::new(TicketRefusal::Handshake(HandshakeRefusal::Origin), "origin not visible ascii"));
    }
    if route.origins.check(r.origin) == OriginVerdict::Refused {
        return Err(Refused::new(TicketRefusal::Handshake(HandshakeRefusal::Origin), ""));
    }
    let claims = verified_claims(gw, policy, headers, r).await?;
    if let Some(scope) = &route.connect_scope {
        if !claims.has_scope(scope) {
            return Err(Refused::new(TicketRefusal::Handshake(HandshakeRefusal::ConnectScope), ""));
        }
    }
    let ticket = Ticket::generate().map_err(|e| Refused::new(TicketRefusal::Unavailable, e.to_string()))?;
    let bound = tickets.bind_client_ip.then_some(r.ip);
    let record = TicketRecord::new(&claims, &route.path, r.origin, bound, unix_now());
    let limits = IssueLimits {
        ttl: tickets.ttl,
        per_minute: tickets.issue_per_minute,
        max_outstanding: tickets.max_outstanding,
    };
    gw.tickets.issue(ticket.key(), &record, limits).await.map_err(|refusal| match refusal {
        IssueRefusal::Rate { retry_after } => Refused::new(TicketRefusal::Rate, "").after(retry_after),
        IssueRefusal::Outstanding => Refused::new(TicketRefusal::Outstanding, "").after(tickets.ttl),
        IssueRefusal::Unavailable(e) => Refused::new(TicketRefusal::Unavailable, e).after(UNAVAILABLE_RETRY_AFTER),
    })?;
    m::ticket("issued");
    tracing::info!(
        event = "ticket_issued",
        route = %route.path,
        client_ip = %r.ip,
        origin = &*log_text(r.origin_raw.unwrap_or_default()),
        subject = &*log_text(claims.sub.as_bytes()),
        jti = &*log_text(claims.jti.as_deref().unwrap_or("").as_bytes()),
        expires_in = tickets.ttl.as_secs(),
        bound_to_ip = tickets.bind_client_ip,
    );
    Ok(issued(&ticket, tickets.ttl, r.cors))
}

/// The body, bounded in size and time.
async fn read_body(
    headers: &HeaderMap,
    payload: &mut Payload<BoxedPayloadStream>,
    limit: Duration,
) -> Result<BytesMut, Refused> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).map(str::parse::<u64>);
    match declared {
        Some(Ok(n)) if n > MAX_BODY_BYTES as u64 => return Err(Refused::new(TicketRefusal::BodyTooLarge, "declared")),
        // actix-http refuses a malformed Content-Length before we see it; be strict anyway.
        Some(Err(_)) => return Err(Refused::new(TicketRefusal::BadBody, "content-length")),
        _ => {}
    }
    let read = async {
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| Refused::new(TicketRefusal::BadBody, e.to_string()))?;
            if body.len().saturating_add(chunk.len()) > MAX_BODY_BYTES {
                return Err(Refused::new(TicketRefusal::BodyTooLarge, "streamed"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(limit, read).await.unwrap_or_else(|_| Err(Refused::new(TicketRefusal::BodyTimeout, "")))
}

/// The route named in `body`, or the only route that accepts tickets.
fn pick_route<'p>(policy: &'p Policy, body: &[u8]) -> Result<&'p Route, Refused> {
    let named = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<IssueBody>(body)
            .map_err(|e| Refused::new(TicketRefusal::BadBody, format!("json: {:?}", e.classify())))?
            .route
    };
    match named {
        Some(path) => policy
            .config
            .route(&path)
            .filter(|route| route.accepts_tickets())
            .map(|route| route.as_ref())
            .ok_or_else(|| Refused::new(TicketRefusal::UnknownRoute, "")),
        None => {
            let mut routes = policy.config.ticket_routes();
            match (routes.next(), routes.next()) {
                (Some(only), None) => Ok(only.as_ref()),
                (None, _) => Err(Refused::new(TicketRefusal::UnknownRoute, "no ticket route")),
                (Some(_), Some(_)) => Err(Refused::new(TicketRefusal::RouteRequired, "")),
            }
        }
    }
}

/// The bearer token of the `Authorization` header (the only source here), verified and not
/// revoked.
async fn verified_claims(
    gw: &EntryHandles,
    policy: &Policy,
    headers: &HeaderMap,
    r: &mut IssueAttempt<'_>,
) -> Result<Claims, Refused> {
    let authorization = header_values(headers, header::AUTHORIZATION);
    let carriers = TokenCarriers { authorization: &authorization, ..TokenCarriers::default() };
    let handshake = |denied, detail: &str| Refused::new(TicketRefusal::Handshake(denied), detail);
    let token = match extract_token(&[TokenSource::Header], &carriers, "", "") {
        Ok(Some((token, _))) => token,
        Ok(None) => return Err(handshake(HandshakeRefusal::MissingToken, "no bearer token")),
        Err(TokenProblem::Multiple) => return Err(handshake(HandshakeRefusal::MultipleTokens, "")),
        Err(TokenProblem::Oversized) => return Err(handshake(HandshakeRefusal::InvalidToken, "oversized")),
        Err(TokenProblem::Empty) => return Err(handshake(HandshakeRefusal::InvalidToken, "empty")),
    };
    let claims = verify_jwt(gw, policy, token, TokenSource::Header).await?;
    r.subject = Some(claims.sub.clone());
    r.jti.clone_from(&claims.jti);
    if gw.session.revocations.check(&claims, unix_now()) {
        return Err(handshake(HandshakeRefusal::Revoked, ""));
    }
    Ok(claims)
}

/// `200 {"ticket": ..., "expires_in": ...}`, never cached.
fn issued(ticket: &Ticket, ttl: Duration, cors: Option<&str>) -> Response<String> {
    let body = serde_json::json!({"ticket": ticket.expose(), "expires_in": ttl.as_secs()}).to_string();
    let mut resp = Response::with_body(StatusCode::OK, body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(h);
    cors_headers(h, cors);
    resp
}

fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

/// A refusal: its status and fixed text, `WWW-Authenticate` and `Retry-After` as a handshake
/// refusal has them, `Allow` for a wrong method, CORS for an allowed origin (so the page can
/// read why), and no keep-alive.
fn refusal(refused: &Refused, cors: Option<&str>) -> Response<String> {
    let mut resp = Response::with_body(refused.why.status(), format!("{}\n", refused.why.client_text()));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    no_store(h);
    cors_headers(h, cors);
    let extra = match refused.why {
        TicketRefusal::Handshake(denied) => refusal_headers(denied, refused.retry_after),
        _ => refused
            .retry_after
            .map(|wait| vec![("retry-after", wait.as_secs_f64().ceil().max(1.0).to_string())])
            .unwrap_or_default(),
    };
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), value);
        }
    }
    if refused.why == TicketRefusal::Method {
        h.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    }
    resp.head_mut().set_connection_type(actix_http::ConnectionType::Close);
    resp
}

fn log_refused(r: &IssueAttempt<'_>, refused: &Refused) {
    tracing::warn!(
        event = "ticket_refused",
        reason = refused.why.reason(),
        status = refused.why.status().as_u16(),
        detail = refused.detail.as_str(),
        route = r.route.as_deref().unwrap_or(m::NO_ROUTE),
        client_ip = %r.ip,
        origin = &*log_text(r.origin_raw.unwrap_or_default()),
        subject = &*log_text(r.subject.as_deref().unwrap_or("").as_bytes()),
        jti = &*log_text(r.jti.as_deref().unwrap_or("").as_bytes()),
    );
}
