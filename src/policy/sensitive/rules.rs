//! The built-in rules' validators. Each looks only at the bytes around a prefilter hit and
//! returns where the match ends; none allocates except the JWT header decode (a candidate
//! whose three parts already look right).

use std::borrow::Cow;
use std::ops::ControlFlow;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// The default `password_field` names (compared ASCII case-insensitively).
pub const DEFAULT_FIELD_NAMES: [&str; 15] = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "token",
    "access_token",
    "refresh_token",
    "authorization",
    "cvv",
    "cvc",
    "pin",
    "private_key",
];

/// The AWS access key id prefixes (AKIA: long-term user keys, ASIA: STS, the others: the
/// unique-id prefixes of other IAM resources).
pub const AWS_PREFIXES: [&str; 11] =
    ["AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "APKA"];

/// The anchor of `private_key_pem`.
pub const PEM_ANCHOR: &str = "-----BEGIN";

/// The anchor of `jwt`: `{"` base64url-encoded, how every JOSE header starts.
pub const JWT_ANCHOR: &str = "eyJ";

const CARD_MIN: usize = 13;
const CARD_MAX: usize = 19;
const IBAN_MIN: usize = 15;
const IBAN_MAX: usize = 34;
/// The longest PEM label read (`ENCRYPTED PRIVATE KEY` is 21).
const PEM_LABEL_MAX: usize = 64;
/// The longest JWT header read (headers with an `x5c` chain run to a few KiB).
const JWT_HEADER_MAX: usize = 16 * 1024;

#[inline]
fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

#[inline]
fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[inline]
fn is_sep(b: u8) -> bool {
    b == b' ' || b == b'-'
}

// === digit runs, cards ===

/// The end of the digit run starting at `start` (a digit): digits, with single separators
/// (space or dash) between digits. Returns (end after the last digit, digits counted).
pub fn digit_run(b: &[u8], start: usize) -> (usize, usize) {
    let mut i = start;
    let mut end = start;
    let mut digits = 0usize;
    while let Some(&c) = b.get(i) {
        if c.is_ascii_digit() {
            digits += 1;
            i += 1;
            end = i;
        } else if is_sep(c) && i > start && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
        } else {
            break;
        }
    }
    (end, digits)
}

/// Whether a run of 13 digits or more can start at the digit `d`: such a run (single
/// separators between digits) covers `d..=d + 12` with digits and separators only, so one
/// look at three of those bytes turns most digit runs away before they are walked.
#[inline]
pub fn may_be_card(b: &[u8], d: usize) -> bool {
    let ok = |i: usize| b.get(i).is_some_and(|&c| c.is_ascii_digit() || is_sep(c));
    ok(d + 12) && ok(d + 1) && ok(d + 6)
}

/// Luhn over the digits of `span` (separators skipped).
fn luhn(span: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &c in span.iter().rev() {
        if c.is_ascii_digit() {
            let mut d = u32::from(c - b'0');
            if double {
                d *= 2;
                if d > 9 {
                    d -= 9;
                }
            }
            sum += d;
            double = !double;
        }
    }
    sum.is_multiple_of(10)
}

/// Whether `span` (digits and separators, starting with a digit) is a card number: 13 to 19
/// digits, the first one 2 to 6 (the card networks' ranges; this keeps millisecond timestamps
/// and zero runs out), Luhn-valid.
fn card_span(span: &[u8]) -> bool {
    let digits = span.iter().filter(|c| c.is_ascii_digit()).count();
    (CARD_MIN..=CARD_MAX).contains(&digits) && matches!(span.first(), Some(b'2'..=b'6')) && luhn(span)
}

/// The card numbers in the digit run `b[start..end]`, in order, not overlapping: the whole run,
/// else runs of whole digit groups (`4111 1111 1111 1111 12/25` holds one). The run must not
/// touch a letter, nor be part of a decimal number (`0.4111…`, `4111….5`).
pub fn cards_in_run(
    b: &[u8],
    start: usize,
    end: usize,
    digits: usize,
    mut hit: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> ControlFlow<()> {
    if digits < CARD_MIN {
        return ControlFlow::Continue(());
    }
    let before = start.checked_sub(1).and_then(|i| b.get(i).copied());
    let before2 = start.checked_sub(2).and_then(|i| b.get(i).copied());
    let after = b.get(end).copied();
    let after2 = b.get(end + 1).copied();
    if before.is_some_and(|c| c.is_ascii_alphabetic())
        || after.is_some_and(|c| c.is_ascii_alphabetic())
        || (before == Some(b'.') && before2.is_some_and(|c| c.is_ascii_digit()))
        || (after == Some(b'.') && after2.is_some_and(|c| c.is_ascii_digit()))
    {
        return ControlFlow::Continue(());
    }
    let Some(run) = b.get(start..end) else { return ControlFlow::Continue(()) };
    if digits <= CARD_MAX && card_span(run) {
        return hit(start, end);
    }
    // Whole groups: for each group start, the longest span of 13..=19 digits that is valid.
    let mut g = 0usize; // offset of a group start within `run`
    while g < run.len() {
        let mut ends = [0usize; CARD_MAX];
        let mut n_ends = 0usize;
        let mut count = 0usize;
        let mut i = g;
        while i < run.len() {
            match run.get(i) {
                Some(c) if c.is_ascii_digit() => {
                    count += 1;
                    i += 1;
                    let group_end = run.get(i).is_none_or(|c| !c.is_ascii_digit());
                    if group_end && (CARD_MIN..=CARD_MAX).contains(&count) && n_ends < ends.len() {
                        ends[n_ends] = i;
                        n_ends += 1;
                    }
                    if count >= CARD_MAX {
                        break;
                    }
                }
                _ => i += 1,
            }
        }
        let found = ends[..n_ends].iter().rev().find(|&&e| run.get(g..e).is_some_and(card_span)).copied();
        let next = match found {
            Some(e) => {
                hit(start + g, start + e)?;
                e
            }
            None => {
                // the next group start: past this group's digits and one separator
                let mut k = g;
                while run.get(k).is_some_and(u8::is_ascii_digit) {
                    k += 1;
                }
                k
            }
        };
        g = next;
        while run.get(g).is_some_and(|c| !c.is_ascii_digit()) {
            g += 1;
        }
    }
    ControlFlow::Continue(())
}

/// The digits of a card span, for its fingerprint (so `4111 1111…` and `4111-1111…` agree).
pub fn card_digits(span: &[u8], out: &mut [u8; CARD_MAX]) -> usize {
    let mut n = 0;
    for &c in span {
        if c.is_ascii_digit() && n < out.len() {
            out[n] = c;
            n += 1;
        }
    }
    n
}

// === IBAN ===

/// The IBAN lengths of common countries (ISO 13616 registry).
fn iban_length(cc: [u8; 2]) -> Option<usize> {
    Some(match &cc {
        b"AD" => 24,
        b"AE" => 23,
        b"AT" => 20,
        b"BA" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BH" => 22,
        b"BR" => 29,
        b"CH" => 21,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DK" => 18,
        b"EE" => 20,
        b"ES" => 24,
        b"FI" => 18,
        b"FO" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GI" => 23,
        b"GL" => 18,
        b"GR" => 27,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"KW" => 30,
        b"KZ" => 20,
        b"LB" => 28,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"MC" => 27,
        b"ME" => 22,
        b"MK" => 19,
        b"MT" => 31,
        b"MU" => 30,
        b"NL" => 18,
        b"NO" => 15,
        b"PK" => 24,
        b"PL" => 28,
        b"PT" => 25,
        b"QA" => 29,
        b"RO" => 24,
        b"RS" => 22,
        b"SA" => 24,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"TN" => 24,
        b"TR" => 26,
        b"UA" => 29,
        _ => return None,
    })
}

/// Whether an IBAN may start at `i`: two uppercase letters, two digits, not preceded by a
/// letter or digit. The digit-run scan calls this at the start of each run (`i + 2`).
#[inline]
pub fn iban_start(b: &[u8], i: usize) -> bool {
    matches!(b.get(i..i + 4), Some([a, c, d, e]) if a.is_ascii_uppercase() && c.is_ascii_uppercase()
        && d.is_ascii_digit() && e.is_ascii_digit())
        && i.checked_sub(1).and_then(|p| b.get(p)).is_none_or(|&p| !is_alnum(p))
}

/// The IBAN starting at `i` (where [`iban_start`] holds): its end and its characters without
/// the group spaces. Uppercase letters and digits, a single space allowed after each group of
/// 4; the length the country's (or 15..=34 for a country not in the table); mod 97 == 1.
pub fn iban_at(b: &[u8], i: usize, out: &mut [u8; IBAN_MAX]) -> Option<(usize, usize)> {
    let cc = [*b.get(i)?, *b.get(i + 1)?];
    let want = iban_length(cc);
    let max = want.unwrap_or(IBAN_MAX);
    let mut n = 0usize;
    let mut k = i;
    while n < max {
        match b.get(k) {
            Some(&c) if c.is_ascii_uppercase() || c.is_ascii_digit() => {
                out[n] = c;
                n += 1;
                k += 1;
            }
            Some(b' ')
                if n.is_multiple_of(4)
                    && b.get(k + 1).is_some_and(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) =>
            {
                k += 1;
            }
            _ => break,
        }
    }
    if b.get(k).is_some_and(|&c| is_alnum(c)) {
        return None;
    }
    match want {
        Some(len) if n != len => return None,
        None if n < IBAN_MIN => return None,
        _ => {}
    }
    let chars = out.get(..n)?;
    let mut r = 0u32;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        r = if c.is_ascii_digit() {
            (r * 10 + u32::from(c - b'0')) % 97
        } else {
            (r * 100 + u32::from(c - b'A') + 10) % 97
        };
    }
    (r == 1).then_some((k, n))
}

// === AWS access key ids ===

/// The access key id starting at `s` (where a prefix matched): prefix + 16 characters of
/// `[A-Z2-7]`, not inside a longer run of letters and digits. Returns its end.
pub fn aws_at(b: &[u8], s: usize) -> Option<usize> {
    if s.checked_sub(1).and_then(|p| b.get(p)).is_some_and(|&p| is_alnum(p)) {
        return None;
    }
    let end = s.checked_add(20)?;
    let key = b.get(s..end)?;
    if !AWS_PREFIXES.iter().any(|p| key.starts_with(p.as_bytes())) {
        return None;
    }
    if !key[4..].iter().all(|&c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c)) {
        return None;
    }
    if b.get(end).is_some_and(|&c| is_alnum(c)) {
        return None;
    }
    Some(end)
}

// === PEM private keys ===

/// Where `-----BEGIN [A-Z ]*PRIVATE KEY-----` at `s` ends (the header only), or None.
pub fn pem_header_at(b: &[u8], s: usize) -> Option<usize> {
    let after = b.get(s..)?.strip_prefix(b"-----BEGIN ")?;
    let label = after.iter().take(PEM_LABEL_MAX).take_while(|&&c| c.is_ascii_uppercase() || c == b' ').count();
    let (l, rest) = after.split_at(label);
    (l.ends_with(b"PRIVATE KEY") && rest.starts_with(b"-----")).then(|| s + 11 + label + 5)
}

/// The end of the PEM block whose header ends at `header_end`: past its `-----END …-----`
/// line, or the end of the text when there is none (a truncated key is still a key).
pub fn pem_block_end(b: &[u8], header_end: usize) -> usize {
    let Some(rest) = b.get(header_end..) else { return b.len() };
    memchr::memmem::find(rest, b"-----END ")
        .and_then(|k| {
            let from = header_end + k + 9;
            memchr::memmem::find(b.get(from..)?, b"-----").map(|k2| from + k2 + 5)
        })
        .unwrap_or(b.len())
}

// === JWT ===

const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

#[derive(serde::Deserialize)]
struct HeaderProbe<'a> {
    #[serde(borrow)]
    #[allow(dead_code)]
    alg: Cow<'a, str>,
}

/// The JWT starting at `s` (where `eyJ` matched): three base64url parts separated by dots
/// (the third may be empty: `alg: none`), not inside a longer token, whose first part decodes
/// to a JSON object with a string `alg`. Returns its end.
pub fn jwt_at(b: &[u8], s: usize) -> Option<usize> {
    if s.checked_sub(1).and_then(|p| b.get(p)).is_some_and(|&p| is_b64url(p) || p == b'.') {
        return None;
    }
    let part = |from: usize| from + b.get(from..).map_or(0, |r| r.iter().take_while(|&&c| is_b64url(c)).count());
    let p1 = part(s);
    if b.get(p1) != Some(&b'.') {
        return None;
    }
    let p2 = part(p1 + 1);
    if p2 == p1 + 1 || b.get(p2) != Some(&b'.') {
        return None;
    }
    let p3 = part(p2 + 1);
    if b.get(p3).is_some_and(|&c| c == b'.') {
        return None;
    }
    let header = b.get(s..p1)?;
    if header.len() > JWT_HEADER_MAX {
        return None;
    }
    let decoded = B64URL.decode(header).ok()?;
    if decoded.first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<HeaderProbe<'_>>(&decoded).ok()?;
    Some(p3)
}

// === field names ===

/// Whether the quoted member name opening with the quote at `open` (no backslash in the text)
/// is one of `names` and is followed by `:` and a value the rule reads: a non-empty string, a
/// number, an array or object (whose strings and numbers it reads), or in a text that is not
/// JSON a bare word other than `true`, `false`, `null`. Stage 1's check; the walk over the
/// text decides.
pub fn name_candidate(b: &[u8], open: usize, names: &[Box<[u8]>], longest: usize) -> bool {
    let from = open + 1;
    let Some(window) = b.get(from..b.len().min(from + longest + 1)) else { return false };
    let Some(q) = memchr::memchr(b'"', window).map(|k| from + k) else { return false };
    let Some(name) = b.get(from..q) else { return false };
    if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
        return false;
    }
    let i = super::json::skip_ws(b, q + 1);
    if b.get(i) != Some(&b':') {
        return false;
    }
    let i = super::json::skip_ws(b, i + 1);
    match b.get(i) {
        Some(b'"') => b.get(i + 1) != Some(&b'"'),
        // `true`, `false`, `null`: no value to read; any other word is a number, or in a text
        // that is not JSON an unquoted value
        Some(b't' | b'f' | b'n') => {
            let word = b
                .get(i..)
                .map_or(&[][..], |r| &r[..r.iter().position(|c| !c.is_ascii_alphabetic()).unwrap_or(r.len())]);
            !matches!(word, b"true" | b"false" | b"null")
        }
        Some(c) => !matches!(c, b',' | b'}' | b']'),
        None => false,
    }
}
