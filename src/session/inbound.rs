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
use crate::policy::framing::{FrameViolation, Framing, Front, Sender};
use crate::policy::ratelimit::{optional_bucket, TokenBucket};
use crate::policy::sensitive::{redact, Direction, Findings, GuardAction, Hit, RuleCount};
use crate::policy::validate::{self, Refused, Rejection, Verdict};
use crate::wire::{self, BadClose, Header};

use super::FINGERPRINTS;

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

impl<A> Step<A> {
    /// The step for the frame at the front of a buffer: `broken` names the action for a
    /// header that breaks a framing rule (nothing is consumed), `complete` the one for a
    /// whole frame.
    #[inline]
    pub(super) fn from_front(
        front: Front,
        broken: impl FnOnce(FrameViolation) -> A,
        complete: impl FnOnce(&Header, usize) -> A,
    ) -> Self {
        match front {
            Front::NeedMore => Self::NeedMore,
            Front::Partial { want } => Self::Partial { want },
            Front::Broken(v) => Self::Frame { len: 0, action: broken(v) },
            Front::Complete { header, len } => Self::Frame { len, action: complete(&header, len) },
        }
    }
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
    /// Forward this text upstream instead of the message received (its redacted form).
    Replace(String),
    /// The sensitive-data guard found `hits` (the session logs and counts them), then `then`.
    Sensitive {
        /// What was found (never the values).
        hits: Vec<Hit>,
        /// Per rule, how many hits (listed or not).
        by_rule: Vec<RuleCount>,
        /// What happens to the message.
        then: Box<Action>,
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
    /// The message was a gateway control message (an `auth.refresh` over its allowance).
    pub control: bool,
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
    TokenBucket::try_every(u64::from(l.refresh_burst), l.refresh_interval, now).ok()
}

// === impl Inbound ===

impl Inbound {
    /// The pipeline of a new connection on `route` under `limits`.
    pub fn new(route: Arc<Route>, limits: &Limits, now: Instant) -> Self {
        let (messages, bytes) = buckets(limits, now);
        Self {
            route,
            framing: Framing::new(limits.max_message_bytes, Sender::Client),
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
        if (old.refresh_burst, old.refresh_interval) != (new.refresh_burst, new.refresh_interval) {
            self.refreshes = refresh_bucket(new, now);
        }
        self.framing.set_max_message(new.max_message_bytes);
        self.violations_before_close = new.violations_before_close as usize;
        self.route = route;
    }

    /// Charge one frame of `bytes` to the buckets; false when over the limit.
    #[inline]
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
    #[inline]
    pub fn next(&mut self, buf: &[u8], scopes: &[String], now: Instant) -> Step {
        let front = self.framing.front(buf);
        Step::from_front(
            front,
            |v| {
                Action::Close(match v {
                    FrameViolation::TooBig => SessionClose::MessageTooBig,
                    FrameViolation::Protocol => SessionClose::Protocol,
                })
            },
            |h, len| self.on_frame(h, &buf[..len], scopes, now),
        )
    }

    #[inline]
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
                    Ok(found) => {
                        let forward = Action::Forward { payload: payload.len() };
                        self.guarded(found, forward, &payload, now)
                    }
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
            Ok(found) => {
                let forward = Action::ForwardAssembled { payload: asm.payload.len(), frames: asm.frames };
                self.guarded(found, forward, &asm.payload, now)
            }
            Err(action) => action,
        }
    }

    /// A complete data message: UTF-8 → rate → the route's checks. `Ok` forwards it; `Err`
    /// is what to do instead.
    #[inline]
    fn on_message(
        &mut self,
        text: bool,
        payload: &[u8],
        charge: Charge,
        scopes: &[String],
        now: Instant,
    ) -> Result<Option<Box<Findings>>, Action> {
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
        // The sensitive-data guard (one prefilter pass when clean); binary messages only for
        // the rules that read them.
        if let Some(guard) = &self.route.sensitive {
            let found = match text {
                Some(t) => guard.scan(Direction::ClientToUpstream, t, &FINGERPRINTS),
                None => guard.scan_binary(Direction::ClientToUpstream, payload, &FINGERPRINTS),
            };
            if let Some(found) = found {
                return Ok(Some(Box::new(found)));
            }
        }
        Ok(None)
    }

    /// What a message that passed the checks becomes: `forward` when the guard found nothing;
    /// else the guard's hits, then `forward` (log), the redacted text (redact) or a refusal
    /// (block, or a redaction of a message that is not JSON).
    #[inline]
    fn guarded(&mut self, found: Option<Box<Findings>>, forward: Action, payload: &[u8], now: Instant) -> Action {
        match found {
            None => forward,
            Some(found) => self.found(found, forward, payload, now),
        }
    }

    /// The guard found something (see [`Self::guarded`]).
    #[cold]
    fn found(&mut self, found: Box<Findings>, forward: Action, payload: &[u8], now: Instant) -> Action {
        let then = match found.action {
            GuardAction::Log => forward,
            // a redaction that is not JSON, or that grows the message past the limit, blocks
            GuardAction::Redact => match simdutf8::basic::from_utf8(payload).ok().and_then(|t| redact(t, &found)) {
                Some(text) if text.len() as u64 <= self.framing.max_message() => Action::Replace(text),
                _ => self.block(payload, now),
            },
            GuardAction::Block => self.block(payload, now),
        };
        Action::Sensitive { hits: found.hits, by_rule: found.by_rule, then: Box::new(then) }
    }

    /// Refuse a message the guard blocks: `sensitive_data`, a violation like any refusal.
    fn block(&mut self, payload: &[u8], now: Instant) -> Action {
        let (id, kind) = validate::envelope_id_and_type(payload, &self.route.type_field);
        self.reject(Refused { rejection: Rejection::SensitiveData, id, kind }, now)
    }

    /// `auth.refresh` past the connection's allowance (`limits.refresh_burst`, then one per
    /// `refresh_interval_seconds`) is refused `rate_limited` without verifying anything.
    fn refresh(&mut self, token: String, id: Option<String>, now: Instant) -> Action {
        if self.refreshes.as_mut().is_some_and(|b| b.try_take(1, now).is_err()) {
            let kind = Some(validate::AUTH_REFRESH.to_string());
            let mut refused = self.reject(Refused { rejection: Rejection::RateLimited, id, kind }, now);
            if let Action::Reject(r) = &mut refused {
                r.control = true;
            }
            return refused;
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
        Action::Reject(Box::new(Rejected {
            rejection: refused.rejection,
            id: refused.id,
            kind: refused.kind,
            close,
            control: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BinaryPolicy, MessageRule};

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn route() -> Arc<Route> {
        let schema =
            serde_json::json!({"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}});
        let mut r = Route::new("/ws", "ws://127.0.0.1:1/");
        r.messages.insert("chat.send".into(), MessageRule::new(Some("chat:write"), Some(&schema)).expect("rule"));
        r.messages.insert("chat.read".into(), MessageRule::new(None, None).expect("rule"));
        Arc::new(r)
    }

    fn limits() -> Limits {
        Limits { message_burst: 100, messages_per_second: 50, violations_before_close: 3, ..Limits::default() }
    }

    fn scopes() -> Vec<String> {
        vec!["chat:write".to_string()]
    }

    /// A masked client frame.
    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        wire::encode(&mut out, opcode, fin, payload, Some(KEY));
        out.to_vec()
    }

    fn text(s: &str) -> Vec<u8> {
        frame(wire::OP_TEXT, true, s.as_bytes())
    }

    /// The action for one complete frame, which must be consumed whole.
    fn act(p: &mut Inbound, bytes: &[u8], now: Instant) -> Action {
        match p.next(bytes, &scopes(), now) {
            Step::Frame { len, action } => {
                assert!(len == bytes.len() || len == 0, "consumed {len} of {}", bytes.len());
                action
            }
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    fn rejected(a: Action) -> Box<Rejected> {
        match a {
            Action::Reject(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn code_of(a: &Action) -> Option<&'static str> {
        match a {
            Action::Reject(r) => Some(r.rejection.code()),
            _ => None,
        }
    }

    #[test]
    fn a_valid_message_is_forwarded_and_partial_frames_wait() {
        let (mut p, now) = (Inbound::new(route(), &limits(), Instant::now()), Instant::now());
        let f = text(r#"{"type":"chat.send","payload":{"text":"hi"},"id":"c-1"}"#);
        assert_eq!(p.next(&f[..1], &scopes(), now), Step::NeedMore);
        assert_eq!(p.next(&f[..f.len() - 1], &scopes(), now), Step::Partial { want: f.len() });
        assert_eq!(act(&mut p, &f, now), Action::Forward { payload: f.len() - 6 });
    }

    #[test]
    fn every_error_code_has_its_refusal() {
        let now = Instant::now();
        let mut p = Inbound::new(route(), &Limits { violations_before_close: 0, ..limits() }, now);
        let cases = [
            ("not json", "invalid_json"),
            (r#"{"type":"chat.read","payload":{},"a":1,"a":2}"#, "invalid_envelope"),
            (r#"{"type":"chat.read","payload":[]}"#, "invalid_envelope"),
            (r#"{"type":"nope","payload":{}}"#, "unknown_type"),
            (r#"{"type":"chat.send","payload":{"text":1}}"#, "schema_violation"),
            (r#"{"type":"chat.send","payload":{"no":"text"}}"#, "schema_violation"),
        ];
        for (msg, code) in cases {
            assert_eq!(code_of(&act(&mut p, &text(msg), now)), Some(code), "{msg}");
        }
        // Scope: the token lacks chat:write.
        let f = text(r#"{"type":"chat.send","payload":{"text":"hi"},"id":7}"#);
        match p.next(&f, &[], now) {
            Step::Frame { action: Action::Reject(r), .. } => {
                assert_eq!((r.rejection.code(), r.id.as_deref()), ("forbidden", Some("7")));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(code_of(&act(&mut p, &frame(wire::OP_BINARY, true, b"\x00\x01"), now)), Some("binary_not_allowed"));
        // A binary frame where the route forwards them.
        let mut r = (*route()).clone();
        r.binary = BinaryPolicy::Forward;
        let mut p = Inbound::new(Arc::new(r), &limits(), now);
        assert_eq!(act(&mut p, &frame(wire::OP_BINARY, true, b"\x00\x01"), now), Action::Forward { payload: 2 });
    }

    #[test]
    fn the_rate_limit_refuses_then_closes_4029() {
        let now = Instant::now();
        let l = Limits { message_burst: 2, messages_per_second: 1, violations_before_close: 2, ..limits() };
        let mut p = Inbound::new(route(), &l, now);
        let f = text(r#"{"type":"chat.read","payload":{}}"#);
        assert!(matches!(act(&mut p, &f, now), Action::Forward { .. }));
        assert!(matches!(act(&mut p, &f, now), Action::Forward { .. }));
        let r = rejected(act(&mut p, &f, now));
        assert_eq!((r.rejection, r.close), (Rejection::RateLimited, None));
        let r = rejected(act(&mut p, &f, now));
        assert_eq!(r.close.map(|c| c.close_code()), Some(4029));
    }

    #[test]
    fn repeated_refusals_close_1008_and_the_window_forgets() {
        let now = Instant::now();
        let mut p = Inbound::new(route(), &limits(), now);
        let bad = text(r#"{"type":"nope","payload":{}}"#);
        assert!(matches!(act(&mut p, &bad, now), Action::Reject(ref r) if r.close.is_none()));
        assert!(matches!(act(&mut p, &bad, now), Action::Reject(ref r) if r.close.is_none()));
        // 61 s later the first two no longer count.
        let later = now + VIOLATION_WINDOW + Duration::from_secs(1);
        assert!(matches!(act(&mut p, &bad, later), Action::Reject(ref r) if r.close.is_none()));
        assert!(matches!(act(&mut p, &bad, later), Action::Reject(ref r) if r.close.is_none()));
        let r = rejected(act(&mut p, &bad, later));
        assert_eq!(r.close.map(|c| c.close_code()), Some(1008));
    }

    #[test]
    fn framing_and_utf8_closes() {
        let now = Instant::now();
        let l = Limits { max_message_bytes: 64, ..limits() };
        // 1009: the declared length alone, before the payload arrives.
        let mut p = Inbound::new(route(), &l, now);
        let big = text(&"x".repeat(65));
        assert_eq!(
            p.next(&big[..8], &scopes(), now),
            Step::Frame { len: 0, action: Action::Close(SessionClose::MessageTooBig) }
        );
        // 1002: an unmasked client frame; a continuation with nothing to continue.
        let mut p = Inbound::new(route(), &l, now);
        let mut unmasked = BytesMut::new();
        wire::encode(&mut unmasked, wire::OP_TEXT, true, b"{}", None);
        assert_eq!(act(&mut p, &unmasked, now), Action::Close(SessionClose::Protocol));
        let mut p = Inbound::new(route(), &l, now);
        assert_eq!(act(&mut p, &frame(wire::OP_CONTINUATION, true, b"x"), now), Action::Close(SessionClose::Protocol));
        // 1007: invalid UTF-8 in a text message, whole or assembled.
        let mut p = Inbound::new(route(), &l, now);
        assert_eq!(act(&mut p, &frame(wire::OP_TEXT, true, b"\xff"), now), Action::Close(SessionClose::InvalidUtf8));
        let mut p = Inbound::new(route(), &l, now);
        assert_eq!(act(&mut p, &frame(wire::OP_TEXT, false, b"\xe2\x82"), now), Action::None);
        assert_eq!(
            act(&mut p, &frame(wire::OP_CONTINUATION, true, b"\x28"), now),
            Action::Close(SessionClose::InvalidUtf8)
        );
        // A fragmented message past the limit is cut at the fragment that passes it.
        let mut p = Inbound::new(route(), &l, now);
        assert_eq!(act(&mut p, &frame(wire::OP_TEXT, false, &[b'x'; 40]), now), Action::None);
        assert_eq!(
            p.next(&frame(wire::OP_CONTINUATION, true, &[b'x'; 40]), &scopes(), now),
            Step::Frame { len: 0, action: Action::Close(SessionClose::MessageTooBig) }
        );
    }

    #[test]
    fn fragments_are_assembled_checked_and_forwarded_as_received() {
        let now = Instant::now();
        let mut p = Inbound::new(route(), &limits(), now);
        let (a, b) = (
            frame(wire::OP_TEXT, false, br#"{"type":"chat.read","#),
            frame(wire::OP_CONTINUATION, true, br#""payload":{}}"#),
        );
        // A ping between fragments is answered on its own.
        assert_eq!(act(&mut p, &a, now), Action::None);
        assert_eq!(act(&mut p, &frame(wire::OP_PING, true, b"hb"), now), Action::Pong(b"hb".to_vec()));
        match act(&mut p, &b, now) {
            Action::ForwardAssembled { frames, payload } => {
                assert_eq!(&frames[..], &[&a[..], &b[..]].concat()[..]);
                assert_eq!(payload, 33);
            }
            other => panic!("{other:?}"),
        }
        // An assembled message that fails a check is refused once it is complete.
        let (a, b) = (
            frame(wire::OP_TEXT, false, br#"{"type":"#),
            frame(wire::OP_CONTINUATION, true, br#""nope","payload":{}}"#),
        );
        assert_eq!(act(&mut p, &a, now), Action::None);
        assert_eq!(code_of(&act(&mut p, &b, now)), Some("unknown_type"));
        // An assembly older than the limit is a protocol error.
        let a = frame(wire::OP_TEXT, false, b"{");
        assert_eq!(act(&mut p, &a, now), Action::None);
        let late = now + FRAGMENT_ASSEMBLY_LIMIT + Duration::from_secs(1);
        assert_eq!(act(&mut p, &frame(wire::OP_CONTINUATION, true, b"}"), late), Action::Close(SessionClose::Protocol));
    }

    #[test]
    fn a_rate_limited_fragment_refuses_its_message_once() {
        let now = Instant::now();
        let l = Limits { message_burst: 1, messages_per_second: 1, violations_before_close: 0, ..limits() };
        let mut p = Inbound::new(route(), &l, now);
        assert_eq!(act(&mut p, &frame(wire::OP_TEXT, false, br#"{"type":"chat.read","#), now), Action::None);
        assert_eq!(code_of(&act(&mut p, &frame(wire::OP_CONTINUATION, false, b""), now)), Some("rate_limited"));
        let later = now + Duration::from_secs(5);
        // Complete, but refused already: nothing more is reported, nothing forwarded.
        assert_eq!(act(&mut p, &frame(wire::OP_CONTINUATION, true, br#""payload":{}}"#), later), Action::None);
    }

    #[test]
    fn control_frames_are_charged_and_closes_parsed() {
        let now = Instant::now();
        let l = Limits { message_burst: 1, messages_per_second: 1, violations_before_close: 0, ..limits() };
        let mut p = Inbound::new(route(), &l, now);
        assert_eq!(act(&mut p, &frame(wire::OP_PONG, true, b""), now), Action::None);
        assert_eq!(code_of(&act(&mut p, &frame(wire::OP_PING, true, b""), now)), Some("rate_limited"));
        assert_eq!(code_of(&act(&mut p, &frame(wire::OP_PONG, true, b""), now)), Some("rate_limited"));
        // A close is honoured over the limit.
        assert_eq!(
            act(&mut p, &frame(wire::OP_CLOSE, true, &1000u16.to_be_bytes()), now),
            Action::ClientClose { code: Some(1000) }
        );
        let mut p = Inbound::new(route(), &limits(), now);
        assert_eq!(act(&mut p, &frame(wire::OP_CLOSE, true, b""), now), Action::ClientClose { code: None });
        assert_eq!(act(&mut p, &frame(wire::OP_CLOSE, true, b"\x03"), now), Action::Close(SessionClose::Protocol));
        assert_eq!(
            act(&mut p, &frame(wire::OP_CLOSE, true, b"\x03\xe8\xff"), now),
            Action::Close(SessionClose::InvalidUtf8)
        );
        assert_eq!(
            act(&mut p, &frame(wire::OP_CLOSE, true, &1005u16.to_be_bytes()), now),
            Action::Close(SessionClose::Protocol)
        );
    }

    #[test]
    fn refresh_is_an_action_within_its_allowance() {
        let now = Instant::now();
        let l = Limits { refresh_burst: 1, violations_before_close: 0, ..limits() };
        let mut p = Inbound::new(route(), &l, now);
        let f = text(r#"{"type":"auth.refresh","payload":{"token":"t.t.t"},"id":"r1"}"#);
        assert_eq!(act(&mut p, &f, now), Action::Refresh { token: "t.t.t".into(), id: Some("r1".into()) });
        let r = rejected(act(&mut p, &f, now));
        assert_eq!(
            (r.rejection, r.id.as_deref(), r.kind.as_deref(), r.control),
            (Rejection::RateLimited, Some("r1"), Some("auth.refresh"), true)
        );
        // An ordinary message over the rate is no control message.
        let l = Limits { message_burst: 1, messages_per_second: 1, violations_before_close: 0, ..limits() };
        let mut p = Inbound::new(route(), &l, now);
        let chat = text(r#"{"type":"chat.read","payload":{}}"#);
        assert!(matches!(act(&mut p, &chat, now), Action::Forward { .. }));
        assert!(!rejected(act(&mut p, &chat, now)).control);
        // A refusal decided outside (a failed verification) counts like any other.
        let l = Limits { violations_before_close: 1, ..limits() };
        let mut p = Inbound::new(route(), &l, now);
        let refused = Refused { rejection: Rejection::Forbidden, id: None, kind: None };
        assert!(matches!(p.reject(refused, now), Action::Reject(r) if r.close == Some(SessionClose::PolicyViolations)));
    }

    #[test]
    fn the_no_envelope_route_forwards_any_valid_text() {
        let now = Instant::now();
        let mut r = (*route()).clone();
        r.envelope = Envelope::None;
        let mut p = Inbound::new(Arc::new(r), &limits(), now);
        assert_eq!(act(&mut p, &text("not json at all"), now), Action::Forward { payload: 15 });
        assert_eq!(act(&mut p, &frame(wire::OP_TEXT, true, b"\xc3"), now), Action::Close(SessionClose::InvalidUtf8));
    }

    #[test]
    fn a_reload_takes_new_rules_and_limits() {
        let now = Instant::now();
        let mut p = Inbound::new(route(), &limits(), now);
        let f = text(r#"{"type":"chat.read","payload":{}}"#);
        assert!(matches!(act(&mut p, &f, now), Action::Forward { .. }));
        let mut r = (*route()).clone();
        r.messages.remove("chat.read");
        let new = Limits { max_message_bytes: 8, ..limits() };
        p.reconfigure(Arc::new(r), &limits(), &new, now);
        assert_eq!(code_of(&act(&mut p, &text(r#"{"a":1}"#), now)), Some("invalid_envelope"));
        assert_eq!(
            p.next(&f, &scopes(), now),
            Step::Frame { len: 0, action: Action::Close(SessionClose::MessageTooBig) }
        );
    }

    fn guarded_route() -> Arc<Route> {
        use crate::policy::sensitive::{Direction, Guard, GuardAction, RuleDef, RuleKind};
        let rule = |name: &str, kind, action| RuleDef::new(name, kind, Direction::ClientToUpstream, action);
        let guard = Guard::compile(&[
            rule("card_number", RuleKind::CardNumber, GuardAction::Block),
            rule("password_field", RuleKind::PasswordField { names: Vec::new() }, GuardAction::Redact),
            rule("aws_access_key", RuleKind::AwsAccessKey, GuardAction::Log),
        ])
        .expect("rules");
        let mut r = (*route()).clone();
        r.sensitive = Some(Arc::new(guard));
        Arc::new(r)
    }

    fn sensitive(a: Action) -> (Vec<String>, Action) {
        match a {
            Action::Sensitive { hits, then, .. } => (hits.into_iter().map(|h| h.rule).collect(), *then),
            other => panic!("expected a guard hit, got {other:?}"),
        }
    }

    #[test]
    fn the_guard_logs_redacts_or_blocks_after_the_checks() {
        let now = Instant::now();
        let mut p = Inbound::new(guarded_route(), &limits(), now);
        let f = text(r#"{"type":"chat.read","payload":{"k":"AKIAIOSFODNN7EXAMPLE"}}"#);
        let (rules, then) = sensitive(act(&mut p, &f, now));
        assert_eq!((rules, then), (vec!["aws_access_key".to_string()], Action::Forward { payload: f.len() - 6 }));
        let (rules, then) = sensitive(act(&mut p, &text(r#"{"type":"chat.read","payload":{"password":"x1"}}"#), now));
        assert_eq!(rules, vec!["password_field".to_string()]);
        match then {
            Action::Replace(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("still JSON");
                assert_eq!(v["payload"]["password"], "[REDACTED:password_field]");
            }
            other => panic!("{other:?}"),
        }
        let card = text(r#"{"type":"chat.read","payload":{"c":"4111-1111-1111-1111"},"id":"m1"}"#);
        let (rules, then) = sensitive(act(&mut p, &card, now));
        assert_eq!(rules, vec!["card_number".to_string()]);
        let r = rejected(then);
        assert_eq!(
            (r.rejection.code(), r.id.as_deref(), r.kind.as_deref()),
            ("sensitive_data", Some("m1"), Some("chat.read"))
        );
        // Assembled messages are read whole; a message refused by the checks never reaches it.
        assert_eq!(
            act(&mut p, &frame(wire::OP_TEXT, false, br#"{"type":"chat.read","payload":{"c":"4111 1111"#), now),
            Action::None
        );
        let (_, then) = sensitive(act(&mut p, &frame(wire::OP_CONTINUATION, true, br#" 1111 1111"}}"#), now));
        assert_eq!(rejected(then).rejection, Rejection::SensitiveData);
        assert_eq!(
            code_of(&act(&mut p, &text(r#"{"type":"nope","payload":{"c":"4111 1111 1111 1111"}}"#), now)),
            Some("unknown_type")
        );
        // Clean messages pass untouched.
        assert!(matches!(
            act(&mut p, &text(r#"{"type":"chat.read","payload":{"n":"4111 1111 1111 1112"}}"#), now),
            Action::Forward { .. }
        ));
    }

    #[test]
    fn a_redaction_past_the_message_limit_blocks() {
        let now = Instant::now();
        let msg = br#"{"type":"chat.read","payload":{"password":"x"}}"#;
        // the redacted form is longer than the message: allowed exactly up to the limit
        let redacted = msg.len() - r#""x""#.len() + r#""[REDACTED:password_field]""#.len();
        for (max, redacts) in [(redacted, true), (redacted - 1, false)] {
            let l = Limits { max_message_bytes: max, ..limits() };
            let mut p = Inbound::new(guarded_route(), &l, now);
            let (_, then) = sensitive(act(&mut p, &text(std::str::from_utf8(msg).expect("utf-8")), now));
            match then {
                Action::Replace(t) => assert!(redacts && t.len() == max, "{t}"),
                other => assert!(!redacts && rejected(other).rejection == Rejection::SensitiveData),
            }
        }
    }
}
