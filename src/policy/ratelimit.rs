//! Token bucket (messages, bytes, handshakes). Time is an argument, so tests never sleep.
//!
//! A bucket holds at most `burst` tokens and refills at `per_second`; taking `n` tokens
//! succeeds when at least `n` are present. Refill is computed lazily from the elapsed time.

use std::time::{Duration, Instant};

/// A refilling allowance. Construct with [`TokenBucket::try_new`].
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Maximum tokens held (the burst).
    capacity: f64,
    /// Tokens added per second.
    per_second: f64,
    /// Tokens available at `last`.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
}

/// Why a bucket could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a token bucket needs burst > 0 and rate > 0")]
pub struct BucketError;

// === impl TokenBucket ===

impl TokenBucket {
    /// A full bucket of `burst` tokens refilling at `per_second`.
    ///
    /// # Errors
    /// [`BucketError`] when either is zero (callers treat `0 = unlimited` by not building one).
    pub fn try_new(burst: u64, per_second: u64, now: Instant) -> Result<Self, BucketError> {
        if burst == 0 || per_second == 0 {
            return Err(BucketError);
        }
        Ok(Self { capacity: burst as f64, per_second: per_second as f64, tokens: burst as f64, last: now })
    }

    /// A full bucket of `burst` tokens gaining one token every `interval` (rates below one
    /// per second, such as `auth.refresh`'s).
    ///
    /// # Errors
    /// [`BucketError`] when `burst` or `interval` is zero.
    pub fn try_every(burst: u64, interval: Duration, now: Instant) -> Result<Self, BucketError> {
        if burst == 0 || interval.is_zero() {
            return Err(BucketError);
        }
        let per_second = 1.0 / interval.as_secs_f64();
        Ok(Self { capacity: burst as f64, per_second, tokens: burst as f64, last: now })
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = now;
    }

    /// Take `n` tokens at `now`. On refusal nothing is taken and the wait until `n` tokens
    /// would be available is returned (capped at the time to refill a full bucket).
    ///
    /// # Errors
    /// The time to wait, when fewer than `n` tokens are available.
    pub fn try_take(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let n = (n as f64).min(self.capacity);
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((n - self.tokens) / self.per_second))
        }
    }

    /// True when the bucket is full at `now` (an idle entry that can be forgotten).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }
}

/// A bound on log lines of one kind per connection: at most `per_second` lines in each
/// one-second window; the lines left out are counted and reported with the next line
/// written (or by the caller at the end).
#[derive(Debug, Clone)]
pub struct LogBudget {
    per_second: u32,
    window_start: Option<Instant>,
    lines: u32,
    suppressed: u64,
}

// === impl LogBudget ===

impl LogBudget {
    /// A budget of `per_second` lines per second (at least one).
    pub fn new(per_second: u32) -> Self {
        Self { per_second: per_second.max(1), window_start: None, lines: 0, suppressed: 0 }
    }

    /// May a line be written at `now`? `Some(n)` with the lines suppressed since the last
    /// one written; `None` when this one is suppressed (and counted).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        let fresh = self.window_start.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if fresh {
            self.window_start = Some(now);
            self.lines = 0;
        }
        if self.lines < self.per_second {
            self.lines += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }

    /// Lines suppressed and not reported yet.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

/// A bucket that may be absent (`0 = unlimited` in the config).
pub fn optional_bucket(burst: u64, per_second: u64, now: Instant) -> Option<TokenBucket> {
    TokenBucket::try_new(burst, per_second, now).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::try_new(2, 1, t0).expect("valid");
        assert!(b.try_take(1, t0).is_ok());
        assert!(b.try_take(1, t0).is_ok());
        let wait = b.try_take(1, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(b.try_take(1, t0 + Duration::from_millis(999)).is_err());
        assert!(b.try_take(1, t0 + Duration::from_millis(1999)).is_ok());
    }

    #[test]
    fn refill_never_exceeds_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::try_new(3, 10, t0).expect("valid");
        let later = t0 + Duration::from_secs(3600);
        assert!(b.is_full(later));
        for _ in 0..3 {
            assert!(b.try_take(1, later).is_ok());
        }
        assert!(b.try_take(1, later).is_err());
    }

    #[test]
    fn large_costs_are_capped_at_capacity_so_they_can_ever_pass() {
        let t0 = Instant::now();
        let mut b = TokenBucket::try_new(100, 100, t0).expect("valid");
        assert!(b.try_take(1_000, t0).is_ok(), "a cost above burst takes the whole bucket");
        assert!(b.try_take(1, t0).is_err());
    }

    #[test]
    fn one_token_per_interval_after_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::try_every(3, Duration::from_secs(10), t0).expect("valid");
        for _ in 0..3 {
            assert!(b.try_take(1, t0).is_ok());
        }
        assert!(b.try_take(1, t0 + Duration::from_secs(9)).is_err());
        assert!(b.try_take(1, t0 + Duration::from_secs(10)).is_ok());
        assert!(b.try_take(1, t0 + Duration::from_secs(11)).is_err());
        assert!(TokenBucket::try_every(0, Duration::from_secs(1), t0).is_err());
        assert!(TokenBucket::try_every(1, Duration::ZERO, t0).is_err());
    }

    #[test]
    fn log_lines_are_bounded_per_second_and_the_rest_counted() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(2);
        assert_eq!(b.admit(t0), Some(0));
        assert_eq!(b.admit(t0), Some(0));
        assert_eq!(b.admit(t0 + Duration::from_millis(500)), None);
        assert_eq!(b.admit(t0 + Duration::from_millis(999)), None);
        assert_eq!(b.suppressed(), 2);
        assert_eq!(b.admit(t0 + Duration::from_secs(1)), Some(2), "the next line reports them");
        assert_eq!(b.suppressed(), 0);
        assert_eq!(LogBudget::new(0).admit(t0), Some(0), "at least one line per second");
    }

    #[test]
    fn zero_means_no_bucket() {
        assert_eq!(TokenBucket::try_new(0, 1, Instant::now()).unwrap_err(), BucketError);
        assert!(optional_bucket(10, 0, Instant::now()).is_none());
    }
}
