//! The client-to-upstream pipeline: the client's bytes in, one [`Action`] per complete frame
//! out. Pure: no sockets, no actors, no metrics, time passed in; the session executes the
//! actions (docs/architecture.md).
//!
//! The order for a data message (docs/protocol.md): framing rules (on the header, before the
//! payload arrives) → assembly of fragments → rate (messages and bytes buckets) → UTF-8 →
//! envelope → type → scope → schema (`policy::validate`) → [`Action::Forward`]. Control
//! frames are charged like any frame. A refused message is counted towards
//! `limits.violations_before_close` over [`VIOLATION_WINDOW`]; the one too many closes.
//!
//! Adding a per-message check: a pure function in `policy/` and one line in
//! [`Inbound::on_message`].
//!
//! Owns: framing state, the fragment assembly, the buckets, the violation window. Does not
//! own: writing frames, logs, metrics, token verification (`auth.refresh` is an action).

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::config::{Envelope, Limits, Route};
use crate::error::SessionClose;
use crate::policy::framing::{FrameViolation, Framing, Sender};
use crate::policy::ratelimit::{optional_bucket, TokenBucket};
use crate::policy::validate::{self, Refused, Rejection, Verdict};
use crate::wire::{self, BadClose, Header};

/// Window over which rejected frames are counted towards `violations_before_close`.
pub const VIOLATION_WINDOW: Duration = Duration::from_secs(60);

/// Longest time one fragmented message may take to arrive completely.
pub const FRAGMENT_ASSEMBLY_LIMIT: Duration = Duration::from_secs(30);

thread_local! {
    /// Per-thread buffer the checks read unmasked client payloads from.
    static UNMASKED: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// What a pipeline made of the bytes at the front of its socket's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<A = Action> {
    /// No complete frame header yet.
    NeedMore,
    /// The frame at the front is incomplete; `want` is its whole size.
    Partial {
        /// Header plus payload length.
        want: usize,
    },
    /// The first `len` bytes were one frame (0 when its header broke a framing rule); the
    /// session does `action`.
    Frame {
        /// Bytes consumed.
        len: usize,
        /// What to do.
        action: A,
    },
}

/// What the session does about one client frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing (a fragment kept for assembly, a pong, a message refused already).
    None,
    /// Forward the frame just judged upstream, as received.
    Forward {
        /// Its payload length (for the byte count).
        payload: usize,
    },
    /// Forward an assembled message upstream: its frames as received.
    ForwardAssembled {
        /// The frames.
        frames: BytesMut,
        /// The message's payload length.
        payload: usize,
    },
    /// Answer a ping with a pong carrying this payload.
    Pong(Vec<u8>),
    /// Send the client an error frame; `close` when this refusal was one too many.
    Reject(Box<Rejected>),
    /// An `auth.refresh` within the connection's allowance: verify `token`.
    Refresh {
        /// The new token (never logged).
        token: String,
        /// The envelope's `id`, echoed as `ref`.
        id: Option<String>,
    },
    /// The client closed: echo its close and relay `code` upstream.
    ClientClose {
        /// The code it sent (`None`: an empty close).
        code: Option<u16>,
    },
    /// Close the client with this code (the upstream gets 1001).
    Close(SessionClose),
}

/// A refused message as the session reports it.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Why.
    pub rejection: Rejection,
    /// The envelope's `id`, echoed as `ref`.
    pub id: Option<String>,
    /// The message type, for the log.
    pub kind: Option<String>,
    /// `Some` when the violation count reached `violations_before_close`.
    pub close: Option<SessionClose>,
}

/// How a complete message stands with the buckets.
#[derive(Debug, Clone, Copy)]
enum Charge {
    /// Charged within the limits.
    Paid,
    /// Over the limit: refused `rate_limited`.
    Over,
    /// A fragment of it went over the limit and was refused then.
    ReportedAlready,
}

/// A fragmented client message being assembled.
#[derive(Debug)]
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

/// The client direction of one connection.
#[derive(Debug)]
pub struct Inbound {
    route: Arc<Route>,
    framing: Framing,
    /// The frame at the front of the buffer was judged already (it is still arriving).
    judged: bool,
    assembly: Option<Assembly>,
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
    /// `auth.refresh` allowance (each one is a signature verification).
    refreshes: Option<TokenBucket>,
    violations: VecDeque<Instant>,
    violations_before_close: usize,
}

/// The message and byte buckets of `l`.
fn buckets(l: &Limits, now: Instant) -> (Option<TokenBucket>, Option<TokenBucket>) {
    let byte_burst = l.bytes_per_second.max(l.max_message_bytes as u64);
    (
        optional_bucket(u64::from(l.message_burst), u64::from(l.messages_per_second), now),
        optional_bucket(byte_burst, l.bytes_per_second, now),
    )
}

/// The `auth.refresh` bucket of `l` (`None`: unlimited).
fn refresh_bucket(l: &Limits, now: Instant) -> Option<TokenBucket> {
    let every = Duration::from_secs(l.refresh_interval_seconds);
    TokenBucket::try_every(u64::from(l.refresh_burst), every, now).ok()
}

// === impl Inbound ===

impl Inbound {
    /// The pipeline of a new connection on `route` under `limits`.
    pub fn new(route: Arc<Route>, limits: &Limits, now: Instant) -> Self {
        let (messages, bytes) = buckets(limits, now);
        Self {
            route,
            framing: Framing::new(limits.max_message_bytes, Sender::Client),
            judged: false,
            assembly: None,
            messages,
            bytes,
            refreshes: refresh_bucket(limits, now),
            violations: VecDeque::new(),
            violations_before_close: limits.violations_before_close as usize,
        }
    }

    /// The route whose rules are in force.
    pub fn route(&self) -> &Arc<Route> {
        &self.route
    }

    /// A reload: the route's new rules and the new limits for the frames that follow. Buckets
    /// restart full when their rates changed.
    pub fn reconfigure(&mut self, route: Arc<Route>, old: &Limits, new: &Limits, now: Instant) {
        let (messages, bytes) = buckets(new, now);
        if (old.message_burst, old.messages_per_second) != (new.message_burst, new.messages_per_second) {
            self.messages = messages;
        }
        if (old.bytes_per_second, old.max_message_bytes) != (new.bytes_per_second, new.max_message_bytes) {
            self.bytes = bytes;
        }
        if (old.refresh_burst, old.refresh_interval_seconds) != (new.refresh_burst, new.refresh_interval_seconds) {
            self.refreshes = refresh_bucket(new, now);
        }
        self.framing.set_max_message(new.max_message_bytes);
        self.violations_before_close = new.violations_before_close as usize;
        self.route = route;
    }

    /// Charge one frame of `bytes` to the buckets; false when over the limit.
    fn charge(&mut self, bytes: usize, now: Instant) -> bool {
        let msg_ok = self.messages.as_mut().is_none_or(|b| b.try_take(1, now).is_ok());
        let bytes_ok = msg_ok && self.bytes.as_mut().is_none_or(|b| b.try_take(bytes as u64, now).is_ok());
        msg_ok && bytes_ok
    }

    /// Bytes a closing client still sends: charged to the byte bucket only; false past it.
    pub fn charge_lingering(&mut self, bytes: usize, now: Instant) -> bool {
        self.bytes.as_mut().is_none_or(|b| b.try_take(bytes as u64, now).is_ok())
    }

    /// Judge the frame at the front of `buf`. `scopes` are the token's in force.
    pub fn next(&mut self, buf: &[u8], scopes: &[String], now: Instant) -> Step {
        let Some(h) = wire::parse_header(buf) else { return Step::NeedMore };
        if !self.judged {
            if let Err(v) = self.framing.judge(&h) {
                let close = match v {
                    FrameViolation::TooBig => SessionClose::MessageTooBig,
                    FrameViolation::Protocol => SessionClose::Protocol,
                };
                return Step::Frame { len: 0, action: Action::Close(close) };
            }
            self.judged = true;
        }
        let len = h.frame_len() as usize;
        if buf.len() < len {
            return Step::Partial { want: len };
        }
        self.judged = false;
        let action = self.on_frame(&h, &buf[..len], scopes, now);
        Step::Frame { len, action }
    }

    fn on_frame(&mut self, h: &Header, frame: &[u8], scopes: &[String], now: Instant) -> Action {
        let mut payload = UNMASKED.with(Cell::take);
        payload.clear();
        payload.extend_from_slice(&frame[h.header_len..]);
        if let Some(key) = h.mask {
            wire::apply_mask(&mut payload, key);
        }
        let action = match h.opcode {
            wire::OP_TEXT | wire::OP_BINARY if h.fin => {
                let charge = if self.charge(payload.len(), now) { Charge::Paid } else { Charge::Over };
                match self.on_message(h.opcode == wire::OP_TEXT, &payload, charge, scopes, now) {
                    Ok(()) => Action::Forward { payload: payload.len() },
                    Err(action) => action,
                }
            }
            wire::OP_TEXT | wire::OP_BINARY => {
                // Every fragment is charged as it arrives (a frame and its bytes), so a
                // message that never ends still pays for what it sent.
                let rate_limited = !self.charge(payload.len(), now);
                let mut frames = BytesMut::with_capacity(frame.len());
                frames.extend_from_slice(frame);
                self.assembly = Some(Assembly {
                    text: h.opcode == wire::OP_TEXT,
                    payload: payload.clone(),
                    frames,
                    started: now,
                    rate_limited,
                });
                if rate_limited {
                    self.reject(Refused { rejection: Rejection::RateLimited, id: None, kind: None }, now)
                } else {
                    Action::None
                }
            }
            wire::OP_CONTINUATION => self.on_continuation(h.fin, &payload, frame, scopes, now),
            wire::OP_PING => {
                // Control frames count against the buckets like any frame: a ping or pong
                // flood is a flood.
                if self.charge(payload.len(), now) {
                    Action::Pong(payload.clone())
                } else {
                    self.reject(Refused { rejection: Rejection::RateLimited, id: None, kind: None }, now)
                }
            }
            wire::OP_CLOSE => {
                // Charged too; the close is honoured either way (the connection ends).
                let _ = self.charge(payload.len(), now);
                match wire::parse_close(&payload) {
                    Err(BadClose::Protocol) => Action::Close(SessionClose::Protocol),
                    Err(BadClose::Utf8) => Action::Close(SessionClose::InvalidUtf8),
                    Ok(code) => Action::ClientClose { code },
                }
            }
            _ => {
                // Pong (solicited or not; framing refuses every other opcode).
                if self.charge(payload.len(), now) {
                    Action::None
                } else {
                    self.reject(Refused { rejection: Rejection::RateLimited, id: None, kind: None }, now)
                }
            }
        };
        UNMASKED.with(|u| u.set(payload));
        action
    }

    fn on_continuation(&mut self, fin: bool, payload: &[u8], frame: &[u8], scopes: &[String], now: Instant) -> Action {
        if self.assembly.is_none() {
            return Action::Close(SessionClose::Protocol);
        }
        // Charged per frame, empty ones included: endless empty continuations are a flood
        // like any other (refused, counted, closed 4029).
        let refused = if self.charge(payload.len(), now) {
            None
        } else {
            match self.reject(Refused { rejection: Rejection::RateLimited, id: None, kind: None }, now) {
                Action::Reject(r) if r.close.is_none() => Some(r),
                closing => return closing,
            }
        };
        let completed = self.continue_assembly(fin, payload, frame, refused.is_some(), scopes, now);
        match (refused, completed) {
            (None, action) => action,
            // The fragment's refusal is reported; a close the message itself earned follows it.
            (Some(mut r), Action::Close(close)) => {
                r.close = Some(close);
                Action::Reject(r)
            }
            (Some(r), _) => Action::Reject(r),
        }
    }

    /// Add a continuation to the assembly (`limited`: it went over the rate limit); the
    /// message's action when it is complete, else [`Action::None`].
    fn continue_assembly(
        &mut self,
        fin: bool,
        payload: &[u8],
        frame: &[u8],
        limited: bool,
        scopes: &[String],
        now: Instant,
    ) -> Action {
        let Some(asm) = self.assembly.as_mut() else { return Action::Close(SessionClose::Protocol) };
        if now.duration_since(asm.started) > FRAGMENT_ASSEMBLY_LIMIT {
            return Action::Close(SessionClose::Protocol);
        }
        asm.payload.extend_from_slice(payload);
        asm.frames.extend_from_slice(frame);
        asm.rate_limited |= limited;
        if !fin {
            return Action::None;
        }
        let Some(asm) = self.assembly.take() else { return Action::None };
        // A message with a fragment over the limit was refused when that fragment arrived.
        let charge = if asm.rate_limited { Charge::ReportedAlready } else { Charge::Paid };
        match self.on_message(asm.text, &asm.payload, charge, scopes, now) {
            Ok(()) => Action::ForwardAssembled { payload: asm.payload.len(), frames: asm.frames },
            Err(action) => action,
        }
    }

    /// A complete data message: UTF-8 → rate → the route's checks. `Ok` forwards it; `Err`
    /// is what to do instead.
    fn on_message(
        &mut self,
        text: bool,
        payload: &[u8],
        charge: Charge,
        scopes: &[String],
        now: Instant,
    ) -> Result<(), Action> {
        let text = if text {
            match simdutf8::basic::from_utf8(payload) {
                Ok(s) => Some(s),
                Err(_) => return Err(Action::Close(SessionClose::InvalidUtf8)),
            }
        } else {
            None
        };
        match charge {
            Charge::Paid => {}
            Charge::Over => {
                return Err(self.reject(Refused { rejection: Rejection::RateLimited, id: None, kind: None }, now))
            }
            Charge::ReportedAlready => return Err(Action::None),
        }
        if self.route.envelope == Envelope::Json {
            let verdict =
                match text {
                    Some(t) => validate::check_text(&self.route, scopes, t),
                    None => validate::check_binary(&self.route)
                        .map(|()| Verdict::Forward)
                        .map_err(|rejection| Refused { rejection, id: None, kind: None }),
                };
            match verdict {
                Ok(Verdict::Forward) => {}
                Ok(Verdict::Refresh { token, id }) => return Err(self.refresh(token, id, now)),
                Err(refused) => return Err(self.reject(refused, now)),
            }
        }
        Ok(())
    }

    /// `auth.refresh` past the connection's allowance (`limits.refresh_burst`, then one per
    /// `refresh_interval_seconds`) is refused `rate_limited` without verifying anything.
    fn refresh(&mut self, token: String, id: Option<String>, now: Instant) -> Action {
        if self.refreshes.as_mut().is_some_and(|b| b.try_take(1, now).is_err()) {
            let kind = Some(validate::AUTH_REFRESH.to_string());
            return self.reject(Refused { rejection: Rejection::RateLimited, id, kind }, now);
        }
        Action::Refresh { token, id }
    }

    /// Count a refusal (also one decided outside the pipeline, like a failed `auth.refresh`)
    /// and say what to do about it.
    pub fn reject(&mut self, refused: Refused, now: Instant) -> Action {
        let mut close = None;
        if self.violations_before_close > 0 {
            self.violations.push_back(now);
            while self.violations.front().is_some_and(|t| now.duration_since(*t) > VIOLATION_WINDOW) {
                self.violations.pop_front();
            }
            if self.violations.len() >= self.violations_before_close {
                close = Some(if refused.rejection == Rejection::RateLimited {
                    SessionClose::RateViolations
                } else {
                    SessionClose::PolicyViolations
                });
            }
        }
        Action::Reject(Box::new(Rejected { rejection: refused.rejection, id: refused.id, kind: refused.kind, close }))
    }
}
