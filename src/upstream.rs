//! The upstream side of a connection: dialing the backend WebSocket (before the client's 101,
//! so a dead backend is an HTTP 502/504 and never a socket that opens and then closes), and
//! the [`UpstreamReader`] actor that relays the backend's frames to the session.
//!
//! Why awc: it shares actix-http's frame and codec types with the client side, runs on the
//! worker's own event loop beside the session, and is mostly compiled already for actix-web.
//!
//! Why a separate reader actor: a session actor only runs when actix-web polls its response
//! body, which stops while the client is not reading. The reader keeps running, counts the
//! bytes waiting for the session ([`Backlog`]) and ends the upstream side with
//! `SlowConsumer` once they pass `outbound_buffer_bytes`, so memory stays bounded and the
//! client gets 4008 instead of the gateway buffering without limit.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, Context, Handler, Recipient, StreamHandler};
use actix_codec::Framed;
use actix_http::header::{HeaderName, HeaderValue};
use actix_http::ws::{Codec, Frame, ProtocolError};
use awc::error::{SendRequestError, WsClientError};
use awc::BoxedSocket;

use crate::actors::messages::{StopReading, UpstreamEnd, UpstreamEnded, UpstreamFrame};
use crate::config::Route;
use crate::error::Denied;

/// Identity headers added to the upstream request (DESIGN.md §4).
pub const SUBJECT_HEADER: &str = "x-wsgate-subject";
/// Space-separated scopes of the client's token.
pub const SCOPES_HEADER: &str = "x-wsgate-scopes";
/// The client's IP as the gateway saw it.
pub const CLIENT_IP_HEADER: &str = "x-wsgate-client-ip";

/// Who the client is, for the upstream.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    /// Token subject.
    pub subject: &'a str,
    /// Token scopes.
    pub scopes: &'a [String],
    /// Client IP.
    pub client_ip: IpAddr,
}

/// An open upstream WebSocket.
pub struct Dialed {
    /// The socket with actix-http's client codec.
    pub framed: Framed<BoxedSocket, Codec>,
    /// The subprotocol the upstream selected, if any.
    pub protocol: Option<String>,
}

/// Open the route's upstream WebSocket, asking for `protocol` and adding identity headers.
/// Only these headers are sent: nothing the client sent is forwarded, so client-made
/// `X-Wsgate-*` headers never reach the upstream.
///
/// # Errors
/// [`Denied::UpstreamTimeout`] past `timeout`; [`Denied::UpstreamFailed`] when the upstream is
/// unreachable or answers anything but `101` (the client then gets 502, never a 101 of ours).
pub async fn dial(
    client: &awc::Client,
    route: &Route,
    identity: &Identity<'_>,
    protocol: Option<&str>,
    max_message_bytes: usize,
    timeout: Duration,
) -> Result<Dialed, (Denied, String)> {
    let mut req = client.ws(route.upstream.as_str()).max_frame_size(max_message_bytes);
    if let Some(p) = protocol {
        req = req.protocols([p]);
    }
    if route.forward_identity {
        let scopes = identity.scopes.join(" ");
        for (name, value) in [
            (SUBJECT_HEADER, identity.subject.as_bytes()),
            (SCOPES_HEADER, scopes.as_bytes()),
            (CLIENT_IP_HEADER, identity.client_ip.to_string().as_bytes()),
        ] {
            let value = HeaderValue::from_bytes(value)
                .map_err(|_| (Denied::UpstreamFailed, format!("identity header {name} has an invalid value")))?;
            req = req.set_header(HeaderName::from_static(name), value);
        }
    }
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, req.connect()).await;
    crate::metrics::upstream_connect(started.elapsed());
    match result {
        Err(_) => Err((Denied::UpstreamTimeout, "upstream did not accept in time".into())),
        Ok(Err(WsClientError::SendRequest(SendRequestError::Timeout))) => {
            Err((Denied::UpstreamTimeout, "upstream did not accept in time".into()))
        }
        Ok(Err(e)) => Err((Denied::UpstreamFailed, upstream_error_detail(&e))),
        Ok(Ok((resp, framed))) => {
            let selected = resp
                .headers()
                .get(actix_http::header::SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if selected.is_some() && selected.as_deref() != protocol {
                return Err((Denied::UpstreamFailed, "upstream selected a subprotocol that was not offered".into()));
            }
            Ok(Dialed { framed, protocol: selected })
        }
    }
}

fn upstream_error_detail(e: &WsClientError) -> String {
    match e {
        WsClientError::InvalidResponseStatus(s) => format!("upstream answered {} instead of 101", s.as_u16()),
        WsClientError::SendRequest(e) => format!("upstream unreachable: {e}"),
        other => format!("upstream handshake failed: {other}"),
    }
}

/// Bytes relayed by the reader and not yet written by the session to its client.
#[derive(Debug, Clone, Default)]
pub struct Backlog(Arc<AtomicUsize>);

impl Backlog {
    /// Count `n` more bytes; returns the new total.
    pub fn add(&self, n: usize) -> usize {
        self.0.fetch_add(n, Ordering::AcqRel) + n
    }

    /// The session wrote `n` bytes to its client.
    pub fn sub(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Reads the upstream socket and relays frames to the session (see the module docs).
pub struct UpstreamReader {
    frames: Recipient<UpstreamFrame>,
    ended: Recipient<UpstreamEnded>,
    backlog: Backlog,
    /// `outbound_buffer_bytes`.
    limit: usize,
}

// === impl UpstreamReader ===

impl UpstreamReader {
    /// A reader relaying to a session through the two recipients.
    pub fn new(
        frames: Recipient<UpstreamFrame>,
        ended: Recipient<UpstreamEnded>,
        backlog: Backlog,
        limit: usize,
    ) -> Self {
        Self { frames, ended, backlog, limit }
    }

    fn end(&mut self, end: UpstreamEnd, ctx: &mut Context<Self>) {
        self.ended.do_send(UpstreamEnded { end });
        ctx.stop();
    }
}

impl Actor for UpstreamReader {
    type Context = Context<Self>;
}

/// Bytes a frame counts against the outbound buffer.
fn frame_size(frame: &Frame) -> usize {
    match frame {
        Frame::Text(b) | Frame::Binary(b) | Frame::Ping(b) | Frame::Pong(b) => b.len(),
        Frame::Continuation(item) => match item {
            actix_http::ws::Item::FirstText(b)
            | actix_http::ws::Item::FirstBinary(b)
            | actix_http::ws::Item::Continue(b)
            | actix_http::ws::Item::Last(b) => b.len(),
        },
        Frame::Close(_) => 0,
    }
}

impl StreamHandler<Result<Frame, ProtocolError>> for UpstreamReader {
    fn handle(&mut self, item: Result<Frame, ProtocolError>, ctx: &mut Context<Self>) {
        match item {
            Ok(frame) => {
                let size = frame_size(&frame);
                if self.backlog.add(size) > self.limit {
                    self.backlog.sub(size);
                    return self.end(UpstreamEnd::SlowConsumer, ctx);
                }
                let closing = matches!(frame, Frame::Close(_));
                self.frames.do_send(UpstreamFrame { frame, size });
                if closing {
                    ctx.stop();
                }
            }
            Err(ProtocolError::Overflow) => self.end(UpstreamEnd::TooBig, ctx),
            Err(_) => self.end(UpstreamEnd::Lost, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The stream ended without a close frame (a close frame stops the reader first).
        self.end(UpstreamEnd::Lost, ctx);
    }
}

impl Handler<StopReading> for UpstreamReader {
    type Result = ();

    fn handle(&mut self, _: StopReading, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A sink whose `poll_close` flushes first. actix-codec's `Framed::close` only flushes the
/// socket, not its own write buffer, so a close frame written just before closing would be
/// lost; this wrapper makes "write Close, then close" deliver the frame.
pub struct FlushOnClose<S>(pub S);

impl<S: futures_util::Sink<I> + Unpin, I> futures_util::Sink<I> for FlushOnClose<S> {
    type Error = S::Error;

    fn poll_ready(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        std::pin::Pin::new(&mut self.0).poll_ready(cx)
    }

    fn start_send(mut self: std::pin::Pin<&mut Self>, item: I) -> Result<(), S::Error> {
        std::pin::Pin::new(&mut self.0).start_send(item)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        std::task::ready!(std::pin::Pin::new(&mut self.0).poll_flush(cx))?;
        std::pin::Pin::new(&mut self.0).poll_close(cx)
    }
}
