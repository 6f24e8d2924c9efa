//! The data path of one client connection (docs/architecture.md): the [`Session`] state, its
//! [`Phase`]s, and the modules that drive it.
//!
//! - `actor.rs`: [`WsSession`], the connection actor; it owns the session and receives the
//!   control messages ([`messages`]).
//! - `pump.rs`: one wake-up reads whichever socket is ready and flushes both.
//! - [`inbound`] / [`outbound`]: the pure per-direction pipelines; frame bytes in, one action
//!   per frame out (framing, assembly, buckets, UTF-8, the message checks, violations).
//! - `frames.rs`: carries out the pipelines' actions (queue the frame as received for the
//!   other side, answer, refuse, refresh, close).
//! - `lifecycle.rs`: start and end, the deadlines (expiry and its warning, heartbeat and idle
//!   limit, frame timeout, drain), the operator's requests, reloads and revocations.
//! - [`relay`]: the byte side of each socket; [`index`]: the live sessions the admin API sees.
//!
//! One read, one decision and one write per frame, no copy of the payload beyond the unmasked
//! one the checks read, no second actor, no mailbox hop. Does not own: admission (the
//! handshake and `store::admission`), dialing (`upstream.rs`).

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use self::inbound::Inbound;
use self::index::{LiveStats, Sessions};
use self::outbound::Outbound;
use self::relay::Side;
use crate::auth::Claims;
use crate::config::{Config, Route};
use crate::error::SessionClose;
use crate::metrics::{self as m, SessionMetrics};
use crate::policy::ratelimit::LogBudget;
use crate::state::{DrainSignal, PolicyCell};
use crate::store::admission::Lease;
use crate::store::revocation::RevocationStore;
use crate::wire::{self, MaskKeys};

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

mod actor;
pub mod inbound;
pub mod index;
pub mod messages;
pub mod outbound;
pub mod relay;

pub use self::actor::WsSession;

// After the macro: the lifecycle logs security events too.
mod frames;
mod lifecycle;
mod pump;

/// The key of the sensitive-data guard's fingerprints: random per process, so two hits of one
/// value correlate in the logs without the value being stored anywhere.
pub(crate) static FINGERPRINTS: std::sync::LazyLock<crate::policy::sensitive::FingerprintKey> =
    std::sync::LazyLock::new(crate::policy::sensitive::FingerprintKey::random);

/// What a session uses of the process's shared state, and nothing more.
#[derive(Clone)]
pub struct SessionHandles {
    /// The policy in force: a reload's rules, the keys `auth.refresh` verifies with.
    pub policy: Arc<PolicyCell>,
    /// Revoked tokens (checked at `auth.refresh` and whenever revocations change).
    pub revocations: Arc<dyn RevocationStore>,
    /// The index of live sessions (admin list, revoke, kick, drain).
    pub sessions: Arc<Sessions>,
    /// Whether the gateway is draining.
    pub drain: Arc<DrainSignal>,
}

/// Longest wait for the close frames to be written before the session stops anyway. Long
/// enough for a client that paused reading to still receive its close code.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Longest wait, while draining, for the upstream's answer to our close before the client is
/// closed anyway.
const DRAIN_UPSTREAM_GRACE: Duration = Duration::from_secs(2);

/// One client frame in this many has its gateway time recorded in
/// `wsgate_message_forward_seconds` (per connection, starting with the first).
pub const FORWARD_TIME_SAMPLE: u64 = 16;

/// Read passes per wake-up before the session yields to the other connections of its worker.
const PASSES_PER_WAKE: usize = 16;

/// `message_refused` log lines per connection per second; the rest are counted and the count
/// is reported with the next line written (field `suppressed`) or in `connection_closed`.
pub const REFUSED_LOG_PER_SECOND: u32 = 5;

/// Where a connection is in its life. Before a session exists the connection is
/// *handshaking* (`http::ws`: the checks of docs/protocol.md, then the upstream dial); the 101
/// is the first thing the session writes.
///
/// ```text
///   Open ──(drain)──▶ Draining ──(upstream's close, or DRAIN_UPSTREAM_GRACE)──▶ Closing
///     │                                                                        ▲
///     └──(a close from either side, a refusal's close, expiry, kick, ...)──────┘
/// ```
/// In `Closing` nothing more is read or judged; once both write queues are flushed the
/// sockets *linger* (bytes still arriving are discarded, the client's charged to its byte
/// bucket) until each peer closed, at the latest at `stop_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Relaying both ways.
    Open,
    /// The upstream was sent 1001; its frames still reach the client until its close
    /// arrives, at the latest at `by`. The client is not read meanwhile.
    Draining {
        /// Latest moment the client is closed 1001.
        by: Instant,
    },
    /// Closing with `reason` (the disconnect metric's label).
    Closing {
        /// Why.
        reason: &'static str,
        /// Latest moment the session stops, flushed or not (`None`: it is stopping now).
        stop_at: Option<Instant>,
    },
}

/// Everything a session is started with (built by the handshake handler).
pub struct SessionParams {
    /// The slot granted by the registry; its id is the connection id.
    pub lease: Lease,
    /// The route the client connected to.
    pub route: Arc<Route>,
    /// Config in force (limits, timeouts, auth settings); replaced by a reload.
    pub config: Arc<Config>,
    /// The shared state the session follows.
    pub handles: SessionHandles,
    /// The verified token's claims.
    pub claims: Claims,
    /// Client IP.
    pub client_ip: IpAddr,
    /// The request's `Origin`, for logs.
    pub origin: Option<String>,
    /// The request's `User-Agent`, for logs.
    pub user_agent: Option<String>,
}

/// The state of one connection and every decision about it; owned by its [`WsSession`] actor
/// and driven by the session's pump task.
pub struct Session {
    p: SessionParams,
    metrics: SessionMetrics,
    client: Side,
    upstream: Side,
    /// The client-to-upstream pipeline (framing, assembly, buckets, checks, violations).
    inbound: Inbound,
    /// The upstream-to-client pipeline (framing, UTF-8).
    outbound: Outbound,
    /// Bound on `message_refused` log lines.
    refused_log: LogBudget,
    /// The incomplete client frame at the front of the client buffer must be complete by
    /// then (`timeouts.frame_seconds`); `None` when no frame is incomplete or no limit is set.
    frame_deadline: Option<Instant>,
    /// `timeouts.frame_seconds` (zero: no limit).
    frame_limit: Duration,
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
    /// Where the connection is in its life (see [`Phase`]).
    phase: Phase,
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
        Self {
            metrics: SessionMetrics::new(&p.route.path),
            client,
            upstream,
            inbound: Inbound::new(Arc::clone(&p.route), l, now),
            outbound: Outbound::new(l.max_message_bytes, p.route.sensitive.as_ref()),
            refused_log: LogBudget::new(REFUSED_LOG_PER_SECOND),
            frame_deadline: None,
            frame_limit: Duration::ZERO,
            mask_keys: MaskKeys::new(),
            expires_at: None,
            warn_at: None,
            heartbeat_at: None,
            ping_every: Duration::ZERO,
            idle_limit: Duration::ZERO,
            phase: Phase::Open,
            upstream_close_sent: false,
            timer: Box::pin(tokio::time::sleep_until(now.into())),
            timer_armed_for: None,
            last_seen: now,
            opened: now,
            messages_in: 0,
            messages_out: 0,
            stats: Arc::new(LiveStats::default()),
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
    fn close(&mut self, denied: SessionClose) {
        if self.is_closing() {
            return;
        }
        self.enter_closing(denied.reason());
        if denied == SessionClose::SlowConsumer {
            self.client.discard_unstarted();
        }
        wire::encode_close(&mut self.client.out, denied.close_code(), denied.client_text(), None);
        if denied != SessionClose::UpstreamLost {
            self.close_upstream(1001, b"");
        }
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

    /// Enter [`Phase::Closing`] with `reason`: no more reads; the pump stops the actor once
    /// both write queues are flushed and the peers closed, at the latest after [`CLOSE_GRACE`].
    fn enter_closing(&mut self, reason: &'static str) {
        self.phase = Phase::Closing { reason, stop_at: Some(Instant::now() + CLOSE_GRACE) };
        self.wake();
    }

    /// True once the session is closing (nothing more is read or judged).
    fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. })
    }

    /// True while draining.
    fn is_draining(&self) -> bool {
        matches!(self.phase, Phase::Draining { .. })
    }

    /// The disconnect reason, once closing.
    fn close_reason(&self) -> Option<&'static str> {
        match self.phase {
            Phase::Closing { reason, .. } => Some(reason),
            _ => None,
        }
    }

    fn protocol_close(&mut self, denied: SessionClose) {
        session_event!(info, self, "protocol_close", denied.reason());
        self.close(denied);
    }

    /// The upstream side ended or misbehaved: close the client with `denied`.
    fn upstream_ended(&mut self, denied: SessionClose) {
        if self.is_draining() {
            // The drained upstream hung up instead of answering the close: that is its answer.
            return self.finish_drain();
        }
        if !self.is_closing() {
            session_event!(warn, self, "upstream_ended", denied.reason());
            m::upstream_error(if denied == SessionClose::MessageTooBig { "too_big" } else { "lost" });
        }
        self.close(denied);
    }

    /// The pump panicked: log it as an internal error, count it so (`internal`, not a client
    /// close) and make one non-blocking attempt to deliver a 1011 close frame.
    fn internal_failure(&mut self) {
        session_event!(error, self, "session_panic", SessionClose::Internal.reason());
        self.phase = Phase::Closing { reason: SessionClose::Internal.reason(), stop_at: None };
        self.client.discard_unstarted();
        wire::encode_close(
            &mut self.client.out,
            SessionClose::Internal.close_code(),
            SessionClose::Internal.client_text(),
            None,
        );
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = self.client.poll_write_out(&mut cx);
    }

    /// The client's TCP stream ended or failed (with or without a close frame).
    fn client_gone(&mut self) {
        if !self.is_closing() {
            self.enter_closing(m::DISCONNECT_CLIENT);
            self.close_upstream(1001, b"");
        }
        self.client.dead = true;
    }
}
