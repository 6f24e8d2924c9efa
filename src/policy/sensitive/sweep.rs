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
//!   each pair is a string; one whose length and first byte fit a name is compared, with the
//!   `:` after it.
//! - `card_number`: 13 bytes in a row that are digits or a separator between two digits (a
//!   card is 13 to 19 digits with single spaces or dashes between them); then the digit runs
//!   around it are searched as stage 2 searches a string, from a byte no run can span.
//! - `iban`: two uppercase letters and two digits (how every IBAN starts).
//! - `aws_access_key`: 20 uppercase letters or digits in a row, the first an `A`.
//!
//! Masks of a block are read with the next block's (as one 128-bit word), so a pattern that
//! starts in one block and ends in the next is seen whole.

use wsgate_byteclass::{classify, with_wide_vectors, Masks, BLOCK};

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
/// a string: a confirmed card or IBAN? `*resume` is where an earlier call stopped.
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
/// built-in rules (compiled for the CPU's wide vectors, [`with_wide_vectors`]).
pub(super) fn sweep(plan: &Plan, guard_rules: &[Rule], b: &[u8]) -> bool {
    with_wide_vectors(
        #[inline(always)]
        || blocks(plan, guard_rules, b),
    )
}

/// The masks of block `k` of `b` (a last, partial block padded with zeros, which are in no
/// class; past the end: none).
#[inline(always)]
fn masks_at(b: &[u8], k: usize) -> Masks {
    let from = k.saturating_mul(BLOCK);
    if let Some(Ok(block)) = b.get(from..from.saturating_add(BLOCK)).map(<&[u8; BLOCK]>::try_from) {
        return classify(block);
    }
    match b.get(from..) {
        Some(tail) if !tail.is_empty() => {
            let mut block = [0u8; BLOCK];
            block.iter_mut().zip(tail).for_each(|(o, &x)| *o = x);
            classify(&block)
        }
        _ => Masks::default(),
    }
}

#[inline(always)]
fn blocks(plan: &Plan, guard_rules: &[Rule], b: &[u8]) -> bool {
    let (cards, ibans, aws) = (!plan.card.is_empty(), !plan.iban.is_empty(), !plan.aws.is_empty());
    let (jwt, pem, fields) = (!plan.jwt.is_empty(), !plan.pem.is_empty(), !plan.fields.is_empty());
    let mut cur = masks_at(b, 0);
    let mut digit_before = 0u128; // the previous block's last digit bit, at bit 0
    let mut open_quote: Option<usize> = None;
    let mut resume = 0usize;
    for k in 0..b.len().div_ceil(BLOCK) {
        let next = masks_at(b, k + 1);
        let base = k * BLOCK;
        let wide = |a: u64, z: u64| u128::from(a) | u128::from(z) << 64;
        let low = |x: u128| x as u64;
        // the rare bytes, one by one
        let mut r = cur.rare;
        while r != 0 {
            let i = base + r.trailing_zeros() as usize;
            r &= r - 1;
            let hit = match b.get(i) {
                Some(b'\\') => true,
                Some(b'J') => jwt && i >= 2 && b.get(i - 2..i) == Some(b"ey") && rules::jwt_at(b, i - 2).is_some(),
                Some(b'-') => {
                    pem && b.get(i..).is_some_and(|t| t.starts_with(rules::PEM_ANCHOR.as_bytes()))
                        && rules::pem_header_at(b, i).is_some()
                }
                _ => false,
            };
            if hit {
                return true;
            }
        }
        // the member names
        if fields {
            let mut q = cur.quote;
            while q != 0 {
                let i = base + q.trailing_zeros() as usize;
                q &= q - 1;
                match open_quote.take() {
                    None => open_quote = Some(i),
                    Some(open) if name_at(plan, guard_rules, b, open, i) => return true,
                    Some(_) => {}
                }
            }
        }
        let (d, u) = (wide(cur.digit, next.digit), wide(cur.upper, next.upper));
        // each pattern starts with a digit (cards) or an uppercase letter (IBANs, keys) in
        // this block: most blocks of prose and JSON skip the run arithmetic
        if cards && cur.digit != 0 {
            let sep = wide(cur.sep, next.sep);
            let x = d | (sep & ((d << 1) | digit_before) & (d >> 1));
            let r2 = x & (x >> 1);
            let r4 = r2 & (r2 >> 2);
            let r8 = r4 & (r4 >> 4);
            let r13 = r8 & (r8 >> 5);
            if low(r13) != 0 && digits_in(plan, b, base, base + 2 * BLOCK, &mut resume) {
                return true;
            }
        }
        if ibans && cur.upper != 0 {
            let mut starts = low(u & (u >> 1) & (d >> 2) & (d >> 3));
            while starts != 0 {
                let i = base + starts.trailing_zeros() as usize;
                starts &= starts - 1;
                if rules::iban_start(b, i) && rules::iban_at(b, i, &mut [0u8; 34]).is_some() {
                    return true;
                }
            }
        }
        if aws && cur.upper != 0 {
            let ud = u | d;
            let r2 = ud & (ud >> 1);
            let r4 = r2 & (r2 >> 2);
            let r8 = r4 & (r4 >> 4);
            let r16 = r8 & (r8 >> 8);
            let mut starts = low(r16 & (r4 >> 16) & u);
            while starts != 0 {
                let i = base + starts.trailing_zeros() as usize;
                starts &= starts - 1;
                if b.get(i) == Some(&b'A') && rules::aws_at(b, i).is_some() {
                    return true;
                }
            }
        }
        digit_before = u128::from(cur.digit >> 63);
        cur = next;
    }
    false
}

/// Whether the string quoted at `open`..`close` (no backslash in the text) is a member
/// name of a `password_field` rule with a value it reads.
fn name_at(plan: &Plan, guard_rules: &[Rule], b: &[u8], open: usize, close: usize) -> bool {
    let len = close - open - 1;
    let Some(&first) = b.get(open + 1) else { return false };
    if !plan.names.may_be(len, first) {
        return false;
    }
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
