//! The framing rules of RFC 6455 §5 that a relay must enforce before it buffers a frame:
//! reserved bits, masking direction, control-frame limits, fragment order, and the size of a
//! message judged from its *declared* length, so a header announcing 256 MiB is refused
//! before a byte of its payload is held.
//!
//! [`Framing`] judges parsed headers (the session uses it on both sockets); [`FrameGuard`]
//! runs the same rules over a raw byte stream (fuzzing, benches).

use crate::wire::{self, Header, MAX_CONTROL_PAYLOAD};

/// Fewest frames allowed in one fragmented message. The cap grows with the size limit (one
/// frame per [`BYTES_PER_FRAGMENT`] bytes of `max_message_bytes`), so that large limits still
/// admit finely fragmented messages while endless empty continuation frames are cut.
pub const MIN_MAX_FRAGMENTS: u32 = 1024;

/// Bytes of `max_message_bytes` that earn one more allowed fragment beyond the minimum.
pub const BYTES_PER_FRAGMENT: usize = 64;

/// Why a frame is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameViolation {
    /// The frame or message passes the size limit, or has too many fragments (close 1009).
    TooBig,
    /// A framing rule is broken (close 1002).
    Protocol,
}

/// Which end sent the frames: clients must mask, servers must not (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// Frames from a client (masked).
    Client,
    /// Frames from an upstream server (unmasked).
    Server,
}

/// The framing state of one direction of a connection.
#[derive(Debug, Clone)]
pub struct Framing {
    sender: Sender,
    max_message: u64,
    max_fragments: u32,
    /// Inside a fragmented data message.
    in_message: bool,
    /// Bytes of the current message so far.
    message_bytes: u64,
    /// Frames of the current message so far.
    fragments: u32,
    /// The frame at the front of the buffer [`Framing::front`] reads was judged already (it
    /// is still arriving).
    judged: bool,
}

/// The frame at the front of a connection's buffer, as [`Framing::front`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// No complete header yet.
    NeedMore,
    /// The header is complete and within the rules; the frame is `want` bytes in all.
    Partial {
        /// Header plus payload length.
        want: usize,
    },
    /// The header breaks a rule: the connection must be closed.
    Broken(FrameViolation),
    /// The frame is complete: its header and whole length.
    Complete {
        /// The parsed header.
        header: Header,
        /// Header plus payload length.
        len: usize,
    },
}

// === impl Framing ===

impl Framing {
    /// Rules for frames from `sender`, refusing messages over `max_message_bytes`.
    pub fn new(max_message_bytes: usize, sender: Sender) -> Self {
        Self {
            sender,
            max_message: max_message_bytes as u64,
            max_fragments: u32::try_from(max_message_bytes / BYTES_PER_FRAGMENT)
                .unwrap_or(u32::MAX)
                .max(MIN_MAX_FRAGMENTS),
            in_message: false,
            message_bytes: 0,
            fragments: 0,
            judged: false,
        }
    }

    /// The frame at the front of `buf`, judged by the rules once, as soon as its header is
    /// complete (before its payload arrives).
    #[inline]
    pub fn front(&mut self, buf: &[u8]) -> Front {
        let Some(header) = wire::parse_header(buf) else { return Front::NeedMore };
        if !self.judged {
            if let Err(v) = self.judge(&header) {
                return Front::Broken(v);
            }
            self.judged = true;
        }
        let len = header.frame_len() as usize;
        if buf.len() < len {
            return Front::Partial { want: len };
        }
        self.judged = false;
        Front::Complete { header, len }
    }

    /// The largest message allowed, in bytes.
    pub fn max_message(&self) -> u64 {
        self.max_message
    }

    /// A reload changed `max_message_bytes`: applies from the next message on (a message being
    /// assembled keeps its count).
    pub fn set_max_message(&mut self, max_message_bytes: usize) {
        let fresh = Self::new(max_message_bytes, self.sender);
        self.max_message = fresh.max_message;
        self.max_fragments = fresh.max_fragments;
    }

    /// Judge the next frame header.
    ///
    /// # Errors
    /// The violation; the connection must then be closed.
    pub fn judge(&mut self, h: &Header) -> Result<(), FrameViolation> {
        if h.rsv != 0 || h.mask.is_some() != (self.sender == Sender::Client) || h.len >> 63 != 0 {
            return Err(FrameViolation::Protocol);
        }
        match h.opcode {
            wire::OP_CLOSE | wire::OP_PING | wire::OP_PONG => {
                if !h.fin || h.len > MAX_CONTROL_PAYLOAD {
                    return Err(FrameViolation::Protocol);
                }
                return Ok(());
            }
            wire::OP_TEXT | wire::OP_BINARY => {
                if self.in_message {
                    return Err(FrameViolation::Protocol);
                }
                self.message_bytes = h.len;
                self.fragments = 1;
            }
            wire::OP_CONTINUATION => {
                if !self.in_message {
                    return Err(FrameViolation::Protocol);
                }
                self.message_bytes = self.message_bytes.saturating_add(h.len);
                self.fragments += 1;
            }
            _ => return Err(FrameViolation::Protocol),
        }
        self.in_message = !h.fin;
        if self.message_bytes > self.max_message || self.fragments > self.max_fragments {
            return Err(FrameViolation::TooBig);
        }
        Ok(())
    }
}

/// The [`Framing`] rules over a raw client byte stream fed in arbitrary chunks: reads headers,
/// skips payloads, never buffers more than one header.
#[derive(Debug, Clone)]
pub struct FrameGuard {
    rules: Framing,
    header: [u8; wire::MAX_HEADER_LEN],
    header_len: usize,
    /// Payload bytes still to skip.
    remaining: u64,
}

// === impl FrameGuard ===

impl FrameGuard {
    /// A guard refusing client messages over `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            rules: Framing::new(max_message_bytes, Sender::Client),
            header: [0; wire::MAX_HEADER_LEN],
            header_len: 0,
            remaining: 0,
        }
    }

    /// Account for the next chunk of client bytes.
    ///
    /// # Errors
    /// The first violation found; the connection must then be closed.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), FrameViolation> {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len() as u64);
                bytes = &bytes[n as usize..];
                self.remaining -= n;
                continue;
            }
            // One byte at a time until the header is complete: at most 14 per frame.
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if let Some(h) = wire::parse_header(&self.header[..self.header_len]) {
                self.rules.judge(&h)?;
                self.header_len = 0;
                self.remaining = h.len;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header (mask key zero) for `len` payload bytes.
    fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut v = vec![(if fin { 0x80 } else { 0 }) | opcode];
        if len < 126 {
            v.push(0x80 | len as u8);
        } else if len <= 0xffff {
            v.push(0x80 | 126);
            v.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            v.push(0x80 | 127);
            v.extend_from_slice(&len.to_be_bytes());
        }
        v.extend_from_slice(&[0, 0, 0, 0]);
        v
    }

    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut v = header(fin, opcode, len as u64);
        v.extend(std::iter::repeat_n(b'a', len));
        v
    }

    #[test]
    fn frames_within_limit_pass_even_split_byte_by_byte() {
        let mut g = FrameGuard::new(1000);
        let mut bytes = frame(true, 1, 300);
        bytes.extend(frame(true, 9, 10));
        bytes.extend(frame(false, 2, 500));
        bytes.extend(frame(true, 0, 500));
        for b in &bytes {
            assert_eq!(g.feed(std::slice::from_ref(b)), Ok(()));
        }
    }

    #[test]
    fn declared_length_over_limit_is_refused_from_the_header_alone() {
        let mut g = FrameGuard::new(65_536);
        assert_eq!(g.feed(&header(true, 2, (1 << 63) - 1)), Err(FrameViolation::TooBig));
        let mut g = FrameGuard::new(65_536);
        assert_eq!(
            g.feed(&header(true, 2, 1 << 63)),
            Err(FrameViolation::Protocol),
            "64-bit length with the top bit set"
        );
        let mut g = FrameGuard::new(65_536);
        assert_eq!(g.feed(&header(true, 1, 65_537)), Err(FrameViolation::TooBig));
    }

    #[test]
    fn fragmented_message_is_cut_when_the_sum_passes_the_limit() {
        let mut g = FrameGuard::new(1000);
        assert_eq!(g.feed(&frame(false, 1, 600)), Ok(()));
        assert_eq!(g.feed(&header(false, 0, 401)), Err(FrameViolation::TooBig));
    }

    #[test]
    fn endless_empty_continuations_are_cut() {
        let mut g = FrameGuard::new(1000);
        assert_eq!(g.feed(&frame(false, 1, 1)), Ok(()));
        let mut result = Ok(());
        for _ in 0..MIN_MAX_FRAGMENTS {
            result = g.feed(&frame(false, 0, 0));
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(FrameViolation::TooBig));
    }

    #[test]
    fn the_fragment_cap_grows_with_the_size_limit() {
        let mut g = FrameGuard::new(20 << 20);
        assert_eq!(g.feed(&frame(false, 1, 1)), Ok(()));
        for _ in 0..65_536 {
            assert_eq!(g.feed(&frame(false, 0, 64)), Ok(()));
        }
        assert_eq!(g.feed(&frame(true, 0, 1)), Ok(()));
    }

    #[test]
    fn control_frame_rules_are_enforced() {
        assert_eq!(FrameGuard::new(1000).feed(&header(true, 9, 126)), Err(FrameViolation::Protocol));
        assert_eq!(FrameGuard::new(1000).feed(&header(false, 9, 1)), Err(FrameViolation::Protocol));
        assert_eq!(FrameGuard::new(1000).feed(&header(true, 0, 1)), Err(FrameViolation::Protocol));
        assert_eq!(FrameGuard::new(1000).feed(&header(true, 3, 1)), Err(FrameViolation::Protocol));
    }

    #[test]
    fn reserved_bits_and_the_masking_direction_are_enforced() {
        let mut rsv = header(true, 1, 0);
        rsv[0] |= 0x40;
        assert_eq!(FrameGuard::new(1000).feed(&rsv), Err(FrameViolation::Protocol));
        assert_eq!(FrameGuard::new(1000).feed(&[0x81, 0x00]), Err(FrameViolation::Protocol), "unmasked client frame");
        let server = wire::parse_header(&[0x81, 0x00]).expect("header");
        assert_eq!(Framing::new(1000, Sender::Server).judge(&server), Ok(()));
        let masked = wire::parse_header(&header(true, 1, 0)).expect("header");
        assert_eq!(Framing::new(1000, Sender::Server).judge(&masked), Err(FrameViolation::Protocol));
    }

    #[test]
    fn a_new_data_frame_inside_a_fragmented_message_is_refused() {
        let mut g = FrameGuard::new(1000);
        assert_eq!(g.feed(&frame(false, 1, 3)), Ok(()));
        assert_eq!(g.feed(&frame(true, 9, 3)), Ok(()), "control frames may interleave");
        assert_eq!(g.feed(&header(true, 1, 3)), Err(FrameViolation::Protocol));
    }
}
