//! Admission and bookkeeping of live connections: the [`Admission`] state (counts per IP, per
//! subject and in total, per-IP handshake buckets) and the [`Registry`] actor that maintains
//! it.
//!
//! The counts sit behind the [`AdmissionStore`] trait so a shared store (Redis, docs/fleet.md)
//! can replace the in-memory one without the handshake path noticing. The handshake path calls
//! [`Admission`] directly under a short lock instead of sending the registry a message: the
//! registry runs on another thread, and three mailbox round trips per connection (admit,
//! acquire, release) cost six cross-thread wake-ups, measured at about a third of the
//! gateway's syscalls per handshake. Each check-and-count is still atomic (one lock).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::Limits;
use crate::error::HandshakeRefusal;
use crate::policy::client_ip::limit_key;
use crate::policy::ratelimit::{optional_bucket, TokenBucket};

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

/// Wait suggested to a client refused at a connection cap (it must wait for a close).
const CAP_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Admission counts and handshake rates. Queries (`at_*`) are separate from mutations.
pub trait AdmissionStore {
    /// Take one handshake token for `ip` at `now`.
    ///
    /// # Errors
    /// The wait until a token is available.
    fn take_handshake(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration>;
    /// Live connections in total.
    fn total(&self) -> u64;
    /// Live connections of `ip`.
    fn per_ip(&self, ip: IpAddr) -> u32;
    /// Live connections of `subject`.
    fn per_subject(&self, subject: &str) -> u32;
    /// Count one more connection.
    fn add(&mut self, ip: IpAddr, subject: &str);
    /// Count one connection less; entries reaching zero are removed.
    fn remove(&mut self, ip: IpAddr, subject: &str);
    /// Forget state that carries no information any more (full buckets).
    fn sweep(&mut self, now: Instant);
    /// A reload changed the limits (new handshake buckets use them).
    fn set_limits(&mut self, limits: Limits);
}

/// The single-node store.
#[derive(Debug)]
pub struct InMemoryStore {
    limits: Limits,
    total: u64,
    ips: HashMap<IpAddr, u32>,
    subjects: HashMap<String, u32>,
    handshakes: HashMap<IpAddr, TokenBucket>,
}

impl InMemoryStore {
    /// An empty store enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits, total: 0, ips: HashMap::new(), subjects: HashMap::new(), handshakes: HashMap::new() }
    }
}

impl AdmissionStore for InMemoryStore {
    fn take_handshake(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let (burst, rate) =
            (u64::from(self.limits.handshake_burst_per_ip), u64::from(self.limits.handshakes_per_second_per_ip));
        if rate == 0 {
            return Ok(());
        }
        match self.handshakes.get_mut(&ip) {
            Some(b) => b.try_take(1, now),
            None => match optional_bucket(burst, rate, now) {
                Some(mut b) => {
                    let r = b.try_take(1, now);
                    self.handshakes.insert(ip, b);
                    r
                }
                None => Ok(()),
            },
        }
    }

    fn total(&self) -> u64 {
        self.total
    }

    fn per_ip(&self, ip: IpAddr) -> u32 {
        self.ips.get(&ip).copied().unwrap_or(0)
    }

    fn per_subject(&self, subject: &str) -> u32 {
        self.subjects.get(subject).copied().unwrap_or(0)
    }

    fn add(&mut self, ip: IpAddr, subject: &str) {
        self.total += 1;
        *self.ips.entry(ip).or_insert(0) += 1;
        *self.subjects.entry(subject.to_string()).or_insert(0) += 1;
    }

    fn remove(&mut self, ip: IpAddr, subject: &str) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.ips.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.ips.remove(&ip);
            }
        }
        if let Some(n) = self.subjects.get_mut(subject) {
            *n -= 1;
            if *n == 0 {
                self.subjects.remove(subject);
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.handshakes.retain(|_, b| !b.is_full(now));
    }

    fn set_limits(&mut self, limits: Limits) {
        if (limits.handshake_burst_per_ip, limits.handshakes_per_second_per_ip)
            != (self.limits.handshake_burst_per_ip, self.limits.handshakes_per_second_per_ip)
        {
            self.handshakes.clear();
        }
        self.limits = limits;
    }
}

/// The admission state shared by every worker.
pub struct Admission {
    limits: arc_swap::ArcSwap<Limits>,
    store: Mutex<Box<dyn AdmissionStore + Send>>,
    next_id: AtomicU64,
}

// === impl Admission ===

impl Admission {
    /// Admission over the in-memory store.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            store: Mutex::new(Box::new(InMemoryStore::new(limits.clone()))),
            limits: arc_swap::ArcSwap::from_pointee(limits),
            next_id: AtomicU64::new(1),
        })
    }

    fn store(&self) -> MutexGuard<'_, Box<dyn AdmissionStore + Send>> {
        // A panic while holding the lock cannot leave the counts half-updated (each
        // mutation is one call), so a poisoned lock is still usable.
        self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn at_global_cap(&self, limits: &Limits, store: &dyn AdmissionStore) -> bool {
        limits.max_connections > 0 && store.total() >= limits.max_connections
    }

    /// A reload changed the limits: they apply to the next handshakes; live connections
    /// over a lowered cap stay up.
    pub fn set_limits(&self, limits: Limits) {
        self.store().set_limits(limits.clone());
        self.limits.store(Arc::new(limits));
    }

    /// Early admission of a handshake from `ip` (the admission stage of docs/protocol.md): global cap, then a
    /// token from the IP's handshake bucket.
    ///
    /// # Errors
    /// [`Refusal`] with `Overloaded` or `HandshakeRate` and the wait to suggest.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Refusal> {
        let limits = self.limits.load();
        let ip = limit_key(ip, limits.ipv6_prefix_length);
        let mut store = self.store();
        if self.at_global_cap(&limits, store.as_ref()) {
            return Err(Refusal { denied: HandshakeRefusal::Overloaded, retry_after: Some(CAP_RETRY_AFTER) });
        }
        store
            .take_handshake(ip, Instant::now())
            .map_err(|wait| Refusal { denied: HandshakeRefusal::HandshakeRate, retry_after: Some(wait) })
    }

    /// Take a live-connection slot for `ip` and `subject` (check 8).
    ///
    /// # Errors
    /// [`Refusal`] at the global, per-IP or per-subject cap.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, subject: &str) -> Result<Lease, Refusal> {
        let refuse = |denied| Err(Refusal { denied, retry_after: Some(CAP_RETRY_AFTER) });
        let limits = self.limits.load();
        // The lease keeps this key, so a reload changing the prefix releases what it took.
        let ip = limit_key(ip, limits.ipv6_prefix_length);
        let mut store = self.store();
        if self.at_global_cap(&limits, store.as_ref()) {
            return refuse(HandshakeRefusal::Overloaded);
        }
        let per_ip = limits.max_connections_per_ip;
        if per_ip > 0 && store.per_ip(ip) >= per_ip {
            return refuse(HandshakeRefusal::IpConnections);
        }
        let per_sub = limits.max_connections_per_subject;
        if per_sub > 0 && store.per_subject(subject) >= per_sub {
            return refuse(HandshakeRefusal::SubjectConnections);
        }
        store.add(ip, subject);
        drop(store);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Ok(Lease { admission: Arc::clone(self), id, ip, subject: subject.to_string() })
    }

    fn release(&self, ip: IpAddr, subject: &str) {
        self.store().remove(ip, subject);
    }

    /// Live connections in total.
    pub fn total(&self) -> u64 {
        self.store().total()
    }

    /// Forget handshake buckets that carry no information any more (full ones).
    pub fn sweep(&self) {
        self.store().sweep(Instant::now());
    }
}

/// A live-connection slot granted by [`Admission::acquire`]. Dropping it releases the slot,
/// so a handshake that fails after admission, or a session that ends in any way, gives it
/// back.
pub struct Lease {
    admission: Arc<Admission>,
    /// The lease (and connection) id.
    pub id: ConnId,
    /// The per-IP key the slot was counted under ([`limit_key`]), not the full address.
    ip: IpAddr,
    subject: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.admission.release(self.ip, &self.subject);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections_per_ip: 2,
            handshakes_per_second_per_ip: 1,
            handshake_burst_per_ip: 2,
            ..Limits::default()
        }
    }

    #[test]
    fn handshake_rate_is_per_ip() {
        let mut s = InMemoryStore::new(limits());
        let (a, b) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let t = Instant::now();
        assert!(s.take_handshake(a, t).is_ok());
        assert!(s.take_handshake(a, t).is_ok());
        assert!(s.take_handshake(a, t).is_err());
        assert!(s.take_handshake(b, t).is_ok());
        s.sweep(t + Duration::from_secs(60));
        assert!(s.handshakes.is_empty(), "full buckets are forgotten");
    }

    #[test]
    fn leases_count_and_release_their_slot() {
        let admission = Admission::new(Limits { max_connections_per_ip: 1, ..limits() });
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let lease = admission.acquire(ip, "alice").expect("first slot");
        let refused = admission.acquire(ip, "bob").err().map(|r| r.denied);
        assert_eq!(refused, Some(HandshakeRefusal::IpConnections));
        assert_eq!(admission.total(), 1);
        drop(lease);
        assert_eq!(admission.total(), 0);
        assert!(admission.acquire(ip, "bob").is_ok(), "the slot came back");
    }

    #[test]
    fn an_ipv6_prefix_is_one_client_for_caps_and_handshake_rate() {
        let admission = Admission::new(Limits { max_connections_per_ip: 2, ..limits() });
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let a = admission.acquire(ip("2001:db8:0:1::1"), "alice").expect("first");
        let b = admission.acquire(ip("2001:db8:0:1:ffff::2"), "bob").expect("second");
        let third = admission.acquire(ip("2001:db8:0:1::3"), "carol").err().map(|r| r.denied);
        assert_eq!(third, Some(HandshakeRefusal::IpConnections), "same /64");
        let other = admission.acquire(ip("2001:db8:0:2::1"), "dave").expect("another /64");
        // Handshake rate (burst 2): a third address of the same /64 is refused.
        assert!(admission.admit(ip("2001:db8:0:1::10")).is_ok());
        assert!(admission.admit(ip("2001:db8:0:1::11")).is_ok());
        assert!(admission.admit(ip("2001:db8:0:1::12")).is_err());
        assert!(admission.admit(ip("2001:db8:0:3::1")).is_ok());
        // A reload to /128 releases the slots under the keys they were taken with.
        admission.set_limits(Limits { max_connections_per_ip: 2, ipv6_prefix_length: 128, ..limits() });
        drop((a, b, other));
        assert_eq!(admission.total(), 0);
        let _c = admission.acquire(ip("2001:db8:0:1::3"), "carol").expect("slots came back");
    }

    #[test]
    fn counts_return_to_zero_and_entries_are_removed() {
        let mut s = InMemoryStore::new(limits());
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        s.add(ip, "alice");
        s.add(ip, "bob");
        assert_eq!((s.total(), s.per_ip(ip), s.per_subject("alice")), (2, 2, 1));
        s.remove(ip, "alice");
        s.remove(ip, "bob");
        assert_eq!(s.total(), 0);
        assert!(s.ips.is_empty() && s.subjects.is_empty());
    }
}
