//! Process-wide shared state, as narrow handles (docs/architecture.md): the policy in force and
//! its generation ([`PolicyCell`]), the drain signal ([`DrainSignal`]), the stop handle
//! ([`StopHandle`]), the JWKS fetch demand ([`JwksDemand`]) and the trusted-proxy view
//! ([`TrustedProxies`]). Each part of the gateway is handed only the handles it uses.
//!
//! Owns: these values and their change notifications. Does not own: HTTP, actors, sockets,
//! what a change means to a session (that is the session's `catch_up`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch, Notify};

use crate::auth::keys::KeySet;
use crate::config::Config;

/// The config and keys in force; replaced as a whole by a reload or a JWKS fetch.
pub struct Policy {
    /// The validated config.
    pub config: Arc<Config>,
    /// Verification keys (`[[auth.keys]]`, the JWKS file and the JWKS URL's keys).
    pub keys: Arc<KeySet>,
}

/// The policy in force and a generation that changes with each replacement.
pub struct PolicyCell {
    current: ArcSwap<Policy>,
    /// Bumped after each new policy is stored; sessions compare it after each client read.
    generation: AtomicU64,
    /// Serialises replacements (SIGHUP, `POST /admin/reload` and a JWKS fetch at once).
    writers: Mutex<()>,
}

// === impl PolicyCell ===

impl PolicyCell {
    /// A cell holding `policy`.
    pub fn new(policy: Policy) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(policy),
            generation: AtomicU64::new(0),
            writers: Mutex::new(()),
        })
    }

    /// The config and keys in force now.
    pub fn load(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Changes whenever a new policy is put in force: a session that sees another value
    /// takes the new rules before it judges the bytes it just read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Hold this while reading the policy in force and building its replacement, so two
    /// writers never overwrite each other's change.
    pub fn lock_writers(&self) -> MutexGuard<'_, ()> {
        self.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Put `policy` in force: for new handshakes at once, for open sessions from their next
    /// client read. Callers hold [`Self::lock_writers`].
    pub fn store(&self, policy: Policy) {
        self.current.store(Arc::new(policy));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The trusted-proxy view of this cell (what the accept path needs, nothing more).
    pub fn trusted_proxies(self: &Arc<Self>) -> TrustedProxies {
        TrustedProxies(Arc::clone(self))
    }
}

/// Whether a peer address is a trusted proxy (`server.trusted_proxies` of the policy in force).
#[derive(Clone)]
pub struct TrustedProxies(Arc<PolicyCell>);

impl TrustedProxies {
    /// True when `ip` is on the trusted-proxy list in force.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.load().config.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// Requests to the process's main loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Start draining.
    Drain,
    /// Stop the listeners now (the drain finished, or a second signal arrived).
    Stop,
}

/// The receiving end of [`Control`] requests (the main loop's).
pub type ControlReceiver = mpsc::UnboundedReceiver<Control>;

/// Whether the process is draining, and how a drain is started.
pub struct DrainSignal {
    draining: AtomicBool,
    control: mpsc::UnboundedSender<Control>,
}

/// Asks the main loop to stop the listeners.
#[derive(Clone)]
pub struct StopHandle(mpsc::UnboundedSender<Control>);

impl StopHandle {
    /// Stop the listeners (end of a drain, or a second signal).
    pub fn stop(&self) {
        let _ = self.0.send(Control::Stop);
    }
}

/// The drain signal, the stop handle and the main loop's end of both.
pub fn control_channel() -> (Arc<DrainSignal>, StopHandle, ControlReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(DrainSignal { draining: AtomicBool::new(false), control: tx.clone() }), StopHandle(tx), rx)
}

// === impl DrainSignal ===

impl DrainSignal {
    /// True once a drain started: new handshakes get 503, `/readyz` 503.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Start draining (SIGTERM and `POST /admin/drain`); false when already draining.
    pub fn start(&self) -> bool {
        let first = !self.draining.swap(true, Ordering::AcqRel);
        if first {
            crate::metrics::draining(true);
            let _ = self.control.send(Control::Drain);
        }
        first
    }
}

/// Shortest time between two JWKS fetches asked for by unknown kids.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// How handshakes ask the JWKS fetcher for a fetch and learn that one finished.
pub struct JwksDemand {
    wake: Notify,
    /// Increments after every fetch attempt.
    done: watch::Sender<u64>,
    /// Milliseconds since `epoch` from which the next demand is let through.
    next_demand_ms: AtomicU64,
    epoch: Instant,
}

// === impl JwksDemand ===

impl JwksDemand {
    /// A demand channel; the fetcher (`control::jwks`) answers it.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            wake: Notify::new(),
            done: watch::channel(0).0,
            next_demand_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// A token named an unknown `kid`: ask for a fetch unless one was asked for within
    /// [`MIN_REFETCH_INTERVAL`], and wait up to `wait` for it. True when a fetch finished (the
    /// caller should look at the keys again).
    pub async fn refetch_for_unknown_kid(&self, wait: Duration) -> bool {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let next = self.next_demand_ms.load(Ordering::Acquire);
        let after = now_ms + MIN_REFETCH_INTERVAL.as_millis() as u64;
        // One demand per interval: the first caller past `next` moves it on, the others lose.
        if now_ms < next
            || self.next_demand_ms.compare_exchange(next, after, Ordering::AcqRel, Ordering::Acquire).is_err()
        {
            return false;
        }
        let mut done = self.done.subscribe();
        done.mark_unchanged();
        self.wake.notify_one();
        matches!(tokio::time::timeout(wait, done.changed()).await, Ok(Ok(())))
    }

    /// The fetcher's side: wait until a handshake asks for a fetch.
    pub async fn demanded(&self) {
        self.wake.notified().await;
    }

    /// The fetcher's side: a fetch attempt finished (waiting handshakes look at the keys again).
    pub fn fetched(&self) {
        self.done.send_modify(|n| *n += 1);
    }
}
