//! `WsSession`: the connection actor, one per client (docs/protocol.md), and the [`Session`] it
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
//! mailbox hop. This file holds the session's state, closing and the actor; reading and the
//! pump are in `session/pump.rs`, start, end, deadlines and operator requests in
//! `session/lifecycle.rs`, the per-frame handling of both directions, refusals and
//! `auth.refresh` in `session/frames.rs`. Does not own: admission (registry),
//! dialing (upstream.rs).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler};
use bytes::BytesMut;

use super::index::LiveStats;
use super::messages::{CloseSession, ConfigReloaded};
use super::registry::Lease;
use super::relay::Side;
use crate::app::Gateway;
use crate::auth::Claims;
use crate::config::{Config, Route};
use crate::error::Denied;
use crate::metrics::{self as m, SessionMetrics};
use crate::policy::framing::{Framing, Sender};
use crate::policy::ratelimit::{optional_bucket, LogBudget, TokenBucket};
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

// After the macro: the lifecycle logs security events too.
mod frames;
mod lifecycle;
mod pump;

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

/// `message_refused` log lines per connection per second; the rest are counted and the count
/// is reported with the next line written (field `suppressed`) or in `connection_closed`.
pub const REFUSED_LOG_PER_SECOND: u32 = 5;

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
    /// `auth.refresh` allowance (each one is a signature verification).
    refreshes: Option<TokenBucket>,
    violations: VecDeque<Instant>,
    /// Bound on `message_refused` log lines.
    refused_log: LogBudget,
    /// The incomplete client frame at the front of the client buffer must be complete by
    /// then (`timeouts.frame_seconds`); `None` when no frame is incomplete or no limit is set.
    frame_deadline: Option<Instant>,
    /// `timeouts.frame_seconds` (zero: no limit).
    frame_limit: Duration,
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
    /// The gateway's policy generation this session's rules come from, and the revocation
    /// generation its token was last checked against (`u64::MAX`: not compared yet, so the
    /// first read catches a reload or revocation that landed during the handshake).
    policy_generation: u64,
    revocation_generation: u64,
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
            refreshes: refresh_bucket(l, now),
            violations: VecDeque::new(),
            refused_log: LogBudget::new(REFUSED_LOG_PER_SECOND),
            frame_deadline: None,
            frame_limit: Duration::ZERO,
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
            policy_generation: u64::MAX,
            revocation_generation: u64::MAX,
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

    /// Stop reading; the pump stops the actor once both write queues are flushed, at the
    /// latest after [`CLOSE_GRACE`].
    fn begin_closing(&mut self) {
        self.stop_at = Some(Instant::now() + CLOSE_GRACE);
        self.wake();
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

    /// The pump panicked: log it as an internal error, count it so (`internal`, not a client
    /// close) and make one non-blocking attempt to deliver a 1011 close frame.
    fn internal_failure(&mut self) {
        session_event!(error, self, "session_panic", Denied::Internal.reason());
        self.closing = Some(Denied::Internal.reason());
        self.client.discard_unstarted();
        wire::encode_close(&mut self.client.out, Denied::Internal.close_code(), Denied::Internal.client_text(), None);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = self.client.poll_write_out(&mut cx);
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
}

/// The `auth.refresh` bucket of `limits` (`None`: unlimited).
fn refresh_bucket(l: &crate::config::Limits, now: Instant) -> Option<TokenBucket> {
    TokenBucket::try_every(u64::from(l.refresh_burst), l.refresh_interval, now).ok()
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
        let session = Rc::clone(&self.session);
        ctx.spawn(actix::fut::wrap_future(pump).map(move |ended, _, ctx: &mut Context<Self>| {
            if ended.as_ref().is_err_and(tokio::task::JoinError::is_panic) {
                // A bug, never the client's doing: logged and counted as internal (1011).
                // The unwinding released the session's borrow.
                if let Ok(mut s) = session.try_borrow_mut() {
                    s.internal_failure();
                }
            }
            ctx.stop()
        }));
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

    fn handle(&mut self, _: ConfigReloaded, _: &mut Self::Context) {
        self.session.borrow_mut().take_policy();
    }
}
