//! The frame side of a [`Session`]: the bytes each socket delivered go through that
//! direction's pipeline (`inbound.rs`, `outbound.rs`), and the actions that come back are
//! carried out here: queue a frame for the other side, answer a ping, report a refusal,
//! verify an `auth.refresh`, close. Lifecycle and timers are in `lifecycle.rs`, reading and
//! the pump in `pump.rs`, state and closing in the parent.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::inbound::{Action, Rejected, Step};
use super::outbound::Outward;
use super::{Session, FORWARD_TIME_SAMPLE};
use crate::auth::{jwt, unix_now};
use crate::error::SessionClose;
use crate::metrics as m;
use crate::policy::sensitive::{Hit, RuleCount};
use crate::policy::validate::{self, Refused, Rejection};
use crate::wire;

impl Session {
    /// Handle the whole client frames at the front of `buf`; returns the bytes consumed and
    /// the total size of the incomplete frame left, when its header is complete.
    pub(super) fn on_client_bytes(&mut self, buf: &[u8], now: Instant) -> (usize, usize) {
        let mut pos = 0;
        while !self.is_closing() {
            // The gateway time of one message in FORWARD_TIME_SAMPLE is timed (two clock reads
            // and a histogram insert cost about as much as the rest of the no-envelope path).
            // (Not when the buffer is used up: the last pass of a read finds no frame.)
            let sampled = pos < buf.len() && self.messages_in.is_multiple_of(FORWARD_TIME_SAMPLE);
            let started = sampled.then(Instant::now);
            match self.inbound.next(&buf[pos..], &self.p.claims.scopes, now) {
                Step::NeedMore => break,
                Step::Partial { want } => return (pos, want),
                Step::Frame { len, action } => {
                    if len > 0 {
                        // Only a complete frame is activity for the idle limit: a frame
                        // trickling in byte by byte is timed by `timeouts.frame_seconds`.
                        self.last_seen = now;
                    }
                    self.on_client_action(action, &buf[pos..pos + len], started, now);
                    pos += len;
                }
            }
        }
        (pos, 0)
    }

    /// Carry out what the inbound pipeline decided about `frame`.
    fn on_client_action(&mut self, action: Action, frame: &[u8], started: Option<Instant>, now: Instant) {
        match action {
            Action::None => {}
            Action::Forward { payload } => {
                self.upstream.out.extend_from_slice(frame);
                self.forwarded_in(payload, started);
            }
            Action::ForwardAssembled { frames, payload } => {
                self.upstream.out.extend_from_slice(&frames);
                self.forwarded_in(payload, started);
            }
            Action::Replace(text) => {
                let key = Some(self.mask_keys.next_key());
                wire::encode(&mut self.upstream.out, wire::OP_TEXT, true, text.as_bytes(), key);
                self.forwarded_in(text.len(), started);
            }
            Action::Sensitive { hits, by_rule, then } => {
                self.report_sensitive(&hits, &by_rule, "in");
                self.on_client_action(*then, frame, started, now);
            }
            Action::Pong(payload) => wire::encode(&mut self.client.out, wire::OP_PONG, true, &payload, None),
            Action::Reject(r) => {
                if r.control {
                    self.metrics.control();
                }
                self.reject(&r);
            }
            Action::Refresh { token, id } => self.refresh(&token, id.as_deref(), now),
            Action::ClientClose { code } => {
                self.client.close_seen = true;
                self.enter_closing(m::DISCONNECT_CLIENT);
                let echo = code.map(u16::to_be_bytes);
                wire::encode(
                    &mut self.client.out,
                    wire::OP_CLOSE,
                    true,
                    echo.as_ref().map_or(&[][..], |e| &e[..]),
                    None,
                );
                self.close_upstream(code.unwrap_or(1000), b"");
            }
            Action::Close(close) => self.protocol_close(close),
        }
    }

    fn forwarded_in(&mut self, payload: usize, started: Option<Instant>) {
        self.messages_in += 1;
        self.metrics.in_forwarded.increment(1);
        self.metrics.in_bytes.increment(payload as u64);
        if let Some(started) = started {
            self.metrics.forward_seconds.record(started.elapsed().as_secs_f64());
        }
    }

    fn forwarded_out(&mut self, payload: usize) {
        self.metrics.out_bytes.increment(payload as u64);
        self.messages_out += 1;
        self.metrics.out_forwarded.increment(1);
    }

    /// Handle the whole upstream frames at the front of `buf` (see [`Self::on_client_bytes`]).
    pub(super) fn on_upstream_bytes(&mut self, buf: &[u8]) -> (usize, usize) {
        let mut pos = 0;
        while !self.is_closing() {
            match self.outbound.next(&buf[pos..]) {
                Step::NeedMore => break,
                Step::Partial { want } => return (pos, want),
                Step::Frame { len, action } => {
                    self.on_upstream_action(action, &buf[pos..pos + len]);
                    pos += len;
                }
            }
        }
        (pos, 0)
    }

    /// Carry out what the outbound pipeline decided about `frame`.
    fn on_upstream_action(&mut self, action: Outward, frame: &[u8]) {
        match action {
            Outward::Forward { payload, fin } => {
                self.client.out.extend_from_slice(frame);
                self.metrics.out_bytes.increment(payload as u64);
                if fin {
                    self.messages_out += 1;
                    self.metrics.out_forwarded.increment(1);
                }
            }
            Outward::Pong { payload_at } => {
                let key = Some(self.mask_keys.next_key());
                wire::encode(&mut self.upstream.out, wire::OP_PONG, true, &frame[payload_at..], key);
            }
            Outward::Close { .. } if self.is_draining() => {
                // The answer to the drain's close: the client gets 1001 now.
                self.upstream.close_seen = true;
                self.finish_drain();
            }
            Outward::Close { payload_at } => {
                // Relay the upstream's close (code and reason) to the client; echo it upstream.
                self.upstream.close_seen = true;
                self.enter_closing(m::DISCONNECT_UPSTREAM);
                self.client.out.extend_from_slice(frame);
                let echo = frame[payload_at..].get(..2).unwrap_or(&[]);
                self.close_upstream(0, echo);
            }
            Outward::None | Outward::Drop => {}
            Outward::Lost(close) => self.upstream_ended(close),
            Outward::ForwardAssembled(held) => {
                let (frames, payload) = *held;
                self.client.out.extend_from_slice(&frames);
                self.forwarded_out(payload);
            }
            Outward::Replace(text) => {
                wire::encode(&mut self.client.out, wire::OP_TEXT, true, text.as_bytes(), None);
                self.forwarded_out(text.len());
            }
            Outward::Sensitive(found) => {
                let (hits, by_rule, then) = *found;
                self.report_sensitive(&hits, &by_rule, "out");
                self.on_upstream_action(then, frame);
            }
        }
    }

    /// Log and count what the sensitive-data guard found in one message (`direction`: "in"
    /// client to upstream, "out" upstream to client). The event names the rule, where in the
    /// message, the length and a keyed fingerprint — never the value. Lines share the
    /// connection's budget with `message_refused`. The metric counts each rule's hits at once
    /// (listed or not); a rule's hits past those listed are one `sensitive_data_unlisted` line.
    fn report_sensitive(&mut self, hits: &[Hit], by_rule: &[RuleCount], direction: &'static str) {
        let now = Instant::now();
        for u in by_rule {
            let action = u.action.label();
            m::sensitive_hits(&self.p.route.path, &u.rule, direction, action, u64::from(u.count));
            // before the listed hits' lines, so that a flood of them does not take its budget
            if u.unlisted == 0 {
                continue;
            }
            if let Some(suppressed) = self.refused_log.admit(now) {
                session_event!(
                    warn,
                    self,
                    "sensitive_data_unlisted",
                    "sensitive_data",
                    direction = direction,
                    rule = u.rule.as_str(),
                    count = u.unlisted,
                    action = action,
                    suppressed = suppressed,
                );
            }
        }
        for hit in hits {
            let action = hit.action.label();
            if let Some(suppressed) = self.refused_log.admit(now) {
                session_event!(
                    warn,
                    self,
                    "sensitive_data",
                    "sensitive_data",
                    direction = direction,
                    rule = hit.rule.as_str(),
                    pointer = &*crate::log_text::log_text(hit.pointer.as_bytes()),
                    len = hit.len,
                    fingerprint = hit.fingerprint.as_str(),
                    action = action,
                    suppressed = suppressed,
                );
            }
        }
    }

    /// Report a refused message: counted, logged as `message_refused` (WARN, at most
    /// [`super::REFUSED_LOG_PER_SECOND`] lines per second per connection; the lines left out
    /// are counted in the next one, `suppressed`), answered with an error frame; closed when
    /// the pipeline says it was one too many.
    fn reject(&mut self, r: &Rejected) {
        self.metrics.rejected(r.rejection);
        if let Some(suppressed) = self.refused_log.admit(Instant::now()) {
            session_event!(
                warn,
                self,
                "message_refused",
                r.rejection.code(),
                code = r.rejection.code(),
                message_type = r.kind.as_deref().unwrap_or(""),
                suppressed = suppressed,
            );
        }
        let frame = validate::error_frame(r.rejection, r.id.as_deref(), &self.p.route.type_field);
        self.send_text(&frame);
        match r.close {
            None => {}
            Some(close @ (SessionClose::RateViolations | SessionClose::PolicyViolations)) => {
                let event =
                    if close == SessionClose::RateViolations { "rate_limit_close" } else { "policy_violation_close" };
                session_event!(warn, self, event, close.reason());
                self.close(close);
            }
            Some(close) => self.protocol_close(close),
        }
    }

    /// `auth.refresh` (within the allowance the pipeline checked): same subject required; on
    /// success re-arm the timers and answer `auth.refreshed`; on failure `forbidden` (counted
    /// as a violation) and the old expiry stands.
    fn refresh(&mut self, token: &str, id: Option<&str>, now: Instant) {
        self.metrics.control();
        let keys = Arc::clone(&self.p.handles.policy.load().keys);
        let result = jwt::verify(token, &keys, &self.p.config.auth, SystemTime::now());
        let outcome = match result {
            Ok(claims) if claims.sub != self.p.claims.sub => Err("subject_mismatch"),
            Ok(claims) if self.p.handles.revocations.check(&claims, unix_now()) => Err("revoked"),
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
                let refused = Refused {
                    rejection: Rejection::Forbidden,
                    id: id.map(str::to_string),
                    kind: Some(validate::AUTH_REFRESH.to_string()),
                };
                if let Action::Reject(r) = self.inbound.reject(refused, now) {
                    self.reject(&r);
                }
            }
        }
    }
}
