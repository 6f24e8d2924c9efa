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

/// The bookkeeping that keeps the shared counts from ever falling below the truth. Every
/// field changes under one lock with the local counts it describes.
#[derive(Debug, Default)]
struct Upkeep {
    /// Slots whose shared release never reached Redis (already released locally).
    retry: Vec<Slot>,
    /// Count keys the last reconcile wrote for this node.
    written: HashSet<String>,
    /// Count keys of calls whose outcome is unknown (a timeout: the script may have run); the
    /// next reconcile rewrites them.
    suspect: HashSet<String>,
    /// Local acquires so far: the number of the last one.
    seq: u64,
    /// The snapshot number of the reconcile in flight.
    reconciling: Option<u64>,
    /// Shared acquires that completed during that reconcile after its snapshot: their
    /// increment may have landed before its absolute write and been overwritten, so they are
    /// counted once more when it ends (an over-count until the next reconcile, never under).
    compensate: Vec<Slot>,
    /// Snapshot number of the last completed reconcile: slots numbered up to it are counted in
    /// Redis.
    covered: u64,
    last_reconcile: Option<Instant>,
    last_connects: u64,
}

/// Admission shared through Redis.
pub struct RedisAdmission {
    link: Arc<Link>,
    settings: Settings,
    ttl_ms: u64,
    leak_guard_ms: u64,
    local: MemoryAdmission,
    fallback: Mutex<HashMap<IpAddr, TokenBucket>>,
    denied: Mutex<HashMap<IpAddr, Instant>>,
    nodes: AtomicU64,
    upkeep: Mutex<Upkeep>,
    heartbeat_running: AtomicBool,
    reconcile_running: AtomicBool,
    /// Reconcile at the next upkeep (this node was missing from the live set, or a call's
    /// outcome is unknown).
    dirty: AtomicBool,
    /// A heartbeat has succeeded once (the node count is known).
    heard: AtomicBool,
    /// The revocation store has loaded the fleet's revocations once.
    revocations_loaded: Arc<AtomicBool>,
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Takes a locally counted slot back if the handshake is dropped while its shared acquire is
/// in flight (its outcome then unknown).
struct Pending<'a> {
    store: &'a RedisAdmission,
    slot: Option<Slot>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.store.forget(&slot, true);
        }
    }
}

// === impl RedisAdmission ===

impl RedisAdmission {
    /// A store over `link` enforcing `limits`; `revocations_loaded` is set by the revocation
    /// store once it holds the fleet's revocations.
    pub fn new(link: Arc<Link>, settings: Settings, limits: Limits, revocations_loaded: Arc<AtomicBool>) -> Self {
        let ttl_ms = millis(settings.heartbeat).saturating_mul(u64::from(HEARTBEATS_TO_DEATH));
        let leak_guard_ms = LEAK_GUARD_MS.max(millis(settings.reconcile).saturating_mul(3));
        Self {
            link,
            settings,
            ttl_ms,
            leak_guard_ms,
            local: MemoryAdmission::new(limits),
            fallback: Mutex::new(HashMap::new()),
            denied: Mutex::new(HashMap::new()),
            nodes: AtomicU64::new(1),
            upkeep: Mutex::new(Upkeep::default()),
            heartbeat_running: AtomicBool::new(false),
            reconcile_running: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            heard: AtomicBool::new(false),
            revocations_loaded,
        }
    }

    /// Live nodes as the last heartbeat saw them (at least 1).
    pub fn nodes(&self) -> u64 {
        self.nodes.load(Ordering::Acquire).max(1)
    }

    /// True once this node has heard the fleet (a heartbeat) and holds its revocations: before
    /// that it cannot divide the caps nor judge a token without Redis, so it refuses.
    pub fn joined(&self) -> bool {
        self.heard.load(Ordering::Acquire) && self.revocations_loaded.load(Ordering::Acquire)
    }

    fn slot_keys(&self, slot: &Slot) -> [String; 3] {
        let k = &self.settings.keys;
        [k.conns_all(), k.conns_ip(slot.ip), k.conns_sub(&slot.subject)]
    }

    /// Take a slot back locally; `unknown`: its shared call may have run, so its keys are
    /// rewritten by the next reconcile.
    fn forget(&self, slot: &Slot, unknown: bool) {
        let mut u = lock(&self.upkeep);
        self.local.release_now(slot);
        if unknown {
            u.suspect.extend(self.slot_keys(slot));
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Count a slot locally under `limits`, numbered.
    fn count(&self, admitted: Admitted, subject: &str, limits: &Limits, fallback: bool) -> Result<Slot, Refusal> {
        let mut u = lock(&self.upkeep);
        let seq = u.seq.saturating_add(1);
        let counted = if fallback { Counted::Fallback(seq) } else { Counted::Shared };
        let slot = self.local.acquire_with(admitted, subject, limits, counted)?;
        u.seq = seq;
        Ok(slot)
    }

    async fn shared_acquire(
        &self,
        admitted: Admitted,
        claims: &Claims,
        limits: &Limits,
    ) -> Result<(String, i64, i64), FleetError> {
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
            .arg(self.leak_guard_ms);
        self.link.script("acquire", &inv).await
    }

    fn fallback_acquire(&self, admitted: Admitted, subject: &str, limits: &Limits) -> Result<Slot, Refusal> {
        if !self.joined() {
            // Never heard the fleet: neither the node count nor the revocations are known.
            return Err(Refusal { denied: HandshakeRefusal::FleetUnavailable, retry_after: Some(DOWN_RETRY_AFTER) });
        }
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
        let slot = self.count(admitted, subject, &scaled, true)?;
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
        let slot = self.count(admitted, &claims.sub, &uncapped, false)?;
        let seq = lock(&self.upkeep).seq;
        let mut pending = Pending { store: self, slot: Some(slot) };
        let verdict = self.shared_acquire(admitted, claims, &limits).await;
        let Some(slot) = pending.slot.take() else {
            return Err(Refusal { denied: HandshakeRefusal::Internal, retry_after: None });
        };
        let refused = |denied| Refusal::at_cap(denied);
        let (v, n, absent) = match verdict {
            Ok(v) => v,
            Err(e) => {
                self.forget(&slot, e.may_have_run());
                return match self.settings.on_redis_down {
                    RedisDown::Refuse => {
                        tracing::debug!(error = %e, "fleet store unreachable: handshake refused (on_redis_down = refuse)");
                        Err(Refusal { denied: HandshakeRefusal::FleetUnavailable, retry_after: Some(DOWN_RETRY_AFTER) })
                    }
                    RedisDown::Local => self.fallback_acquire(admitted, &claims.sub, &limits),
                };
            }
        };
        if absent == 1 {
            self.dirty.store(true, Ordering::Release);
        }
        let refusal = match v.as_str() {
            "ok" => {
                let mut u = lock(&self.upkeep);
                if u.reconciling.is_some_and(|snap| seq > snap) {
                    u.compensate.push(slot.clone());
                }
                return Ok(slot);
            }
            "rate" => {
                let wait = Duration::from_millis(u64::try_from(n).unwrap_or(0).max(1));
                lock(&self.denied).insert(admitted.ip, Instant::now() + wait);
                Refusal { denied: HandshakeRefusal::HandshakeRate, retry_after: Some(wait) }
            }
            "revoked" => Refusal { denied: HandshakeRefusal::Revoked, retry_after: None },
            "ip" => refused(HandshakeRefusal::IpConnections),
            "subject" => refused(HandshakeRefusal::SubjectConnections),
            _ => refused(HandshakeRefusal::Overloaded),
        };
        self.forget(&slot, false);
        Err(refusal)
    }

    async fn shared_release(&self, slot: &Slot) -> Result<(), FleetError> {
        let mut inv = scripts::RELEASE.prepare_invoke();
        for k in self.slot_keys(slot) {
            inv.key(k);
        }
        inv.arg(&self.settings.node);
        self.link.script::<i64>("release", &inv).await.map(|_| ())
    }

    /// After a shared release failed (the slot released locally under the same lock): retried
    /// when it never reached Redis, else (it may have run: replaying it could count twice) its
    /// keys are rewritten by the next reconcile.
    fn release_failed(&self, u: &mut Upkeep, slot: Slot, e: &FleetError) {
        if e.may_have_run() {
            u.suspect.extend(self.slot_keys(&slot));
            self.dirty.store(true, Ordering::Release);
        } else if u.retry.len() < MAX_RETRIES {
            u.retry.push(slot);
        } else {
            u.suspect.extend(self.slot_keys(&slot));
        }
    }

    async fn release_slot(&self, slot: Slot) {
        let shared = match slot.counted {
            Counted::Local => false,
            Counted::Shared => true,
            Counted::Fallback(seq) => lock(&self.upkeep).covered >= seq,
        };
        if !shared {
            self.local.release_now(&slot);
            return;
        }
        match self.shared_release(&slot).await {
            Ok(()) => self.local.release_now(&slot),
            Err(e) => {
                // Released here and queued under one lock, so a reconcile snapshot sees both or
                // neither.
                let mut u = lock(&self.upkeep);
                self.local.release_now(&slot);
                self.release_failed(&mut u, slot, &e);
            }
        }
    }

    async fn release_slots(&self, slots: Vec<Slot>) {
        let covered = lock(&self.upkeep).covered;
        let (shared, local): (Vec<Slot>, Vec<Slot>) = slots.into_iter().partition(|s| match s.counted {
            Counted::Local => false,
            Counted::Shared => true,
            Counted::Fallback(seq) => covered >= seq,
        });
        for slot in &local {
            self.local.release_now(slot);
        }
        if shared.len() <= 1 {
            if let Some(slot) = shared.into_iter().next() {
                self.release_slot(slot).await;
            }
            return;
        }
        let mut p = redis::pipe();
        for slot in &shared {
            let mut inv = scripts::RELEASE.prepare_invoke();
            for k in self.slot_keys(slot) {
                inv.key(k);
            }
            inv.arg(&self.settings.node);
            p.invoke_script(&inv).ignore();
        }
        let result = self.link.pipe::<()>("release", &p).await;
        let mut u = lock(&self.upkeep);
        for slot in shared {
            self.local.release_now(&slot);
            if let Err(e) = &result {
                self.release_failed(&mut u, slot, e);
            }
        }
    }

    async fn heartbeat(&self) -> Result<bool, FleetError> {
        let mut inv = scripts::HEARTBEAT.prepare_invoke();
        inv.key(self.settings.keys.nodes()).arg(&self.settings.node).arg(self.ttl_ms);
        let (nodes, added): (u64, u64) = self.link.script("heartbeat", &inv).await?;
        self.nodes.store(nodes.max(1), Ordering::Release);
        self.heard.store(true, Ordering::Release);
        crate::metrics::fleet_nodes(nodes);
        Ok(added == 1)
    }

    async fn retry_releases(&self) {
        loop {
            let Some(slot) = lock(&self.upkeep).retry.pop() else { return };
            if let Err(e) = self.shared_release(&slot).await {
                let never_sent = !e.may_have_run();
                self.release_failed(&mut lock(&self.upkeep), slot, &e);
                if never_sent {
                    return;
                }
            }
        }
    }

    async fn write_chunks(&self, writes: &[(&String, u64)], deletes: &[&String]) -> Result<(), FleetError> {
        let node = &self.settings.node;
        let guard = i64::try_from(self.leak_guard_ms).unwrap_or(i64::MAX);
        for chunk in writes.chunks(RECONCILE_CHUNK) {
            let mut p = redis::pipe();
            for (key, n) in chunk {
                if *n == 0 {
                    p.hdel(*key, node).ignore();
                } else {
                    p.hset(*key, node, *n).ignore().pexpire(*key, guard).ignore();
                }
            }
            self.link.pipe::<()>("reconcile", &p).await?;
        }
        for chunk in deletes.chunks(RECONCILE_CHUNK) {
            let mut p = redis::pipe();
            for key in chunk {
                p.hdel(*key, node).ignore();
            }
            self.link.pipe::<()>("reconcile", &p).await?;
        }
        Ok(())
    }

    /// Rewrite this node's absolute counts in Redis from the local ones.
    async fn reconcile(&self) -> Result<(), FleetError> {
        let k = &self.settings.keys;
        let (counts, drained, stale, suspect, snap) = {
            let mut u = lock(&self.upkeep);
            let CountSnapshot { total, ips, subjects } = self.local.snapshot();
            let mut counts: HashMap<String, u64> = HashMap::with_capacity(1 + ips.len() + subjects.len());
            counts.insert(k.conns_all(), total);
            counts.extend(ips.into_iter().map(|(ip, n)| (k.conns_ip(ip), u64::from(n))));
            counts.extend(subjects.into_iter().map(|(s, n)| (k.conns_sub(&s), u64::from(n))));
            let drained = std::mem::take(&mut u.retry);
            let suspect = std::mem::take(&mut u.suspect);
            let mut stale: HashSet<String> =
                u.written.iter().chain(suspect.iter()).filter(|key| !counts.contains_key(*key)).cloned().collect();
            for slot in &drained {
                stale.extend(self.slot_keys(slot).into_iter().filter(|key| !counts.contains_key(key)));
            }
            u.reconciling = Some(u.seq);
            u.compensate.clear();
            (counts, drained, stale, suspect, u.seq)
        };
        let writes: Vec<(&String, u64)> = counts.iter().map(|(key, n)| (key, *n)).collect();
        let deletes: Vec<&String> = stale.iter().collect();
        let result = self.write_chunks(&writes, &deletes).await;
        let compensate = {
            let mut u = lock(&self.upkeep);
            u.reconciling = None;
            let compensate = std::mem::take(&mut u.compensate);
            match &result {
                Ok(()) => {
                    u.written = counts.iter().filter(|(_, n)| **n > 0).map(|(key, _)| key.clone()).collect();
                    u.covered = snap;
                    u.last_reconcile = Some(Instant::now());
                }
                Err(_) => {
                    // Some chunks may have been written: every key is suspect again, and the
                    // failed releases still need doing.
                    u.suspect.extend(suspect);
                    u.suspect.extend(counts.keys().cloned());
                    u.suspect.extend(stale.iter().cloned());
                    let mut back = drained;
                    back.append(&mut u.retry);
                    u.retry = back;
                    u.written.clear();
                }
            }
            compensate
        };
        result?;
        // Only keys this reconcile wrote can have lost an increment to it; a key it did not
        // touch still holds every increment (counting it again would leak).
        let touched: Vec<String> = compensate
            .iter()
            .flat_map(|slot| self.slot_keys(slot))
            .filter(|key| counts.contains_key(key) || stale.contains(key))
            .collect();
        if !touched.is_empty() {
            let node = &self.settings.node;
            let mut p = redis::pipe();
            for key in &touched {
                p.hincr(key, node, 1).ignore();
            }
            let sent = self.link.pipe::<()>("reconcile", &p).await;
            let mut u = lock(&self.upkeep);
            // Rewritten by the next reconcile either way (an over-count until then).
            u.written.extend(touched.iter().cloned());
            if let Err(e) = sent {
                u.suspect.extend(touched);
                self.dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    async fn run_upkeep(&self) {
        // The heartbeat never waits behind a long reconcile (each round runs on its own task).
        if self.heartbeat_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let beat = {
            let _running = Running(&self.heartbeat_running);
            self.heartbeat().await
        };
        let absent = match beat {
            Ok(absent) => absent,
            Err(e) => {
                tracing::debug!(error = %e, "fleet heartbeat failed");
                return;
            }
        };
        if self.reconcile_running.swap(true, Ordering::AcqRel) {
            if absent {
                self.dirty.store(true, Ordering::Release);
            }
            return;
        }
        let _running = Running(&self.reconcile_running);
        let dirty = self.dirty.swap(false, Ordering::AcqRel) || absent;
        let connects = self.link.connects();
        let due = {
            let u = lock(&self.upkeep);
            dirty
                || u.last_connects != connects
                || u.last_reconcile.is_none_or(|t| t.elapsed() >= self.settings.reconcile)
        };
        if due {
            if let Err(e) = self.reconcile().await {
                self.dirty.store(true, Ordering::Release);
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

/// Clears a running flag however the work ends.
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

    fn release_many(&self, slots: Vec<Slot>) -> BoxFuture<'_, ()> {
        Box::pin(self.release_slots(slots))
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
        self.joined() && (self.settings.on_redis_down == RedisDown::Local || !self.link.breaker_open())
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
