//! The registry actor: admission and bookkeeping of live connections.
//!
//! Owns the counts per IP, per subject and in total, and the per-IP handshake buckets, behind
//! the [`AdmissionStore`] trait so a shared store (Redis, DESIGN.md §9) can replace the
//! in-memory one without the actors noticing. Does not own sessions: it never talks to them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, AsyncContext, Context, Handler};

use super::messages::{Acquire, Admit, ConnId, Refusal, Release};
use crate::config::Limits;
use crate::error::Denied;
use crate::policy::ratelimit::{optional_bucket, TokenBucket};

/// How often idle handshake buckets are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

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
}

/// The registry actor.
pub struct Registry {
    limits: Limits,
    store: Box<dyn AdmissionStore>,
    next_id: ConnId,
}

// === impl Registry ===

impl Registry {
    /// A registry over the in-memory store.
    pub fn new(limits: Limits) -> Self {
        Self { store: Box::new(InMemoryStore::new(limits.clone())), limits, next_id: 1 }
    }

    fn at_global_cap(&self) -> bool {
        self.limits.max_connections > 0 && self.store.total() >= self.limits.max_connections
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Handshakes queue here; a generous mailbox keeps a storm from being refused as "full".
        ctx.set_mailbox_capacity(65_536);
        ctx.run_interval(SWEEP_INTERVAL, |this, _| this.store.sweep(Instant::now()));
    }
}

impl Handler<Admit> for Registry {
    type Result = Result<(), Refusal>;

    fn handle(&mut self, msg: Admit, _: &mut Self::Context) -> Self::Result {
        if self.at_global_cap() {
            return Err(Refusal { denied: Denied::Overloaded, retry_after: Some(CAP_RETRY_AFTER) });
        }
        self.store
            .take_handshake(msg.ip, Instant::now())
            .map_err(|wait| Refusal { denied: Denied::HandshakeRate, retry_after: Some(wait) })
    }
}

impl Handler<Acquire> for Registry {
    type Result = Result<ConnId, Refusal>;

    fn handle(&mut self, msg: Acquire, _: &mut Self::Context) -> Self::Result {
        let refuse = |denied| Err(Refusal { denied, retry_after: Some(CAP_RETRY_AFTER) });
        if self.at_global_cap() {
            return refuse(Denied::Overloaded);
        }
        let per_ip = self.limits.max_connections_per_ip;
        if per_ip > 0 && self.store.per_ip(msg.ip) >= per_ip {
            return refuse(Denied::IpConnections);
        }
        let per_sub = self.limits.max_connections_per_subject;
        if per_sub > 0 && self.store.per_subject(&msg.subject) >= per_sub {
            return refuse(Denied::SubjectConnections);
        }
        self.store.add(msg.ip, &msg.subject);
        let id = self.next_id;
        self.next_id += 1;
        Ok(id)
    }
}

impl Handler<Release> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Release, _: &mut Self::Context) {
        self.store.remove(msg.ip, &msg.subject);
    }
}

/// A live-connection slot granted by [`Acquire`]. Dropping it releases the slot, so a
/// handshake that fails after admission, or a session that ends in any way, gives it back.
#[derive(Debug)]
pub struct Lease {
    registry: Addr<Registry>,
    /// The lease (and connection) id.
    pub id: ConnId,
    ip: IpAddr,
    subject: String,
}

// === impl Lease ===

impl Lease {
    /// Wrap a granted slot.
    pub fn new(registry: Addr<Registry>, id: ConnId, ip: IpAddr, subject: String) -> Self {
        Self { registry, id, ip, subject }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.registry.do_send(Release { id: self.id, ip: self.ip, subject: std::mem::take(&mut self.subject) });
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
