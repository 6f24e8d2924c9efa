//! One-time tickets, wherever they are kept: the [`TicketStore`] trait and the store of a
//! single node ([`MemoryTickets`]); fleet mode keeps them in Redis (`fleet::tickets`).
//!
//! Semantics every store keeps (docs/protocol.md, "Browser tickets"):
//! - **Issue** checks the subject's outstanding tickets (issued, neither redeemed nor expired)
//!   against `max_outstanding_per_subject`, then takes one from the subject's issue bucket
//!   (`issue_per_subject_per_minute` tickets at once, refilled at that many per minute), then
//!   stores the record; a refusal changes nothing.
//! - **Redeem** takes the record out in one atomic step: of any number of concurrent redeems
//!   of one ticket exactly one gets it, on whichever node. The ticket stops counting as
//!   outstanding. A ticket redeemed (or presented after its TTL) is remembered for
//!   [`GRACE`] past its expiry, so a second presentation is told apart as a replay; after
//!   that it is simply unknown. Every answer but [`Redeemed::Valid`] means 401 for the client.
//!
//! Owns: the once-only redemption, the per-subject limits, the reaping of expired entries.
//! Does not own: the ticket syntax and binding (`auth::ticket`), the HTTP answers.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::{self, BoxFuture};

use crate::auth::ticket::{TicketKey, TicketRecord};
use crate::policy::ratelimit::TokenBucket;

/// How long past its expiry a redeemed or expired ticket is remembered (to count a replay as
/// `replayed` and a late one as `expired`, not as unknown).
pub const GRACE: Duration = Duration::from_secs(60);

/// Tickets (live and remembered) a single node keeps at most; past it, issues are refused
/// (503) until expired entries are reaped. A bound on memory whatever the subjects do.
pub const MAX_ENTRIES: usize = 1_000_000;

/// The limits of one issue (`[tickets]` in force).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueLimits {
    /// How long the ticket stays redeemable.
    pub ttl: Duration,
    /// The subject's issue bucket: its size and its refill per minute (at least 1).
    pub per_minute: u32,
    /// Outstanding tickets of the subject, at most (at least 1).
    pub max_outstanding: u32,
}

/// Why a ticket was not issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueRefusal {
    /// The subject's issue bucket is empty: retry after this long.
    Rate {
        /// Until the bucket holds a ticket again.
        retry_after: Duration,
    },
    /// The subject holds `max_outstanding_per_subject` tickets already.
    Outstanding,
    /// The store cannot take it (Redis unreachable, the node's store full): fail closed.
    Unavailable(String),
}

/// What a redemption found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// The ticket was live: its record, now gone from the store.
    Valid(TicketRecord),
    /// The ticket was presented after its TTL (now gone from the store).
    Expired,
    /// The ticket was redeemed before.
    Replayed,
    /// No such ticket (never issued, or forgotten after its grace).
    Unknown,
}

/// The store could not be asked (Redis unreachable): the redemption fails closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ticket store unavailable: {0}")]
pub struct StoreDown(pub String);

/// One-time tickets, wherever they are kept.
pub trait TicketStore: Send + Sync {
    /// Store `record` under `key` for `limits.ttl`, within the subject's limits.
    fn issue<'a>(
        &'a self,
        key: TicketKey,
        record: &'a TicketRecord,
        limits: IssueLimits,
    ) -> BoxFuture<'a, Result<(), IssueRefusal>>;
    /// Take the ticket `key` out, atomically (at most one caller ever gets [`Redeemed::Valid`]).
    fn redeem(&self, key: TicketKey) -> BoxFuture<'_, Result<Redeemed, StoreDown>>;
    /// Forget what has expired (a shared store expires its keys itself).
    fn sweep(&self, now: Instant) {
        let _ = now;
    }
}

/// One entry of the memory store.
#[derive(Debug)]
enum Entry {
    /// Issued, not redeemed.
    Live { record: TicketRecord, expires: Instant, forget: Instant },
    /// Redeemed (or presented after its TTL): remembered until `forget`.
    Used { forget: Instant },
}

impl Entry {
    fn forget(&self) -> Instant {
        match self {
            Self::Live { forget, .. } | Self::Used { forget } => *forget,
        }
    }
}

/// One subject's issue state.
#[derive(Debug)]
struct Subject {
    bucket: TokenBucket,
    /// The `per_minute` the bucket was built for (a reload that changes it starts a new one).
    per_minute: u32,
    /// Its outstanding tickets and their expiry (at most `max_outstanding`).
    outstanding: Vec<(TicketKey, Instant)>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<TicketKey, Entry>,
    subjects: HashMap<String, Subject>,
}

/// The store of a single node: everything under one short lock.
#[derive(Debug, Default)]
pub struct MemoryTickets {
    inner: Mutex<Inner>,
}

fn per_minute_bucket(limits: IssueLimits, now: Instant) -> Option<TokenBucket> {
    let n = u64::from(limits.per_minute.max(1));
    TokenBucket::try_every(n, Duration::from_secs(60) / limits.per_minute.max(1), now).ok()
}

// === impl MemoryTickets ===

impl MemoryTickets {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation completes before anything can fail: a poisoned lock is still whole.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`TicketStore::issue`] at `now`.
    ///
    /// # Errors
    /// [`IssueRefusal`].
    pub fn issue_at(
        &self,
        key: TicketKey,
        record: &TicketRecord,
        limits: IssueLimits,
        now: Instant,
    ) -> Result<(), IssueRefusal> {
        let mut inner = self.lock();
        if inner.entries.len() >= MAX_ENTRIES {
            return Err(IssueRefusal::Unavailable("the node's ticket store is full".into()));
        }
        if inner.entries.contains_key(&key) {
            // 256 random bits never collide; a repeated key is a bug, not a reason to overwrite.
            return Err(IssueRefusal::Unavailable("ticket key exists".into()));
        }
        let fresh = || {
            per_minute_bucket(limits, now)
                .ok_or_else(|| IssueRefusal::Unavailable("no issue bucket for these limits".into()))
        };
        let subject = match inner.subjects.get_mut(&record.sub) {
            Some(s) => {
                if s.per_minute != limits.per_minute {
                    s.bucket = fresh()?;
                    s.per_minute = limits.per_minute;
                }
                s
            }
            None => {
                let subject = Subject { bucket: fresh()?, per_minute: limits.per_minute, outstanding: Vec::new() };
                inner.subjects.entry(record.sub.clone()).or_insert(subject)
            }
        };
        subject.outstanding.retain(|(_, expires)| *expires > now);
        let cap = usize::try_from(limits.max_outstanding).unwrap_or(usize::MAX);
        if subject.outstanding.len() >= cap {
            return Err(IssueRefusal::Outstanding);
        }
        subject.bucket.try_take(1, now).map_err(|retry_after| IssueRefusal::Rate { retry_after })?;
        let expires = now.checked_add(limits.ttl).unwrap_or(now);
        let forget = expires.checked_add(GRACE).unwrap_or(expires);
        subject.outstanding.push((key, expires));
        inner.entries.insert(key, Entry::Live { record: record.clone(), expires, forget });
        Ok(())
    }

    /// [`TicketStore::redeem`] at `now`.
    pub fn redeem_at(&self, key: TicketKey, now: Instant) -> Redeemed {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&key) else {
            return Redeemed::Unknown;
        };
        if now >= entry.forget() {
            inner.entries.remove(&key);
            return Redeemed::Unknown;
        }
        let forget = entry.forget();
        match std::mem::replace(entry, Entry::Used { forget }) {
            Entry::Used { .. } => Redeemed::Replayed,
            Entry::Live { record, expires, .. } => {
                if let Some(s) = inner.subjects.get_mut(&record.sub) {
                    s.outstanding.retain(|(k, _)| *k != key);
                }
                if now >= expires {
                    Redeemed::Expired
                } else {
                    Redeemed::Valid(record)
                }
            }
        }
    }

    /// Forget entries past their grace and subjects with nothing outstanding and a full
    /// bucket.
    pub fn sweep_at(&self, now: Instant) {
        let mut inner = self.lock();
        inner.entries.retain(|_, e| e.forget() > now);
        inner.subjects.retain(|_, s| {
            s.outstanding.retain(|(_, expires)| *expires > now);
            !s.outstanding.is_empty() || !s.bucket.is_full(now)
        });
    }

    /// Entries held (live and remembered).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TicketStore for MemoryTickets {
    fn issue<'a>(
        &'a self,
        key: TicketKey,
        record: &'a TicketRecord,
        limits: IssueLimits,
    ) -> BoxFuture<'a, Result<(), IssueRefusal>> {
        Box::pin(future::ready(self.issue_at(key, record, limits, Instant::now())))
    }

    fn redeem(&self, key: TicketKey) -> BoxFuture<'_, Result<Redeemed, StoreDown>> {
        Box::pin(future::ready(Ok(self.redeem_at(key, Instant::now()))))
    }

    fn sweep(&self, now: Instant) {
        self.sweep_at(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ticket::Ticket;
    use crate::auth::Claims;

    const LIMITS: IssueLimits = IssueLimits { ttl: Duration::from_secs(30), per_minute: 3, max_outstanding: 2 };

    fn record(sub: &str) -> TicketRecord {
        let claims = Claims { sub: sub.into(), exp: 2_000_000_000, iat: Some(1), jti: None, scopes: Vec::new() };
        TicketRecord::new(&claims, "/ws", None, None, 1)
    }

    fn key() -> TicketKey {
        Ticket::generate().expect("rng").key()
    }

    #[test]
    fn a_ticket_is_redeemed_once_then_replayed_then_forgotten() {
        let (s, t0) = (MemoryTickets::new(), Instant::now());
        let k = key();
        s.issue_at(k, &record("alice"), LIMITS, t0).expect("issued");
        assert_eq!(s.redeem_at(k, t0), Redeemed::Valid(record("alice")));
        assert_eq!(s.redeem_at(k, t0), Redeemed::Replayed);
        assert_eq!(s.redeem_at(k, t0 + LIMITS.ttl + GRACE), Redeemed::Unknown);
        assert_eq!(s.redeem_at(key(), t0), Redeemed::Unknown);
    }

    #[test]
    fn a_ticket_past_its_ttl_is_expired_and_gone() {
        let (s, t0) = (MemoryTickets::new(), Instant::now());
        let k = key();
        s.issue_at(k, &record("alice"), LIMITS, t0).expect("issued");
        assert_eq!(s.redeem_at(k, t0 + LIMITS.ttl), Redeemed::Expired);
        assert_eq!(s.redeem_at(k, t0 + LIMITS.ttl), Redeemed::Replayed);
    }

    #[test]
    fn outstanding_tickets_are_capped_and_freed_by_redeem_and_expiry() {
        let (s, t0) = (MemoryTickets::new(), Instant::now());
        let (a, b) = (key(), key());
        s.issue_at(a, &record("alice"), LIMITS, t0).expect("first");
        s.issue_at(b, &record("alice"), LIMITS, t0).expect("second");
        assert_eq!(s.issue_at(key(), &record("alice"), LIMITS, t0), Err(IssueRefusal::Outstanding));
        s.issue_at(key(), &record("bob"), LIMITS, t0).expect("another subject");
        assert!(matches!(s.redeem_at(a, t0), Redeemed::Valid(_)));
        let c = key();
        s.issue_at(c, &record("alice"), LIMITS, t0).expect("a redeemed one no longer counts");
        // Room again after a redeem, but the bucket (3 per minute) is empty: one per 20 s.
        assert!(matches!(s.redeem_at(c, t0), Redeemed::Valid(_)));
        match s.issue_at(key(), &record("alice"), LIMITS, t0) {
            Err(IssueRefusal::Rate { retry_after }) => {
                assert!(retry_after > Duration::from_secs(19) && retry_after <= Duration::from_secs(20))
            }
            other => panic!("{other:?}"),
        }
        s.issue_at(key(), &record("alice"), LIMITS, t0 + Duration::from_secs(20)).expect("refilled");
        // Outstanding tickets that expire stop counting.
        let roomy = IssueLimits { per_minute: 100, ..LIMITS };
        let later = t0 + Duration::from_secs(20) + LIMITS.ttl;
        s.issue_at(key(), &record("alice"), roomy, later).expect("b and the last one expired");
        s.issue_at(key(), &record("alice"), roomy, later).expect("two outstanding");
        assert_eq!(s.issue_at(key(), &record("alice"), roomy, later), Err(IssueRefusal::Outstanding));
    }

    #[test]
    fn a_refused_issue_takes_nothing_from_the_bucket() {
        let (s, t0) = (MemoryTickets::new(), Instant::now());
        let one = IssueLimits { max_outstanding: 1, per_minute: 2, ..LIMITS };
        s.issue_at(key(), &record("alice"), one, t0).expect("first");
        for _ in 0..5 {
            assert_eq!(s.issue_at(key(), &record("alice"), one, t0), Err(IssueRefusal::Outstanding));
        }
        // The first expired: the bucket still holds its second ticket.
        s.issue_at(key(), &record("alice"), one, t0 + LIMITS.ttl).expect("bucket untouched by refusals");
    }

    #[test]
    fn the_sweep_reaps_what_expired() {
        let (s, t0) = (MemoryTickets::new(), Instant::now());
        let k = key();
        s.issue_at(k, &record("alice"), LIMITS, t0).expect("issued");
        s.issue_at(key(), &record("bob"), LIMITS, t0).expect("issued");
        assert!(matches!(s.redeem_at(k, t0), Redeemed::Valid(_)));
        s.sweep_at(t0 + LIMITS.ttl);
        assert_eq!(s.len(), 2, "remembered through the grace");
        s.sweep_at(t0 + LIMITS.ttl + GRACE + Duration::from_secs(60));
        assert!(s.is_empty());
        assert!(s.lock().subjects.is_empty(), "idle subjects forgotten");
    }
}
