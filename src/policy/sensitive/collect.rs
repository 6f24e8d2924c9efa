//! Stage 2's hits, and redaction.

use std::ops::Range;

use super::{Builtin, Findings, FingerprintKey, Guard, GuardAction, Hit, Plan, RuleCount, MAX_HITS};

/// At most this many pointer bytes per message (deep nesting × many hits): hits past it are
/// dropped like those past [`MAX_HITS`].
const MAX_POINTER_BYTES: usize = 256 * 1024;

/// Stage 2's hits, counted per rule.
pub(super) struct Collector<'g> {
    guard: &'g Guard,
    key: &'g FingerprintKey,
    hits: Vec<(usize, Hit)>,
    counts: Vec<u32>,
    /// Per rule: one of its hits was dropped (too many hits or pointer bytes). The rule still
    /// acts; a redaction would leave that hit in place, so it blocks.
    dropped: Vec<bool>,
    pointer_bytes: usize,
    /// The spans of the redact and block rules' hits, with the rule and whether the span is
    /// a member name.
    spans: Vec<(Range<usize>, usize, bool)>,
}

impl<'g> Collector<'g> {
    pub(super) fn new(guard: &'g Guard, key: &'g FingerprintKey) -> Self {
        Collector {
            guard,
            key,
            hits: Vec::new(),
            counts: vec![0; guard.rules.len()],
            dropped: vec![false; guard.rules.len()],
            pointer_bytes: 0,
            spans: Vec::new(),
        }
    }

    pub(super) fn clear(&mut self) {
        self.hits.clear();
        self.counts.iter_mut().for_each(|n| *n = 0);
        self.dropped.iter_mut().for_each(|d| *d = false);
        self.pointer_bytes = 0;
        self.spans.clear();
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn builtin(
        &mut self,
        plan: &Plan,
        kind: Builtin,
        ptr: &str,
        len: usize,
        value: &[u8],
        span: Option<Range<usize>>,
        key: bool,
    ) {
        let rules = match kind {
            Builtin::Card => &plan.card,
            Builtin::Iban => &plan.iban,
            Builtin::Aws => &plan.aws,
            Builtin::Pem => &plan.pem,
            Builtin::Jwt => &plan.jwt,
        };
        for &r in rules {
            self.hit(r, ptr, len, value, span.clone(), key);
        }
    }

    /// A hit of `rule` in the string or number at `span` (`None`: the text is not JSON), a
    /// member name when `key`.
    pub(super) fn hit(
        &mut self,
        rule: usize,
        ptr: &str,
        len: usize,
        value: &[u8],
        span: Option<Range<usize>>,
        key: bool,
    ) {
        let Some(r) = self.guard.rules.get(rule) else { return };
        if let Some(n) = self.counts.get_mut(rule) {
            *n = n.saturating_add(1);
        }
        // one span per string and rule (several hits in one string replace it once); kept even past
        // MAX_HITS, so a redaction misses none (bounded: one per string of the message)
        if let (true, Some(span)) = (r.action >= GuardAction::Redact, span) {
            // per rule: which rules' hits count is only known at the end (`min_matches`)
            if self.spans.last().is_none_or(|(s, r, _)| *s != span || *r != rule) {
                self.spans.push((span, rule, key));
            }
        }
        if self.hits.len() >= MAX_HITS || self.pointer_bytes >= MAX_POINTER_BYTES {
            if let Some(d) = self.dropped.get_mut(rule) {
                *d = true;
            }
            return;
        }
        let pointer = ptr.to_string();
        self.pointer_bytes = self.pointer_bytes.saturating_add(pointer.len());
        let hit =
            Hit { rule: r.name.clone(), action: r.action, pointer, len, fingerprint: self.key.fingerprint(value) };
        self.hits.push((rule, hit));
    }

    /// The findings (`json`: the text was walked as JSON, so its spans can be redacted).
    pub(super) fn finish(self, json: bool) -> Option<Findings> {
        let counts = self.counts;
        let rules = &self.guard.rules;
        let counted = |r: usize| {
            let min = rules.get(r).map_or(1, |r| r.min_matches.max(1));
            counts.get(r).copied().unwrap_or(0) >= min
        };
        // per counted rule: its hits, and those that were not listed
        let mut listed = vec![0u32; rules.len()];
        self.hits.iter().for_each(|(r, _)| listed.get_mut(*r).into_iter().for_each(|n| *n = n.saturating_add(1)));
        let by_rule: Vec<RuleCount> = rules
            .iter()
            .enumerate()
            .filter(|(i, _)| counted(*i))
            .filter_map(|(i, r)| {
                let count = *counts.get(i)?;
                let unlisted = count.saturating_sub(*listed.get(i)?);
                Some(RuleCount { rule: r.name.clone(), action: r.action, count, unlisted })
            })
            .collect();
        let hits: Vec<Hit> = self.hits.into_iter().filter(|(r, _)| counted(*r)).map(|(_, h)| h).collect();
        let mut action = hits.iter().map(|h| h.action).max();
        // A rule whose hits could not all be listed acts all the same (an attacker must not
        // push a block rule's hit out of the list with a flood of log hits).
        for (i, r) in rules.iter().enumerate() {
            if self.dropped.get(i).copied().unwrap_or(false) && counted(i) {
                action = Some(action.map_or(r.action, |x| x.max(r.action)));
            }
        }
        let mut spans: Vec<(Range<usize>, usize, bool)> =
            self.spans.into_iter().filter(|(_, r, _)| counted(*r)).collect();
        // the pattern pass adds its spans after the walk's
        spans.sort_by_key(|(s, _, _)| s.start);
        // A member name cannot be replaced without changing the message's shape (and two
        // replaced names would collide): a redaction that would have to blocks instead.
        if action == Some(GuardAction::Redact)
            && spans.iter().any(|(_, r, key)| *key && rules.get(*r).is_some_and(|r| r.action == GuardAction::Redact))
        {
            action = Some(GuardAction::Block);
        }
        let redactions: Option<Vec<(Range<usize>, String)>> = json.then(|| {
            spans
                .into_iter()
                .filter(|(_, r, key)| !key && rules.get(*r).is_some_and(|r| r.action >= GuardAction::Redact))
                .filter_map(|(span, r, _)| rules.get(r).map(|rule| (span, rule.name.clone())))
                .collect()
        });
        // a redaction that would replace nothing must not forward the message as it is
        if action == Some(GuardAction::Redact) && redactions.as_ref().is_some_and(Vec::is_empty) {
            action = Some(GuardAction::Block);
        }
        Some(Findings { hits, by_rule, action: action?, redactions })
    }
}

/// The text with each string or number that held a hit of a redact or block rule (for
/// `password_field`: each string and number under the member) replaced by
/// `"[REDACTED:<rule>]"`; everything else is kept byte for byte (member order, duplicates,
/// whitespace). `None` when the text was not JSON (the caller then blocks instead). Linear in
/// the text and the hits.
pub fn redact(text: &str, findings: &Findings) -> Option<String> {
    let spans = findings.redactions.as_ref()?;
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (span, rule) in spans {
        if span.start < at {
            continue; // the same string again (another rule's hit)
        }
        out.push_str(text.get(at..span.start)?);
        let plain = rule.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if plain {
            out.push_str("\"[REDACTED:");
            out.push_str(rule);
            out.push_str("]\"");
        } else {
            out.push_str(&serde_json::to_string(&format!("[REDACTED:{rule}]")).ok()?);
        }
        at = span.end;
    }
    out.push_str(text.get(at..)?);
    Some(out)
}
