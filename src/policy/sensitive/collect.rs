//! Stage 2's hits, and redaction.

use super::json::{self, Event};
use super::{Builtin, Findings, FingerprintKey, Guard, GuardAction, Hit, Plan, MAX_HITS};

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
        }
    }

    pub(super) fn clear(&mut self) {
        self.hits.clear();
        self.counts.iter_mut().for_each(|n| *n = 0);
        self.dropped.iter_mut().for_each(|d| *d = false);
        self.pointer_bytes = 0;
    }

    pub(super) fn builtin(&mut self, plan: &Plan, kind: Builtin, ptr: &str, len: usize, value: &[u8]) {
        let rules = match kind {
            Builtin::Card => &plan.card,
            Builtin::Iban => &plan.iban,
            Builtin::Aws => &plan.aws,
            Builtin::Pem => &plan.pem,
            Builtin::Jwt => &plan.jwt,
        };
        for &r in rules {
            self.hit(r, ptr, len, value);
        }
    }

    pub(super) fn hit(&mut self, rule: usize, ptr: &str, len: usize, value: &[u8]) {
        let Some(r) = self.guard.rules.get(rule) else { return };
        if let Some(n) = self.counts.get_mut(rule) {
            *n = n.saturating_add(1);
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

    pub(super) fn finish(self) -> Option<Findings> {
        let counts = self.counts;
        let rules = &self.guard.rules;
        let hits: Vec<Hit> = self
            .hits
            .into_iter()
            .filter(|(r, _)| {
                let min = rules.get(*r).map_or(1, |r| r.min_matches.max(1));
                counts.get(*r).copied().unwrap_or(0) >= min
            })
            .map(|(_, h)| h)
            .collect();
        let mut action = hits.iter().map(|h| h.action).max();
        // A rule whose hits could not all be listed acts all the same (an attacker must not
        // push a block rule's hit out of the list with a flood of log hits); redaction would
        // leave the unlisted ones in place, so redact becomes block.
        for (i, r) in rules.iter().enumerate() {
            let over = counts.get(i).copied().unwrap_or(0) >= r.min_matches.max(1);
            if self.dropped.get(i).copied().unwrap_or(false) && over {
                let a = if r.action >= GuardAction::Redact { GuardAction::Block } else { r.action };
                action = Some(action.map_or(a, |x| x.max(a)));
            }
        }
        Some(Findings { hits, action: action? })
    }
}

/// The text with each string value that held a hit of a redact or block rule (for
/// `password_field`: the member's value) replaced by `"[REDACTED:<rule>]"`; everything else is
/// kept byte for byte (member order, duplicates, whitespace). `None` when the text is not JSON
/// (the caller then blocks instead).
pub fn redact(text: &str, findings: &Findings) -> Option<String> {
    let targets: Vec<&Hit> = findings.hits.iter().filter(|h| h.action >= GuardAction::Redact).collect();
    let mut spans: Vec<(std::ops::Range<usize>, &str)> = Vec::new();
    json::walk(text, |_, ptr, ev, span| {
        if matches!(ev, Event::Key(_)) {
            return;
        }
        // equal lengths, then from the end: siblings deep in one tree differ at the tail
        let same = |h: &&&Hit| h.pointer.len() == ptr.len() && h.pointer.bytes().rev().eq(ptr.bytes().rev());
        if let Some(h) = targets.iter().find(same) {
            spans.push((span, h.rule.as_str()));
        }
    })
    .ok()?;
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (span, rule) in spans {
        out.push_str(text.get(at..span.start)?);
        out.push_str(&serde_json::to_string(&format!("[REDACTED:{rule}]")).ok()?);
        at = span.end;
    }
    out.push_str(text.get(at..)?);
    Some(out)
}
