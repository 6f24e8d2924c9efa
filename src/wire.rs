//! RFC 6455 frames on the wire (§5.2): header parsing, masking, encoding, close payloads and a
//! streaming UTF-8 check.
//!
//! The session relays a frame that passed its checks as the very bytes it received (a client
//! frame keeps the client's masking key on its way upstream; an upstream frame is already in
//! the unmasked form a client expects), so parsing headers, unmasking a copy for inspection and
//! encoding the gateway's own frames is all the codec the data path needs.

use bytes::{BufMut, BytesMut};

/// Continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Longest frame header: 2 bytes, 8 bytes of extended length, 4 bytes of masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// Largest payload a control frame may carry (§5.5).
pub const MAX_CONTROL_PAYLOAD: u64 = 125;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Final fragment of its message.
    pub fin: bool,
    /// The three reserved bits (no extension is negotiated, so they must be 0).
    pub rsv: u8,
    /// Opcode.
    pub opcode: u8,
    /// Masking key, when the mask bit is set.
    pub mask: Option<[u8; 4]>,
    /// Declared payload length.
    pub len: u64,
    /// Bytes of header before the payload.
    pub header_len: usize,
}

impl Header {
    /// A control frame (close, ping, pong or a reserved control opcode).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }

    /// Header plus payload bytes; saturates for absurd declared lengths.
    pub fn frame_len(&self) -> u64 {
        self.len.saturating_add(self.header_len as u64)
    }
}

/// Parse the header at the start of `buf`; `None` until all of its bytes are there.
pub fn parse_header(buf: &[u8]) -> Option<Header> {
    let (&b0, rest) = buf.split_first()?;
    let &b1 = rest.first()?;
    let (len, mut n) = match b1 & 0x7f {
        126 => (u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])), 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        short => (u64::from(short), 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let key: [u8; 4] = buf.get(n..n + 4)?.try_into().ok()?;
        n += 4;
        Some(key)
    } else {
        None
    };
    Some(Header { fin: b0 & 0x80 != 0, rsv: (b0 >> 4) & 0x7, opcode: b0 & 0x0f, mask, len, header_len: n })
}

/// XOR `data` with `key`, starting at key position 0 (§5.3). Eight bytes at a time.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    // The key repeated over 32 bytes: the inner loop is a fixed-size XOR that the compiler
    // turns into vector instructions (two 16-byte XORs with the baseline x86-64 target).
    let mut wide = [0u8; 32];
    for (i, b) in wide.iter_mut().enumerate() {
        *b = key[i & 3];
    }
    let mut chunks = data.chunks_exact_mut(wide.len());
    for chunk in &mut chunks {
        for (b, k) in chunk.iter_mut().zip(wide.iter()) {
            *b ^= k;
        }
    }
    // 32 is a multiple of 4, so the tail starts at key position 0 again.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// Append one frame to `out`: FIN and `opcode`, `payload` masked with `mask` when given
/// (frames to an upstream) or plain (frames to a client).
pub fn encode(out: &mut BytesMut, opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) {
    out.reserve(MAX_HEADER_LEN + payload.len());
    out.put_u8(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.put_u8(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.put_u8(mask_bit | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(mask_bit | 127);
            out.put_u64(n as u64);
        }
    }
    match mask {
        Some(key) => {
            out.put_slice(&key);
            let start = out.len();
            out.put_slice(payload);
            apply_mask(&mut out[start..], key);
        }
        None => out.put_slice(payload),
    }
}

/// Append a close frame with `code` and `reason` (truncated to fit the 125-byte control limit
/// on a character boundary).
pub fn encode_close(out: &mut BytesMut, code: u16, reason: &str, mask: Option<[u8; 4]>) {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD as usize - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD as usize];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    encode(out, OP_CLOSE, true, &payload[..2 + cut], mask);
}

/// What is wrong with a close frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadClose {
    /// One byte, or a code that may not be sent (§7.4): close with 1002.
    Protocol,
    /// The reason is not UTF-8: close with 1007.
    Utf8,
}

/// The code of a close payload (`None` for an empty one), checked per §5.5.1 and §7.4.
///
/// # Errors
/// [`BadClose`] for a one-byte payload, a code that must not appear on the wire, or a reason
/// that is not UTF-8.
pub fn parse_close(payload: &[u8]) -> Result<Option<u16>, BadClose> {
    match payload {
        [] => Ok(None),
        [_] => Err(BadClose::Protocol),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_allowed(code) {
                return Err(BadClose::Protocol);
            }
            std::str::from_utf8(reason).map_err(|_| BadClose::Utf8)?;
            Ok(Some(code))
        }
    }
}

/// Codes a peer may send (§7.4.1, §7.4.2 and the IANA registry): 1000–1003, 1007–1014 and
/// the application/private ranges 3000–4999.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Validates a text message that arrives in pieces, carrying an incomplete trailing
/// character from one piece to the next.
#[derive(Debug, Clone, Default)]
pub struct Utf8Stream {
    carry: [u8; 4],
    carried: usize,
}

impl Utf8Stream {
    /// Check the next piece; `last` marks the end of the message. False once the text is
    /// not UTF-8 (or ends inside a character).
    pub fn feed(&mut self, mut data: &[u8], last: bool) -> bool {
        if self.carried > 0 {
            let want = match self.carry[0] {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                _ => 4,
            };
            let need = want - self.carried;
            if data.len() < need {
                self.carry[self.carried..self.carried + data.len()].copy_from_slice(data);
                self.carried += data.len();
                return !last && Self::is_prefix(&self.carry[..self.carried]);
            }
            self.carry[self.carried..want].copy_from_slice(&data[..need]);
            if std::str::from_utf8(&self.carry[..want]).is_err() {
                return false;
            }
            data = &data[need..];
            self.carried = 0;
        }
        match std::str::from_utf8(data) {
            Ok(_) => true,
            Err(e) if e.error_len().is_some() => false,
            Err(e) => {
                let tail = &data[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carried = tail.len();
                !last
            }
        }
    }

    fn is_prefix(bytes: &[u8]) -> bool {
        matches!(std::str::from_utf8(bytes), Err(e) if e.error_len().is_none())
    }
}

thread_local! {
    /// Per-thread seed stream for [`MaskKeys`], seeded once from the OS.
    static SEEDS: std::cell::Cell<u64> = std::cell::Cell::new({
        let mut seed = [0u8; 8];
        match getrandom::fill(&mut seed) {
            Ok(()) => u64::from_ne_bytes(seed),
            Err(_) => 0x9e37_79b9_7f4a_7c15,
        }
    });
}

/// A small xorshift generator for the masking keys of the gateway's own frames to an
/// upstream (pongs, closes). Each session's generator is seeded from a per-thread splitmix64
/// stream that the OS seeded once, so opening a session costs no system call.
#[derive(Debug, Clone)]
pub struct MaskKeys(u64);

impl MaskKeys {
    /// The next generator of this thread's seed stream.
    pub fn new() -> Self {
        let seed = SEEDS.with(|s| {
            let mut z = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            s.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        });
        Self(seed | 1)
    }

    /// The next key.
    pub fn next_key(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        let bytes = x.to_ne_bytes();
        [bytes[0], bytes[1], bytes[2], bytes[3]]
    }
}

impl Default for MaskKeys {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_in_all_three_length_forms() {
        let h = parse_header(&[0x81, 0x85, 1, 2, 3, 4]).expect("short");
        assert_eq!((h.fin, h.opcode, h.len, h.header_len, h.mask), (true, OP_TEXT, 5, 6, Some([1, 2, 3, 4])));
        let h = parse_header(&[0x02, 126, 0x01, 0x00]).expect("16-bit");
        assert_eq!((h.fin, h.opcode, h.len, h.header_len, h.mask), (false, OP_BINARY, 256, 4, None));
        let h = parse_header(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]).expect("64-bit");
        assert_eq!(h.len, 1 << 63);
        assert_eq!(h.frame_len(), (1u64 << 63) + 10);
        assert_eq!(parse_header(&[0xf1, 0x00]).map(|h| h.rsv), Some(7));
    }

    #[test]
    fn incomplete_headers_wait_for_more_bytes() {
        for buf in [&[][..], &[0x81], &[0x81, 126, 0], &[0x81, 127, 0, 0, 0], &[0x81, 0x80, 1, 2]] {
            assert_eq!(parse_header(buf), None, "{buf:?}");
        }
    }

    #[test]
    fn masking_is_its_own_inverse_at_every_length() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        for len in 0..200 {
            let original: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut data = original.clone();
            apply_mask(&mut data, key);
            let expected: Vec<u8> = original.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
            assert_eq!(data, expected, "len {len}");
            apply_mask(&mut data, key);
            assert_eq!(data, original);
        }
    }

    #[test]
    fn encoded_frames_parse_back() {
        for (len, mask) in [(0, None), (125, Some([9, 8, 7, 6])), (126, None), (70_000, Some([1, 1, 1, 1]))] {
            let payload = vec![b'a'; len];
            let mut out = BytesMut::new();
            encode(&mut out, OP_BINARY, true, &payload, mask);
            let h = parse_header(&out).expect("header");
            assert_eq!((h.len as usize, h.mask, h.frame_len() as usize), (len, mask, out.len()));
            let mut body = out[h.header_len..].to_vec();
            if let Some(key) = mask {
                apply_mask(&mut body, key);
            }
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn close_payloads_are_checked() {
        assert_eq!(parse_close(&[]), Ok(None));
        assert_eq!(parse_close(&[3]), Err(BadClose::Protocol));
        assert_eq!(parse_close(&1000u16.to_be_bytes()), Ok(Some(1000)));
        assert_eq!(parse_close(&4321u16.to_be_bytes()), Ok(Some(4321)));
        for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert_eq!(parse_close(&bad.to_be_bytes()), Err(BadClose::Protocol), "{bad}");
        }
        assert_eq!(parse_close(&[0x03, 0xe8, 0xff, 0xfe]), Err(BadClose::Utf8));
        let mut out = BytesMut::new();
        encode_close(&mut out, 1008, &"é".repeat(100), None);
        let h = parse_header(&out).expect("header");
        assert!(h.len <= MAX_CONTROL_PAYLOAD);
        assert_eq!(parse_close(&out[h.header_len..]), Ok(Some(1008)));
    }

    #[test]
    fn utf8_is_checked_across_piece_boundaries() {
        let text = "aé€😀z".as_bytes();
        for cut in 0..=text.len() {
            for cut2 in cut..=text.len() {
                let mut s = Utf8Stream::default();
                assert!(s.feed(&text[..cut], false), "{cut}");
                assert!(s.feed(&text[cut..cut2], false), "{cut}/{cut2}");
                assert!(s.feed(&text[cut2..], true), "{cut}/{cut2} end");
            }
        }
        let mut s = Utf8Stream::default();
        assert!(s.feed(&[0xf0, 0x9f], false));
        assert!(!s.feed(&[0x98], true), "ends inside a character");
        let mut s = Utf8Stream::default();
        assert!(!s.feed(&[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80], false));
        let mut s = Utf8Stream::default();
        assert!(s.feed(&[0xf4], false));
        assert!(!s.feed(&[0x90], false), "beyond U+10FFFF is refused early");
    }

    #[test]
    fn mask_keys_vary() {
        let mut k = MaskKeys::new();
        let (a, b) = (k.next_key(), k.next_key());
        assert_ne!(a, b);
    }
}
