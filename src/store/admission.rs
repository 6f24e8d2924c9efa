//! Admission (docs/protocol.md, the admission and caps stages): the [`AdmissionStore`] trait
//! every backend implements, the in-memory store of a single node ([`MemoryAdmission`]), and
//! [`Admission`], what the handshake path calls, which hands out [`Lease`]s.
//!
//! Two calls per handshake, both atomic in the store:
//! - [`AdmissionStore::admit`] before the token is looked at (cheap: a flood of bad tokens
//!   is refused before any signature is verified): the global cap and a token from the IP's
//!   handshake bucket. It returns the [`Admitted`] proof the second call needs.
//! - [`AdmissionStore::try_acquire`] once the token is verified: the global, per-IP and
//!   per-subject caps checked and the slot counted in one step, so no two handshakes can both
//!   take the last slot (a shared store runs it as one script, with the fleet-wide rate).
//!
//! A slot is given back when its [`Lease`] is dropped: `Drop` only queues the release; the
//! owner of the queue (the `Registry` actor) performs it, so no store call (a network round
//! trip once the store is shared) ever runs inside `Drop`.
//!
//! The handshake path calls the store directly instead of sending the registry a message: the
//! registry runs on another thread, and a mailbox round trip per call cost two cross-thread
//! wake-ups, measured at about a third of the gateway's syscalls per handshake.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::{self, BoxFuture};
use tokio::sync::mpsc;

use crate::auth::Claims;
use crate::config::Limits;
use crate::error::HandshakeRefusal;
use crate::policy::client_ip::limit_key;
use crate::policy::ratelimit::{optional_bucket, TokenBucket};

/// Wait suggested to a client refused at a connection cap (it must wait for a close).
pub const CAP_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Monotonic connection id, unique per process.
pub type ConnId = u64;

/// An admission refusal, with the wait a client should observe (`Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub denied: HandshakeRefusal,
    /// Suggested wait before retrying.
    pub retry_after: Option<Duration>,
}

impl Refusal {
    pub(crate) fn at_cap(denied: HandshakeRefusal) -> Self {
        Self { denied, retry_after: Some(CAP_RETRY_AFTER) }
    }
}

/// What one live connection counts against: its per-IP key ([`limit_key`], not the full
/// address) and its subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slot {
    /// The per-IP key.
    pub ip: IpAddr,
    /// The token's subject.
    pub subject: String,
    /// Where the slot is counted.
    pub counted: Counted,
}

/// Where a slot is counted (what its release must undo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counted {
    /// This process only (a single node).
    Local,
    /// This node and the fleet's shared counts.
    Shared,
    /// This node only, admitted while the shared store was unreachable; a reconcile of the
    /// shared counts numbered above this one has counted it there too.
    Fallback(u64),
}

/// A handshake from this client passed early admission (stage 1–2); the proof
/// [`AdmissionStore::try_acquire`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The per-IP key the handshake was counted under.
    pub ip: IpAddr,
}

/// Connection caps and handshake rates, wherever they are kept.
pub trait AdmissionStore: Send + Sync {
    /// Early admission of a handshake from `ip`: the global cap, then a token from the IP's
    /// handshake bucket.
    fn admit(&self, ip: IpAddr) -> BoxFuture<'_, Result<Admitted, Refusal>>;
    /// Check the global, per-IP and per-subject caps and count the slot, atomically.
    /// A shared store also checks the token's revocation markers in the same round trip.
    fn try_acquire<'a>(&'a self, admitted: Admitted, claims: &'a Claims) -> BoxFuture<'a, Result<Slot, Refusal>>;
    /// Give a slot back (entries reaching zero are removed).
    fn release(&self, slot: Slot) -> BoxFuture<'_, ()>;
    /// Give several slots back (a shared store does it in one round trip).
    fn release_many(&self, slots: Vec<Slot>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for slot in slots {
                self.release(slot).await;
            }
        })
    }
    /// A reload changed the limits: they apply to the next handshakes; live connections over
    /// a lowered cap stay up.
    fn set_limits(&self, limits: Limits);
    /// Forget state that carries no information any more (full handshake buckets).
    fn sweep(&self, now: Instant);
    /// Live connections this node counts.
    fn local_total(&self) -> u64;
    /// Periodic work of a shared store (heartbeat, retried releases, reconcile), run every
    /// [`AdmissionStore::upkeep_interval`] by the registry.
    fn upkeep(&self) -> BoxFuture<'_, ()> {
        Box::pin(future::ready(()))
    }
    /// How often [`AdmissionStore::upkeep`] runs; `None`: never.
    fn upkeep_interval(&self) -> Option<Duration> {
        None
    }
    /// False while new handshakes are all refused because the store cannot decide them.
    fn ready(&self) -> bool {
        true
    }
}

/// A copy of a store's counts.
#[derive(Debug, Clone, Default)]
pub struct CountSnapshot {
    /// Live connections.
    pub total: u64,
    /// Per per-IP key.
    pub ips: Vec<(IpAddr, u32)>,
    /// Per subject.
    pub subjects: Vec<(String, u32)>,
}

/// The counts of the in-memory store.
#[derive(Debug, Default)]
struct Counts {
    total: u64,
    ips: HashMap<IpAddr, u32>,
    subjects: HashMap<String, u32>,
    handshakes: HashMap<IpAddr, TokenBucket>,
}

/// The single-node store: everything under one short lock.
#[derive(Debug)]
pub struct MemoryAdmission {
    limits: arc_swap::ArcSwap<Limits>,
    counts: Mutex<Counts>,
}

// === impl MemoryAdmission ===

impl MemoryAdmission {
    /// An empty store enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits: arc_swap::ArcSwap::from_pointee(limits), counts: Mutex::new(Counts::default()) }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // A panic while holding the lock cannot leave the counts half-updated (each
        // mutation completes before anything can fail), so a poisoned lock is still usable.
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn limits(&self) -> Arc<Limits> {
        self.limits.load_full()
    }

    pub(crate) fn admit_now(&self, ip: IpAddr, now: Instant) -> Result<Admitted, Refusal> {
        let limits = self.limits.load();
        let ip = limit_key(ip, limits.ipv6_prefix_length);
        let mut counts = self.counts();
        if limits.max_connections > 0 && counts.total >= limits.max_connections {
            return Err(Refusal::at_cap(HandshakeRefusal::Overloaded));
        }
        let (burst, rate) = (u64::from(limits.handshake_burst_per_ip), u64::from(limits.handshakes_per_second_per_ip));
        let taken = match counts.handshakes.get_mut(&ip) {
            Some(b) => b.try_take(1, now),
            None => match optional_bucket(burst, rate, now) {
                Some(mut b) => {
                    let r = b.try_take(1, now);
                    counts.handshakes.insert(ip, b);
                    r
                }
                None => Ok(()),
            },
        };
        taken
            .map(|()| Admitted { ip })
            .map_err(|wait| Refusal { denied: HandshakeRefusal::HandshakeRate, retry_after: Some(wait) })
    }

    fn acquire_now(&self, admitted: Admitted, subject: &str) -> Result<Slot, Refusal> {
        self.acquire_with(admitted, subject, &self.limits.load(), Counted::Local)
    }

    /// Check `limits`' caps against this store's counts and count the slot, atomically.
    pub(crate) fn acquire_with(
        &self,
        admitted: Admitted,
        subject: &str,
        limits: &Limits,
        counted: Counted,
    ) -> Result<Slot, Refusal> {
        let ip = admitted.ip;
        let mut counts = self.counts();
        if limits.max_connections > 0 && counts.total >= limits.max_connections {
            return Err(Refusal::at_cap(HandshakeRefusal::Overloaded));
        }
        let per_ip = limits.max_connections_per_ip;
        if per_ip > 0 && counts.ips.get(&ip).copied().unwrap_or(0) >= per_ip {
            return Err(Refusal::at_cap(HandshakeRefusal::IpConnections));
        }
        let per_sub = limits.max_connections_per_subject;
        if per_sub > 0 && counts.subjects.get(subject).copied().unwrap_or(0) >= per_sub {
            return Err(Refusal::at_cap(HandshakeRefusal::SubjectConnections));
        }
        counts.total += 1;
        *counts.ips.entry(ip).or_insert(0) += 1;
        *counts.subjects.entry(subject.to_string()).or_insert(0) += 1;
        Ok(Slot { ip, subject: subject.to_string(), counted })
    }

    /// Every count: the total, per IP key, per subject.
    pub(crate) fn snapshot(&self) -> CountSnapshot {
        let c = self.counts();
        CountSnapshot {
            total: c.total,
            ips: c.ips.iter().map(|(k, v)| (*k, *v)).collect(),
            subjects: c.subjects.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }

    pub(crate) fn release_now(&self, slot: &Slot) {
        let mut counts = self.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.ips.get_mut(&slot.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.ips.remove(&slot.ip);
            }
        }
        if let Some(n) = counts.subjects.get_mut(&slot.subject) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.subjects.remove(&slot.subject);
            }
        }
    }
}

impl AdmissionStore for MemoryAdmission {
    fn admit(&self, ip: IpAddr) -> BoxFuture<'_, Result<Admitted, Refusal>> {
        Box::pin(future::ready(self.admit_now(ip, Instant::now())))
    }

    fn try_acquire<'a>(&'a self, admitted: Admitted, claims: &'a Claims) -> BoxFuture<'a, Result<Slot, Refusal>> {
        Box::pin(future::ready(self.acquire_now(admitted, &claims.sub)))
    }

    fn release(&self, slot: Slot) -> BoxFuture<'_, ()> {
        self.release_now(&slot);
        Box::pin(future::ready(()))
    }

    fn set_limits(&self, limits: Limits) {
        let old = self.limits.load();
        if (limits.handshake_burst_per_ip, limits.handshakes_per_second_per_ip)
            != (old.handshake_burst_per_ip, old.handshakes_per_second_per_ip)
        {
            self.counts().handshakes.clear();
        }
        self.limits.store(Arc::new(limits));
    }

    fn sweep(&self, now: Instant) {
        self.counts().handshakes.retain(|_, b| !b.is_full(now));
    }

    fn local_total(&self) -> u64 {
        self.counts().total
    }
}

/// Slots given back by dropped leases, waiting for the queue's owner to release them.
pub type ReleaseQueue = mpsc::UnboundedReceiver<Slot>;

/// What the handshake path calls: the store, the connection ids and the release queue.
pub struct Admission {
    store: Arc<dyn AdmissionStore>,
    next_id: AtomicU64,
    releases: mpsc::UnboundedSender<Slot>,
}

// === impl Admission ===

impl Admission {
    /// Admission over `store`, and the queue of releases its leases will send (to be drained
    /// into [`Admission::release`] by its owner).
    pub fn new(store: Arc<dyn AdmissionStore>) -> (Arc<Self>, ReleaseQueue) {
        let (releases, queue) = mpsc::unbounded_channel();
        (Arc::new(Self { store, next_id: AtomicU64::new(1), releases }), queue)
    }

    /// Stage 1–2 (see [`AdmissionStore::admit`]).
    ///
    /// # Errors
    /// [`Refusal`] with `Overloaded` or `HandshakeRate` and the wait to suggest.
    pub async fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        self.store.admit(ip).await
    }

    /// Stage 8: a live-connection slot for an admitted client and `subject`.
    ///
    /// # Errors
    /// [`Refusal`] at the global, per-IP or per-subject cap.
    pub async fn try_acquire(&self, admitted: Admitted, claims: &Claims) -> Result<Lease, Refusal> {
        let slot = self.store.try_acquire(admitted, claims).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Ok(Lease { id, slot: Some(slot), releases: self.releases.clone() })
    }

    /// Give back a slot a dropped lease queued.
    pub async fn release(&self, slot: Slot) {
        self.store.release(slot).await;
    }

    /// Give back several slots dropped leases queued.
    pub async fn release_many(&self, slots: Vec<Slot>) {
        self.store.release_many(slots).await;
    }

    /// A reload changed the limits.
    pub fn set_limits(&self, limits: Limits) {
        self.store.set_limits(limits);
    }

    /// Forget handshake buckets that carry no information any more.
    pub fn sweep(&self) {
        self.store.sweep(Instant::now());
    }

    /// Live connections this node counts (released slots included once their release ran).
    pub fn local_total(&self) -> u64 {
        self.store.local_total()
    }

    /// The store's periodic work (see [`AdmissionStore::upkeep`]).
    pub async fn upkeep(&self) {
        self.store.upkeep().await;
    }

    /// How often [`Admission::upkeep`] runs.
    pub fn upkeep_interval(&self) -> Option<Duration> {
        self.store.upkeep_interval()
    }

    /// False while the store refuses every handshake (fleet mode, Redis down, `refuse`).
    pub fn ready(&self) -> bool {
        self.store.ready()
    }
}

/// A live-connection slot granted by [`Admission::try_acquire`]. Dropping it queues the
/// slot's release, so a handshake that fails after admission, or a session that ends in any
/// way, gives it back.
pub struct Lease {
    /// The lease (and connection) id.
    pub id: ConnId,
    slot: Option<Slot>,
    releases: mpsc::UnboundedSender<Slot>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            // The receiver is gone only when the process is stopping.
            let _ = self.releases.send(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections_per_ip: 2,
            handshakes_per_second_per_ip: 1,
            handshake_burst_per_ip: 2,
            ..Limits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn ready<T>(f: impl std::future::Future<Output = T>) -> T {
        f.now_or_never().expect("the in-memory store answers at once")
    }

    fn admission(l: Limits) -> (Arc<Admission>, ReleaseQueue) {
        Admission::new(Arc::new(MemoryAdmission::new(l)))
    }

    /// Run the releases the dropped leases queued (the registry's job).
    fn run_releases(a: &Admission, q: &mut ReleaseQueue) {
        while let Ok(slot) = q.try_recv() {
            ready(a.release(slot));
        }
    }

    fn claims(subject: &str) -> Claims {
        Claims { sub: subject.into(), exp: 2_000, iat: None, jti: None, scopes: Vec::new() }
    }

    fn take(a: &Admission, addr: &str, subject: &str) -> Result<Lease, HandshakeRefusal> {
        let admitted = ready(a.admit(ip(addr))).map_err(|r| r.denied)?;
        ready(a.try_acquire(admitted, &claims(subject))).map_err(|r| r.denied)
    }

    #[test]
    fn handshake_rate_is_per_ip_and_full_buckets_are_forgotten() {
        let s = MemoryAdmission::new(limits());
        let t = Instant::now();
        assert!(s.admit_now(ip("10.0.0.1"), t).is_ok());
        assert!(s.admit_now(ip("10.0.0.1"), t).is_ok());
        let refused = s.admit_now(ip("10.0.0.1"), t).err();
        assert_eq!(refused.map(|r| r.denied), Some(HandshakeRefusal::HandshakeRate));
        assert!(refused.and_then(|r| r.retry_after).is_some_and(|w| w > Duration::ZERO));
        assert!(s.admit_now(ip("10.0.0.2"), t).is_ok());
        s.sweep(t + Duration::from_secs(60));
        assert!(s.counts().handshakes.is_empty());
    }

    #[test]
    fn leases_count_and_queue_their_release() {
        let (a, mut q) = admission(Limits { max_connections_per_ip: 1, handshake_burst_per_ip: 10, ..limits() });
        let lease = take(&a, "10.0.0.1", "alice").expect("first slot");
        assert_eq!(take(&a, "10.0.0.1", "bob").err(), Some(HandshakeRefusal::IpConnections));
        assert_eq!(a.local_total(), 1);
        drop(lease);
        // Dropping only queued the release.
        assert_eq!(a.local_total(), 1);
        run_releases(&a, &mut q);
        assert_eq!(a.local_total(), 0);
        assert!(take(&a, "10.0.0.1", "bob").is_ok(), "the slot came back");
    }

    #[test]
    fn the_caps_are_checked_and_counted_in_one_step() {
        let l = Limits { max_connections: 3, max_connections_per_subject: 1, max_connections_per_ip: 0, ..limits() };
        let (a, _q) = admission(Limits { handshake_burst_per_ip: 100, handshakes_per_second_per_ip: 100, ..l });
        // Two handshakes admitted early for the last subject slot: only one acquires it.
        let first = ready(a.admit(ip("10.0.0.1"))).expect("admitted");
        let second = ready(a.admit(ip("10.0.0.2"))).expect("admitted");
        let _one = ready(a.try_acquire(first, &claims("carol"))).expect("slot");
        assert_eq!(
            ready(a.try_acquire(second, &claims("carol"))).err().map(|r| r.denied),
            Some(HandshakeRefusal::SubjectConnections)
        );
        let _two = take(&a, "10.0.0.3", "dave").expect("slot");
        let _three = take(&a, "10.0.0.4", "erin").expect("slot");
        assert_eq!(take(&a, "10.0.0.5", "frank").err(), Some(HandshakeRefusal::Overloaded));
    }

    #[test]
    fn an_ipv6_prefix_is_one_client_for_caps_and_handshake_rate() {
        let (a, mut q) = admission(Limits { max_connections_per_ip: 2, ..limits() });
        let x = take(&a, "2001:db8:0:1::1", "alice").expect("first");
        let y = take(&a, "2001:db8:0:1:ffff::2", "bob").expect("second");
        // Handshake rate (burst 2) is spent for this /64.
        assert_eq!(take(&a, "2001:db8:0:1::3", "carol").err(), Some(HandshakeRefusal::HandshakeRate));
        let other = take(&a, "2001:db8:0:2::1", "dave").expect("another /64");
        // A reload to /128 releases the slots under the keys they were taken with.
        a.set_limits(Limits { max_connections_per_ip: 2, ipv6_prefix_length: 128, ..limits() });
        drop((x, y, other));
        run_releases(&a, &mut q);
        assert_eq!(a.local_total(), 0);
        let _c = take(&a, "2001:db8:0:1::3", "carol").expect("slots came back");
    }

    #[test]
    fn counts_return_to_zero_and_entries_are_removed() {
        let s = MemoryAdmission::new(Limits { handshake_burst_per_ip: 10, ..limits() });
        let admitted = s.admit_now(ip("10.0.0.1"), Instant::now()).expect("admitted");
        let a = s.acquire_now(admitted, "alice").expect("slot");
        let b = s.acquire_now(admitted, "bob").expect("slot");
        assert_eq!(s.local_total(), 2);
        s.release_now(&a);
        s.release_now(&b);
        // A slot released twice cannot drive a count below zero.
        s.release_now(&b);
        assert_eq!(s.local_total(), 0);
        let counts = s.counts();
        assert!(counts.ips.is_empty() && counts.subjects.is_empty());
    }
}
