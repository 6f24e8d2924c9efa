//! The upstream-to-client pipeline: the upstream's bytes in, one [`Outward`] per complete
//! frame out. Pure, like `inbound.rs`: framing rules on the header, UTF-8 of text messages
//! (across fragments), the upstream's pings and close. Upstream frames are forwarded as
//! received (already what a client expects).
//!
//! Owns: the upstream's framing state and the UTF-8 state of a fragmented text message. Does
//! not own: draining (the session decides what an upstream close means then), writing.

use std::sync::Arc;

use bytes::BytesMut;

use super::inbound::Step;
use super::FINGERPRINTS;
use crate::error::SessionClose;
use crate::policy::framing::{FrameViolation, Framing, Sender};
use crate::policy::sensitive::{redact, Direction, Guard, GuardAction, Hit, RuleCount};
use crate::wire::{self, Header, Utf8Stream};

/// What the session does about one upstream frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Outward {
    /// Forward the frame to the client as received.
    Forward {
        /// Its payload length (for the byte count).
        payload: usize,
        /// It ends a message.
        fin: bool,
    },
    /// Answer the upstream's ping with a pong carrying the frame's payload, which starts at
    /// `payload_at`.
    Pong {
        /// Offset of the payload in the frame.
        payload_at: usize,
    },
    /// A well-formed close: relay it to the client and echo its code upstream.
    Close {
        /// Offset of the payload in the frame.
        payload_at: usize,
    },
    /// Nothing (a pong, or a fragment held until its message is complete).
    None,
    /// The upstream broke the protocol: close the client with this code.
    Lost(SessionClose),
    /// Forward a held (fragmented) text message to the client: its frames as received, and
    /// the message's payload length. (The guard's variants are boxed, so the common ones stay
    /// small.)
    ForwardAssembled(Box<(BytesMut, usize)>),
    /// Send the client this text instead of the message received (its redacted form).
    Replace(Box<str>),
    /// Drop the message: a `block` rule found sensitive data in it.
    Drop,
    /// The sensitive-data guard found these hits (the session logs and counts them), then
    /// the message meets the second.
    Sensitive(Box<(Vec<Hit>, Vec<RuleCount>, Outward)>),
}

/// A fragmented upstream text message held for the guard until it is complete.
#[derive(Debug)]
struct Held {
    payload: Vec<u8>,
    frames: BytesMut,
    /// A binary message (read by the rules that read binary messages).
    binary: bool,
}

/// The upstream direction of one connection.
#[derive(Debug)]
pub struct Outbound {
    framing: Framing,
    /// UTF-8 state of a fragmented text message.
    text: Option<Utf8Stream>,
    /// The route's sensitive-data guard, when it has rules for upstream messages.
    guard: Option<Arc<Guard>>,
    /// The fragmented message being held for the guard.
    held: Option<Held>,
}

// === impl Outbound ===

impl Outbound {
    /// The pipeline of a new connection whose messages may be up to `max_message_bytes`.
    pub fn new(max_message_bytes: usize, guard: Option<&Arc<Guard>>) -> Self {
        Self { framing: Framing::new(max_message_bytes, Sender::Server), text: None, guard: None, held: None }
            .with_guard(guard)
    }

    fn with_guard(mut self, guard: Option<&Arc<Guard>>) -> Self {
        self.set_guard(guard);
        self
    }

    /// A reload changed the route's sensitive-data rules (a message being held finishes
    /// under the new ones).
    pub fn set_guard(&mut self, guard: Option<&Arc<Guard>>) {
        self.guard = guard.filter(|g| g.applies_to(Direction::UpstreamToClient)).cloned();
    }

    /// A reload changed `limits.max_message_bytes`.
    pub fn set_max_message(&mut self, max_message_bytes: usize) {
        self.framing.set_max_message(max_message_bytes);
    }

    /// Judge the frame at the front of `buf`.
    #[inline]
    pub fn next(&mut self, buf: &[u8]) -> Step<Outward> {
        let front = self.framing.front(buf);
        Step::from_front(
            front,
            // An oversized upstream message stays 1009 to the client; any other upstream
            // fault is the upstream being lost (1014).
            |v| {
                Outward::Lost(match v {
                    FrameViolation::TooBig => SessionClose::MessageTooBig,
                    FrameViolation::Protocol => SessionClose::UpstreamLost,
                })
            },
            |h, len| self.on_frame(h, &buf[..len]),
        )
    }

    /// A data frame on a route whose guard reads upstream messages: whole text messages are
    /// scanned; fragmented ones are held until complete; binary ones likewise when a rule
    /// reads them, else they pass.
    /// `whole` is the text of an unfragmented text message, validated by the framing step.
    fn guard_data(&mut self, h: &Header, frame: &[u8], payload: &[u8], whole: Option<&str>) -> Outward {
        let forward = Outward::Forward { payload: payload.len(), fin: h.fin };
        let binary = h.opcode == wire::OP_BINARY;
        match (h.opcode, h.fin) {
            (wire::OP_BINARY, true) if self.reads_binary() => self.scan_binary(payload, forward),
            (wire::OP_TEXT | wire::OP_BINARY, false) if !binary || self.reads_binary() => {
                let mut frames = BytesMut::with_capacity(frame.len());
                frames.extend_from_slice(frame);
                self.held = Some(Held { payload: payload.to_vec(), frames, binary });
                Outward::None
            }
            // `whole` is always given for such a frame; validating here keeps a caller that
            // did not give it from forwarding the message unread
            (wire::OP_TEXT, true) => match whole.map_or_else(|| simdutf8::basic::from_utf8(payload), Ok) {
                Ok(text) => self.scan(text, forward),
                Err(_) => forward,
            },
            (wire::OP_CONTINUATION, fin) => match self.held.as_mut() {
                None => forward,
                Some(held) => {
                    held.payload.extend_from_slice(payload);
                    held.frames.extend_from_slice(frame);
                    if !fin {
                        return Outward::None;
                    }
                    let Some(held) = self.held.take() else { return Outward::None };
                    let forward = Outward::ForwardAssembled(Box::new((held.frames, held.payload.len())));
                    if held.binary {
                        return self.scan_binary(&held.payload, forward);
                    }
                    // validated piece by piece (`Utf8Stream`); whole here once more for the &str
                    match simdutf8::basic::from_utf8(&held.payload) {
                        Ok(text) => self.scan(text, forward),
                        Err(_) => forward,
                    }
                }
            },
            _ => forward,
        }
    }

    /// Whether a rule of the guard reads the upstream's binary messages.
    fn reads_binary(&self) -> bool {
        self.guard.as_ref().is_some_and(|g| g.reads_binary(Direction::UpstreamToClient))
    }

    /// Scan a complete binary message; `forward` when nothing is found (a redact rule's hit
    /// drops it: a binary message is not rewritten).
    #[cold]
    fn scan_binary(&self, payload: &[u8], forward: Outward) -> Outward {
        let Some(guard) = &self.guard else { return forward };
        let Some(found) = guard.scan_binary(Direction::UpstreamToClient, payload, &FINGERPRINTS) else {
            return forward;
        };
        let then = if found.action == GuardAction::Log { forward } else { Outward::Drop };
        Outward::Sensitive(Box::new((found.hits, found.by_rule, then)))
    }

    /// Scan a complete text message; `forward` when nothing is found.
    fn scan(&self, text: &str, forward: Outward) -> Outward {
        let Some(guard) = &self.guard else { return forward };
        let Some(found) = guard.scan(Direction::UpstreamToClient, text, &FINGERPRINTS) else { return forward };
        let then = match found.action {
            GuardAction::Log => forward,
            // a redaction that is not JSON, or that grows the message past the limit, drops it
            GuardAction::Redact => match redact(text, &found) {
                Some(t) if t.len() as u64 <= self.framing.max_message() => Outward::Replace(t.into()),
                _ => Outward::Drop,
            },
            GuardAction::Block => Outward::Drop,
        };
        Outward::Sensitive(Box::new((found.hits, found.by_rule, then)))
    }

    #[inline]
    fn on_frame(&mut self, h: &Header, frame: &[u8]) -> Outward {
        let payload = &frame[h.header_len..];
        match h.opcode {
            wire::OP_TEXT | wire::OP_BINARY | wire::OP_CONTINUATION => {
                let mut whole = None;
                let text_ok = match (h.opcode, h.fin) {
                    (wire::OP_TEXT, true) => {
                        whole = simdutf8::basic::from_utf8(payload).ok();
                        whole.is_some()
                    }
                    (wire::OP_TEXT, false) => {
                        let mut stream = Utf8Stream::default();
                        let ok = stream.feed(payload, false);
                        self.text = Some(stream);
                        ok
                    }
                    (wire::OP_CONTINUATION, fin) => match self.text.as_mut() {
                        Some(stream) => stream.feed(payload, fin),
                        None => true,
                    },
                    _ => {
                        self.text = None;
                        true
                    }
                };
                if !text_ok {
                    return Outward::Lost(SessionClose::UpstreamLost);
                }
                // A message already held finishes as held, even after a reload removed the
                // rules (its first frames are in `held`).
                if self.guard.is_none() && self.held.is_none() {
                    return Outward::Forward { payload: payload.len(), fin: h.fin };
                }
                self.guard_data(h, frame, payload, whole)
            }
            wire::OP_PING => Outward::Pong { payload_at: h.header_len },
            wire::OP_CLOSE => match wire::parse_close(payload) {
                Ok(_) => Outward::Close { payload_at: h.header_len },
                Err(_) => Outward::Lost(SessionClose::UpstreamLost),
            },
            _ => Outward::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = BytesMut::new();
        wire::encode(&mut out, opcode, fin, payload, mask);
        out.to_vec()
    }

    fn act(p: &mut Outbound, bytes: &[u8]) -> Outward {
        match p.next(bytes) {
            Step::Frame { action, .. } => action,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn upstream_frames_forward_and_faults_close_1014_or_1009() {
        let mut p = Outbound::new(64, None);
        assert_eq!(act(&mut p, &frame(wire::OP_TEXT, true, b"hi", None)), Outward::Forward { payload: 2, fin: true });
        assert_eq!(
            act(&mut p, &frame(wire::OP_TEXT, false, b"\xe2\x82", None)),
            Outward::Forward { payload: 2, fin: false }
        );
        assert_eq!(
            act(&mut p, &frame(wire::OP_CONTINUATION, true, b"\xac", None)),
            Outward::Forward { payload: 1, fin: true }
        );
        assert_eq!(act(&mut p, &frame(wire::OP_TEXT, true, b"\xff", None)), Outward::Lost(SessionClose::UpstreamLost));
        // A masked frame from a server breaks RFC 6455: the upstream is lost.
        let mut p = Outbound::new(64, None);
        assert_eq!(
            act(&mut p, &frame(wire::OP_TEXT, true, b"x", Some([1, 2, 3, 4]))),
            Outward::Lost(SessionClose::UpstreamLost)
        );
        let mut p = Outbound::new(64, None);
        assert_eq!(
            act(&mut p, &frame(wire::OP_BINARY, true, &[0; 65], None)),
            Outward::Lost(SessionClose::MessageTooBig)
        );
        let mut p = Outbound::new(64, None);
        assert_eq!(act(&mut p, &frame(wire::OP_PING, true, b"p", None)), Outward::Pong { payload_at: 2 });
        assert_eq!(act(&mut p, &frame(wire::OP_PONG, true, b"", None)), Outward::None);
        assert_eq!(
            act(&mut p, &frame(wire::OP_CLOSE, true, &1000u16.to_be_bytes(), None)),
            Outward::Close { payload_at: 2 }
        );
        assert_eq!(act(&mut p, &frame(wire::OP_CLOSE, true, b"\x03", None)), Outward::Lost(SessionClose::UpstreamLost));
        let f = frame(wire::OP_TEXT, true, b"abc", None);
        assert_eq!(p.next(&f[..2]), Step::Partial { want: 5 });
    }

    #[test]
    fn upstream_text_is_held_until_whole_when_the_guard_reads_it() {
        use crate::policy::sensitive::{Direction, Guard, GuardAction, RuleDef, RuleKind};
        let rule = RuleDef::new("card_number", RuleKind::CardNumber, Direction::UpstreamToClient, GuardAction::Block);
        let guard = Arc::new(Guard::compile(&[rule]).expect("rule"));
        let mut p = Outbound::new(1024, Some(&guard));
        let (a, b) = (
            frame(wire::OP_TEXT, false, b"card 4111 1111", None),
            frame(wire::OP_CONTINUATION, true, b" 1111 1111", None),
        );
        assert_eq!(act(&mut p, &a), Outward::None);
        match act(&mut p, &b) {
            Outward::Sensitive(found) => {
                assert_eq!(found.0.len(), 1);
                assert_eq!(found.2, Outward::Drop);
            }
            other => panic!("{other:?}"),
        }
        // Clean: the held frames go out as they came.
        let (a, b) = (frame(wire::OP_TEXT, false, b"hello ", None), frame(wire::OP_CONTINUATION, true, b"world", None));
        assert_eq!(act(&mut p, &a), Outward::None);
        assert_eq!(
            act(&mut p, &b),
            Outward::ForwardAssembled(Box::new((BytesMut::from(&[&a[..], &b[..]].concat()[..]), 11)))
        );
        // Binary messages are not held; a route whose rules read only client messages holds nothing.
        assert_eq!(
            act(&mut p, &frame(wire::OP_BINARY, true, b"4111 1111 1111 1111", None)),
            Outward::Forward { payload: 19, fin: true }
        );
        let client_only =
            RuleDef::new("card_number", RuleKind::CardNumber, Direction::ClientToUpstream, GuardAction::Block);
        let mut p = Outbound::new(1024, Some(&Arc::new(Guard::compile(&[client_only]).expect("rule"))));
        assert_eq!(act(&mut p, &a), Outward::Forward { payload: 6, fin: false });
    }

    #[test]
    fn a_held_message_finishes_as_held_when_a_reload_removes_the_rules() {
        use crate::policy::sensitive::{Direction, Guard, GuardAction, RuleDef, RuleKind};
        let rule = RuleDef::new("card_number", RuleKind::CardNumber, Direction::Both, GuardAction::Block);
        let mut p = Outbound::new(1024, Some(&Arc::new(Guard::compile(&[rule]).expect("rule"))));
        let (a, b) = (frame(wire::OP_TEXT, false, b"hello ", None), frame(wire::OP_CONTINUATION, true, b"world", None));
        assert_eq!(act(&mut p, &a), Outward::None);
        p.set_guard(None);
        assert_eq!(
            act(&mut p, &b),
            Outward::ForwardAssembled(Box::new((BytesMut::from(&[&a[..], &b[..]].concat()[..]), 11)))
        );
        // The next message is not held any more.
        assert_eq!(act(&mut p, &a), Outward::Forward { payload: 6, fin: false });
    }
}
