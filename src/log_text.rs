//! Client-supplied text on its way into a log line: bounded and escaped.
//!
//! Origins, user agents, paths and subprotocol names come from the client. Logged as they are,
//! a 10 KiB `Origin` makes a 10 KiB log line per refused handshake, and control characters
//! could forge line structure in a plain-text log. Every such value is cut to
//! [`MAX_LOGGED_BYTES`] (on a character boundary, with the original length noted) and its
//! control characters (and bytes that are not UTF-8) are escaped.

use std::borrow::Cow;
use std::fmt::Write;

/// Longest client-supplied value written to a log, in bytes (before escaping).
pub const MAX_LOGGED_BYTES: usize = 256;

/// `raw` as it may appear in a log line: at most [`MAX_LOGGED_BYTES`] of it, control
/// characters escaped (`\u{1b}`), invalid UTF-8 replaced by `\x..` escapes, and a cut value
/// ends with `…(<n> bytes)`.
pub fn log_text(raw: &[u8]) -> Cow<'_, str> {
    if raw.len() <= MAX_LOGGED_BYTES {
        if let Ok(s) = std::str::from_utf8(raw) {
            if !s.chars().any(char::is_control) {
                return Cow::Borrowed(s);
            }
        }
    }
    let mut out = String::with_capacity(raw.len().min(MAX_LOGGED_BYTES) + 16);
    let mut taken = 0;
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if taken + c.len_utf8() > MAX_LOGGED_BYTES {
                return Cow::Owned(cut(out, raw.len()));
            }
            taken += c.len_utf8();
            if c.is_control() {
                out.extend(c.escape_unicode());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            if taken + 1 > MAX_LOGGED_BYTES {
                return Cow::Owned(cut(out, raw.len()));
            }
            taken += 1;
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

fn cut(mut out: String, total: usize) -> String {
    let _ = write!(out, "…({total} bytes)");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_printable_text_is_borrowed_as_is() {
        assert!(matches!(log_text(b"https://app.example.com"), Cow::Borrowed("https://app.example.com")));
        assert_eq!(log_text("caf\u{e9}".as_bytes()), "caf\u{e9}");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary_with_its_length() {
        let long = "é".repeat(1000);
        let logged = log_text(long.as_bytes());
        assert!(logged.ends_with("…(2000 bytes)"), "{logged}");
        assert_eq!(logged.trim_end_matches("…(2000 bytes)").len(), MAX_LOGGED_BYTES);
        let ascii = "a".repeat(10 * 1024);
        assert_eq!(log_text(ascii.as_bytes()).len(), MAX_LOGGED_BYTES + "…(10240 bytes)".len());
    }

    #[test]
    fn control_characters_and_invalid_bytes_are_escaped() {
        assert_eq!(log_text(b"a\r\nb\x1b"), "a\\u{d}\\u{a}b\\u{1b}");
        assert_eq!(log_text(b"x\xff\xfey"), "x\\xff\\xfey");
    }
}
