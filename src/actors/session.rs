//! `WsSession`: the connection actor, one per client (DESIGN.md §3), and the [`Session`] it
//! owns.
//!
//! A session holds, for the life of the connection: both sockets (a [`Side`] each), the
//! token-expiry timers, the token buckets, the violation window, the heartbeat and the
//! fragment assembly. Decisions are made by the pure functions of `policy/`, `auth/` and
//! `wire`; this file only sequences them and moves bytes.
//!
//! The data path: the session's pump (a task of its own next to the actor, see [`WsSession`])
//! reads whichever socket is ready, judges each complete frame, and queues what passes for the other side as
//! the very bytes that arrived (a client frame keeps its masking key upstream; an upstream
//! frame is already what a client expects). One read, one decision and one write per frame,
//! no copy of the payload beyond the unmasked one the checks read, no second actor, no
//! mailbox hop. This file holds the lifecycle, timers, closing and the pump; the per-frame
//! handling of both directions is in `session/frames.rs`. Does not own: admission
//! (registry), dialing (upstream.rs).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use actix::{Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler};
use bytes::BytesMut;

mod frames;

use super::index::{LiveSession, LiveStats};
use super::messages::{CloseSession, ConfigReloaded};
use super::registry::Lease;
use super::relay::{Read, Side};
use crate::app::Gateway;
use crate::auth::revocation::unix_now;
use crate::auth::{jwt, Claims};
use crate::config::{Config, Route};
use crate::error::Denied;
use crate::metrics::{self as m, SessionMetrics};
use crate::policy::framing::{Framing, Sender};
use crate::policy::ratelimit::{optional_bucket, TokenBucket};
use crate::policy::validate::{self, Rejection};
use crate::wire::{self, MaskKeys, Utf8Stream};

/// One structured security event of a session, with every field the README's "Logs" section
/// promises: event, reason, route, client IP, origin, user agent, subject, connection id and
/// token id (`jti`) — never the token.
macro_rules! session_event {
    ($level:ident, $s:expr, $event:expr, $reason:expr $(, $k:ident = $v:expr)* $(,)?) => {
        tracing::$level!(
            event = $event,
            reason = $reason,
            conn_id = $s.p.lease.id,
            route = %$s.p.route.path,
            client_ip = %$s.p.client_ip,
            origin = $s.p.origin.as_deref().unwrap_or(""),
            user_agent = $s.p.user_agent.as_deref().unwrap_or(""),
            subject = %$s.p.claims.sub,
            jti = $s.p.claims.jti.as_deref().unwrap_or(""),
            $($k = $v,)*
        )
    };
}

/// Window over which rejected frames are counted towards `violations_before_close`.
const VIOLATION_WINDOW: Duration = Duration::from_secs(60);

/// Longest wait for the close frames to be written before the session stops anyway. Long
/// enough for a client that paused reading to still receive its close code.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Longest wait, while draining, for the upstream's answer to our close before the client is
/// closed anyway.
const DRAIN_UPSTREAM_GRACE: Duration = Duration::from_secs(2);

/// Longest time one fragmented message may take to arrive completely.
const FRAGMENT_ASSEMBLY_LIMIT: Duration = Duration::from_secs(30);

/// One client frame in this many has its gateway time recorded in
/// `wsgate_message_forward_seconds` (per connection, starting with the first).
pub const FORWARD_TIME_SAMPLE: u64 = 16;

/// Read passes per wake-up before the session yields to the other connections of its worker.
const PASSES_PER_WAKE: usize = 16;

/// Everything a session is started with (built by the handshake handler).
pub struct SessionParams {
    /// The slot granted by the registry; its id is the connection id.
    pub lease: Lease,
    /// The route the client connected to.
    pub route: Arc<Route>,
    /// Config in force (limits, timeouts, auth settings); replaced by a reload.
    pub config: Arc<Config>,
    /// The gateway: keys for `auth.refresh`, revocations, the session index.
    pub gateway: Arc<Gateway>,
    /// The verified token's claims.
    pub claims: Claims,
    /// Client IP.
    pub client_ip: IpAddr,
    /// The request's `Origin`, for logs.
    pub origin: Option<String>,
    /// The request's `User-Agent`, for logs.
    pub user_agent: Option<String>,
}

/// A fragmented client message being assembled.
struct Assembly {
    text: bool,
    /// Unmasked payload so far (what the checks read).
    payload: Vec<u8>,
    /// The frames as received (what is forwarded when the message passes).
    frames: BytesMut,
    started: Instant,
    /// A fragment was over the rate limit: the whole message is refused when complete.
    rate_limited: bool,
}

/// The state of one connection and every decision about it; owned by its [`WsSession`] actor
/// and driven by the session's pump task.
pub struct Session {
    p: SessionParams,
    metrics: SessionMetrics,
    client: Side,
    upstream: Side,
    client_framing: Framing,
    upstream_framing: Framing,
    /// The client frame at the front of the client buffer was judged already (it is still
    /// arriving); the same for the upstream.
    client_judged: bool,
    upstream_judged: bool,
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
    violations: VecDeque<Instant>,
    assembly: Option<Assembly>,
    /// UTF-8 state of a fragmented upstream text message.
    upstream_text: Option<Utf8Stream>,
    mask_keys: MaskKeys,
    /// When the token expires (close 4001); `None` once handled.
    expires_at: Option<Instant>,
    /// When to send `auth.expiring`; `None` once sent or when disabled.
    warn_at: Option<Instant>,
    /// Next heartbeat tick (ping and idle check); `None` when both are disabled.
    heartbeat_at: Option<Instant>,
    /// Ping interval and idle limit (zero: disabled).
    ping_every: Duration,
    idle_limit: Duration,
    /// Latest moment the closing session stops, flushed or not.
    stop_at: Option<Instant>,
    /// Draining: the upstream was sent 1001 and its frames still reach the client until its
    /// close arrives, at the latest at this moment; the client is not read meanwhile.
    drain_by: Option<Instant>,
    /// A close frame was queued for the upstream (never a second one).
    upstream_close_sent: bool,
    /// One timer for all of the deadlines above, armed for the earliest.
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_armed_for: Option<Instant>,
    last_seen: Instant,
    opened: Instant,
    messages_in: u64,
    messages_out: u64,
    /// What the admin API sees of this session.
    stats: Arc<LiveStats>,
    /// Set once the session started closing; the reason label for the disconnect metric.
    closing: Option<&'static str>,
    /// Wakes the pump after a timer or handler queued a frame.
    waker: Option<Waker>,
    /// The pump is running: it flushes what is queued before it returns, so no wake-up is
    /// needed (a self-wake per rejected frame would re-poll the actor for nothing).
    pumping: bool,
}

// === impl Session ===

impl Session {
    /// A session for an admitted client whose upstream is already open. `client` starts with
    /// the 101 response queued.
    pub fn new(p: SessionParams, client: Side, upstream: Side) -> Self {
        let now = Instant::now();
        let l = &p.config.limits;
        let byte_burst = l.bytes_per_second.max(l.max_message_bytes as u64);
        Self {
            metrics: SessionMetrics::new(&p.route.path),
            client,
            upstream,
            client_framing: Framing::new(l.max_message_bytes, Sender::Client),
            upstream_framing: Framing::new(l.max_message_bytes, Sender::Server),
            client_judged: false,
            upstream_judged: false,
            messages: optional_bucket(u64::from(l.message_burst), u64::from(l.messages_per_second), now),
            bytes: optional_bucket(byte_burst, l.bytes_per_second, now),
            violations: VecDeque::new(),
            assembly: None,
            upstream_text: None,
            mask_keys: MaskKeys::new(),
            expires_at: None,
            warn_at: None,
            heartbeat_at: None,
            ping_every: Duration::ZERO,
            idle_limit: Duration::ZERO,
            stop_at: None,
            drain_by: None,
            upstream_close_sent: false,
            timer: Box::pin(tokio::time::sleep_until(now.into())),
            timer_armed_for: None,
            last_seen: now,
            opened: now,
            messages_in: 0,
            messages_out: 0,
            stats: Arc::new(LiveStats::default()),
            closing: None,
            waker: None,
            pumping: false,
            p,
        }
    }

    fn id(&self) -> u64 {
        self.p.lease.id
    }

    fn wake(&self) {
        if self.pumping {
            return;
        }
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
    }

    /// Queue a text frame of the gateway's own for the client.
    fn send_text(&mut self, text: &str) {
        wire::encode(&mut self.client.out, wire::OP_TEXT, true, text.as_bytes(), None);
        self.wake();
    }

    /// Close the client with `denied`'s code; the upstream gets 1001.
    fn close(&mut self, denied: Denied) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(denied.reason());
        if denied == Denied::SlowConsumer {
            self.client.discard_unstarted();
        }
        wire::encode_close(&mut self.client.out, denied.close_code(), denied.client_text(), None);
        if denied != Denied::UpstreamLost {
            self.close_upstream(1001, b"");
        }
        self.begin_closing();
    }

    /// Queue a close frame for the upstream with `code` (or the raw 2-byte `echo` when given),
    /// unless one was queued already.
    fn close_upstream(&mut self, code: u16, echo: &[u8]) {
        if std::mem::replace(&mut self.upstream_close_sent, true) {
            return;
        }
        let key = Some(self.mask_keys.next_key());
        if echo.is_empty() && code != 0 {
            wire::encode_close(&mut self.upstream.out, code, "", key);
        } else {
            wire::encode(&mut self.upstream.out, wire::OP_CLOSE, true, echo, key);
        }
    }

    /// Drain this session: close the upstream first and keep relaying what it still sends
    /// (answers to messages already forwarded) until its close arrives; then the client gets
    /// 1001. The client is not read meanwhile: nothing new is accepted.
    fn start_drain(&mut self) {
        if self.closing.is_some() || self.drain_by.is_some() {
            return;
        }
        session_event!(info, self, "drain_close", Denied::Draining.reason());
        self.close_upstream(1001, b"");
        self.drain_by = Some(Instant::now() + DRAIN_UPSTREAM_GRACE);
        self.wake();
    }

    /// The drained upstream answered (or failed, or took too long): close the client 1001.
    fn finish_drain(&mut self) {
        self.drain_by = None;
        if self.closing.is_none() {
            self.closing = Some(Denied::Draining.reason());
            wire::encode_close(&mut self.client.out, 1001, Denied::Draining.client_text(), None);
            self.begin_closing();
        }
    }

    /// Stop reading; the pump stops the actor once both write queues are flushed, at the
    /// latest after [`CLOSE_GRACE`].
    fn begin_closing(&mut self) {
        self.stop_at = Some(Instant::now() + CLOSE_GRACE);
        self.wake();
    }

    /// (Re-)set the warning and expiry deadlines from the current claims.
    fn arm_expiry(&mut self) {
        let auth = &self.p.config.auth;
        let left = self.p.claims.time_left(auth.leeway, SystemTime::now());
        let now = Instant::now();
        self.expires_at = Some(now + left);
        self.warn_at = (!auth.expiry_warning.is_zero()).then(|| now + left.saturating_sub(auth.expiry_warning));
        self.wake();
    }

    /// The earliest pending deadline.
    fn next_deadline(&self) -> Option<Instant> {
        [self.expires_at, self.warn_at, self.heartbeat_at, self.stop_at, self.drain_by].into_iter().flatten().min()
    }

    /// Handle every deadline that has passed. Deadlines are checked on each pump pass (a
    /// clock read) and one timer wakes the session for the earliest: no timer future is
    /// polled per frame.
    /// Returns true when the session must stop now (its close grace ran out).
    fn run_deadlines(&mut self, now: Instant) -> bool {
        if self.stop_at.is_some_and(|t| t <= now) {
            self.stop_at = None;
            return true;
        }
        if self.expires_at.is_some_and(|t| t <= now) {
            self.expires_at = None;
            self.warn_at = None;
            if self.closing.is_none() {
                session_event!(info, self, "token_expired", "token_expired");
                self.close(Denied::TokenExpired);
            }
        }
        if self.warn_at.is_some_and(|t| t <= now) {
            self.warn_at = None;
            if self.closing.is_none() {
                self.send_expiring();
            }
        }
        if self.heartbeat_at.is_some_and(|t| t <= now) {
            self.heartbeat(now);
        }
        if self.drain_by.is_some_and(|t| t <= now) {
            self.finish_drain();
        }
        false
    }

    /// Point the timer at the earliest deadline (registering the wake-up when it changed).
    fn arm_timer(&mut self, cx: &mut std::task::Context<'_>) {
        let Some(at) = self.next_deadline() else { return };
        if self.timer_armed_for != Some(at) {
            self.timer.as_mut().reset(at.into());
            self.timer_armed_for = Some(at);
            if self.timer.as_mut().poll(cx).is_ready() {
                // Already due: run the pump again now.
                cx.waker().wake_by_ref();
            }
        }
    }

    fn send_expiring(&mut self) {
        let leeway = self.p.config.auth.leeway;
        let left = self.p.claims.time_left(leeway, SystemTime::now());
        let frame = serde_json::json!({
            self.p.route.type_field.as_str(): "auth.expiring",
            "payload": {"exp": self.p.claims.exp, "in_ms": left.as_millis() as u64},
        });
        self.send_text(&frame.to_string());
    }

    fn start_heartbeat(&mut self) {
        let t = &self.p.config.timeouts;
        self.ping_every = Duration::from_secs(t.ping_interval_seconds);
        self.idle_limit = Duration::from_secs(t.idle_seconds);
        self.heartbeat_at = self.heartbeat_tick().map(|tick| Instant::now() + tick);
    }

    /// Time between heartbeats: the ping interval, or half the idle limit without pings.
    fn heartbeat_tick(&self) -> Option<Duration> {
        match (self.ping_every.is_zero(), self.idle_limit.is_zero()) {
            (true, true) => None,
            (false, _) => Some(self.ping_every),
            (true, false) => Some((self.idle_limit / 2).max(Duration::from_secs(1))),
        }
    }

    fn heartbeat(&mut self, now: Instant) {
        self.heartbeat_at = self.heartbeat_tick().map(|tick| now + tick);
        if self.closing.is_some() {
            return;
        }
        if !self.idle_limit.is_zero() && now.duration_since(self.last_seen) > self.idle_limit {
            return self.close(Denied::Idle);
        }
        if !self.ping_every.is_zero() {
            wire::encode(&mut self.client.out, wire::OP_PING, true, b"", None);
        }
    }

    /// Count a rejected frame; close once `violations_before_close` are reached in the window.
    fn reject(&mut self, rejection: Rejection, id: Option<&str>) {
        self.metrics.rejected(rejection);
        tracing::debug!(event = "frame_rejected", conn_id = self.id(), route = %self.p.route.path, code = rejection.code());
        let frame = validate::error_frame(rejection, id, &self.p.route.type_field);
        self.send_text(&frame);
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
            let event = if denied == Denied::RateViolations { "rate_limit_close" } else { "policy_violation_close" };
            session_event!(warn, self, event, denied.reason());
            self.close(denied);
        }
    }

    /// `auth.refresh`: same subject required; on success re-arm the timers and answer
    /// `auth.refreshed`; on failure `forbidden` and the old expiry stands.
    fn refresh(&mut self, token: &str, id: Option<&str>) {
        self.metrics.control();
        let keys = Arc::clone(&self.p.gateway.policy().keys);
        let result = jwt::verify(token, &keys, &self.p.config.auth, SystemTime::now());
        let outcome = match result {
            Ok(claims) if claims.sub != self.p.claims.sub => Err("subject_mismatch"),
            Ok(claims) if self.p.gateway.revocations.revokes(&claims, unix_now()) => Err("revoked"),
            Ok(claims) => Ok(claims),
            Err(crate::auth::AuthError::Expired) => Err("expired"),
            Err(_) => Err("invalid"),
        };
        m::auth_refresh(outcome.is_ok());
        match outcome {
            Ok(claims) => {
                session_event!(
                    info,
                    self,
                    "auth_refresh",
                    "ok",
                    result = "ok",
                    new_jti = claims.jti.as_deref().unwrap_or(""),
                    exp = claims.exp
                );
                self.p.claims = claims;
                self.stats.set_token(&self.p.claims);
                self.arm_expiry();
                let mut payload = serde_json::json!({"exp": self.p.claims.exp});
                if let Some(id) = id {
                    payload["ref"] = serde_json::Value::String(id.to_string());
                }
                let frame = serde_json::json!({self.p.route.type_field.as_str(): "auth.refreshed", "payload": payload});
                self.send_text(&frame.to_string());
            }
            Err(why) => {
                session_event!(warn, self, "auth_refresh", why, result = "failed");
                self.reject(Rejection::Forbidden, id);
            }
        }
    }

    fn protocol_close(&mut self, denied: Denied) {
        session_event!(info, self, "protocol_close", denied.reason());
        self.close(denied);
    }

    /// The upstream side ended or misbehaved: close the client with `denied`.
    fn upstream_ended(&mut self, denied: Denied) {
        if self.drain_by.is_some() {
            // The drained upstream hung up instead of answering the close: that is its answer.
            return self.finish_drain();
        }
        if self.closing.is_none() {
            session_event!(warn, self, "upstream_ended", denied.reason());
            m::upstream_error(if denied == Denied::MessageTooBig { "too_big" } else { "lost" });
        }
        self.close(denied);
    }

    /// The client's TCP stream ended or failed (with or without a close frame).
    fn client_gone(&mut self) {
        if self.closing.is_none() {
            self.closing = Some(m::DISCONNECT_CLIENT);
            self.close_upstream(1001, b"");
            self.begin_closing();
        }
        self.client.dead = true;
    }

    /// One read from the client; true when bytes were handled.
    fn read_client(&mut self, cx: &mut std::task::Context<'_>, now: Instant) -> bool {
        let mut lent = self.client.lend();
        let read = self.client.poll_read(cx, &mut lent);
        let (consumed, want) = match read {
            Read::Data => self.on_client_bytes(&lent.buf, now),
            _ => (0, 0),
        };
        self.client.restore(lent, consumed, want);
        match read {
            Read::Data => true,
            Read::Pending => false,
            Read::Eof | Read::Failed(_) => {
                self.client_gone();
                false
            }
        }
    }

    /// One read from the upstream; true when bytes were handled.
    fn read_upstream(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let mut lent = self.upstream.lend();
        let read = self.upstream.poll_read(cx, &mut lent);
        let (consumed, want) = match read {
            Read::Data => self.on_upstream_bytes(&lent.buf),
            _ => (0, 0),
        };
        self.upstream.restore(lent, consumed, want);
        match read {
            Read::Data => true,
            Read::Pending => false,
            Read::Eof | Read::Failed(_) => {
                self.upstream.dead = true;
                self.upstream_ended(Denied::UpstreamLost);
                false
            }
        }
    }

    /// Drive both sockets until nothing is ready (see the module docs); `Ready` once the
    /// session is over and its actor should stop.
    fn pump(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        let high_water = self.p.config.limits.outbound_buffer_bytes;
        // A side whose read was pending has its wake-up registered: not read again this call.
        let (mut client_ready, mut upstream_ready) = (true, true);
        // One clock read per wake-up serves the deadlines, buckets and idle tracking of
        // every pass (passes take microseconds).
        let now = Instant::now();
        for _ in 0..PASSES_PER_WAKE {
            if self.next_deadline().is_some_and(|t| t <= now) && self.run_deadlines(now) {
                return Poll::Ready(());
            }
            let mut progress = false;
            if client_ready && self.closing.is_none() && self.drain_by.is_none() && self.upstream.queued() < high_water
            {
                client_ready = self.read_client(cx, now);
                progress |= client_ready;
            }
            if upstream_ready && self.closing.is_none() {
                upstream_ready = self.read_upstream(cx);
                progress |= upstream_ready;
            }
            let client_flushed = match self.client.poll_write_out(cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(_)) => {
                    self.client_gone();
                    true
                }
                Poll::Pending => false,
            };
            let upstream_flushed = match self.upstream.poll_write_out(cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(_)) => {
                    self.upstream.dead = true;
                    self.upstream_ended(Denied::UpstreamLost);
                    true
                }
                Poll::Pending => false,
            };
            if self.closing.is_none() && self.client.queued() > high_water {
                session_event!(warn, self, "slow_consumer_close", "slow_consumer", queued = self.client.queued());
                self.close(Denied::SlowConsumer);
                continue;
            }
            if self.closing.is_some() && client_flushed && upstream_flushed {
                let client_done = self.client.poll_linger(cx).is_ready();
                let upstream_done = self.upstream.poll_linger(cx).is_ready();
                if client_done && upstream_done {
                    return Poll::Ready(());
                }
            }
            if !progress {
                self.arm_timer(cx);
                self.publish();
                return Poll::Pending;
            }
        }
        // Still busy: let the worker's other connections run, then continue.
        self.publish();
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Publish the message counts for the admin API (once per wake-up, not per frame).
    fn publish(&self) {
        self.stats.messages_in.store(self.messages_in, std::sync::atomic::Ordering::Relaxed);
        self.stats.messages_out.store(self.messages_out, std::sync::atomic::Ordering::Relaxed);
    }

    /// The session starts: listed in the index, timers armed, draining checked.
    fn begin(&mut self, addr: Addr<WsSession>) {
        self.metrics.opened();
        self.stats.set_token(&self.p.claims);
        self.p.gateway.sessions.insert(
            self.id(),
            LiveSession {
                addr,
                route: self.p.route.path.clone(),
                subject: self.p.claims.sub.clone(),
                client_ip: self.p.client_ip,
                opened: unix_now(),
                stats: Arc::clone(&self.stats),
            },
        );
        if self.p.gateway.is_draining() {
            // The handshake passed its draining check just before the drain began.
            self.start_drain();
        }
        self.arm_expiry();
        self.start_heartbeat();
        let auth = &self.p.config.auth;
        if !auth.expiry_warning.is_zero()
            && self.p.claims.time_left(auth.leeway, SystemTime::now()) <= auth.expiry_warning
        {
            self.send_expiring();
        }
    }

    /// The session ended: out of the index, counted, logged.
    fn end(&mut self) {
        self.p.gateway.sessions.remove(self.id());
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

    /// An operator or the drain asks this session to close with `denied`.
    fn close_requested(&mut self, denied: Denied) {
        if self.closing.is_some() {
            return;
        }
        let event = match denied {
            Denied::Draining => return self.start_drain(),
            Denied::Revoked => "revocation_kick",
            Denied::Kicked => "operator_kick",
            _ => "session_closed",
        };
        session_event!(info, self, event, denied.reason());
        self.close(denied);
    }

    /// New rules for the frames that follow: the route's message types, schemas and envelope
    /// settings, the limits (buckets restart full when their rates changed) and timeouts.
    /// A route the reload removed keeps its old rules; the connection is never dropped.
    fn reload(&mut self, config: Arc<Config>) {
        let Some(route) = config.route(&self.p.route.path) else {
            return;
        };
        let (old, new) = (&self.p.config.limits, &config.limits);
        let now = Instant::now();
        if (old.message_burst, old.messages_per_second) != (new.message_burst, new.messages_per_second) {
            self.messages = optional_bucket(u64::from(new.message_burst), u64::from(new.messages_per_second), now);
        }
        if (old.bytes_per_second, old.max_message_bytes) != (new.bytes_per_second, new.max_message_bytes) {
            let burst = new.bytes_per_second.max(new.max_message_bytes as u64);
            self.bytes = optional_bucket(burst, new.bytes_per_second, now);
        }
        self.client_framing.set_max_message(new.max_message_bytes);
        self.upstream_framing.set_max_message(new.max_message_bytes);
        self.p.route = Arc::clone(route);
        self.p.config = config;
        self.start_heartbeat();
        self.wake();
    }
}

/// The connection actor: owns its [`Session`], receives the control messages (kick, revoke,
/// drain, reload) in its mailbox and stops when the session is over.
///
/// The data path is not polled through the actor's context: the session's pump runs as a
/// task of its own on the same worker thread, sharing the session through an `Rc<RefCell>`
/// (the actor and its pump never run at the same time). A wake-up for a socket then polls
/// only the pump, not the actor's mailbox and spawned items; per echoed message that was a
/// tenth of the gateway's user time (mailbox check and waker registration twice per round
/// trip).
pub struct WsSession {
    session: Rc<RefCell<Session>>,
    /// The pump task, aborted if the actor stops first (system shutdown).
    pump: Option<tokio::task::AbortHandle>,
}

// === impl WsSession ===

impl WsSession {
    /// The actor of an admitted client whose upstream is already open; `client` starts with
    /// the 101 response queued.
    pub fn new(p: SessionParams, client: Side, upstream: Side) -> Self {
        Self { session: Rc::new(RefCell::new(Session::new(p, client, upstream))), pump: None }
    }
}

impl Actor for WsSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.session.borrow_mut().begin(ctx.address());
        let session = Rc::clone(&self.session);
        let pump = actix::spawn(std::future::poll_fn(move |cx| {
            let mut s = session.borrow_mut();
            s.pumping = true;
            let polled = s.pump(cx);
            s.pumping = false;
            polled
        }));
        self.pump = Some(pump.abort_handle());
        ctx.spawn(actix::fut::wrap_future(pump).map(|_, _, ctx: &mut Context<Self>| ctx.stop()));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        self.session.borrow_mut().end();
    }
}

impl Handler<CloseSession> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: CloseSession, _: &mut Self::Context) {
        self.session.borrow_mut().close_requested(msg.denied);
    }
}

impl Handler<ConfigReloaded> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: ConfigReloaded, _: &mut Self::Context) {
        self.session.borrow_mut().reload(msg.config);
    }
}
