//! Fleet-wide admission: the caps and the per-IP handshake rate shared by every node through
//! Redis, in one round trip per handshake ([`scripts::ACQUIRE`]).
//!
//! - `admit` (before the token is verified) stays local: an IP whose last shared verdict was
//!   "too many handshakes" is refused until its retry-after without asking Redis, and each node
//!   keeps its own handshake bucket at the full rate, so a flood of bad tokens is cut off
//!   before any signature is checked or Redis is called.
//! - `try_acquire` counts the slot locally first, then runs the script (GCRA on Redis time,
//!   the token's revocation markers, the three caps summed over live nodes, the count). A
//!   refusal or a failure takes the local count back.
//! - The local counts ([`MemoryAdmission`]) stay this node's truth: every
//!   `reconcile_seconds`, after a reconnect, and when the heartbeat finds this node absent,
//!   the node rewrites its absolute counts in Redis. Releases that fail are queued and retried;
//!   a reconcile supersedes them. Counting locally before the shared count and taking it back
//!   after the shared release makes every race over-count, never under-count.
//! - While Redis is unreachable (`on_redis_down`): `local` admits against this node's own
//!   counts with each cap and the handshake rate divided by the last known number of live
//!   nodes (at least 1 each); `refuse` answers 503. Never an open door.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::link::{FleetError, Link};
use super::{scripts, Keys};
use crate::auth::Claims;
use crate::config::{Limits, RedisDown, HEARTBEATS_TO_DEATH};
use crate::error::HandshakeRefusal;
use crate::policy::ratelimit::{optional_bucket, TokenBucket};
use crate::store::admission::{AdmissionStore, Admitted, CountSnapshot, Counted, MemoryAdmission, Refusal, Slot};

/// Expiry refreshed on every count HASH written: a leak guard for keys no node holds any more.
const LEAK_GUARD_MS: u64 = 3_600_000;
/// Count keys written per reconcile pipeline.
const RECONCILE_CHUNK: usize = 256;
/// Failed releases kept for retry; beyond this the next reconcile alone repairs the counts.
const MAX_RETRIES: usize = 100_000;
/// Wait suggested while `on_redis_down = "refuse"` refuses.
const DOWN_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Fleet mode settings the store needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's id.
    pub node: String,
    /// Key names.
    pub keys: Keys,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Reconcile period.
    pub reconcile: Duration,
    /// What handshakes get while Redis is unreachable.
    pub on_redis_down: RedisDown,
}

#[derive(Debug, Default)]
struct Upkeep {
    /// Slots whose shared release failed (already released locally).
    retry: Vec<Slot>,
    /// Count keys the last reconcile wrote for this node.
    written: HashSet<String>,
    last_reconcile: Option<Instant>,
    last_connects: u64,
}

/// Admission shared through Redis.
pub struct RedisAdmission {
    link: Arc<Link>,
    settings: Settings,
    ttl_ms: u64,
    local: MemoryAdmission,
    fallback: Mutex<HashMap<IpAddr, TokenBucket>>,
    denied: Mutex<HashMap<IpAddr, Instant>>,
    nodes: AtomicU64,
    reconciles: AtomicU64,
    upkeep: Mutex<Upkeep>,
    upkeep_running: AtomicBool,
    /// A handshake found this node missing from the live set: reconcile at the next upkeep.
    rejoined: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `cap` shared by `nodes` (0 stays unlimited; at least 1).
fn share(cap: u64, nodes: u64) -> u64 {
    if cap == 0 {
        0
    } else {
        (cap / nodes.max(1)).max(1)
    }
}

fn share32(cap: u32, nodes: u64) -> u32 {
    u32::try_from(share(u64::from(cap), nodes)).unwrap_or(u32::MAX)
}

// === impl RedisAdmission ===

impl RedisAdmission {
    /// A store over `link` enforcing `limits`.
    pub fn new(link: Arc<Link>, settings: Settings, limits: Limits) -> Self {
        let ttl_ms = u64::try_from(settings.heartbeat.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(HEARTBEATS_TO_DEATH));
        Self {
            link,
            settings,
            ttl_ms,
            local: MemoryAdmission::new(limits),
            fallback: Mutex::new(HashMap::new()),
            denied: Mutex::new(HashMap::new()),
            nodes: AtomicU64::new(1),
            reconciles: AtomicU64::new(0),
            upkeep: Mutex::new(Upkeep::default()),
            upkeep_running: AtomicBool::new(false),
            rejoined: AtomicBool::new(false),
        }
    }

    /// Live nodes as the last heartbeat saw them (at least 1).
    pub fn nodes(&self) -> u64 {
        self.nodes.load(Ordering::Acquire).max(1)
    }

    fn slot_keys(&self, slot: &Slot) -> [String; 3] {
        let k = &self.settings.keys;
        [k.conns_all(), k.conns_ip(slot.ip), k.conns_sub(&slot.subject)]
    }

    async fn shared_acquire(
        &self,
        admitted: Admitted,
        claims: &Claims,
        limits: &Limits,
    ) -> Result<(String, i64), FleetError> {
        let k = &self.settings.keys;
        let (burst, rate) = (limits.handshake_burst_per_ip, limits.handshakes_per_second_per_ip);
        let interval_us = if burst == 0 || rate == 0 { 0 } else { (1_000_000 / u64::from(rate)).max(1) };
        let mut inv = scripts::ACQUIRE.prepare_invoke();
        inv.key(k.nodes())
            .key(k.conns_all())
            .key(k.conns_ip(admitted.ip))
            .key(k.conns_sub(&claims.sub))
            .key(k.handshakes(admitted.ip))
            .key(k.revoked_jti(claims.jti.as_deref().unwrap_or("")))
            .key(k.revoked_sub(&claims.sub))
            .arg(&self.settings.node)
            .arg(self.ttl_ms)
            .arg(limits.max_connections)
            .arg(limits.max_connections_per_ip)
            .arg(limits.max_connections_per_subject)
            .arg(interval_us)
            .arg(burst)
            .arg(u8::from(claims.jti.is_some()))
            .arg(claims.iat.map_or(-1, |i| i64::try_from(i).unwrap_or(i64::MAX)))
            .arg(LEAK_GUARD_MS);
        self.link.script("acquire", &inv).await
    }

    fn fallback_acquire(&self, admitted: Admitted, subject: &str, limits: &Limits) -> Result<Slot, Refusal> {
        let n = self.nodes();
        let (burst, rate) = (
            share(u64::from(limits.handshake_burst_per_ip), n),
            share(u64::from(limits.handshakes_per_second_per_ip), n),
        );
        let now = Instant::now();
        let mut buckets = lock(&self.fallback);
        let taken = match buckets.get_mut(&admitted.ip) {
            Some(b) => b.try_take(1, now),
            None => match optional_bucket(burst, rate, now) {
                Some(mut b) => {
                    let r = b.try_take(1, now);
                    buckets.insert(admitted.ip, b);
                    r
                }
                None => Ok(()),
            },
        };
        drop(buckets);
        taken.map_err(|wait| Refusal { denied: HandshakeRefusal::HandshakeRate, retry_after: Some(wait) })?;
        let scaled = Limits {
            max_connections: share(limits.max_connections, n),
            max_connections_per_ip: share32(limits.max_connections_per_ip, n),
            max_connections_per_subject: share32(limits.max_connections_per_subject, n),
            ..limits.clone()
        };
        let counted = Counted::Fallback(self.reconciles.load(Ordering::Acquire));
        let slot = self.local.acquire_with(admitted, subject, &scaled, counted)?;
        crate::metrics::fleet_fallback_admission();
        Ok(slot)
    }

    async fn acquire(&self, admitted: Admitted, claims: &Claims) -> Result<Slot, Refusal> {
        let limits = self.local.limits();
        // Counted here first: a reconcile running meanwhile over-counts, never under-counts.
        let uncapped = Limits {
            max_connections: 0,
            max_connections_per_ip: 0,
            max_connections_per_subject: 0,
            ..(*limits).clone()
        };
        let slot = self.local.acquire_with(admitted, &claims.sub, &uncapped, Counted::Shared)?;
        let verdict = self.shared_acquire(admitted, claims, &limits).await;
        let refused = |denied| Refusal::at_cap(denied);
        let outcome = match verdict {
            Ok((v, absent)) if v == "ok" => {
                if absent == 1 {
                    self.rejoined.store(true, Ordering::Release);
                }
                return Ok(slot);
            }
            Ok((v, retry_ms)) => match v.as_str() {
                "rate" => {
                    let wait = Duration::from_millis(u64::try_from(retry_ms).unwrap_or(0).max(1));
                    lock(&self.denied).insert(admitted.ip, Instant::now() + wait);
                    Err(Refusal { denied: HandshakeRefusal::HandshakeRate, retry_after: Some(wait) })
                }
                "revoked" => Err(Refusal { denied: HandshakeRefusal::Revoked, retry_after: None }),
                "ip" => Err(refused(HandshakeRefusal::IpConnections)),
                "subject" => Err(refused(HandshakeRefusal::SubjectConnections)),
                _ => Err(refused(HandshakeRefusal::Overloaded)),
            },
            Err(e) => {
                self.local.release_now(&slot);
                return match self.settings.on_redis_down {
                    RedisDown::Refuse => {
                        tracing::debug!(error = %e, "fleet store unreachable: handshake refused (on_redis_down = refuse)");
                        Err(Refusal { denied: HandshakeRefusal::FleetUnavailable, retry_after: Some(DOWN_RETRY_AFTER) })
                    }
                    RedisDown::Local => self.fallback_acquire(admitted, &claims.sub, &limits),
                };
            }
        };
        self.local.release_now(&slot);
        outcome
    }

    async fn shared_release(&self, slot: &Slot) -> Result<(), FleetError> {
        let mut inv = scripts::RELEASE.prepare_invoke();
        for k in self.slot_keys(slot) {
            inv.key(k);
        }
        inv.arg(&self.settings.node);
        self.link.script::<i64>("release", &inv).await.map(|_| ())
    }

    async fn release_slot(&self, slot: Slot) {
        let shared = match slot.counted {
            Counted::Local => false,
            Counted::Shared => true,
            Counted::Fallback(at) => self.reconciles.load(Ordering::Acquire) > at,
        };
        if !shared {
            self.local.release_now(&slot);
            return;
        }
        if self.shared_release(&slot).await.is_ok() {
            self.local.release_now(&slot);
            return;
        }
        // Released here and queued under one lock, so a reconcile snapshot sees both or neither.
        let mut u = lock(&self.upkeep);
        self.local.release_now(&slot);
        if u.retry.len() < MAX_RETRIES {
            u.retry.push(slot);
        }
    }

    async fn heartbeat(&self) -> Result<bool, FleetError> {
        let mut inv = scripts::HEARTBEAT.prepare_invoke();
        inv.key(self.settings.keys.nodes()).arg(&self.settings.node).arg(self.ttl_ms);
        let (nodes, added): (u64, u64) = self.link.script("heartbeat", &inv).await?;
        self.nodes.store(nodes.max(1), Ordering::Release);
        crate::metrics::fleet_nodes(nodes);
        Ok(added == 1)
    }

    async fn retry_releases(&self) {
        loop {
            let Some(slot) = lock(&self.upkeep).retry.pop() else { return };
            if self.shared_release(&slot).await.is_err() {
                lock(&self.upkeep).retry.push(slot);
                return;
            }
        }
    }

    /// Rewrite this node's absolute counts in Redis from the local ones.
    async fn reconcile(&self) -> Result<(), FleetError> {
        let k = &self.settings.keys;
        let (counts, drained, stale) = {
            let mut u = lock(&self.upkeep);
            let CountSnapshot { total, ips, subjects } = self.local.snapshot();
            let mut counts: HashMap<String, u64> = HashMap::with_capacity(1 + ips.len() + subjects.len());
            counts.insert(k.conns_all(), total);
            counts.extend(ips.into_iter().map(|(ip, n)| (k.conns_ip(ip), u64::from(n))));
            counts.extend(subjects.into_iter().map(|(s, n)| (k.conns_sub(&s), u64::from(n))));
            let drained = std::mem::take(&mut u.retry);
            let mut stale: HashSet<String> =
                u.written.iter().filter(|key| !counts.contains_key(*key)).cloned().collect();
            for slot in &drained {
                stale.extend(self.slot_keys(slot).into_iter().filter(|key| !counts.contains_key(key)));
            }
            (counts, drained, stale)
        };
        let node = &self.settings.node;
        let writes: Vec<(&String, u64)> = counts.iter().map(|(key, n)| (key, *n)).collect();
        let stale: Vec<&String> = stale.iter().collect();
        let mut result = Ok(());
        for chunk in writes.chunks(RECONCILE_CHUNK) {
            let mut p = redis::pipe();
            for (key, n) in chunk {
                if *n == 0 {
                    p.hdel(*key, node).ignore();
                } else {
                    p.hset(*key, node, *n)
                        .ignore()
                        .pexpire(*key, i64::try_from(LEAK_GUARD_MS).unwrap_or(i64::MAX))
                        .ignore();
                }
            }
            if let Err(e) = self.link.pipe::<()>("reconcile", &p).await {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            for chunk in stale.chunks(RECONCILE_CHUNK) {
                let mut p = redis::pipe();
                for key in chunk {
                    p.hdel(*key, node).ignore();
                }
                if let Err(e) = self.link.pipe::<()>("reconcile", &p).await {
                    result = Err(e);
                    break;
                }
            }
        }
        let mut u = lock(&self.upkeep);
        match result {
            Ok(()) => {
                u.written = counts.into_iter().filter(|(_, n)| *n > 0).map(|(key, _)| key).collect();
                u.last_reconcile = Some(Instant::now());
                self.reconciles.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                // Not superseded: the failed releases still need doing.
                let mut back = drained;
                back.append(&mut u.retry);
                u.retry = back;
                Err(e)
            }
        }
    }

    async fn run_upkeep(&self) {
        if self.upkeep_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let _running = Running(&self.upkeep_running);
        let absent = match self.heartbeat().await {
            Ok(absent) => self.rejoined.swap(false, Ordering::AcqRel) || absent,
            Err(e) => {
                tracing::debug!(error = %e, "fleet heartbeat failed");
                return;
            }
        };
        let connects = self.link.connects();
        let due = {
            let u = lock(&self.upkeep);
            absent
                || u.last_connects != connects
                || u.last_reconcile.is_none_or(|t| t.elapsed() >= self.settings.reconcile)
        };
        if due {
            if let Err(e) = self.reconcile().await {
                if absent {
                    self.rejoined.store(true, Ordering::Release);
                }
                tracing::warn!(error = %e, "fleet reconcile failed; tried again at the next heartbeat");
                return;
            }
            lock(&self.upkeep).last_connects = connects;
            if absent {
                tracing::info!(event = "fleet_reconciled", node = %self.settings.node, "node was absent from the fleet: counts rewritten");
            }
        }
        self.retry_releases().await;
    }
}

/// Clears the upkeep flag however the upkeep ends.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl AdmissionStore for RedisAdmission {
    fn admit(&self, ip: IpAddr) -> BoxFuture<'_, Result<Admitted, Refusal>> {
        let now = Instant::now();
        let limits = self.local.limits();
        let key = crate::policy::client_ip::limit_key(ip, limits.ipv6_prefix_length);
        let cached = lock(&self.denied).get(&key).copied().filter(|until| *until > now);
        let verdict = match cached {
            Some(until) => Err(Refusal { denied: HandshakeRefusal::HandshakeRate, retry_after: Some(until - now) }),
            None => self.local.admit_now(ip, now),
        };
        Box::pin(futures_util::future::ready(verdict))
    }

    fn try_acquire<'a>(&'a self, admitted: Admitted, claims: &'a Claims) -> BoxFuture<'a, Result<Slot, Refusal>> {
        Box::pin(self.acquire(admitted, claims))
    }

    fn release(&self, slot: Slot) -> BoxFuture<'_, ()> {
        Box::pin(self.release_slot(slot))
    }

    fn set_limits(&self, limits: Limits) {
        lock(&self.fallback).clear();
        self.local.set_limits(limits);
    }

    fn sweep(&self, now: Instant) {
        self.local.sweep(now);
        lock(&self.denied).retain(|_, until| *until > now);
        lock(&self.fallback).retain(|_, b| !b.is_full(now));
    }

    fn local_total(&self) -> u64 {
        self.local.local_total()
    }

    fn upkeep(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.run_upkeep())
    }

    fn upkeep_interval(&self) -> Option<Duration> {
        Some(self.settings.heartbeat)
    }

    fn ready(&self) -> bool {
        self.settings.on_redis_down == RedisDown::Local || !self.link.breaker_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_never_open_the_door() {
        assert_eq!(share(0, 3), 0, "unlimited stays unlimited");
        assert_eq!(share(2, 3), 1, "a cap below the node count still admits one per node");
        assert_eq!(share(100, 3), 33);
        assert_eq!(share(100, 0), 100);
        assert_eq!(share32(u32::MAX, 1), u32::MAX);
    }
}
