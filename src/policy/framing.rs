//! A guard over the raw bytes a client sends after the upgrade, reading only WebSocket frame
//! headers (RFC 6455 §5.2), so a message that will be too big is refused from its *declared*
//! length before its payload is buffered.
//!
//! actix-http's codec waits for a whole frame before comparing its length with the limit, so a
//! header declaring 256 MiB makes it buffer the lot. The guard sits in front of it: it sees the
//! header, and refuses when the frame (or the fragmented message it belongs to) would pass
//! `max_message_bytes`, or when a message has more frames than its fragment cap. It also
//! enforces the control-frame rules (≤ 125 bytes, never fragmented).

/// Fewest frames allowed in one fragmented message. The cap grows with the size limit (one
/// frame per [`BYTES_PER_FRAGMENT`] bytes of `max_message_bytes`), so that large limits still
/// admit finely fragmented messages while endless empty continuation frames are cut.
pub const MIN_MAX_FRAGMENTS: u32 = 1024;

/// Bytes of `max_message_bytes` that earn one more allowed fragment beyond the minimum.
pub const BYTES_PER_FRAGMENT: usize = 64;

/// Why the guard refused the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameViolation {
    /// The frame or message passes the size limit, or has too many fragments (close 1009).
    TooBig,
    /// A framing rule is broken (close 1002).
    Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting header bytes.
    Header,
    /// Skipping `remaining` payload bytes.
    Payload { remaining: u64 },
}

/// Incremental frame-header reader for one client connection.
#[derive(Debug, Clone)]
pub struct FrameGuard {
    max_message: u64,
    max_fragments: u32,
    state: State,
    header: [u8; 14],
    header_len: usize,
    /// Inside a fragmented data message.
    in_message: bool,
    /// Bytes of the current message so far.
    message_bytes: u64,
    /// Frames of the current message so far.
    fragments: u32,
}

// === impl FrameGuard ===

impl FrameGuard {
    /// A guard refusing messages over `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message: max_message_bytes as u64,
            max_fragments: u32::try_from(max_message_bytes / BYTES_PER_FRAGMENT)
                .unwrap_or(u32::MAX)
                .max(MIN_MAX_FRAGMENTS),
            state: State::Header,
            header: [0; 14],
            header_len: 0,
            in_message: false,
            message_bytes: 0,
            fragments: 0,
        }
    }

    /// Account for the next chunk of client bytes.
    ///
    /// # Errors
    /// The first violation found; the connection must then be closed.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), FrameViolation> {
        while !bytes.is_empty() {
            match self.state {
                State::Payload { remaining } => {
                    let n = remaining.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    let left = remaining - n;
                    self.state = if left == 0 { State::Header } else { State::Payload { remaining: left } };
                }
                State::Header => {
                    let need = header_len(&self.header[..self.header_len]);
                    let want = need.unwrap_or(2).saturating_sub(self.header_len).max(1);
                    let n = want.min(bytes.len());
                    self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                    self.header_len += n;
                    bytes = &bytes[n..];
                    match header_len(&self.header[..self.header_len]) {
                        Some(total) if total == self.header_len => {
                            let payload = self.on_header()?;
                            self.header_len = 0;
                            self.state =
                                if payload == 0 { State::Header } else { State::Payload { remaining: payload } };
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Judge a complete header; returns its payload length.
    fn on_header(&mut self) -> Result<u64, FrameViolation> {
        let h = &self.header[..self.header_len];
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        let len = payload_len(h);
        match opcode {
            0x8..=0xf => {
                if !fin || len > 125 {
                    return Err(FrameViolation::Protocol);
                }
            }
            0x1 | 0x2 => {
                if self.in_message {
                    return Err(FrameViolation::Protocol);
                }
                self.message_bytes = len;
                self.fragments = 1;
                self.in_message = !fin;
            }
            0x0 => {
                if !self.in_message {
                    return Err(FrameViolation::Protocol);
                }
                self.message_bytes = self.message_bytes.saturating_add(len);
                self.fragments += 1;
                self.in_message = !fin;
            }
            _ => return Err(FrameViolation::Protocol),
        }
        if opcode < 0x8 && (self.message_bytes > self.max_message || self.fragments > self.max_fragments) {
            return Err(FrameViolation::TooBig);
        }
        Ok(len)
    }
}

/// Total header length once enough bytes are known (2 + extended length + mask).
fn header_len(h: &[u8]) -> Option<usize> {
    if h.len() < 2 {
        return None;
    }
    let ext = match h[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
    Some(2 + ext + mask)
}

fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
        n => u64::from(n),
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
        assert_eq!(g.feed(&header(true, 2, 1 << 63)), Err(FrameViolation::TooBig));
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
    fn a_new_data_frame_inside_a_fragmented_message_is_refused() {
        let mut g = FrameGuard::new(1000);
        assert_eq!(g.feed(&frame(false, 1, 3)), Ok(()));
        assert_eq!(g.feed(&frame(true, 9, 3)), Ok(()), "control frames may interleave");
        assert_eq!(g.feed(&header(true, 1, 3)), Err(FrameViolation::Protocol));
    }
}
