//! `WsSession`: the connection actor, one per client (DESIGN.md §3).
//!
//! Owns, for the life of the connection: the client socket (actix-web-actors context), the
//! write half of the upstream socket, the token-expiry timers, the token buckets, the
//! violation window, the heartbeat and the fragment assembly. Decisions are made by the pure
//! functions of `policy/` and `auth/`; this file only sequences them and does the I/O.
//! Does not own: admission (registry), dialing (upstream.rs), reading the upstream (the
//! `UpstreamReader` it starts).

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::io::{SinkWrite, WriteHandler};
use actix::{Actor, ActorContext, AsyncContext, Handler, SpawnHandle, StreamHandler};
use actix_codec::Framed;
use actix_http::ws::{CloseCode, CloseReason, Codec, Frame, Item, Message, ProtocolError};
use actix_web_actors::ws::WebsocketContext;
use awc::BoxedSocket;
use bytes::BytesMut;
use bytestring::ByteString;
use futures_util::stream::{SplitSink, StreamExt};

use super::messages::{StopReading, UpstreamEnd, UpstreamEnded, UpstreamFrame};
use super::registry::Lease;
use crate::auth::keys::KeySet;
use crate::auth::{jwt, Claims};
use crate::config::{Config, Envelope, Route};
use crate::error::Denied;
use crate::metrics::{self as m, SessionMetrics};
use crate::policy::framing::FrameViolation;
use crate::policy::ratelimit::{optional_bucket, TokenBucket};
use crate::policy::validate::{self, Refused, Rejection, Verdict};
use crate::upstream::{Backlog, FlushOnClose, UpstreamReader};

/// Window over which rejected frames are counted towards `violations_before_close`.
const VIOLATION_WINDOW: Duration = Duration::from_secs(60);

/// Longest wait for the upstream close frame to be written before the session stops anyway.
const UPSTREAM_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Longest time one fragmented message may take to arrive completely.
const FRAGMENT_ASSEMBLY_LIMIT: Duration = Duration::from_secs(30);

type UpstreamSink = SinkWrite<Message, FlushOnClose<SplitSink<Framed<BoxedSocket, Codec>, Message>>>;

/// Everything a session is started with (built by the handshake handler).
pub struct SessionParams {
    /// The slot granted by the registry; its id is the connection id.
    pub lease: Lease,
    /// The route the client connected to.
    pub route: Arc<Route>,
    /// Config in force at the handshake (limits, timeouts, auth settings).
    pub config: Arc<Config>,
    /// Keys for `auth.refresh`.
    pub keys: Arc<KeySet>,
    /// The verified token's claims.
    pub claims: Claims,
    /// Client IP.
    pub client_ip: IpAddr,
    /// The request's `Origin`, for logs.
    pub origin: Option<String>,
    /// The request's `User-Agent`, for logs.
    pub user_agent: Option<String>,
    /// Set by the frame guard in front of the codec when it refuses the client's stream.
    pub guard_verdict: Rc<Cell<Option<FrameViolation>>>,
}

/// A fragmented client message being assembled.
struct Assembly {
    text: bool,
    buf: BytesMut,
    started: Instant,
    /// A fragment was over the rate limit: the whole message is refused when complete.
    rate_limited: bool,
}

/// The connection actor.
pub struct WsSession {
    p: SessionParams,
    metrics: SessionMetrics,
    /// The upstream socket until `started()` splits it.
    upstream: Option<Framed<BoxedSocket, Codec>>,
    upstream_sink: Option<UpstreamSink>,
    upstream_reader: Option<actix::Addr<UpstreamReader>>,
    backlog: Backlog,
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
    violations: VecDeque<Instant>,
    assembly: Option<Assembly>,
    /// Fragmented upstream message size so far (the upstream codec checks frames only).
    upstream_fragment_bytes: usize,
    expiry_timer: Option<SpawnHandle>,
    warning_timer: Option<SpawnHandle>,
    last_seen: Instant,
    opened: Instant,
    messages_in: u64,
    messages_out: u64,
    /// The client close frame waiting for the upstream close to be flushed.
    pending_client_close: Option<Option<CloseReason>>,
    /// Set once the session started closing; the reason label for the disconnect metric.
    closing: Option<&'static str>,
}

// === impl WsSession ===

impl WsSession {
    /// A session for an admitted client whose upstream is already open.
    pub fn new(p: SessionParams, upstream: Framed<BoxedSocket, Codec>) -> Self {
        let now = Instant::now();
        let l = &p.config.limits;
        let byte_burst = l.bytes_per_second.max(l.max_message_bytes as u64);
        Self {
            metrics: SessionMetrics::new(&p.route.path),
            messages: optional_bucket(u64::from(l.message_burst), u64::from(l.messages_per_second), now),
            bytes: optional_bucket(byte_burst, l.bytes_per_second, now),
            upstream: Some(upstream),
            upstream_sink: None,
            upstream_reader: None,
            backlog: Backlog::default(),
            violations: VecDeque::new(),
            assembly: None,
            upstream_fragment_bytes: 0,
            expiry_timer: None,
            warning_timer: None,
            last_seen: now,
            opened: now,
            messages_in: 0,
            messages_out: 0,
            pending_client_close: None,
            closing: None,
            p,
        }
    }

    fn id(&self) -> u64 {
        self.p.lease.id
    }

    /// Close the client with `denied`'s code and stop; the upstream gets 1001.
    fn close(&mut self, ctx: &mut WebsocketContext<Self>, denied: Denied) {
        self.close_with(ctx, denied.reason(), denied.close_code(), denied.client_text());
    }

    fn close_with(&mut self, ctx: &mut WebsocketContext<Self>, reason: &'static str, code: u16, text: &str) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(reason);
        let client = CloseReason { code: CloseCode::from(code), description: Some(text.to_string()) };
        let upstream = (reason != Denied::UpstreamLost.reason())
            .then_some(CloseReason { code: CloseCode::Away, description: None });
        self.shutdown(ctx, Some(client), upstream);
    }

    /// Close both sides. The upstream close frame goes first; the client's close follows once
    /// it is flushed (`WriteHandler::finished`), at the latest after [`UPSTREAM_CLOSE_GRACE`]:
    /// the client connection is what keeps this actor alive, so closing it first could drop
    /// the upstream's close frame. `upstream: None` skips the upstream close (it is gone).
    fn shutdown(
        &mut self,
        ctx: &mut WebsocketContext<Self>,
        client: Option<CloseReason>,
        upstream: Option<CloseReason>,
    ) {
        if let Some(reader) = self.upstream_reader.take() {
            reader.do_send(StopReading);
        }
        match (self.upstream_sink.as_mut(), upstream) {
            (Some(sink), Some(reason)) if !sink.closed() => {
                let _ = sink.write(Message::Close(Some(reason)));
                sink.close();
                self.pending_client_close = Some(client);
                ctx.run_later(UPSTREAM_CLOSE_GRACE, |s, ctx| s.finish(ctx));
            }
            _ => {
                self.upstream_sink = None;
                ctx.close(client);
                ctx.stop();
            }
        }
    }

    /// Send the client's pending close frame and stop.
    fn finish(&mut self, ctx: &mut WebsocketContext<Self>) {
        if let Some(client) = self.pending_client_close.take() {
            ctx.close(client);
        }
        ctx.stop();
    }

    /// (Re-)arm the warning and expiry timers from the current claims.
    fn arm_expiry(&mut self, ctx: &mut WebsocketContext<Self>) {
        for handle in [self.expiry_timer.take(), self.warning_timer.take()].into_iter().flatten() {
            ctx.cancel_future(handle);
        }
        let auth = &self.p.config.auth;
        let left = self.p.claims.time_left(auth.leeway, SystemTime::now());
        self.expiry_timer = Some(ctx.run_later(left, |s, ctx| {
            tracing::info!(event = "token_expired", conn_id = s.id(), route = %s.p.route.path, client_ip = %s.p.client_ip, subject = %s.p.claims.sub, jti = s.p.claims.jti.as_deref().unwrap_or(""), "session token expired");
            s.close(ctx, Denied::TokenExpired);
        }));
        let warning = auth.expiry_warning;
        if !warning.is_zero() {
            let at = left.saturating_sub(warning);
            self.warning_timer = Some(ctx.run_later(at, |s, ctx| s.send_expiring(ctx)));
        }
    }

    fn send_expiring(&mut self, ctx: &mut WebsocketContext<Self>) {
        let leeway = self.p.config.auth.leeway;
        let left = self.p.claims.time_left(leeway, SystemTime::now());
        let frame = serde_json::json!({
            self.p.route.type_field.as_str(): "auth.expiring",
            "payload": {"exp": self.p.claims.exp, "in_ms": left.as_millis() as u64},
        });
        ctx.text(frame.to_string());
    }

    fn start_heartbeat(&mut self, ctx: &mut WebsocketContext<Self>) {
        let t = &self.p.config.timeouts;
        let (ping, idle) = (Duration::from_secs(t.ping_interval_seconds), Duration::from_secs(t.idle_seconds));
        let tick = match (ping.is_zero(), idle.is_zero()) {
            (true, true) => return,
            (false, _) => ping,
            (true, false) => (idle / 2).max(Duration::from_secs(1)),
        };
        ctx.run_interval(tick, move |s, ctx| {
            if !idle.is_zero() && s.last_seen.elapsed() > idle {
                return s.close(ctx, Denied::Idle);
            }
            if !ping.is_zero() {
                ctx.ping(b"");
            }
        });
    }

    /// Count a rejected frame; close once `violations_before_close` are reached in the window.
    fn reject(&mut self, ctx: &mut WebsocketContext<Self>, rejection: Rejection, id: Option<&str>) {
        self.metrics.rejected(rejection);
        tracing::debug!(event = "frame_rejected", conn_id = self.id(), route = %self.p.route.path, code = rejection.code());
        ctx.text(validate::error_frame(rejection, id, &self.p.route.type_field));
        let limit = self.p.config.limits.violations_before_close as usize;
        if limit == 0 {
            return;
        }
        let now = Instant::now();
        self.violations.push_back(now);
        while self.violations.front().is_some_and(|t| now.duration_since(*t) > VIOLATION_WINDOW) {
            self.violations.pop_front();
        }
        if self.violations.len() >= limit {
            let denied =
                if rejection == Rejection::RateLimited { Denied::RateViolations } else { Denied::PolicyViolations };
            tracing::warn!(event = "violations_close", conn_id = self.id(), route = %self.p.route.path, client_ip = %self.p.client_ip, subject = %self.p.claims.sub, reason = denied.reason(), "closing after repeated rejected frames");
            self.close(ctx, denied);
        }
    }

    /// Charge one frame (and its bytes) to the buckets; false when over the limit.
    fn charge(&mut self, bytes: usize) -> bool {
        let now = Instant::now();
        let msg_ok = self.messages.as_mut().is_none_or(|b| b.try_take(1, now).is_ok());
        let bytes_ok = msg_ok && self.bytes.as_mut().is_none_or(|b| b.try_take(bytes as u64, now).is_ok());
        msg_ok && bytes_ok
    }

    /// A complete client data message: rate → JSON checks → forward (DESIGN.md §3 order).
    fn on_message(
        &mut self,
        ctx: &mut WebsocketContext<Self>,
        msg: Message,
        already_charged: bool,
        rate_limited: bool,
    ) {
        let started = Instant::now();
        let len = match &msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            _ => 0,
        };
        let charged_ok = if already_charged {
            self.bytes.as_mut().is_none_or(|b| b.try_take(len as u64, started).is_ok())
        } else {
            self.charge(len)
        };
        if rate_limited || !charged_ok {
            return self.reject(ctx, Rejection::RateLimited, None);
        }
        if self.p.route.envelope == Envelope::Json {
            let verdict = match &msg {
                Message::Text(text) => validate::check_text(&self.p.route, &self.p.claims.scopes, text),
                _ => validate::check_binary(&self.p.route)
                    .map(|()| Verdict::Forward)
                    .map_err(|rejection| Refused { rejection, id: None }),
            };
            match verdict {
                Ok(Verdict::Forward) => {}
                Ok(Verdict::Refresh { token, id }) => return self.refresh(ctx, &token, id.as_deref()),
                Err(r) => return self.reject(ctx, r.rejection, r.id.as_deref()),
            }
        }
        if let Some(sink) = self.upstream_sink.as_mut() {
            if sink.write(msg).is_err() {
                return self.close(ctx, Denied::UpstreamLost);
            }
        }
        self.messages_in += 1;
        self.metrics.in_forwarded.increment(1);
        self.metrics.in_bytes.increment(len as u64);
        self.metrics.forward_seconds.record(started.elapsed().as_secs_f64());
    }

    /// `auth.refresh`: same subject required; on success re-arm the timers and answer
    /// `auth.refreshed`; on failure `forbidden` and the old expiry stands.
    fn refresh(&mut self, ctx: &mut WebsocketContext<Self>, token: &str, id: Option<&str>) {
        self.metrics.control();
        let result = jwt::verify(token, &self.p.keys, &self.p.config.auth, SystemTime::now());
        let outcome = match result {
            Ok(claims) if claims.sub == self.p.claims.sub => Ok(claims),
            Ok(_) => Err("subject_mismatch"),
            Err(crate::auth::AuthError::Expired) => Err("expired"),
            Err(_) => Err("invalid"),
        };
        m::auth_refresh(outcome.is_ok());
        match outcome {
            Ok(claims) => {
                tracing::info!(event = "auth_refresh", result = "ok", conn_id = self.id(), route = %self.p.route.path, subject = %claims.sub, jti = claims.jti.as_deref().unwrap_or(""), exp = claims.exp);
                self.p.claims = claims;
                self.arm_expiry(ctx);
                let mut payload = serde_json::json!({"exp": self.p.claims.exp});
                if let Some(id) = id {
                    payload["ref"] = serde_json::Value::String(id.to_string());
                }
                let frame = serde_json::json!({self.p.route.type_field.as_str(): "auth.refreshed", "payload": payload});
                ctx.text(frame.to_string());
            }
            Err(why) => {
                tracing::warn!(event = "auth_refresh", result = "failed", reason = why, conn_id = self.id(), route = %self.p.route.path, client_ip = %self.p.client_ip, subject = %self.p.claims.sub);
                self.reject(ctx, Rejection::Forbidden, id);
            }
        }
    }

    /// Map a client stream error to its close reason.
    fn classify(&self, err: &ProtocolError) -> Denied {
        if let Some(v) = self.p.guard_verdict.get() {
            return match v {
                FrameViolation::TooBig => Denied::MessageTooBig,
                FrameViolation::Protocol => Denied::Protocol,
            };
        }
        match err {
            ProtocolError::Overflow => Denied::MessageTooBig,
            // actix-web-actors reports invalid UTF-8 in a text frame as an I/O error carrying
            // the `Utf8Error` text.
            ProtocolError::Io(e) if e.to_string().contains("utf-8") => Denied::InvalidUtf8,
            _ => Denied::Protocol,
        }
    }

    fn on_continuation(&mut self, ctx: &mut WebsocketContext<Self>, item: Item) {
        let limited = !self.charge(0);
        let (first, data, last) = match item {
            Item::FirstText(b) => (Some(true), b, false),
            Item::FirstBinary(b) => (Some(false), b, false),
            Item::Continue(b) => (None, b, false),
            Item::Last(b) => (None, b, true),
        };
        if let Some(text) = first {
            self.assembly =
                Some(Assembly { text, buf: BytesMut::from(&data[..]), started: Instant::now(), rate_limited: limited });
            return;
        }
        let Some(asm) = self.assembly.as_mut() else {
            return self.close(ctx, Denied::Protocol);
        };
        if asm.started.elapsed() > FRAGMENT_ASSEMBLY_LIMIT {
            return self.close(ctx, Denied::Protocol);
        }
        asm.buf.extend_from_slice(&data);
        asm.rate_limited |= limited;
        if !last {
            return;
        }
        let Some(asm) = self.assembly.take() else { return };
        let bytes = asm.buf.freeze();
        let msg = if asm.text {
            match ByteString::try_from(bytes) {
                Ok(s) => Message::Text(s),
                Err(_) => return self.close(ctx, Denied::InvalidUtf8),
            }
        } else {
            Message::Binary(bytes)
        };
        self.on_message(ctx, msg, true, asm.rate_limited);
    }
}

impl Actor for WsSession {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.metrics.opened();
        let Some(framed) = self.upstream.take() else {
            return self.close(ctx, Denied::Internal);
        };
        let (sink, stream) = framed.split();
        self.upstream_sink = Some(SinkWrite::new(FlushOnClose(sink), ctx));
        let addr = ctx.address();
        let reader = UpstreamReader::new(
            addr.clone().recipient(),
            addr.recipient(),
            self.backlog.clone(),
            self.p.config.limits.outbound_buffer_bytes,
        );
        self.upstream_reader = Some(UpstreamReader::create(|rctx| {
            rctx.add_stream(stream);
            reader
        }));
        self.arm_expiry(ctx);
        self.start_heartbeat(ctx);
        let auth = &self.p.config.auth;
        if !auth.expiry_warning.is_zero()
            && self.p.claims.time_left(auth.leeway, SystemTime::now()) <= auth.expiry_warning
        {
            self.send_expiring(ctx);
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(reader) = self.upstream_reader.take() {
            reader.do_send(StopReading);
        }
        let reason = self.closing.unwrap_or(m::DISCONNECT_CLIENT);
        let lifetime = self.opened.elapsed();
        self.metrics.closed(reason, lifetime);
        tracing::info!(
            event = "connection_closed",
            conn_id = self.id(),
            route = %self.p.route.path,
            client_ip = %self.p.client_ip,
            origin = self.p.origin.as_deref().unwrap_or(""),
            user_agent = self.p.user_agent.as_deref().unwrap_or(""),
            subject = %self.p.claims.sub,
            jti = self.p.claims.jti.as_deref().unwrap_or(""),
            reason,
            duration_ms = lifetime.as_millis() as u64,
            messages_in = self.messages_in,
            messages_out = self.messages_out,
        );
    }
}

impl WriteHandler<ProtocolError> for WsSession {
    fn error(&mut self, err: ProtocolError, ctx: &mut Self::Context) -> actix::Running {
        tracing::debug!(conn_id = self.id(), error = %err, "upstream write failed");
        // A write to the upstream failed. While open, the reader will see the stream end and
        // report it; while closing, there is nothing left to wait for.
        if self.closing.is_some() {
            self.finish(ctx);
        }
        actix::Running::Continue
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The upstream write half is closed and flushed.
        self.finish(ctx);
    }
}

/// Client frames.
impl StreamHandler<Result<Message, ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
        if self.closing.is_some() {
            return;
        }
        let msg = match item {
            Ok(msg) => msg,
            Err(e) => {
                let denied = self.classify(&e);
                tracing::info!(event = "protocol_close", conn_id = self.id(), route = %self.p.route.path, client_ip = %self.p.client_ip, reason = denied.reason());
                return self.close(ctx, denied);
            }
        };
        self.last_seen = Instant::now();
        match msg {
            Message::Text(_) | Message::Binary(_) => self.on_message(ctx, msg, false, false),
            Message::Continuation(item) => self.on_continuation(ctx, item),
            Message::Ping(payload) => {
                // Pings count against the bucket like any frame: a ping flood is a flood.
                if self.charge(payload.len()) {
                    ctx.pong(&payload);
                } else {
                    self.reject(ctx, Rejection::RateLimited, None);
                }
            }
            Message::Pong(_) | Message::Nop => {}
            Message::Close(reason) => {
                // Echo the client's close and relay its code to the upstream.
                self.closing = Some(m::DISCONNECT_CLIENT);
                let upstream = reason.clone().unwrap_or(CloseReason { code: CloseCode::Normal, description: None });
                self.shutdown(ctx, reason, Some(upstream));
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The client's TCP stream ended (with or without a close frame).
        if self.closing.is_none() {
            self.closing = Some(m::DISCONNECT_CLIENT);
            self.shutdown(ctx, None, Some(CloseReason { code: CloseCode::Away, description: None }));
        }
    }
}

impl Handler<UpstreamFrame> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: UpstreamFrame, ctx: &mut Self::Context) {
        self.backlog.sub(msg.size);
        if self.closing.is_some() {
            return;
        }
        let limit = self.p.config.limits.max_message_bytes;
        match msg.frame {
            Frame::Text(b) => match ByteString::try_from(b) {
                Ok(s) => {
                    self.count_out(s.len());
                    ctx.text(s);
                }
                Err(_) => self.close(ctx, Denied::UpstreamLost),
            },
            Frame::Binary(b) => {
                self.count_out(b.len());
                ctx.binary(b);
            }
            Frame::Continuation(item) => {
                let (len, last) = match &item {
                    Item::FirstText(b) | Item::FirstBinary(b) => {
                        self.upstream_fragment_bytes = 0;
                        (b.len(), false)
                    }
                    Item::Continue(b) => (b.len(), false),
                    Item::Last(b) => (b.len(), true),
                };
                self.upstream_fragment_bytes += len;
                if self.upstream_fragment_bytes > limit {
                    return self.close(ctx, Denied::MessageTooBig);
                }
                if last {
                    self.count_out(self.upstream_fragment_bytes);
                }
                ctx.write_raw(Message::Continuation(item));
            }
            Frame::Ping(b) => {
                if let Some(sink) = self.upstream_sink.as_mut() {
                    let _ = sink.write(Message::Pong(b));
                }
            }
            Frame::Pong(_) => {}
            Frame::Close(reason) => {
                // Relay the upstream's close (code and reason) to the client; echo it upstream.
                self.closing = Some(m::DISCONNECT_UPSTREAM);
                let echo = reason.clone().unwrap_or(CloseReason { code: CloseCode::Normal, description: None });
                self.shutdown(ctx, reason, Some(echo));
            }
        }
    }
}

impl WsSession {
    fn count_out(&mut self, len: usize) {
        self.messages_out += 1;
        self.metrics.out_forwarded.increment(1);
        self.metrics.out_bytes.increment(len as u64);
    }
}

impl Handler<UpstreamEnded> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: UpstreamEnded, ctx: &mut Self::Context) {
        self.upstream_reader = None;
        let denied = match msg.end {
            UpstreamEnd::Lost => Denied::UpstreamLost,
            UpstreamEnd::TooBig => Denied::MessageTooBig,
            UpstreamEnd::SlowConsumer => Denied::SlowConsumer,
        };
        if self.closing.is_none() {
            tracing::warn!(event = "upstream_ended", conn_id = self.id(), route = %self.p.route.path, client_ip = %self.p.client_ip, subject = %self.p.claims.sub, reason = denied.reason());
        }
        self.close(ctx, denied);
    }
}
