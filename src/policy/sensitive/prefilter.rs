//! The anchor automaton (an Aho-Corasick pass over the rules' anchor literals) and the
//! digit-run scan that stage 2 runs over each string; stage 1 uses the automaton for custom
//! rules' keywords only (the built-ins have their own scans, `sweep.rs`).
//!
//! The automaton is case-sensitive on purpose: `aho-corasick` only uses its SIMD (Teddy)
//! searcher for case-sensitive literal sets, and falls back to a byte-at-a-time automaton
//! (several times slower) when ASCII case-insensitivity is asked for. The case-insensitive
//! anchors (keywords) are therefore a keyword's first three characters in every ASCII case
//! variant, and the whole word is compared at the hit.

use std::ops::ControlFlow;

use aho_corasick::{AhoCorasick, Input, MatchKind};

/// What a literal of the automaton stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    Aws,
    Pem,
    Jwt,
    /// The first characters of a keyword; `word` is the whole keyword, lowercase.
    Keyword {
        rule: usize,
        word: Box<[u8]>,
    },
}

#[derive(Debug)]
struct Literal {
    bytes: Vec<u8>,
    targets: Vec<Target>,
    /// Other literals one of which is a prefix of the other: the leftmost-first search reports
    /// only one of the literals starting at a position, so the others are compared there.
    related: Vec<usize>,
}

/// The automaton of one direction's rules.
#[derive(Debug, Default)]
pub(super) struct Prefilter {
    ac: Option<AhoCorasick>,
    lits: Vec<Literal>,
}

/// Every ASCII case variant of `word` (non-letters kept as they are).
pub(super) fn case_variants(word: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::with_capacity(word.len())];
    for &c in word {
        if c.is_ascii_alphabetic() {
            let mut next = Vec::with_capacity(out.len() * 2);
            for v in &out {
                for cc in [c.to_ascii_lowercase(), c.to_ascii_uppercase()] {
                    let mut w = v.clone();
                    w.push(cc);
                    next.push(w);
                }
            }
            out = next;
        } else {
            out.iter_mut().for_each(|v| v.push(c));
        }
    }
    out
}

impl Prefilter {
    /// No literals: [`Prefilter::each`] finds nothing.
    pub(super) fn is_empty(&self) -> bool {
        self.ac.is_none()
    }

    /// Build from (literal, target) pairs; equal literals are merged.
    pub(super) fn build(pairs: Vec<(Vec<u8>, Target)>) -> Result<Prefilter, aho_corasick::BuildError> {
        let mut lits: Vec<Literal> = Vec::new();
        for (bytes, target) in pairs {
            match lits.iter_mut().find(|l| l.bytes == bytes) {
                Some(l) => {
                    if !l.targets.contains(&target) {
                        l.targets.push(target);
                    }
                }
                None => lits.push(Literal { bytes, targets: vec![target], related: Vec::new() }),
            }
        }
        for i in 0..lits.len() {
            let related: Vec<usize> = (0..lits.len())
                .filter(|&j| {
                    j != i && (lits[i].bytes.starts_with(&lits[j].bytes) || lits[j].bytes.starts_with(&lits[i].bytes))
                })
                .collect();
            lits[i].related = related;
        }
        let ac = if lits.is_empty() {
            None
        } else {
            Some(AhoCorasick::builder().match_kind(MatchKind::LeftmostFirst).build(lits.iter().map(|l| &l.bytes))?)
        };
        Ok(Prefilter { ac, lits })
    }

    /// Calls `f(start, literal length, target)` for every occurrence of every literal, in order
    /// of position (overlapping occurrences included).
    pub(super) fn each(
        &self,
        hay: &[u8],
        mut f: impl FnMut(usize, usize, &Target) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let Some(ac) = &self.ac else { return ControlFlow::Continue(()) };
        let mut at = 0;
        while at < hay.len() {
            let Some(m) = ac.find(Input::new(hay).span(at..hay.len())) else { break };
            let s = m.start();
            if let Some(lit) = self.lits.get(m.pattern().as_usize()) {
                for t in &lit.targets {
                    f(s, lit.bytes.len(), t)?;
                }
                for &r in &lit.related {
                    if let Some(rl) = self.lits.get(r) {
                        if hay.get(s..).is_some_and(|h| h.starts_with(&rl.bytes)) {
                            for t in &rl.targets {
                                f(s, rl.bytes.len(), t)?;
                            }
                        }
                    }
                }
            }
            at = s + 1;
        }
        ControlFlow::Continue(())
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// A bit at the top of each byte of `w` that is an ASCII digit; only the lowest one is exact
/// (a borrow may flag the byte above a digit), which is all [`next_digit`] reads.
#[inline(always)]
fn digit_flags(w: u64) -> u64 {
    let x = w ^ (LO * 0x30);
    x.wrapping_sub(LO * 10) & !x & HI
}

#[inline(always)]
fn word(c: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(c);
    u64::from_le_bytes(a)
}

/// The first ASCII digit at or after `i`, eight bytes at a time (two words per step).
#[inline]
pub(super) fn next_digit(b: &[u8], mut i: usize) -> Option<usize> {
    while let Some(c) = b.get(i..i + 16) {
        let (m0, m1) = (digit_flags(word(&c[..8])), digit_flags(word(&c[8..])));
        if m0 | m1 != 0 {
            return Some(if m0 != 0 {
                i + (m0.trailing_zeros() / 8) as usize
            } else {
                i + 8 + (m1.trailing_zeros() / 8) as usize
            });
        }
        i += 16;
    }
    while let Some(&c) = b.get(i) {
        if c.is_ascii_digit() {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_digit_finds_the_first_digit_anywhere() {
        for len in 0..40 {
            for pos in 0..len {
                let mut v = vec![b'x'; len];
                v[pos] = b'7';
                if pos + 1 < len {
                    v[pos + 1] = b'0'; // a digit right after must not shift the answer
                }
                assert_eq!(next_digit(&v, 0), Some(pos), "len {len} pos {pos}");
                assert_eq!(next_digit(&v, pos + 2), None);
            }
        }
        let high: Vec<u8> = (0u8..=255).filter(|c| !c.is_ascii_digit()).collect();
        assert_eq!(next_digit(&high, 0), None);
    }

    #[test]
    fn variants_cover_every_case() {
        let v = case_variants(b"a_b");
        assert_eq!(v.len(), 4);
        assert!(v.contains(&b"A_b".to_vec()));
    }
}
