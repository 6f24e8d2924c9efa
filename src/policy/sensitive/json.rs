//! A JSON walk over the text itself: every member name, string and number, with its path and
//! byte span. Unlike a `serde_json::Value` it keeps duplicate member names (a second `"text"`
//! cannot hide a card behind the first), needs no recursion (no depth limit to fall off) and
//! builds no tree; a string is unescaped only when it holds a backslash.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::Range;

use super::HIDDEN_NAME;

/// One step of a path: a member name (unescaped) or an array index.
#[derive(Debug, Clone)]
pub(super) enum Seg<'t> {
    Key(Cow<'t, str>),
    Index(usize),
}

/// What the walk reports.
#[derive(Debug, Clone, Copy)]
pub(super) enum Event<'a> {
    /// A member name (the path is the object's).
    Key(&'a str),
    /// A string value, unescaped.
    Str(&'a str),
    /// A number, as written.
    Num(&'a str),
}

/// The text is not one JSON value.
#[derive(Debug)]
pub(super) struct NotJson;

struct Cursor<'t> {
    s: &'t str,
    b: &'t [u8],
    i: usize,
}

/// JSON whitespace (RFC 8259): space, tab, line feed, carriage return.
fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

impl<'t> Cursor<'t> {
    fn ws(&mut self) {
        self.i = skip_ws(self.b, self.i);
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), NotJson> {
        self.ws();
        if self.peek() != Some(c) {
            return Err(NotJson);
        }
        self.i += 1;
        Ok(())
    }

    /// The string at the cursor (a quote): its value and its span, quotes included.
    fn string(&mut self) -> Result<(Cow<'t, str>, Range<usize>), NotJson> {
        let start = self.i;
        self.i += 1;
        let mut escaped = false;
        loop {
            match *self.b.get(self.i).ok_or(NotJson)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    match *self.b.get(self.i + 1).ok_or(NotJson)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let hex = self.b.get(self.i + 2..self.i + 6).ok_or(NotJson)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(NotJson);
                            }
                            self.i += 6;
                        }
                        _ => return Err(NotJson),
                    }
                }
                0..=0x1f => return Err(NotJson),
                _ => self.i += 1,
            }
        }
        let inner = self.s.get(start + 1..self.i).ok_or(NotJson)?;
        self.i += 1;
        let value = if escaped { Cow::Owned(unescape(inner)) } else { Cow::Borrowed(inner) };
        Ok((value, start..self.i))
    }

    fn number(&mut self) -> Result<(&'t str, Range<usize>), NotJson> {
        let start = self.i;
        let digits = |c: &mut Cursor<'_>| {
            let from = c.i;
            while c.peek().is_some_and(|d| d.is_ascii_digit()) {
                c.i += 1;
            }
            if c.i == from {
                Err(NotJson)
            } else {
                Ok(())
            }
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        digits(self)?;
        if self.peek() == Some(b'.') {
            self.i += 1;
            digits(self)?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            digits(self)?;
        }
        Ok((self.s.get(start..self.i).ok_or(NotJson)?, start..self.i))
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), NotJson> {
        if self.b.get(self.i..).is_some_and(|r| r.starts_with(word)) {
            self.i += word.len();
            Ok(())
        } else {
            Err(NotJson)
        }
    }
}

fn hex4(s: &[u8]) -> Option<u32> {
    let t = std::str::from_utf8(s.get(..4)?).ok()?;
    u32::from_str_radix(t, 16).ok()
}

/// JSON string unescaping (`inner` checked by [`Cursor::string`]); a lone surrogate becomes
/// U+FFFD instead of failing, as lenient parsers (browsers) read it.
fn unescape(inner: &str) -> String {
    let b = inner.as_bytes();
    let mut out = String::with_capacity(inner.len());
    let mut i = 0;
    let mut plain = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        out.push_str(inner.get(plain..i).unwrap_or(""));
        let e = b.get(i + 1).copied().unwrap_or(b'\\');
        i += 2;
        match e {
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let hi = b.get(i..).and_then(hex4).unwrap_or(0xFFFD);
                i += 4;
                let c = if (0xD800..0xDC00).contains(&hi) && b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'u') {
                    match b.get(i + 2..).and_then(hex4) {
                        Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                            i += 6;
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                        }
                        _ => None,
                    }
                } else {
                    char::from_u32(hi)
                };
                out.push(c.unwrap_or('\u{FFFD}'));
            }
            other => out.push(char::from(other)),
        }
        plain = i;
    }
    out.push_str(inner.get(plain..).unwrap_or(""));
    out
}

enum Frame {
    Object,
    Array,
}

/// The path of the walk and its RFC 6901 pointer, kept side by side (each step appends or
/// truncates, so a pointer costs nothing per event).
struct Path<'t> {
    segs: Vec<Seg<'t>>,
    ptr: String,
    marks: Vec<usize>,
}

impl<'t> Path<'t> {
    /// Step into `seg`; a `hidden` member name is written [`HIDDEN_NAME`] in the pointer.
    fn push(&mut self, seg: Seg<'t>, hidden: bool) {
        self.marks.push(self.ptr.len());
        if hidden {
            self.ptr.push('/');
            self.ptr.push_str(HIDDEN_NAME);
        } else {
            push_seg(&mut self.ptr, &seg);
        }
        self.segs.push(seg);
    }

    fn pop(&mut self) {
        self.segs.pop();
        if let Some(m) = self.marks.pop() {
            self.ptr.truncate(m);
        }
    }

    fn next_index(&mut self) {
        if let (Some(Seg::Index(n)), Some(&m)) = (self.segs.last_mut(), self.marks.last()) {
            *n = n.saturating_add(1);
            self.ptr.truncate(m);
            let _ = write!(self.ptr, "/{n}");
        }
    }
}

type Visit<'v, 't> = dyn FnMut(&[Seg<'t>], &str, Event<'_>, Range<usize>) -> bool + 'v;

/// Walk `text` as one JSON value, calling `f(path, pointer, event, span)` for each member
/// name, string and number in order; for a member name, `f` returns whether the pointers
/// under it show [`HIDDEN_NAME`] instead of the name (for a value the answer is unused).
/// `Err` when the text is not JSON (events may have been reported by then).
pub(super) fn walk<'t>(
    text: &'t str,
    mut f: impl FnMut(&[Seg<'t>], &str, Event<'_>, Range<usize>) -> bool,
) -> Result<(), NotJson> {
    let f: &mut Visit<'_, 't> = &mut f;
    let mut c = Cursor { s: text, b: text.as_bytes(), i: 0 };
    let mut path = Path { segs: Vec::new(), ptr: String::new(), marks: Vec::new() };
    let mut stack: Vec<Frame> = Vec::new();
    let member = |c: &mut Cursor<'t>, path: &mut Path<'t>, f: &mut Visit<'_, 't>| {
        c.ws();
        if c.peek() != Some(b'"') {
            return Err(NotJson);
        }
        let (k, span) = c.string()?;
        let hidden = f(&path.segs, &path.ptr, Event::Key(&k), span);
        c.expect(b':')?;
        path.push(Seg::Key(k), hidden);
        Ok(())
    };
    'value: loop {
        c.ws();
        match c.peek().ok_or(NotJson)? {
            b'{' => {
                c.i += 1;
                c.ws();
                if c.peek() == Some(b'}') {
                    c.i += 1;
                } else {
                    stack.push(Frame::Object);
                    member(&mut c, &mut path, f)?;
                    continue 'value;
                }
            }
            b'[' => {
                c.i += 1;
                c.ws();
                if c.peek() == Some(b']') {
                    c.i += 1;
                } else {
                    stack.push(Frame::Array);
                    path.push(Seg::Index(0), false);
                    continue 'value;
                }
            }
            b'"' => {
                let (v, span) = c.string()?;
                let _ = f(&path.segs, &path.ptr, Event::Str(&v), span);
            }
            b'-' | b'0'..=b'9' => {
                let (n, span) = c.number()?;
                let _ = f(&path.segs, &path.ptr, Event::Num(n), span);
            }
            b't' => c.literal(b"true")?,
            b'f' => c.literal(b"false")?,
            b'n' => c.literal(b"null")?,
            _ => return Err(NotJson),
        }
        // after a value: close containers until one takes another element
        loop {
            c.ws();
            match (stack.last(), c.peek()) {
                (None, None) => return Ok(()),
                (None, Some(_)) => return Err(NotJson),
                (Some(Frame::Object), Some(b',')) => {
                    c.i += 1;
                    path.pop();
                    member(&mut c, &mut path, f)?;
                    continue 'value;
                }
                (Some(Frame::Array), Some(b',')) => {
                    c.i += 1;
                    path.next_index();
                    continue 'value;
                }
                (Some(Frame::Object), Some(b'}')) | (Some(Frame::Array), Some(b']')) => {
                    c.i += 1;
                    path.pop();
                    stack.pop();
                }
                _ => return Err(NotJson),
            }
        }
    }
}

fn push_seg(out: &mut String, seg: &Seg<'_>) {
    out.push('/');
    match seg {
        Seg::Key(k) => {
            for ch in k.chars() {
                match ch {
                    '~' => out.push_str("~0"),
                    '/' => out.push_str("~1"),
                    c => out.push(c),
                }
            }
        }
        Seg::Index(n) => {
            let _ = write!(out, "{n}");
        }
    }
}

/// The RFC 6901 pointer of `path`.
#[cfg(test)]
pub(super) fn pointer(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    path.iter().for_each(|s| push_seg(&mut out, s));
    out
}

/// The end of the string opening at `open` (a quote): the index of its closing quote, or the
/// text's length when it is not closed. A backslash escapes the byte after it.
fn loose_string_end(b: &[u8], open: usize) -> usize {
    let mut i = open + 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => return i,
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    b.len()
}

/// The first byte at or after `i` that is not JSON whitespace.
pub(super) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).copied().is_some_and(is_ws) {
        i += 1;
    }
    i
}

/// In a text that is not one JSON value (cut short, several values in a row, JSON inside
/// prose): `f(name, value)` for each quoted name followed by `:` and each value under it —
/// a non-empty string (unescaped, to the text's end when not closed), a bare word other than
/// `true`, `false` and `null` (a number, or what an unquoted value would be), or in an object
/// or array (to its end or the text's) each such string and word that is not itself a name.
/// Only names that `wanted` accepts are read; the members inside one of their values are part
/// of it, those inside another value are read too. Quotes pair up as a JSON lexer reads them
/// from the start of the text. Linear: each byte is read at most twice.
pub(super) fn loose_members(text: &str, wanted: impl Fn(&str) -> bool, mut f: impl FnMut(&str, &str)) {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(open) = memchr::memchr(b'"', b.get(i..).unwrap_or_default()).map(|k| i + k) {
        let close = loose_string_end(b, open);
        i = close.saturating_add(1);
        let colon = skip_ws(b, i);
        if close >= b.len() || b.get(colon) != Some(&b':') {
            continue;
        }
        let name = unescape(text.get(open + 1..close).unwrap_or_default());
        if wanted(&name) {
            i = loose_value(text, skip_ws(b, colon + 1), &mut |v| f(&name, v)).max(i);
        }
    }
}

/// The value starting at `at` (see [`loose_members`]): each string and word it reads; returns
/// where it ends.
fn loose_value(text: &str, at: usize, f: &mut dyn FnMut(&str)) -> usize {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = at;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => {
                let close = loose_string_end(b, i);
                let is_name = close < b.len() && b.get(skip_ws(b, close + 1)) == Some(&b':');
                if !is_name {
                    let v = unescape(text.get(i + 1..close).unwrap_or_default());
                    if !v.is_empty() {
                        f(&v);
                    }
                }
                i = close.saturating_add(1);
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b',' | b':' => i += 1,
            _ if is_ws(c) => i += 1,
            _ => {
                let end = b
                    .get(i..)
                    .and_then(|r| r.iter().position(|&c| is_ws(c) || matches!(c, b',' | b'}' | b']' | b'"' | b':')))
                    .map_or(b.len(), |k| i + k);
                let word = text.get(i..end).unwrap_or_default();
                if !matches!(word, "" | "true" | "false" | "null") {
                    f(word);
                }
                i = end.max(i + 1);
            }
        }
        if depth == 0 {
            return i;
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Result<Vec<(String, String)>, NotJson> {
        let mut out = Vec::new();
        walk(text, |p, ptr, e, span| {
            assert_eq!(ptr, pointer(p));
            let what = match e {
                Event::Key(k) => format!("key {k}"),
                Event::Str(s) => format!("str {s} {}", &text[span]),
                Event::Num(n) => format!("num {n}"),
            };
            out.push((pointer(p), what));
            false
        })?;
        Ok(out)
    }

    #[test]
    fn walks_paths_and_duplicates() {
        let ev = events(r#" {"a":{"b":[{"Pass\u0077ord":"x"}, 12, true]},"a":"y","m/n~":[] } "#).unwrap();
        let want = [
            ("", "key a"),
            ("/a", "key b"),
            ("/a/b/0", "key Password"),
            ("/a/b/0/Password", "str x \"x\""),
            ("/a/b/1", "num 12"),
            ("", "key a"),
            ("/a", "str y \"y\""),
            ("", "key m/n~"),
        ];
        let got: Vec<(&str, &str)> = ev.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(got, want);
        assert_eq!(pointer(&[Seg::Key("m/n~".into())]), "/m~1n~0");
    }

    #[test]
    fn unescapes_surrogates_and_rejects_bad_json() {
        let ev = events(r#"["\ud83d\ude00\u0041\n", "\ud800x"]"#).unwrap();
        assert_eq!(ev[0].1.split(' ').nth(1), Some("😀A\n"));
        assert!(ev[1].1.starts_with("str \u{FFFD}x"));
        for bad in ["", "{", "[1,]", "{\"a\"}", "{\"a\":1,}", "\"a", "01x", "[1] 2", "tru", "\"\\x\"", "\"a\u{1}\""] {
            assert!(events(bad).is_err(), "{bad:?}");
        }
        let deep = format!("{}\"AKIA\"{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(events(&deep).unwrap().len(), 1);
    }
}
