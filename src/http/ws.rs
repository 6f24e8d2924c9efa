//! The public WebSocket entry's plumbing: actix-http's HTTP/1.1 service with an upgrade hook.
//! A request with `Upgrade: websocket` arrives as the request plus its raw connection
//! ([`upgrade`]): the handshake policy runs (`handshake.rs`), then either the refusal is
//! written to the socket or the 101 is queued and a [`WsSession`] owns both sockets. Anything
//! else gets the same admission checks and a refusal ([`plain`]), the ticket endpoint
//! (`ticket.rs`, with `[tickets]`), or the demo page.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_codec::Framed;
use actix_http::header;
use actix_http::{h1, HttpMessage, Method, Request, Response};
use actix_service::{fn_factory, fn_service, ServiceFactory};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

pub use super::handshake::{check_upgrade, EntryHandles, DRAIN_RETRY_AFTER};
use super::handshake::{client_ip, negotiate, upgrade_refusal, Accepted};
use super::refusal::{refusal_bytes, refusal_response, Attempt, Refused};
use crate::config::TICKET_ENDPOINT;
use crate::error::HandshakeRefusal;
use crate::http::accept::{Watch, Watched};
use crate::log_text::log_text;
use crate::metrics as m;
use crate::session::relay::{Io, Side};
use crate::session::{SessionParams, WsSession};
use crate::state::Policy;

/// Longest time spent writing a refusal to a client that does not read it.
const REFUSAL_WRITE_LIMIT: Duration = Duration::from_secs(5);

/// What the public listener's services share on one worker thread.
pub struct Entry {
    /// The shared state the handshake reads.
    pub handles: EntryHandles,
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
    pub fn new(handles: EntryHandles) -> Rc<Self> {
        Rc::new(Self { handles, upstream: upstream_client(None), secure: RefCell::new(Vec::new()) })
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

/// A request without `Upgrade: websocket` on the public listener: the ticket endpoint (with
/// `[tickets]`), else admission (so floods of plain requests are rate-limited like
/// handshakes), then `400` on a route's path (not an upgrade) and `404` anywhere else.
///
/// # Errors
/// Never; the signature is what actix-http's service wants.
pub async fn plain(entry: Rc<Entry>, req: Request) -> Result<Response<String>, actix_http::Error> {
    if let Some(watch) = req.conn_data::<Rc<Watch>>() {
        watch.served();
    }
    let gw = &entry.handles;
    if gw.demo_page && req.method() == Method::GET && req.path() == "/" {
        return Ok(demo_page());
    }
    let policy = gw.session.policy.load();
    let Some(ip) = client_ip(&req, &policy.config.trusted_proxies) else {
        return Ok(refusal_response(HandshakeRefusal::Internal, None, None));
    };
    if let (Some(tickets), TICKET_ENDPOINT) = (&policy.config.tickets, req.path()) {
        let tickets = tickets.clone();
        return Ok(super::ticket::serve(gw, &policy, &tickets, req, ip).await);
    }
    let route = policy.config.route(req.path());
    let attempt = Attempt::new(&req, ip, route.map(|r| r.path.as_str()));
    let refused = match gw.admit(ip).await {
        Ok(_) if route.is_none() => Refused::new(HandshakeRefusal::NoRoute, "not an upgrade"),
        Ok(_) => match check_upgrade(req.method(), req.version(), req.headers()) {
            Err(denied) => upgrade_refusal(denied, req.headers()),
            Ok(()) => Refused::new(HandshakeRefusal::BadUpgrade, "upgrade header not usable"),
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
    let gw = &entry.handles;
    let policy = gw.session.policy.load();
    let Some(ip) = client_ip(&req, &policy.config.trusted_proxies) else {
        let _ = write_refusal(&mut io, &Refused::new(HandshakeRefusal::Internal, "")).await;
        return Ok(());
    };
    let route = policy.config.route(req.path()).cloned();
    let mut attempt = Attempt::new(&req, ip, route.as_ref().map(|r| r.path.as_str()));
    let upstream_client = route.as_ref().map_or_else(|| entry.upstream.clone(), |r| entry.client_for(r));
    match negotiate(&entry.handles, &upstream_client, &policy, &req, &mut attempt, route.as_ref()).await {
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

/// Queue the 101 and start the session on this worker.
fn start_session(
    gw: &EntryHandles,
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
    match &gw.node {
        Some(node) => head.extend_from_slice(format!("\r\nx-wsgate-connection-id: {node}-{id}\r\n\r\n").as_bytes()),
        None => head.extend_from_slice(format!("\r\nx-wsgate-connection-id: {id}\r\n\r\n").as_bytes()),
    }
    m::handshake(&a.route.path, "accepted", attempt.started.elapsed());
    let (origin, user_agent) = (attempt.origin_log().into_owned(), attempt.user_agent_log().into_owned());
    tracing::info!(event = "connection_opened", conn_id = id, route = %a.route.path, client_ip = %attempt.ip, origin = origin.as_str(), user_agent = user_agent.as_str(), token_source = a.token_source, subprotocol = &*log_text(a.selected.as_deref().unwrap_or("").as_bytes()));
    let params = SessionParams {
        lease: a.lease,
        route: a.route,
        config: Arc::clone(&policy.config),
        handles: gw.session.clone(),
        claims: a.claims,
        client_ip: attempt.ip,
        origin: attempt.origin_raw.map(|_| origin),
        user_agent: attempt.user_agent_raw.map(|_| user_agent),
    };
    let client = Side::new(io, read_ahead, head);
    let upstream = Side::new(Box::new(a.dialed.io), a.dialed.read_ahead, BytesMut::new());
    actix::Actor::start(WsSession::new(params, client, upstream));
}
