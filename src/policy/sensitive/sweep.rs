//! Stage 1: does a raw text (no backslash in it) hold a candidate for any of the plan's
//! built-in rules? One pass classifies the text 64 bytes at a time into bit masks (quotes,
//! digits, uppercase letters, separators, and the rare bytes `-`, `J`, `\`; SIMD, in
//! `wsgate-byteclass`), and each rule's necessary condition is a few operations on them.
//! Only where one holds is the rule's validator run, on the spot; stage 2 (the walk) decides.
//! A false candidate only costs the walk; a missed one would let a value through, so every
//! condition here is implied by a match:
//!
//! - a backslash anywhere: the text is walked (an escape can hide anything).
//! - `jwt`: a `J` after `ey`; `private_key_pem`: a `-` that starts `-----BEGIN`.
//! - `password_field`: without a backslash the quotes pair up exactly (open, close), so
//!   each pair is a string; one followed by `:` or a byte up to space (JSON whitespace among
//!   them) whose length and first byte fit a name is compared, with the `:` after it.
//! - `card_number`: 13 bytes in a row that are digits or a separator between two digits (a
//!   card is 13 to 19 digits with single spaces or dashes between them); then the digit runs
//!   around it are searched as stage 2 searches a string, from a byte no run can span.
//! - `iban`: two uppercase letters and two digits (how every IBAN starts).
//! - `aws_access_key`: 20 uppercase letters or digits in a row, the first an `A`.
//!
//! Masks of a block are read with the next block's (as one 128-bit word), so a pattern that
//! starts in one block and ends in the next is seen whole.

use wsgate_byteclass::{is_follow, with_classifier, BlockWork, Classifier, Masks, BLOCK};

use super::compile::{Kind, Plan, Rule};
use super::rules;

/// A place at or before `at` where the digit search may start: right after a byte that no
/// digit run (digits and single separators) and no IBAN (letters, digits, single spaces) can
/// span, looking back no further than `floor` (a place the search has reached already, so
/// starting there is as good: the look-back is bounded by the text once over all calls).
fn safe_start(b: &[u8], floor: usize, at: usize) -> usize {
    b.get(floor..at)
        .and_then(|h| h.iter().rposition(|&c| !(c.is_ascii_alphanumeric() || c == b' ' || c == b'-')))
        .map_or(floor, |p| floor + p + 1)
}

/// The digit runs of `b` whose first digit is in `from..limit`, searched as stage 2 searches
/// a string: a confirmed card or IBAN? `*resume` is where an earlier call stopped. Out of
/// line: only blocks with 13 digits in a run get here.
#[inline(never)]
fn digits_in(plan: &Plan, b: &[u8], from: usize, limit: usize, resume: &mut usize) -> bool {
    let (cards, ibans) = (!plan.card.is_empty(), !plan.iban.is_empty());
    let mut i = safe_start(b, *resume, from);
    while let Some(d) = super::prefilter::next_digit(b, i) {
        if d >= limit {
            *resume = d;
            return false;
        }
        let iban_here = ibans && d >= 2 && rules::iban_start(b, d - 2);
        if !(iban_here || (cards && rules::may_be_card(b, d))) {
            // most digit runs (times, counts, versions) end here
            i = d + 1;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            continue;
        }
        if iban_here && rules::iban_at(b, d - 2, &mut [0u8; 34]).is_some() {
            return true;
        }
        let (end, digits) = rules::digit_run(b, d);
        if cards {
            let mut found = false;
            let _ = rules::cards_in_run(b, d, end, digits, |_, _| {
                found = true;
                std::ops::ControlFlow::Break(())
            });
            if found {
                return true;
            }
        }
        i = end.max(d + 1);
    }
    *resume = b.len();
    false
}

/// Whether the raw text `b` holds a backslash or a confirmed candidate of the plan's
/// built-in rules (compiled for the CPU's vector unit, [`with_classifier`]).
pub(super) fn sweep(plan: &Plan, guard_rules: &[Rule], b: &[u8]) -> bool {
    with_classifier(Sweep { plan, guard_rules, b })
}

/// The pass over the blocks of one text, handed the CPU's classifier.
struct Sweep<'a> {
    plan: &'a Plan,
    guard_rules: &'a [Rule],
    b: &'a [u8],
}

impl BlockWork for Sweep<'_> {
    type Output = bool;

    #[inline(always)]
    fn run<C: Classifier>(self, classifier: C) -> bool {
        blocks(classifier, self.plan, self.guard_rules, self.b)
    }
}

#[inline(always)]
fn blocks<C: Classifier>(classifier: C, plan: &Plan, guard_rules: &[Rule], b: &[u8]) -> bool {
    let (cards, ibans, aws) = (!plan.card.is_empty(), !plan.iban.is_empty(), !plan.aws.is_empty());
    let (jwt, pem, fields) = (!plan.jwt.is_empty(), !plan.pem.is_empty(), !plan.fields.is_empty());
    let (whole, tail) = b.as_chunks::<BLOCK>();
    let count = whole.len() + usize::from(!tail.is_empty());
    // the masks of block `k` (past the end: none)
    let masks_at = |k: usize| match whole.get(k) {
        Some(block) => classifier.classify(block),
        None if k < count => padded(classifier, tail),
        None => Masks::default(),
    };
    let wide = |a: u64, z: u64| u128::from(a) | u128::from(z) << 64;
    let low = |x: u128| x as u64;
    let mut cur = masks_at(0);
    let mut digit_before = 0u64; // the previous block's last digit bit, at bit 0
    let mut in_string = 0u64; // all ones when the text before this block ends inside a string
    let mut last_open = 0usize; // then where that string opened
    let mut resume = 0usize;
    let mut k = 0;
    while k < count {
        if cur.quote | cur.digit | cur.upper | cur.rare == 0 {
            // nothing a pattern starts with: skip this block, and the blocks after it that
            // hold no byte from `"` to `\` without classifying them
            k += 1;
            k += whole.get(k..).map_or(0, |rest| classifier.quiet_run(rest));
            digit_before = 0;
            cur = masks_at(k);
            continue;
        }
        let next = masks_at(k + 1);
        let base = k * BLOCK;
        // the rare bytes by class: a backslash is neither a separator nor uppercase, a `J`
        // is uppercase, a `-` a separator
        if cur.rare & !cur.sep & !cur.upper != 0 {
            return true;
        }
        // a `J` after `ey`
        let j = cur.rare & cur.upper;
        if jwt
            && j != 0
            && any_at(base, j, |i| i >= 2 && b.get(i - 2..i) == Some(b"ey") && rules::jwt_at(b, i - 2).is_some())
        {
            return true;
        }
        let (dash, dash_next) = (cur.rare & cur.sep, next.rare & next.sep);
        if pem && dash != 0 && dash.count_ones() + dash_next.count_ones() >= 5 {
            // `-----BEGIN`: five dashes in a row
            let dash = wide(dash, dash_next);
            let s = low(dash & (dash >> 1) & (dash >> 2) & (dash >> 3) & (dash >> 4));
            if s != 0
                && any_at(base, s, |i| {
                    b.get(i..).is_some_and(|t| t.starts_with(rules::PEM_ANCHOR.as_bytes()))
                        && rules::pem_header_at(b, i).is_some()
                })
            {
                return true;
            }
        }
        // the member names: without a backslash the quotes pair up exactly, so a quote is
        // a closing one where the count of quotes up to it is even; a name's closing quote
        // is followed by `:` or whitespace (in `follow`, with the other control bytes), and
        // its opening quote is the quote before it
        if fields && cur.quote != 0 {
            let q = cur.quote;
            let inside = prefix_xor(q) ^ in_string;
            let mut closing = q & !inside;
            if closing != 0 {
                // the bytes after the closing quotes: this block's, and the next block's first
                let follow = match whole.get(k) {
                    Some(block) => classifier.follow(block),
                    None => tail.iter().enumerate().fold(0, |m, (i, &c)| m | u64::from(is_follow(c)) << i),
                };
                let after = b.get(base + BLOCK).is_some_and(|&c| is_follow(c));
                closing &= follow >> 1 | u64::from(after) << 63;
            }
            while closing != 0 {
                let close = closing.trailing_zeros();
                closing &= closing - 1;
                let at = base + close as usize;
                let before = q & ((1u64 << close) - 1);
                let open = match before.checked_ilog2() {
                    Some(p) => base + p as usize,
                    None => last_open,
                };
                if name_at(plan, guard_rules, b, open, at) {
                    return true;
                }
            }
            in_string = 0u64.wrapping_sub(inside >> 63);
            if in_string != 0 {
                // the block ends inside a string: its last quote opened it
                last_open = base + q.ilog2() as usize;
            }
        }
        let (d, u) = (wide(cur.digit, next.digit), wide(cur.upper, next.upper));
        // each pattern starts with a digit (cards) or an uppercase letter (IBANs, keys) in
        // this block: most blocks of prose and JSON skip the run arithmetic
        // a card or key starting in this block ends in the next (37 and 20 bytes at most),
        // so its digits (13 or more) or letters and digits (20) are counted in the two
        let digits = cur.digit.count_ones() + next.digit.count_ones();
        if cards && cur.digit != 0 && digits >= 13 {
            let sep = wide(cur.sep, next.sep);
            let x = d | (sep & ((d << 1) | u128::from(digit_before)) & (d >> 1));
            let r2 = x & (x >> 1);
            let r4 = r2 & (r2 >> 2);
            let r8 = r4 & (r4 >> 4);
            let r13 = r8 & (r8 >> 5);
            if low(r13) != 0 && digits_in(plan, b, base, base + 2 * BLOCK, &mut resume) {
                return true;
            }
        }
        if ibans && cur.upper != 0 {
            let starts = low(u & (u >> 1) & (d >> 2) & (d >> 3));
            if starts != 0
                && any_at(base, starts, |i| rules::iban_start(b, i) && rules::iban_at(b, i, &mut [0u8; 34]).is_some())
            {
                return true;
            }
        }
        if aws && cur.upper != 0 && (cur.upper | cur.digit).count_ones() + (next.upper | next.digit).count_ones() >= 20
        {
            let ud = u | d;
            let r2 = ud & (ud >> 1);
            let r4 = r2 & (r2 >> 2);
            let r8 = r4 & (r4 >> 4);
            let r16 = r8 & (r8 >> 8);
            let starts = low(r16 & (r4 >> 16) & u);
            if starts != 0 && any_at(base, starts, |i| b.get(i) == Some(&b'A') && rules::aws_at(b, i).is_some()) {
                return true;
            }
        }
        digit_before = cur.digit >> 63;
        cur = next;
        k += 1;
    }
    false
}

/// Whether `at(i)` holds at a position `i = base + bit` of a set bit of `bits`: a value
/// rule's candidates in one block. Out of line and cold (one copy per rule): most blocks have
/// no candidate, and the block loop's code stays small.
#[cold]
#[inline(never)]
fn any_at(base: usize, mut bits: u64, at: impl Fn(usize) -> bool) -> bool {
    while bits != 0 {
        let i = base + bits.trailing_zeros() as usize;
        bits &= bits - 1;
        if at(i) {
            return true;
        }
    }
    false
}

/// Bit `i`: the parity of the set bits of `x` up to and including bit `i`.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    for shift in [1, 2, 4, 8, 16, 32] {
        x ^= x << shift;
    }
    x
}

/// The masks of the last, partial block, padded with zeros (which are in no class). Out of
/// line: a text whose length is a multiple of 64 does not pay for it.
#[inline(never)]
fn padded<C: Classifier>(classifier: C, tail: &[u8]) -> Masks {
    let mut last = [0u8; BLOCK];
    match last.get_mut(..tail.len()) {
        Some(head) => head.copy_from_slice(tail),
        None => return Masks::default(),
    }
    classifier.classify(&last)
}

/// Whether the string quoted at `open`..`close` (no backslash in the text) is a member
/// name of a `password_field` rule with a value it reads. Its length and first byte are
/// tested here, in the block loop; the few strings that pass are compared out of line.
#[inline(always)]
fn name_at(plan: &Plan, guard_rules: &[Rule], b: &[u8], open: usize, close: usize) -> bool {
    let len = close.saturating_sub(open + 1);
    match b.get(open + 1) {
        Some(&first) if plan.names.may_be(len, first) => named_field(plan, guard_rules, b, open),
        _ => false,
    }
}

/// The comparison of `name_at`: the string at `open` is a listed name, followed by `:` and a
/// value a `password_field` rule reads.
#[inline(never)]
fn named_field(plan: &Plan, guard_rules: &[Rule], b: &[u8], open: usize) -> bool {
    plan.fields.iter().any(|&r| {
        matches!(guard_rules.get(r), Some(Rule { kind: Kind::Fields { names, longest }, .. })
            if rules::name_candidate(b, open, names, *longest))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_start_never_lands_inside_a_run() {
        let b = b"x: 4111 1111-1111 DE89 ab";
        assert_eq!(safe_start(b, 0, 10), 2);
        assert_eq!(safe_start(b, 0, 0), 0);
        assert_eq!(safe_start(b"12 34", 0, 4), 0);
        // never before the floor, and the floor itself when nothing is between
        assert_eq!(safe_start(b, 5, 10), 5);
        assert_eq!(safe_start(b, 12, 10), 12);
    }
}
