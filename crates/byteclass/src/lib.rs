//! Byte-class bit masks of a 64-byte block: bit `i` of a mask is byte `i` of the block.
//!
//! The sensitive-data guard's first stage reads every byte of every text message of a
//! guarded route; one pass that classifies 16 or 32 bytes per instruction replaces several
//! searches. This crate is the only place in wsgate with `unsafe` code: the SIMD loads and
//! compares of `std::arch`, each beside the reason it holds. The gateway crate itself
//! forbids `unsafe`.
//!
//! - x86_64: AVX-512BW or AVX2 when the CPU has them (detected once at run time), else SSE2
//!   (part of every x86_64 CPU).
//! - other targets: a byte loop.
//!
//! Every implementation returns the same masks as [`classify_scalar`]; the tests compare
//! them on random blocks.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

/// The classes of one block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Masks {
    /// `"`
    pub quote: u64,
    /// `0`–`9`
    pub digit: u64,
    /// `A`–`Z`
    pub upper: u64,
    /// space or `-`
    pub sep: u64,
    /// `-`, `J` or `\`: rare bytes whose position the caller looks at one by one
    pub rare: u64,
}

/// Block length.
pub const BLOCK: usize = 64;

/// One way of classifying blocks. A value of a classifier type exists only where its
/// instructions can run: the SIMD ones are made by [`with_classifier`] after the CPU check
/// (their fields are private), [`Scalar`] anywhere.
pub trait Classifier: Copy {
    /// The masks of `block`.
    fn classify(self, block: &[u8; BLOCK]) -> Masks;

    /// Whether `block` holds no byte from `"` to `\\` (0x22..=0x5C): then every mask but
    /// [`Masks::sep`] is zero. A cheaper test than
    /// [`Classifier::classify`], for skipping runs of blocks with nothing in them.
    fn is_quiet(self, block: &[u8; BLOCK]) -> bool;

    /// How many of the leading `blocks` are quiet ([`Classifier::is_quiet`]). The SIMD
    /// classifiers test four blocks with one compare.
    #[inline(always)]
    fn quiet_run(self, blocks: &[[u8; BLOCK]]) -> usize {
        blocks.iter().take_while(|block| self.is_quiet(block)).count()
    }

    /// The bytes of `block` that are `:` or up to space ([`is_follow`]): computed apart from
    /// [`Classifier::classify`], as only blocks with a string's closing quote need them.
    #[inline(always)]
    fn follow(self, block: &[u8; BLOCK]) -> u64 {
        follow_scalar(block)
    }
}

/// The first and last byte of the range [`Classifier::is_quiet`] looks for.
const LOUD: (u8, u8) = (b'"', b'\\');

/// Work over blocks, generic in the classifier it is handed (see [`with_classifier`]).
pub trait BlockWork {
    /// What the work returns.
    type Output;
    /// Do the work, classifying with `classifier`.
    fn run<C: Classifier>(self, classifier: C) -> Self::Output;
}

/// The byte loop ([`classify_scalar`]): usable on every CPU.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scalar;

impl Classifier for Scalar {
    #[inline]
    fn classify(self, block: &[u8; BLOCK]) -> Masks {
        classify_scalar(block)
    }

    #[inline]
    fn is_quiet(self, block: &[u8; BLOCK]) -> bool {
        !block.iter().any(|c| (LOUD.0..=LOUD.1).contains(c))
    }
}

/// Run `work` with this CPU's fastest classifier, the CPU checked once per call (one load
/// of a cached level), not once per block. On x86_64 with AVX2 or AVX-512BW, `work.run` is
/// inlined into a function built for that vector unit (with BMI1, BMI2 and POPCNT, which
/// every AVX2 CPU has), so its bit arithmetic on the masks (128-bit shifts, counts) uses
/// them too, and the classifier's compares are inlined into its loop. Mark the `run` of
/// `work` `#[inline(always)]` for that; what it calls out of line runs as usual.
#[inline]
pub fn with_classifier<W: BlockWork>(work: W) -> W::Output {
    #[cfg(target_arch = "x86_64")]
    {
        match x86::level() {
            // SAFETY: the CPU supports AVX-512F/BW and AVX2, BMI1, BMI2, POPCNT (`level`).
            x86::Level::Avx512 => unsafe { x86::run_avx512(work) },
            // SAFETY: the CPU supports AVX2, BMI1, BMI2 and POPCNT (`level`).
            x86::Level::Avx2 => unsafe { x86::run_avx2(work) },
            x86::Level::Sse2 => work.run(x86::Sse2(())),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        work.run(Scalar)
    }
}

/// The masks of `block`, one byte at a time (the reference).
pub fn classify_scalar(block: &[u8; BLOCK]) -> Masks {
    let mut m = Masks::default();
    for (i, &c) in block.iter().enumerate() {
        let bit = 1u64 << i;
        if c == b'"' {
            m.quote |= bit;
        }
        if c.is_ascii_digit() {
            m.digit |= bit;
        }
        if c.is_ascii_uppercase() {
            m.upper |= bit;
        }
        if c == b' ' || c == b'-' {
            m.sep |= bit;
        }
        if matches!(c, b'-' | b'J' | b'\\') {
            m.rare |= bit;
        }
    }
    m
}

/// Whether `c` is `:` or a byte up to space (0x00–0x20: JSON's whitespace and the other
/// control bytes): what may follow a JSON member name's closing quote.
#[inline(always)]
pub fn is_follow(c: u8) -> bool {
    c == b':' || c <= b' '
}

/// [`Classifier::follow`], one byte at a time.
pub fn follow_scalar(block: &[u8; BLOCK]) -> u64 {
    block.iter().enumerate().fold(0, |m, (i, &c)| m | u64::from(is_follow(c)) << i)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BlockWork, Classifier, Masks, BLOCK, LOUD};
    use std::arch::x86_64::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// The widest vector unit usable here.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Level {
        Sse2,
        /// AVX2 with BMI1, BMI2 and POPCNT (every AVX2 CPU has them; checked all the same).
        Avx2,
        /// AVX-512F and AVX-512BW on top of [`Level::Avx2`].
        Avx512,
    }

    /// 0: not checked yet, else 1 + the level.
    static LEVEL: AtomicU8 = AtomicU8::new(0);

    #[inline(always)]
    pub(super) fn level() -> Level {
        match LEVEL.load(Ordering::Relaxed) {
            1 => Level::Sse2,
            2 => Level::Avx2,
            3 => Level::Avx512,
            _ => detect(),
        }
    }

    #[cold]
    fn detect() -> Level {
        let avx2 = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("bmi1")
            && std::is_x86_feature_detected!("bmi2")
            && std::is_x86_feature_detected!("popcnt");
        let avx512 = avx2 && std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw");
        let level = if avx512 {
            Level::Avx512
        } else if avx2 {
            Level::Avx2
        } else {
            Level::Sse2
        };
        LEVEL.store(level as u8 + 1, Ordering::Relaxed);
        level
    }

    #[cfg(test)]
    pub(super) fn has_avx2() -> bool {
        level() != Level::Sse2
    }

    #[cfg(test)]
    pub(super) fn has_avx512() -> bool {
        level() == Level::Avx512
    }

    /// SSE2 is part of the x86_64 baseline: every x86_64 CPU has it.
    #[inline]
    pub(super) fn classify_sse2(block: &[u8; BLOCK]) -> Masks {
        // SAFETY: SSE2 is enabled on every x86_64 target (the baseline), and `sse2_masks`
        // reads the 64 bytes of `block` only.
        unsafe { sse2_masks(block) }
    }

    /// See [`Classifier::is_quiet`].
    #[inline]
    pub(super) fn is_quiet_sse2(block: &[u8; BLOCK]) -> bool {
        // SAFETY: as for `classify_sse2`: SSE2 is baseline, the 64 bytes of `block` only.
        unsafe { sse2_quiet(block) }
    }

    #[target_feature(enable = "sse2")]
    unsafe fn sse2_quiet(block: &[u8; BLOCK]) -> bool {
        let low = _mm_set1_epi8(LOUD.0 as i8);
        let span = _mm_set1_epi8((LOUD.1 - LOUD.0) as i8);
        let mut loud = _mm_setzero_si128();
        for k in 0..4 {
            // SAFETY: bytes 16k .. 16k + 16 of a 64-byte array; unaligned load.
            let v = unsafe { _mm_loadu_si128(block.as_ptr().add(16 * k).cast::<__m128i>()) };
            let d = _mm_sub_epi8(v, low);
            loud = _mm_or_si128(loud, _mm_cmpeq_epi8(_mm_min_epu8(d, span), d));
        }
        _mm_movemask_epi8(loud) == 0
    }

    #[target_feature(enable = "sse2")]
    unsafe fn sse2_masks(block: &[u8; BLOCK]) -> Masks {
        let quote = _mm_set1_epi8(b'"' as i8);
        let dash = _mm_set1_epi8(b'-' as i8);
        let space = _mm_set1_epi8(b' ' as i8);
        let jay = _mm_set1_epi8(b'J' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let zero = _mm_set1_epi8(b'0' as i8);
        let nine = _mm_set1_epi8(9);
        let a = _mm_set1_epi8(b'A' as i8);
        let z = _mm_set1_epi8(25);
        let mut m = Masks::default();
        for k in 0..4 {
            // SAFETY: bytes 16k .. 16k + 16 of a 64-byte array; unaligned load.
            let v = unsafe { _mm_loadu_si128(block.as_ptr().add(16 * k).cast::<__m128i>()) };
            let d = _mm_sub_epi8(v, zero);
            let digit = _mm_cmpeq_epi8(_mm_min_epu8(d, nine), d);
            let u = _mm_sub_epi8(v, a);
            let upper = _mm_cmpeq_epi8(_mm_min_epu8(u, z), u);
            let is_dash = _mm_cmpeq_epi8(v, dash);
            let sep = _mm_or_si128(is_dash, _mm_cmpeq_epi8(v, space));
            let rare = _mm_or_si128(is_dash, _mm_or_si128(_mm_cmpeq_epi8(v, jay), _mm_cmpeq_epi8(v, backslash)));
            let shift = 16 * k as u32;
            let bits = |x: __m128i| u64::from(_mm_movemask_epi8(x) as u16) << shift;
            m.quote |= bits(_mm_cmpeq_epi8(v, quote));
            m.digit |= bits(digit);
            m.upper |= bits(upper);
            m.sep |= bits(sep);
            m.rare |= bits(rare);
        }
        m
    }

    /// See [`Classifier::follow`].
    #[inline]
    pub(super) fn follow_sse2(block: &[u8; BLOCK]) -> u64 {
        // SAFETY: as for `classify_sse2`: SSE2 is baseline, the 64 bytes of `block` only.
        unsafe { sse2_follow(block) }
    }

    #[target_feature(enable = "sse2")]
    unsafe fn sse2_follow(block: &[u8; BLOCK]) -> u64 {
        let (colon, space) = (_mm_set1_epi8(b':' as i8), _mm_set1_epi8(b' ' as i8));
        let mut m = 0u64;
        for k in 0..4 {
            // SAFETY: bytes 16k .. 16k + 16 of a 64-byte array; unaligned load.
            let v = unsafe { _mm_loadu_si128(block.as_ptr().add(16 * k).cast::<__m128i>()) };
            let f = _mm_or_si128(_mm_cmpeq_epi8(v, colon), _mm_cmpeq_epi8(_mm_min_epu8(v, space), v));
            m |= u64::from(_mm_movemask_epi8(f) as u16) << (16 * k);
        }
        m
    }

    /// The SSE2 classifier (SSE2 is part of the x86_64 baseline).
    #[derive(Debug, Clone, Copy)]
    pub struct Sse2(pub(super) ());

    impl Classifier for Sse2 {
        #[inline(always)]
        fn classify(self, block: &[u8; BLOCK]) -> Masks {
            classify_sse2(block)
        }

        #[inline(always)]
        fn is_quiet(self, block: &[u8; BLOCK]) -> bool {
            is_quiet_sse2(block)
        }

        #[inline(always)]
        fn follow(self, block: &[u8; BLOCK]) -> u64 {
            follow_sse2(block)
        }
    }

    /// The AVX2 classifier: made only by [`run_avx2`], whose caller checked the CPU.
    #[derive(Debug, Clone, Copy)]
    pub struct Avx2(());

    impl Classifier for Avx2 {
        #[inline(always)]
        fn classify(self, block: &[u8; BLOCK]) -> Masks {
            // SAFETY: an `Avx2` exists only inside `run_avx2`, which requires AVX2.
            unsafe { classify_avx2(block) }
        }

        #[inline(always)]
        fn is_quiet(self, block: &[u8; BLOCK]) -> bool {
            // SAFETY: as above.
            unsafe { is_quiet_avx2(block) }
        }

        #[inline(always)]
        fn quiet_run(self, blocks: &[[u8; BLOCK]]) -> usize {
            // the first block alone (in prose most runs end there), then four at a time
            match blocks.split_first() {
                Some((first, rest)) if self.is_quiet(first) => {
                    let (fours, _) = rest.as_chunks::<4>();
                    // SAFETY: as above.
                    let quiet = fours.iter().take_while(|four| unsafe { quiet4_avx2(four) }).count() * 4;
                    1 + quiet + rest.get(quiet..).map_or(0, |r| r.iter().take_while(|b| self.is_quiet(b)).count())
                }
                _ => 0,
            }
        }

        #[inline(always)]
        fn follow(self, block: &[u8; BLOCK]) -> u64 {
            // SAFETY: as above.
            unsafe { follow_avx2(block) }
        }
    }

    /// The AVX-512BW classifier: made only by [`run_avx512`], whose caller checked the CPU.
    #[derive(Debug, Clone, Copy)]
    pub struct Avx512(());

    impl Classifier for Avx512 {
        #[inline(always)]
        fn classify(self, block: &[u8; BLOCK]) -> Masks {
            // SAFETY: an `Avx512` exists only inside `run_avx512`, which requires AVX-512BW.
            unsafe { classify_avx512(block) }
        }

        #[inline(always)]
        fn is_quiet(self, block: &[u8; BLOCK]) -> bool {
            // SAFETY: as above.
            unsafe { is_quiet_avx512(block) }
        }

        #[inline(always)]
        fn quiet_run(self, blocks: &[[u8; BLOCK]]) -> usize {
            // the first block alone (in prose most runs end there), then four at a time
            match blocks.split_first() {
                Some((first, rest)) if self.is_quiet(first) => {
                    let (fours, _) = rest.as_chunks::<4>();
                    // SAFETY: as above.
                    let quiet = fours.iter().take_while(|four| unsafe { quiet4_avx512(four) }).count() * 4;
                    1 + quiet + rest.get(quiet..).map_or(0, |r| r.iter().take_while(|b| self.is_quiet(b)).count())
                }
                _ => 0,
            }
        }

        #[inline(always)]
        fn follow(self, block: &[u8; BLOCK]) -> u64 {
            // SAFETY: as above.
            unsafe { follow_avx512(block) }
        }
    }

    /// # Safety
    /// The CPU must support AVX2, BMI1, BMI2 and POPCNT.
    #[target_feature(enable = "avx2,bmi1,bmi2,popcnt")]
    pub(super) unsafe fn run_avx2<W: BlockWork>(work: W) -> W::Output {
        work.run(Avx2(()))
    }

    /// # Safety
    /// The CPU must support AVX-512F, AVX-512BW, AVX2, BMI1, BMI2 and POPCNT.
    #[target_feature(enable = "avx512f,avx512bw,avx2,bmi1,bmi2,popcnt")]
    pub(super) unsafe fn run_avx512<W: BlockWork>(work: W) -> W::Output {
        work.run(Avx512(()))
    }

    /// # Safety
    /// The CPU must support AVX-512F and AVX-512BW.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn classify_avx512(block: &[u8; BLOCK]) -> Masks {
        // SAFETY: the 64 bytes of `block`; unaligned load.
        let v = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
        let digit = _mm512_cmplt_epu8_mask(_mm512_sub_epi8(v, _mm512_set1_epi8(b'0' as i8)), _mm512_set1_epi8(10));
        let upper = _mm512_cmplt_epu8_mask(_mm512_sub_epi8(v, _mm512_set1_epi8(b'A' as i8)), _mm512_set1_epi8(26));
        let dash = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'-' as i8));
        let space = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b' ' as i8));
        let jay = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'J' as i8));
        let backslash = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'\\' as i8));
        Masks {
            quote: _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'"' as i8)),
            digit,
            upper,
            sep: dash | space,
            rare: dash | jay | backslash,
        }
    }

    /// See [`Classifier::follow`].
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX-512BW.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn follow_avx512(block: &[u8; BLOCK]) -> u64 {
        // SAFETY: the 64 bytes of `block`; unaligned load.
        let v = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
        _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b':' as i8))
            | _mm512_cmple_epu8_mask(v, _mm512_set1_epi8(b' ' as i8))
    }

    /// See [`Classifier::is_quiet`].
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX-512BW.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn is_quiet_avx512(block: &[u8; BLOCK]) -> bool {
        // SAFETY: the 64 bytes of `block`; unaligned load.
        let v = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
        let d = _mm512_sub_epi8(v, _mm512_set1_epi8(LOUD.0 as i8));
        _mm512_cmple_epu8_mask(d, _mm512_set1_epi8((LOUD.1 - LOUD.0) as i8)) == 0
    }

    /// Whether all four blocks are quiet ([`Classifier::is_quiet`]): the bytes less `"` are
    /// folded by unsigned minimum, and the minimum compared once.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX-512BW.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quiet4_avx512(four: &[[u8; BLOCK]; 4]) -> bool {
        let low = _mm512_set1_epi8(LOUD.0 as i8);
        // SAFETY: the 64 bytes of each of the four blocks; unaligned loads.
        let d = |k: usize| _mm512_sub_epi8(unsafe { _mm512_loadu_si512(four[k].as_ptr().cast()) }, low);
        let m = _mm512_min_epu8(_mm512_min_epu8(d(0), d(1)), _mm512_min_epu8(d(2), d(3)));
        _mm512_cmple_epu8_mask(m, _mm512_set1_epi8((LOUD.1 - LOUD.0) as i8)) == 0
    }

    /// [`quiet4_avx512`] with AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quiet4_avx2(four: &[[u8; BLOCK]; 4]) -> bool {
        let low = _mm256_set1_epi8(LOUD.0 as i8);
        let span = _mm256_set1_epi8((LOUD.1 - LOUD.0) as i8);
        // SAFETY: bytes 32h .. 32h + 32 of each of the four 64-byte blocks; unaligned loads.
        let d = |k: usize, h: usize| {
            _mm256_sub_epi8(unsafe { _mm256_loadu_si256(four[k].as_ptr().add(32 * h).cast::<__m256i>()) }, low)
        };
        let m = _mm256_min_epu8(
            _mm256_min_epu8(_mm256_min_epu8(d(0, 0), d(0, 1)), _mm256_min_epu8(d(1, 0), d(1, 1))),
            _mm256_min_epu8(_mm256_min_epu8(d(2, 0), d(2, 1)), _mm256_min_epu8(d(3, 0), d(3, 1))),
        );
        let loud = _mm256_cmpeq_epi8(_mm256_min_epu8(m, span), m);
        _mm256_testz_si256(loud, loud) == 1
    }

    /// See [`Classifier::is_quiet`].
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn is_quiet_avx2(block: &[u8; BLOCK]) -> bool {
        let low = _mm256_set1_epi8(LOUD.0 as i8);
        let span = _mm256_set1_epi8((LOUD.1 - LOUD.0) as i8);
        // SAFETY: bytes 0 .. 32 and 32 .. 64 of a 64-byte array; unaligned loads.
        let (a, z) = unsafe {
            (
                _mm256_loadu_si256(block.as_ptr().cast::<__m256i>()),
                _mm256_loadu_si256(block.as_ptr().add(32).cast::<__m256i>()),
            )
        };
        let (da, dz) = (_mm256_sub_epi8(a, low), _mm256_sub_epi8(z, low));
        let loud = _mm256_or_si256(
            _mm256_cmpeq_epi8(_mm256_min_epu8(da, span), da),
            _mm256_cmpeq_epi8(_mm256_min_epu8(dz, span), dz),
        );
        _mm256_testz_si256(loud, loud) == 1
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn classify_avx2(block: &[u8; BLOCK]) -> Masks {
        let quote = _mm256_set1_epi8(b'"' as i8);
        let dash = _mm256_set1_epi8(b'-' as i8);
        let space = _mm256_set1_epi8(b' ' as i8);
        let jay = _mm256_set1_epi8(b'J' as i8);
        let backslash = _mm256_set1_epi8(b'\\' as i8);
        let zero = _mm256_set1_epi8(b'0' as i8);
        let nine = _mm256_set1_epi8(9);
        let a = _mm256_set1_epi8(b'A' as i8);
        let z = _mm256_set1_epi8(25);
        let mut m = Masks::default();
        for k in 0..2 {
            // SAFETY: bytes 32k .. 32k + 32 of a 64-byte array; unaligned load.
            let v = unsafe { _mm256_loadu_si256(block.as_ptr().add(32 * k).cast::<__m256i>()) };
            let d = _mm256_sub_epi8(v, zero);
            let digit = _mm256_cmpeq_epi8(_mm256_min_epu8(d, nine), d);
            let u = _mm256_sub_epi8(v, a);
            let upper = _mm256_cmpeq_epi8(_mm256_min_epu8(u, z), u);
            let is_dash = _mm256_cmpeq_epi8(v, dash);
            let sep = _mm256_or_si256(is_dash, _mm256_cmpeq_epi8(v, space));
            let rare =
                _mm256_or_si256(is_dash, _mm256_or_si256(_mm256_cmpeq_epi8(v, jay), _mm256_cmpeq_epi8(v, backslash)));
            let shift = 32 * k as u32;
            let bits = |x: __m256i| u64::from(_mm256_movemask_epi8(x) as u32) << shift;
            m.quote |= bits(_mm256_cmpeq_epi8(v, quote));
            m.digit |= bits(digit);
            m.upper |= bits(upper);
            m.sep |= bits(sep);
            m.rare |= bits(rare);
        }
        m
    }

    /// See [`Classifier::follow`].
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn follow_avx2(block: &[u8; BLOCK]) -> u64 {
        let (colon, space) = (_mm256_set1_epi8(b':' as i8), _mm256_set1_epi8(b' ' as i8));
        let mut m = 0u64;
        for k in 0..2 {
            // SAFETY: bytes 32k .. 32k + 32 of a 64-byte array; unaligned load.
            let v = unsafe { _mm256_loadu_si256(block.as_ptr().add(32 * k).cast::<__m256i>()) };
            let f = _mm256_or_si256(_mm256_cmpeq_epi8(v, colon), _mm256_cmpeq_epi8(_mm256_min_epu8(v, space), v));
            m |= u64::from(_mm256_movemask_epi8(f) as u32) << (32 * k);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Classify one block with the classifier `with_classifier` hands out.
    struct One<'a>(&'a [u8; BLOCK]);

    impl BlockWork for One<'_> {
        type Output = Masks;
        #[inline(always)]
        fn run<C: Classifier>(self, classifier: C) -> Masks {
            classifier.classify(self.0)
        }
    }

    fn every_way(block: &[u8; BLOCK]) -> Vec<Masks> {
        #[allow(unused_mut)]
        let mut out = vec![with_classifier(One(block)), Scalar.classify(block)];
        #[cfg(target_arch = "x86_64")]
        {
            out.push(x86::classify_sse2(block));
            if x86::has_avx2() {
                // SAFETY: AVX2 checked just above.
                out.push(unsafe { x86::classify_avx2(block) });
                // SAFETY: AVX2, BMI1, BMI2, POPCNT checked by `level` (has_avx2).
                out.push(unsafe { x86::run_avx2(One(block)) });
            }
            if x86::has_avx512() {
                // SAFETY: AVX-512BW checked just above.
                out.push(unsafe { x86::classify_avx512(block) });
                // SAFETY: the AVX-512 level includes every feature `run_avx512` needs.
                out.push(unsafe { x86::run_avx512(One(block)) });
            }
        }
        out
    }

    /// `is_quiet` of the classifier `with_classifier` hands out, and of each one directly.
    struct Quiet<'a>(&'a [u8; BLOCK]);

    impl BlockWork for Quiet<'_> {
        type Output = bool;
        #[inline(always)]
        fn run<C: Classifier>(self, classifier: C) -> bool {
            classifier.is_quiet(self.0)
        }
    }

    fn quiet_every_way(block: &[u8; BLOCK]) -> Vec<bool> {
        #[allow(unused_mut)]
        let mut out = vec![with_classifier(Quiet(block)), Scalar.is_quiet(block)];
        #[cfg(target_arch = "x86_64")]
        {
            out.push(x86::is_quiet_sse2(block));
            if x86::has_avx2() {
                // SAFETY: AVX2 checked just above.
                out.push(unsafe { x86::is_quiet_avx2(block) });
            }
            if x86::has_avx512() {
                // SAFETY: AVX-512BW checked just above.
                out.push(unsafe { x86::is_quiet_avx512(block) });
            }
        }
        out
    }

    /// The reference: no byte in `"`..=`\\`, and then only `sep` and `follow` may be set.
    fn check_quiet(block: &[u8; BLOCK]) {
        let want = !block.iter().any(|&c| (b'"'..=b'\\').contains(&c));
        for q in quiet_every_way(block) {
            assert_eq!(q, want, "{block:?}");
        }
        if want {
            let m = classify_scalar(block);
            assert_eq!(Masks { sep: 0, ..m }, Masks::default());
        }
    }

    #[test]
    fn known_bytes() {
        let mut b = [b'x'; BLOCK];
        b[0] = b'"';
        b[1] = b'7';
        b[2] = b'Q';
        b[3] = b'-';
        b[4] = b' ';
        b[5] = b'J';
        b[6] = b'\\';
        b[63] = b'9';
        b[7] = b':';
        b[8] = b'\t';
        b[9] = 0;
        let want = Masks { quote: 1, digit: 2 | 1 << 63, upper: 4 | 32, sep: 8 | 16, rare: 8 | 32 | 64 };
        assert_eq!(classify_scalar(&b), want);
        for m in every_way(&b) {
            assert_eq!(m, want);
        }
        for f in follow_every_way(&b) {
            assert_eq!(f, 16 | 128 | 256 | 512);
        }
    }

    /// `follow` of the classifier `with_classifier` hands out, and of each one directly.
    struct Follow<'a>(&'a [u8; BLOCK]);

    impl BlockWork for Follow<'_> {
        type Output = u64;
        #[inline(always)]
        fn run<C: Classifier>(self, classifier: C) -> u64 {
            classifier.follow(self.0)
        }
    }

    fn follow_every_way(block: &[u8; BLOCK]) -> Vec<u64> {
        #[allow(unused_mut)]
        let mut out = vec![with_classifier(Follow(block)), Scalar.follow(block)];
        #[cfg(target_arch = "x86_64")]
        {
            out.push(x86::follow_sse2(block));
            if x86::has_avx2() {
                // SAFETY: AVX2 checked just above.
                out.push(unsafe { x86::follow_avx2(block) });
            }
            if x86::has_avx512() {
                // SAFETY: AVX-512BW checked just above.
                out.push(unsafe { x86::follow_avx512(block) });
            }
        }
        out
    }

    /// The reference of `follow`, and every way equal to it.
    fn check_follow(block: &[u8; BLOCK]) {
        let want = block.iter().enumerate().fold(0u64, |m, (i, &c)| m | u64::from(c == b':' || c <= 0x20) << i);
        for f in follow_every_way(block) {
            assert_eq!(f, want, "{block:?}");
        }
    }

    /// `quiet_run` of the classifier `with_classifier` hands out, and of each one directly.
    struct QuietRun<'a>(&'a [[u8; BLOCK]]);

    impl BlockWork for QuietRun<'_> {
        type Output = usize;
        #[inline(always)]
        fn run<C: Classifier>(self, classifier: C) -> usize {
            classifier.quiet_run(self.0)
        }
    }

    fn quiet_run_every_way(blocks: &[[u8; BLOCK]]) -> Vec<usize> {
        #[allow(unused_mut)]
        let mut out = vec![with_classifier(QuietRun(blocks)), Scalar.quiet_run(blocks)];
        #[cfg(target_arch = "x86_64")]
        {
            out.push(x86::Sse2(()).quiet_run(blocks));
            if x86::has_avx2() {
                // SAFETY: AVX2, BMI1, BMI2, POPCNT checked by `level` (has_avx2).
                out.push(unsafe { x86::run_avx2(QuietRun(blocks)) });
            }
            if x86::has_avx512() {
                // SAFETY: the AVX-512 level includes every feature `run_avx512` needs.
                out.push(unsafe { x86::run_avx512(QuietRun(blocks)) });
            }
        }
        out
    }

    #[test]
    fn quiet_run_stops_at_the_first_loud_block() {
        // every loud and quiet boundary byte, at the first and last byte of every block of
        // runs of 0 to 11 blocks (the four-block groups, their remainders and both halves of
        // a 32-byte lane)
        for n in 0..12usize {
            let quiet = vec![[b'x'; BLOCK]; n];
            for got in quiet_run_every_way(&quiet) {
                assert_eq!(got, n);
            }
            for at in 0..n {
                for pos in [0usize, 31, 32, 63] {
                    for c in [b'!', b'"', b'5', b'\\', b']', 0, 0x80, 0xff] {
                        let mut blocks = quiet.clone();
                        blocks[at][pos] = c;
                        let want = if (b'"'..=b'\\').contains(&c) { at } else { n };
                        for got in quiet_run_every_way(&blocks) {
                            assert_eq!(got, want, "{n} blocks, byte {c} in block {at} at {pos}");
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn quiet_run_equals_the_block_by_block_test(v in proptest::collection::vec(prop_oneof![40 => Just(b'x'), 8 => Just(b' '), 2 => Just(b'}'), 1 => any::<u8>()], 0..(BLOCK * 9))) {
            let blocks: Vec<[u8; BLOCK]> = v.chunks_exact(BLOCK).map(|c| c.try_into().expect("64 bytes")).collect();
            let want = blocks.iter().take_while(|b| !b.iter().any(|c| (b'"'..=b'\\').contains(c))).count();
            for got in quiet_run_every_way(&blocks) {
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn simd_equals_scalar(v in proptest::collection::vec(any::<u8>(), BLOCK), narrow in proptest::collection::vec(32u8..128, BLOCK)) {
            for bytes in [v, narrow] {
                let block: [u8; BLOCK] = bytes.try_into().expect("64 bytes");
                let want = classify_scalar(&block);
                for m in every_way(&block) {
                    prop_assert_eq!(m, want);
                }
                check_quiet(&block);
                check_follow(&block);
            }
        }
    }

    #[test]
    fn every_byte_value_at_every_position() {
        for c in 0..=255u8 {
            for pos in [0usize, 15, 16, 31, 32, 47, 48, 63] {
                let mut b = [0u8; BLOCK];
                b[pos] = c;
                let want = classify_scalar(&b);
                for m in every_way(&b) {
                    assert_eq!(m, want, "byte {c} at {pos}");
                }
                check_quiet(&b);
                check_follow(&b);
                let mut lower = [b'x'; BLOCK];
                lower[pos] = c;
                check_quiet(&lower);
                check_follow(&lower);
            }
        }
    }
}
