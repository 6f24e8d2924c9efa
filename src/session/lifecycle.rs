//! The lifecycle side of a [`Session`]: start and end, the deadlines (token expiry and its
//! warning, heartbeat and idle limit, drain), and the operator's requests (close, drain,
//! reload). Per-frame handling is in `frames.rs`; the pump, reading and closing in the parent
//! module.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::Addr;

use super::index::LiveSession;
use super::{Phase, Session, WsSession, DRAIN_UPSTREAM_GRACE};
use crate::auth::unix_now;
use crate::error::SessionClose;
use crate::metrics as m;
use crate::wire;

impl Session {
    /// Drain this session: close the upstream first and keep relaying what it still sends
    /// (answers to messages already forwarded) until its close arrives; then the client gets
    /// 1001. The client is not read meanwhile: nothing new is accepted.
    pub(super) fn start_drain(&mut self) {
        if self.phase != Phase::Open {
            return;
        }
        session_event!(info, self, "drain_close", SessionClose::Draining.reason());
        self.close_upstream(1001, b"");
        self.phase = Phase::Draining { by: Instant::now() + DRAIN_UPSTREAM_GRACE };
        self.wake();
    }

    /// The drained upstream answered (or failed, or took too long): close the client 1001.
    pub(super) fn finish_drain(&mut self) {
        if !self.is_closing() {
            self.enter_closing(SessionClose::Draining.reason());
            wire::encode_close(&mut self.client.out, 1001, SessionClose::Draining.client_text(), None);
        }
    }

    /// (Re-)set the warning and expiry deadlines from the current claims.
    pub(super) fn arm_expiry(&mut self) {
        let auth = &self.p.config.auth;
        let left = self.p.claims.time_left(auth.leeway, SystemTime::now());
        let now = Instant::now();
        self.expires_at = Some(instant_after(now, left));
        self.warn_at =
            (!auth.expiry_warning.is_zero()).then(|| instant_after(now, left.saturating_sub(auth.expiry_warning)));
        self.wake();
    }

    /// The earliest pending deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let phase_deadline = match self.phase {
            Phase::Open => None,
            Phase::Draining { by } => Some(by),
            Phase::Closing { stop_at, .. } => stop_at,
        };
        // Pairwise, not an iterator over the options: this runs on every pump pass.
        let earlier = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, None) => a,
            (None, b) => b,
        };
        earlier(
            earlier(earlier(self.expires_at, self.warn_at), earlier(self.heartbeat_at, phase_deadline)),
            self.frame_deadline,
        )
    }

    /// Handle every deadline that has passed. Deadlines are checked on each pump pass (a
    /// clock read) and one timer wakes the session for the earliest: no timer future is
    /// polled per frame.
    /// Returns true when the session must stop now (its close grace ran out).
    pub(super) fn run_deadlines(&mut self, now: Instant) -> bool {
        if let Phase::Closing { stop_at, .. } = &mut self.phase {
            if stop_at.is_some_and(|t| t <= now) {
                *stop_at = None;
                return true;
            }
        }
        if self.expires_at.is_some_and(|t| t <= now) {
            self.expires_at = None;
            self.warn_at = None;
            if !self.is_closing() {
                session_event!(info, self, "token_expired", "token_expired");
                self.close(SessionClose::TokenExpired);
            }
        }
        if self.warn_at.is_some_and(|t| t <= now) {
            self.warn_at = None;
            if !self.is_closing() {
                self.send_expiring();
            }
        }
        if self.heartbeat_at.is_some_and(|t| t <= now) {
            self.heartbeat(now);
        }
        if matches!(self.phase, Phase::Draining { by } if by <= now) {
            self.finish_drain();
        }
        if self.frame_deadline.is_some_and(|t| t <= now) {
            self.frame_overdue(now);
        }
        false
    }

    /// Point the timer at the earliest deadline (registering the wake-up when it changed).
    pub(super) fn arm_timer(&mut self, cx: &mut std::task::Context<'_>) {
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

    pub(super) fn send_expiring(&mut self) {
        let leeway = self.p.config.auth.leeway;
        let left = self.p.claims.time_left(leeway, SystemTime::now());
        let payload = serde_json::json!({"exp": self.p.claims.exp, "in_ms": left.as_millis() as u64});
        let frame = crate::policy::validate::gateway_frame(&self.p.route.type_field, "auth.expiring", &payload);
        self.send_text(&frame);
    }

    /// The client's incomplete frame passed `timeouts.frame_seconds`: close 1008. Not while
    /// the gateway itself stopped reading the client (the upstream's queue is full): then the
    /// frame gets a fresh deadline.
    pub(super) fn frame_overdue(&mut self, now: Instant) {
        if self.phase != Phase::Open {
            self.frame_deadline = None;
            return;
        }
        if self.upstream.queued() >= self.p.config.limits.outbound_buffer_bytes {
            self.frame_deadline = Some(now + self.frame_limit);
            return;
        }
        self.frame_deadline = None;
        session_event!(warn, self, "frame_timeout_close", SessionClose::FrameTimeout.reason());
        self.close(SessionClose::FrameTimeout);
    }

    /// After a client read: an incomplete frame left in the buffer gets a deadline from the
    /// moment its first byte arrived (this read, when a whole frame was consumed before it
    /// or none was pending); no incomplete frame, no deadline.
    pub(super) fn track_partial_frame(&mut self, consumed_whole_frames: bool, now: Instant) {
        if self.frame_limit.is_zero() || !self.client.has_partial() {
            self.frame_deadline = None;
        } else if consumed_whole_frames || self.frame_deadline.is_none() {
            self.frame_deadline = Some(now + self.frame_limit);
        }
    }

    pub(super) fn start_heartbeat(&mut self) {
        let t = &self.p.config.timeouts;
        self.frame_limit = t.frame;
        self.ping_every = t.ping_interval;
        self.idle_limit = t.idle;
        self.heartbeat_at = self.heartbeat_tick().map(|tick| Instant::now() + tick);
    }

    /// Time between heartbeats: the ping interval, or half the idle limit without pings.
    pub(super) fn heartbeat_tick(&self) -> Option<Duration> {
        match (self.ping_every.is_zero(), self.idle_limit.is_zero()) {
            (true, true) => None,
            (false, _) => Some(self.ping_every),
            (true, false) => Some((self.idle_limit / 2).max(Duration::from_secs(1))),
        }
    }

    pub(super) fn heartbeat(&mut self, now: Instant) {
        self.heartbeat_at = self.heartbeat_tick().map(|tick| now + tick);
        if self.is_closing() {
            return;
        }
        if !self.idle_limit.is_zero() && now.duration_since(self.last_seen) > self.idle_limit {
            return self.close(SessionClose::Idle);
        }
        if !self.ping_every.is_zero() {
            wire::encode(&mut self.client.out, wire::OP_PING, true, b"", None);
        }
    }

    /// The session starts: listed in the index, timers armed, draining checked.
    pub(super) fn begin(&mut self, addr: Addr<WsSession>) {
        self.metrics.opened();
        self.stats.set_token(&self.p.claims);
        self.p.handles.sessions.insert(
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
        if self.p.handles.drain.is_draining() {
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
        // A reload or a revocation that landed while the handshake dialed the upstream: the
        // session was not in the index yet, so nobody told it.
        self.catch_up();
    }

    /// The session ended: out of the index, counted, logged.
    pub(super) fn end(&mut self) {
        self.p.handles.sessions.remove(self.id());
        let reason = self.close_reason().unwrap_or(m::DISCONNECT_CLIENT);
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
            refusals_not_logged = self.refused_log.suppressed(),
        );
    }

    /// An operator or the drain asks this session to close with `denied`.
    pub(super) fn close_requested(&mut self, denied: SessionClose) {
        if self.is_closing() {
            return;
        }
        let event = match denied {
            SessionClose::Draining => return self.start_drain(),
            SessionClose::Revoked => "revocation_kick",
            SessionClose::Kicked => "operator_kick",
            _ => "session_closed",
        };
        session_event!(info, self, event, denied.reason());
        self.close(denied);
    }

    /// Take what the gateway changed since the last read: a reload's policy, a revocation
    /// covering this session's token (closed 4003, as the revoke request itself does). Two atomic
    /// loads when nothing changed.
    pub(super) fn catch_up(&mut self) {
        if self.p.handles.policy.generation() != self.policy_generation {
            self.take_policy();
        }
        let revocations = &self.p.handles.revocations;
        let generation = revocations.generation();
        if generation != self.revocation_generation {
            self.revocation_generation = generation;
            if revocations.check(&self.p.claims, unix_now()) {
                self.close_requested(SessionClose::Revoked);
            }
        }
    }

    /// Take the gateway's policy in force (after a reload) for the frames that follow: the
    /// route's message types, schemas and envelope settings, the limits (buckets restart full
    /// when their rates changed) and timeouts. A route the reload removed keeps its old rules;
    /// the connection is never dropped.
    pub(super) fn take_policy(&mut self) {
        self.policy_generation = self.p.handles.policy.generation();
        let config = Arc::clone(&self.p.handles.policy.load().config);
        if Arc::ptr_eq(&config, &self.p.config) {
            return;
        }
        let Some(route) = config.route(&self.p.route.path) else {
            return;
        };
        self.inbound.reconfigure(Arc::clone(route), &self.p.config.limits, &config.limits, Instant::now());
        self.outbound.set_max_message(config.limits.max_message_bytes);
        self.outbound.set_guard(route.sensitive.as_ref());
        self.p.route = Arc::clone(route);
        self.p.config = config;
        self.start_heartbeat();
        self.wake();
    }
}

/// Longest timer the session arms; a later deadline (a token valid for centuries) is re-armed
/// from there, never computed by an overflowing `Instant` sum.
const LONGEST_TIMER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `now + d`, capped at [`LONGEST_TIMER`] so it cannot overflow.
pub(super) fn instant_after(now: Instant, d: Duration) -> Instant {
    let d = d.min(LONGEST_TIMER);
    now.checked_add(d).unwrap_or(now)
}
