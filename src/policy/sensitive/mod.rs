//! The sensitive-data guard's detection engine (docs/configuration.md, "Sensitive-data
//! guard"): rules that find card numbers, IBANs, AWS access key ids, PEM private keys, JWTs,
//! secret-named JSON fields and custom patterns in a text message. Pure: no config types, no
//! logging, no metrics.
//!
//! # Cost
//!
//! [`Guard::scan`] reads a text message in two stages:
//!
//! 1. **Prefilter** (every message): one Aho-Corasick pass over the anchors of the
//!    direction's rules (the AWS prefixes, `-----BEGIN`, `eyJ`, the field names' endings,
//!    the keywords' beginnings), one digit-run scan (eight bytes at a time) when a card or
//!    IBAN rule is on, and one `memchr` for a backslash. Each anchor hit is checked on the
//!    spot (Luhn, mod 97, the key's alphabet, the JWT header decode, the field name…). A
//!    message with no confirmed candidate returns `None` here, without allocating.
//! 2. **Walk** (only on a confirmed candidate, or when the text holds a backslash, since a
//!    `\uXXXX` escape can hide an anchor): the text is walked as JSON ([`json`]); every
//!    string value (unescaped) is searched again, member names are compared, and each hit
//!    gets its JSON pointer and fingerprint. Text that is not JSON is searched as a whole,
//!    with the pointer `""`.
//!
//! A custom [`RuleKind::Pattern`] with keywords runs its regex only when a keyword is in the
//! message; one **without keywords runs its regex on every message** of its direction (about
//! the regex crate's speed, often 0.1–1 GB/s: several times the prefilter's cost), and every
//! message it matches is walked.
//!
//! # What a rule sees
//!
//! In JSON, the value rules (cards, IBANs, keys, JWTs, patterns) read one string value at a
//! time (cards also JSON numbers); `password_field` reads member names. A regex therefore
//! cannot match across members, and `^`/`$` are the string's ends.

mod collect;
mod compile;
mod json;
mod prefilter;
mod rules;
mod sweep;
#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::ControlFlow;

use aws_lc_rs::hmac;

pub use collect::redact;
use collect::Collector;
use compile::{Kind, Plan, Rule};
use json::{Event, Seg};
use prefilter::Target;
pub use rules::DEFAULT_FIELD_NAMES;

/// Which messages a rule reads. `Both` only in rule definitions (and to [`Guard::scan`]: all
/// rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    ClientToUpstream,
    UpstreamToClient,
    Both,
}

/// What a hit does; ordered `Log < Redact < Block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GuardAction {
    Log,
    Redact,
    Block,
}

impl GuardAction {
    /// The name in the config, the log and the metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Redact => "redact",
            Self::Block => "block",
        }
    }
}

/// What a rule looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKind {
    CardNumber,
    Iban,
    AwsAccessKey,
    PrivateKeyPem,
    Jwt,
    /// JSON members with these names (ASCII case-insensitive; empty = [`DEFAULT_FIELD_NAMES`]).
    PasswordField {
        names: Vec<String>,
    },
    /// A `regex` crate regex; with keywords, run only when one is in the message (ASCII
    /// case-insensitive).
    Pattern {
        regex: String,
        keywords: Vec<String>,
    },
}

/// One rule as configured.
#[derive(Debug, Clone)]
pub struct RuleDef {
    /// Built-ins: `card_number`, `iban`, …; custom rules: the user's name.
    pub name: String,
    pub kind: RuleKind,
    pub direction: Direction,
    pub action: GuardAction,
    /// The rule reports only with at least this many hits in one message (0 or 1: any hit).
    pub min_matches: u32,
    /// The rule reads binary messages too ([`Guard::scan_binary`]).
    pub binary: bool,
}

impl RuleDef {
    /// A rule that acts on any hit (`min_matches` 0), text messages only.
    pub fn new(name: &str, kind: RuleKind, direction: Direction, action: GuardAction) -> Self {
        Self { name: name.to_string(), kind, direction, action, min_matches: 0, binary: false }
    }
}

/// A rule that does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// Index into the definitions.
    pub rule: usize,
    /// `"pattern"`, `"keywords"`, `"fields"` (password_field names) or `"rule"`.
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}: {}: {}", self.rule, self.field, self.message)
    }
}

impl std::error::Error for RuleError {}

/// The per-process key of the hits' fingerprints (HMAC-SHA256): equal values fingerprint
/// alike within a process, and a fingerprint cannot be brute-forced without the key.
pub struct FingerprintKey(hmac::Key);

impl FingerprintKey {
    /// A key from the OS random source.
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        if getrandom::fill(&mut k).is_err() {
            // No OS randomness: the clock and an address still differ per process; a
            // fingerprint stays a correlation id, never the value.
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
            let a = &k as *const _ as usize as u128;
            k.iter_mut().enumerate().for_each(|(i, b)| *b = ((t ^ a.rotate_left(i as u32)) >> (8 * (i % 16))) as u8);
        }
        Self::from_bytes(&k)
    }

    /// A fixed key (tests, or fingerprints shared across processes).
    pub fn from_bytes(key: &[u8]) -> Self {
        FingerprintKey(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// Hex of the first 8 bytes of HMAC-SHA256(key, value).
    pub fn fingerprint(&self, value: &[u8]) -> String {
        let tag = hmac::sign(&self.0, value);
        tag.as_ref().iter().take(8).fold(String::with_capacity(16), |mut s, b| {
            let _ = fmt::Write::write_fmt(&mut s, format_args!("{b:02x}"));
            s
        })
    }
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(..)")
    }
}

/// What one message held. Never the values themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Findings {
    /// The hits, at most [`MAX_HITS`] (and at most 256 KiB of pointers) per message.
    pub hits: Vec<Hit>,
    /// Per rule that acts, how many hits it had, listed or not.
    pub by_rule: Vec<RuleCount>,
    /// The strongest action among the hits.
    pub action: GuardAction,
    /// What [`redact`] replaces: the byte spans (quotes included) of the strings and numbers
    /// holding a hit of a redact or block rule, in order, with the rule's name; `None` when
    /// the message cannot be redacted (not JSON).
    redactions: Option<Vec<(std::ops::Range<usize>, String)>>,
}

/// How many hits of one rule a message held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCount {
    pub rule: String,
    pub action: GuardAction,
    /// Every hit of the rule in the message.
    pub count: u32,
    /// Those of them not in [`Findings::hits`] (past its bound).
    pub unlisted: u32,
}

/// One match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule: String,
    pub action: GuardAction,
    /// RFC 6901 pointer of the string value (or, for `password_field`, the member) holding
    /// the match; `""` when the text is not JSON.
    pub pointer: String,
    /// Byte length of the matched value (as unescaped).
    pub len: usize,
    /// Hex of the first 8 bytes of HMAC-SHA256(key, value); cards and IBANs without their
    /// separators, so one number fingerprints alike however it is grouped.
    pub fingerprint: String,
}

/// At most this many rules per guard (the fast path's per-message bitset).
pub const MAX_RULES: usize = 256;
/// At most this many hits are kept per message (the rest still count for `min_matches`).
pub const MAX_HITS: usize = 1024;

/// The compiled rules. `Send + Sync`; share it in an `Arc`.
#[derive(Debug)]
pub struct Guard {
    rules: Vec<Rule>,
    /// Client to upstream, upstream to client, all rules.
    plans: [Plan; 3],
    /// The same for the rules that read binary messages too.
    binary: [Plan; 3],
}

/// A built-in kind, as the stage-1 checks report it.
#[derive(Debug, Clone, Copy)]
enum Builtin {
    Card,
    Iban,
    Aws,
    Pem,
    Jwt,
}

/// What [`Guard::search`] reports.
enum Found<'a> {
    Value { kind: Builtin, len: usize, value: &'a [u8] },
    Keyword { rule: usize },
}

/// How a member name that itself holds a hit appears in the pointers of the event (the
/// name is the value found: it must not be written down).
pub const HIDDEN_NAME: &str = "[REDACTED]";

fn plan_index(dir: Direction) -> usize {
    match dir {
        Direction::ClientToUpstream => 0,
        Direction::UpstreamToClient => 1,
        Direction::Both => 2,
    }
}

impl Guard {
    /// No rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule reads messages of `dir` (`Both`: any rule at all).
    pub fn applies_to(&self, dir: Direction) -> bool {
        !self.plans[plan_index(dir)].rules.is_empty()
    }

    /// Whether any rule reads binary messages of `dir` (`Both`: of either direction).
    pub fn reads_binary(&self, dir: Direction) -> bool {
        !self.binary[plan_index(dir)].rules.is_empty()
    }

    /// Each rule's name and action, with the one direction it reads (a rule reading both is
    /// listed once per direction): the label sets of its metric.
    pub fn labels(&self) -> impl Iterator<Item = (&str, Direction, GuardAction)> {
        [Direction::ClientToUpstream, Direction::UpstreamToClient].into_iter().flat_map(move |dir| {
            self.plans[plan_index(dir)]
                .rules
                .iter()
                .filter_map(move |&i| self.rules.get(i).map(|r| (r.name.as_str(), dir, r.action)))
        })
    }

    /// Search a text message of direction `dir` (`Both`: every rule). `None`: nothing found.
    pub fn scan(&self, dir: Direction, text: &str, key: &FingerprintKey) -> Option<Findings> {
        let plan = &self.plans[plan_index(dir)];
        if plan.rules.is_empty() {
            return None;
        }
        if !self.candidate(plan, text) {
            return None;
        }
        self.walk(plan, text, key)
    }

    /// Search a binary message of direction `dir` with the rules that read binary messages:
    /// as text (invalid UTF-8 sequences read as U+FFFD), JSON or not. Its findings cannot be
    /// redacted ([`redact`] answers `None`: a redact rule's hit blocks it), since rewriting
    /// would change what the message is.
    pub fn scan_binary(&self, dir: Direction, payload: &[u8], key: &FingerprintKey) -> Option<Findings> {
        let plan = &self.binary[plan_index(dir)];
        if plan.rules.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(payload);
        if !self.candidate(plan, &text) {
            return None;
        }
        let mut found = self.walk(plan, &text, key)?;
        found.redactions = None;
        Some(found)
    }

    /// Stage 1 on the raw text: any confirmed candidate, or a backslash? (`sweep.rs`)
    fn candidate(&self, plan: &Plan, text: &str) -> bool {
        sweep::sweep(plan, &self.rules, text.as_bytes())
            || self.keyword_candidate(plan, text)
            || plan.always.iter().any(|&r| self.pattern_may_match(r, text))
    }

    /// A keyword of a custom rule is in the raw text, and its pattern may match.
    fn keyword_candidate(&self, plan: &Plan, text: &str) -> bool {
        if plan.keywords.is_empty() {
            return false;
        }
        let b = text.as_bytes();
        let mut tried = [0u64; MAX_RULES / 64];
        plan.keywords
            .each(b, |s, _, target| {
                let Target::Keyword { rule, word } = target else { return ControlFlow::Continue(()) };
                if !b.get(s..s + word.len()).is_some_and(|w| w.eq_ignore_ascii_case(word)) {
                    return ControlFlow::Continue(());
                }
                let (w, bit) = (*rule / 64, 1u64 << (*rule % 64));
                match tried.get_mut(w) {
                    Some(t) if *t & bit == 0 => {
                        *t |= bit;
                        if self.pattern_may_match(*rule, text) {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    }
                    _ => ControlFlow::Continue(()),
                }
            })
            .is_break()
    }

    /// Whether a pattern can match one of the text's strings (a superset of stage 2's answer):
    /// an unanchored regex matching inside a string also matches the whole text.
    fn pattern_may_match(&self, rule: usize, text: &str) -> bool {
        let Some(Rule { kind: Kind::Pattern { re, anchored, .. }, .. }) = self.rules.get(rule) else { return false };
        if re.is_match(text) {
            return true;
        }
        if !anchored {
            return false;
        }
        // every quoted piece (no backslash: quotes only delimit strings)
        let b = text.as_bytes();
        let mut quotes = memchr::memchr_iter(b'"', b);
        while let (Some(a), Some(z)) = (quotes.next(), quotes.next()) {
            if text.get(a + 1..z).is_some_and(|s| re.is_match(s)) {
                return true;
            }
        }
        false
    }

    /// Stage 2's search of one string (a value, a member name, or a text that is not JSON):
    /// the anchors and the digit runs, reporting what checks out.
    fn search(&self, plan: &Plan, b: &[u8], sink: &mut dyn FnMut(Found<'_>) -> ControlFlow<()>) -> ControlFlow<()> {
        // the end of the last hit of Aws, Pem, Jwt: hits of one kind do not overlap
        let mut done = [0usize; 3];
        plan.pre.each(b, |s, _, target| {
            match target {
                Target::Keyword { rule, word }
                    if b.get(s..s + word.len()).is_some_and(|w| w.eq_ignore_ascii_case(word)) =>
                {
                    sink(Found::Keyword { rule: *rule })?;
                }
                Target::Aws if s >= done[0] => {
                    if let Some(e) = rules::aws_at(b, s) {
                        done[0] = e;
                        sink(Found::Value { kind: Builtin::Aws, len: e - s, value: b.get(s..e).unwrap_or_default() })?;
                    }
                }
                Target::Pem if s >= done[1] => {
                    if let Some(h) = rules::pem_header_at(b, s) {
                        let e = rules::pem_block_end(b, h);
                        done[1] = e;
                        sink(Found::Value { kind: Builtin::Pem, len: e - s, value: b.get(s..e).unwrap_or_default() })?;
                    }
                }
                Target::Jwt if s >= done[2] => {
                    if let Some(e) = rules::jwt_at(b, s) {
                        done[2] = e;
                        sink(Found::Value { kind: Builtin::Jwt, len: e - s, value: b.get(s..e).unwrap_or_default() })?;
                    }
                }
                _ => {}
            }
            ControlFlow::Continue(())
        })?;
        if !plan.digits {
            return ControlFlow::Continue(());
        }
        let (cards, ibans) = (!plan.card.is_empty(), !plan.iban.is_empty());
        let mut i = 0;
        while let Some(d) = prefilter::next_digit(b, i) {
            let iban_here = ibans && d >= 2 && rules::iban_start(b, d - 2);
            if !(iban_here || (cards && rules::may_be_card(b, d))) {
                // most digit runs (times, counts, versions) end here
                i = d + 1;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                continue;
            }
            let (end, digits) = rules::digit_run(b, d);
            if iban_here {
                let mut buf = [0u8; 34];
                if let Some((e, n)) = rules::iban_at(b, d - 2, &mut buf) {
                    sink(Found::Value {
                        kind: Builtin::Iban,
                        len: e - (d - 2),
                        value: buf.get(..n).unwrap_or_default(),
                    })?;
                    i = e.max(end);
                    continue;
                }
            }
            if cards {
                rules::cards_in_run(b, d, end, digits, |s, e| {
                    let mut buf = [0u8; 19];
                    let n = rules::card_digits(b.get(s..e).unwrap_or_default(), &mut buf);
                    sink(Found::Value { kind: Builtin::Card, len: e - s, value: buf.get(..n).unwrap_or_default() })
                })?;
            }
            i = end.max(d + 1);
        }
        ControlFlow::Continue(())
    }

    /// Whether `name` is one of the field names of the `password_field` rule `rule`.
    fn field_named(&self, rule: usize, name: &str) -> bool {
        matches!(self.rules.get(rule), Some(Rule { kind: Kind::Fields { names, .. }, .. })
            if names.iter().any(|n| n.eq_ignore_ascii_case(name.as_bytes())))
    }

    /// Whether any pattern of the plan matches inside `s` (its keywords aside).
    fn any_pattern(&self, plan: &Plan, s: &str) -> bool {
        plan.patterns
            .iter()
            .any(|&r| matches!(self.rules.get(r), Some(Rule { kind: Kind::Pattern { re, .. }, .. }) if re.is_match(s)))
    }

    /// Stage 2: walk the text (as JSON, else as a whole), collect the hits.
    ///
    /// Member names are searched like values: a name that holds a hit is reported with the
    /// member's pointer, and every pointer through it shows [`HIDDEN_NAME`] instead of it. A
    /// `password_field` rule reads the strings and numbers anywhere under a member it names
    /// (`{"password":["x"]}` too), and the member names under it are hidden like values.
    /// Out of line: only a message with a candidate gets here, and [`Guard::scan`]'s clean
    /// path keeps a small frame.
    #[inline(never)]
    fn walk(&self, plan: &Plan, text: &str, key: &FingerprintKey) -> Option<Findings> {
        let mut c = Collector::new(self, key);
        let mut triggered = vec![false; self.rules.len()];
        // per `password_field` rule: the depth of the member it named, while inside it
        let mut inside: Vec<Option<usize>> = vec![None; plan.fields.len()];
        // per member name, in order: whether it is hidden in pointers (the pattern pass
        // replays it)
        let mut hidden: Vec<bool> = Vec::new();
        let json = json::walk(text, |path, ptr, ev, span| {
            let s = match ev {
                Event::Key(k) => k,
                Event::Str(s) | Event::Num(s) => s,
            };
            let is_key = matches!(ev, Event::Key(_));
            let member = || format!("{ptr}/{HIDDEN_NAME}");
            let mut found = false;
            let _ = self.search(plan, s.as_bytes(), &mut |f| {
                match f {
                    Found::Value { kind, len, value } => {
                        found = true;
                        if is_key {
                            c.builtin(plan, kind, &member(), len, value, Some(span.clone()), true);
                        } else {
                            c.builtin(plan, kind, ptr, len, value, Some(span.clone()), false);
                        }
                    }
                    Found::Keyword { rule } => triggered[rule] = true,
                }
                ControlFlow::Continue(())
            });
            if is_key {
                let depth = path.len();
                inside.iter_mut().filter(|slot| slot.is_some_and(|at| depth <= at)).for_each(|slot| *slot = None);
                // a name under a member a `password_field` rule names is part of its value
                let under_field = inside.iter().zip(&plan.fields).any(|(slot, &r)| {
                    slot.and_then(|at| path.get(at))
                        .is_some_and(|seg| matches!(seg, Seg::Key(name) if self.field_named(r, name)))
                });
                let hide = found || under_field || self.any_pattern(plan, s);
                hidden.push(hide);
                for (slot, &r) in inside.iter_mut().zip(&plan.fields) {
                    if slot.is_none() && self.field_named(r, s) {
                        *slot = Some(depth);
                    }
                }
                return hide;
            }
            if !s.is_empty() {
                for (slot, &r) in inside.iter().zip(&plan.fields) {
                    let named = slot
                        .and_then(|at| path.get(at))
                        .is_some_and(|seg| matches!(seg, Seg::Key(name) if self.field_named(r, name)));
                    if named {
                        c.hit(r, ptr, s.len(), s.as_bytes(), Some(span.clone()), false);
                    }
                }
            }
            false
        })
        .is_ok();
        if !json {
            c.clear();
            triggered.iter_mut().for_each(|t| *t = false);
            let _ = self.search(plan, text.as_bytes(), &mut |found| {
                match found {
                    Found::Value { kind, len, value } => c.builtin(plan, kind, "", len, value, None, false),
                    Found::Keyword { rule } => triggered[rule] = true,
                }
                ControlFlow::Continue(())
            });
            // a text that is not JSON (cut short, several values in a row) can still carry
            // members a `password_field` rule names
            if !plan.fields.is_empty() {
                let wanted = |name: &str| plan.fields.iter().any(|&r| self.field_named(r, name));
                json::loose_members(text, wanted, |name, value| {
                    for &r in &plan.fields {
                        if self.field_named(r, name) {
                            c.hit(r, "", value.len(), value.as_bytes(), None, false);
                        }
                    }
                });
            }
        }
        for &r in &plan.patterns {
            let Some(Rule { kind: Kind::Pattern { re, keyworded, .. }, .. }) = self.rules.get(r) else { continue };
            if *keyworded && !triggered.get(r).copied().unwrap_or(false) {
                continue;
            }
            // a member name's pointer is built only when the pattern matches in it
            let mut run = |ptr: &str, s: &str, span: Option<std::ops::Range<usize>>, key: bool| {
                for m in re.find_iter(s).filter(|m| !m.is_empty()) {
                    let member;
                    let at = if key {
                        member = format!("{ptr}/{HIDDEN_NAME}");
                        member.as_str()
                    } else {
                        ptr
                    };
                    c.hit(r, at, m.len(), m.as_str().as_bytes(), span.clone(), key);
                }
            };
            if json {
                let mut names = hidden.iter();
                let _ = json::walk(text, |_, ptr, ev, span| match ev {
                    Event::Key(k) => {
                        run(ptr, k, Some(span), true);
                        names.next().copied().unwrap_or(true)
                    }
                    Event::Str(s) => {
                        run(ptr, s, Some(span), false);
                        false
                    }
                    Event::Num(_) => false,
                });
            } else {
                run("", text, None, false);
            }
        }
        c.finish(json)
    }
}
