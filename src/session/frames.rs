//! The frame side of a [`Session`]: each complete frame from either socket, judged in
//! docs/protocol.md order and queued for the other side as received, the error frames and
//! violation count of a refused one, and the in-band `auth.refresh`. Lifecycle and timers
//! are in `lifecycle.rs`, reading and the pump in `pump.rs`, state and closing in the parent.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::BytesMut;

use super::{Assembly, Session, FORWARD_TIME_SAMPLE, FRAGMENT_ASSEMBLY_LIMIT, VIOLATION_WINDOW};
use crate::auth::jwt;
use crate::auth::unix_now;
use crate::config::Envelope;
use crate::error::SessionClose;
use crate::metrics as m;
use crate::policy::framing::FrameViolation;
use crate::policy::validate::{self, Refused, Rejection, Verdict};
use crate::wire::{self, BadClose, Header, Utf8Stream};

thread_local! {
    /// Per-thread buffer the checks read unmasked client payloads from.
    static UNMASKED: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

impl Session {
    /// Charge one frame (and `bytes`) to the buckets; false when over the limit.
    pub(super) fn charge(&mut self, bytes: usize, now: Instant) -> bool {
        let msg_ok = self.messages.as_mut().is_none_or(|b| b.try_take(1, now).is_ok());
        let bytes_ok = msg_ok && self.bytes.as_mut().is_none_or(|b| b.try_take(bytes as u64, now).is_ok());
        msg_ok && bytes_ok
    }

    /// A complete client data message: UTF-8 → rate → JSON checks → forward (docs/protocol.md
    /// order). `payload` is unmasked; `frames` are the bytes as received, forwarded on success.
    /// `fragmented` is `Some(rate_limited)` for an assembled message: its fragments were
    /// charged as they arrived, and one over the limit was answered `rate_limited` then.
    fn on_client_message(&mut self, text: bool, payload: &[u8], frames: &[u8], fragmented: Option<bool>, now: Instant) {
        // The gateway time of one frame in FORWARD_TIME_SAMPLE is timed (two clock reads and
        // a histogram insert cost about as much as the rest of the no-envelope path).
        let started = self.messages_in.is_multiple_of(FORWARD_TIME_SAMPLE).then(Instant::now);
        let text_str = if text {
            match simdutf8::basic::from_utf8(payload) {
                Ok(s) => Some(s),
                Err(_) => return self.close(SessionClose::InvalidUtf8),
            }
        } else {
            None
        };
        match fragmented {
            None if !self.charge(payload.len(), now) => return self.reject(Rejection::RateLimited, None, None),
            // Refused already, when the fragment went over the limit.
            Some(true) => return,
            _ => {}
        }
        if self.p.route.envelope == Envelope::Json {
            let verdict =
                match text_str {
                    Some(t) => validate::check_text(&self.p.route, &self.p.claims.scopes, t),
                    None => validate::check_binary(&self.p.route)
                        .map(|()| Verdict::Forward)
                        .map_err(|rejection| Refused { rejection, id: None, kind: None }),
                };
            match verdict {
                Ok(Verdict::Forward) => {}
                Ok(Verdict::Refresh { token, id }) => return self.refresh(&token, id.as_deref(), now),
                Err(r) => return self.reject(r.rejection, r.id.as_deref(), r.kind.as_deref()),
            }
        }
        self.upstream.out.extend_from_slice(frames);
        self.messages_in += 1;
        self.metrics.in_forwarded.increment(1);
        self.metrics.in_bytes.increment(payload.len() as u64);
        if let Some(started) = started {
            self.metrics.forward_seconds.record(started.elapsed().as_secs_f64());
        }
    }

    /// Handle the whole client frames at the front of `buf`; returns the bytes consumed and
    /// the total size of the incomplete frame left, when its header is complete.
    pub(super) fn on_client_bytes(&mut self, buf: &[u8], now: Instant) -> (usize, usize) {
        let mut pos = 0;
        while self.closing.is_none() {
            let Some(h) = wire::parse_header(&buf[pos..]) else { break };
            if !self.client_judged {
                if let Err(v) = self.client_framing.judge(&h) {
                    self.protocol_close(violation_denied(v));
                    break;
                }
                self.client_judged = true;
            }
            let len = h.frame_len() as usize;
            if buf.len() - pos < len {
                return (pos, len);
            }
            self.client_judged = false;
            // Only a complete frame is activity for the idle limit: a frame trickling in
            // byte by byte is timed by `timeouts.frame_seconds` instead.
            self.last_seen = now;
            self.on_client_frame(&h, &buf[pos..pos + len], now);
            pos += len;
        }
        (pos, 0)
    }

    fn on_client_frame(&mut self, h: &Header, frame: &[u8], now: Instant) {
        let mut payload = UNMASKED.with(Cell::take);
        payload.clear();
        payload.extend_from_slice(&frame[h.header_len..]);
        if let Some(key) = h.mask {
            wire::apply_mask(&mut payload, key);
        }
        match h.opcode {
            wire::OP_TEXT | wire::OP_BINARY if h.fin => {
                self.on_client_message(h.opcode == wire::OP_TEXT, &payload, frame, None, now);
            }
            wire::OP_TEXT | wire::OP_BINARY => {
                // Every fragment is charged as it arrives (a frame and its bytes), so a
                // message that never ends still pays for what it sent.
                let rate_limited = !self.charge(payload.len(), now);
                if rate_limited {
                    self.reject(Rejection::RateLimited, None, None);
                }
                let mut frames = BytesMut::with_capacity(frame.len());
                frames.extend_from_slice(frame);
                self.assembly = Some(Assembly {
                    text: h.opcode == wire::OP_TEXT,
                    payload: payload.clone(),
                    frames,
                    started: now,
                    rate_limited,
                });
            }
            wire::OP_CONTINUATION => self.on_continuation(h.fin, &payload, frame, now),
            wire::OP_PING => {
                // Control frames count against the buckets like any frame: a ping or pong
                // flood is a flood.
                if self.charge(payload.len(), now) {
                    wire::encode(&mut self.client.out, wire::OP_PONG, true, &payload, None);
                } else {
                    self.reject(Rejection::RateLimited, None, None);
                }
            }
            wire::OP_CLOSE => {
                // Charged too; the close is honoured either way (the connection ends).
                let _ = self.charge(payload.len(), now);
                self.on_client_close(&payload);
            }
            _ => {
                // Pong (solicited or not; framing refuses every other opcode).
                if !self.charge(payload.len(), now) {
                    self.reject(Rejection::RateLimited, None, None);
                }
            }
        }
        UNMASKED.with(|u| u.set(payload));
    }

    fn on_continuation(&mut self, fin: bool, payload: &[u8], frame: &[u8], now: Instant) {
        if self.assembly.is_none() {
            return self.protocol_close(SessionClose::Protocol);
        }
        // Charged per frame, empty ones included: endless empty continuations are a flood
        // like any other (refused, counted, closed 4029).
        let limited = !self.charge(payload.len(), now);
        if limited {
            self.reject(Rejection::RateLimited, None, None);
            if self.closing.is_some() {
                return;
            }
        }
        let Some(asm) = self.assembly.as_mut() else {
            return self.protocol_close(SessionClose::Protocol);
        };
        if now.duration_since(asm.started) > FRAGMENT_ASSEMBLY_LIMIT {
            return self.protocol_close(SessionClose::Protocol);
        }
        asm.payload.extend_from_slice(payload);
        asm.frames.extend_from_slice(frame);
        asm.rate_limited |= limited;
        if !fin {
            return;
        }
        let Some(asm) = self.assembly.take() else { return };
        self.on_client_message(asm.text, &asm.payload, &asm.frames, Some(asm.rate_limited), now);
    }

    /// The client's close: echo its code, relay it upstream, stop.
    fn on_client_close(&mut self, payload: &[u8]) {
        match wire::parse_close(payload) {
            Err(BadClose::Protocol) => self.protocol_close(SessionClose::Protocol),
            Err(BadClose::Utf8) => self.protocol_close(SessionClose::InvalidUtf8),
            Ok(code) => {
                self.client.close_seen = true;
                self.closing = Some(m::DISCONNECT_CLIENT);
                let echo = code.map_or(&[][..], |_| &payload[..2]);
                wire::encode(&mut self.client.out, wire::OP_CLOSE, true, echo, None);
                self.close_upstream(code.unwrap_or(1000), b"");
                self.begin_closing();
            }
        }
    }

    /// Handle the whole upstream frames at the front of `buf` (see [`Self::on_client_bytes`]).
    pub(super) fn on_upstream_bytes(&mut self, buf: &[u8]) -> (usize, usize) {
        let mut pos = 0;
        while self.closing.is_none() {
            let Some(h) = wire::parse_header(&buf[pos..]) else { break };
            if !self.upstream_judged {
                if let Err(v) = self.upstream_framing.judge(&h) {
                    self.upstream_ended(upstream_violation_denied(v));
                    break;
                }
                self.upstream_judged = true;
            }
            let len = h.frame_len() as usize;
            if buf.len() - pos < len {
                return (pos, len);
            }
            self.upstream_judged = false;
            self.on_upstream_frame(&h, &buf[pos..pos + len]);
            pos += len;
        }
        (pos, 0)
    }

    fn on_upstream_frame(&mut self, h: &Header, frame: &[u8]) {
        let payload = &frame[h.header_len..];
        match h.opcode {
            wire::OP_TEXT | wire::OP_BINARY | wire::OP_CONTINUATION => {
                let text_ok = match (h.opcode, h.fin) {
                    (wire::OP_TEXT, true) => simdutf8::basic::from_utf8(payload).is_ok(),
                    (wire::OP_TEXT, false) => {
                        let mut stream = Utf8Stream::default();
                        let ok = stream.feed(payload, false);
                        self.upstream_text = Some(stream);
                        ok
                    }
                    (wire::OP_CONTINUATION, fin) => match self.upstream_text.as_mut() {
                        Some(stream) => stream.feed(payload, fin),
                        None => true,
                    },
                    _ => {
                        self.upstream_text = None;
                        true
                    }
                };
                if !text_ok {
                    return self.upstream_ended(SessionClose::UpstreamLost);
                }
                self.client.out.extend_from_slice(frame);
                self.metrics.out_bytes.increment(payload.len() as u64);
                if h.fin {
                    self.messages_out += 1;
                    self.metrics.out_forwarded.increment(1);
                }
            }
            wire::OP_PING => {
                wire::encode(&mut self.upstream.out, wire::OP_PONG, true, payload, Some(self.mask_keys.next_key()));
            }
            wire::OP_CLOSE if self.drain_by.is_some() => {
                // The answer to the drain's close: the client gets 1001 now.
                self.upstream.close_seen = true;
                self.finish_drain();
            }
            wire::OP_CLOSE => match wire::parse_close(payload) {
                Ok(_) => {
                    // Relay the upstream's close (code and reason) to the client; echo it upstream.
                    self.upstream.close_seen = true;
                    self.closing = Some(m::DISCONNECT_UPSTREAM);
                    self.client.out.extend_from_slice(frame);
                    let echo = payload.get(..2).unwrap_or(&[]);
                    self.close_upstream(0, echo);
                    self.begin_closing();
                }
                Err(_) => self.upstream_ended(SessionClose::UpstreamLost),
            },
            _ => {} // pong
        }
    }

    /// Count a rejected frame; close once `violations_before_close` are reached in the window.
    /// Logged as `message_refused` (WARN), at most [`super::REFUSED_LOG_PER_SECOND`] lines per
    /// second per connection; the lines left out are counted in the next one (`suppressed`).
    /// `kind` is the frame's message type when it had one.
    pub(super) fn reject(&mut self, rejection: Rejection, id: Option<&str>, kind: Option<&str>) {
        self.metrics.rejected(rejection);
        if let Some(suppressed) = self.refused_log.admit(Instant::now()) {
            session_event!(
                warn,
                self,
                "message_refused",
                rejection.code(),
                code = rejection.code(),
                message_type = kind.unwrap_or(""),
                suppressed = suppressed,
            );
        }
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
            let denied = if rejection == Rejection::RateLimited {
                SessionClose::RateViolations
            } else {
                SessionClose::PolicyViolations
            };
            let event =
                if denied == SessionClose::RateViolations { "rate_limit_close" } else { "policy_violation_close" };
            session_event!(warn, self, event, denied.reason());
            self.close(denied);
        }
    }

    /// `auth.refresh`: same subject required; on success re-arm the timers and answer
    /// `auth.refreshed`; on failure `forbidden` and the old expiry stands.
    ///
    /// Each refresh is a signature verification: past the connection's refresh allowance
    /// (`limits.refresh_burst`, then one per `refresh_interval_seconds`) it is refused
    /// `rate_limited` without verifying anything, and counted as a violation.
    pub(super) fn refresh(&mut self, token: &str, id: Option<&str>, now: Instant) {
        self.metrics.control();
        if self.refreshes.as_mut().is_some_and(|b| b.try_take(1, now).is_err()) {
            return self.reject(Rejection::RateLimited, id, Some(validate::AUTH_REFRESH));
        }
        let keys = Arc::clone(&self.p.handles.policy.load().keys);
        let result = jwt::verify(token, &keys, &self.p.config.auth, SystemTime::now());
        let outcome = match result {
            Ok(claims) if claims.sub != self.p.claims.sub => Err("subject_mismatch"),
            Ok(claims) if self.p.handles.revocations.revokes(&claims, unix_now()) => Err("revoked"),
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
                let frame = validate::gateway_frame(&self.p.route.type_field, "auth.refreshed", &payload);
                self.send_text(&frame);
            }
            Err(why) => {
                session_event!(warn, self, "auth_refresh", why, result = "failed");
                self.reject(Rejection::Forbidden, id, Some(validate::AUTH_REFRESH));
            }
        }
    }
}

fn violation_denied(v: FrameViolation) -> SessionClose {
    match v {
        FrameViolation::TooBig => SessionClose::MessageTooBig,
        FrameViolation::Protocol => SessionClose::Protocol,
    }
}

/// What the client is told when the upstream broke a framing rule: an oversized upstream
/// message stays 1009, any other upstream fault is the upstream being lost (1014).
fn upstream_violation_denied(v: FrameViolation) -> SessionClose {
    match v {
        FrameViolation::TooBig => SessionClose::MessageTooBig,
        FrameViolation::Protocol => SessionClose::UpstreamLost,
    }
}
