//! The `Registry` actor: the node's admission bookkeeping over time. It performs the releases
//! that dropped leases queued (never inside `Drop`), forgets idle handshake buckets, runs a
//! shared store's upkeep (fleet heartbeat, retried releases, reconcile), compacts the
//! revocation log as entries expire and reaps expired one-time tickets.
//!
//! Owns: the release queue and the periodic upkeep of the stores. Does not own: the admission
//! decision itself (the handshake calls the store directly: a mailbox round trip per call costs
//! two cross-thread wake-ups).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context};

use crate::auth::unix_now;
use crate::store::admission::{Admission, ReleaseQueue};
use crate::store::revocation::RevocationStore;
use crate::store::tickets::TicketStore;

/// Releases given to the store at once at most.
const RELEASE_BATCH: usize = 256;

/// How often idle handshake buckets are forgotten and expired tickets reaped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// How often expired revocations are dropped (and the log rewritten when mostly expired).
const COMPACT_INTERVAL: Duration = Duration::from_secs(60);

/// The registry actor.
pub struct Registry {
    admission: Arc<Admission>,
    releases: Option<ReleaseQueue>,
    revocations: Arc<dyn RevocationStore>,
    tickets: Arc<dyn TicketStore>,
}

impl Registry {
    /// A registry maintaining `admission` (performing the releases of `releases`),
    /// `revocations` and `tickets`.
    pub fn new(
        admission: Arc<Admission>,
        releases: ReleaseQueue,
        revocations: Arc<dyn RevocationStore>,
        tickets: Arc<dyn TicketStore>,
    ) -> Self {
        Self { admission, releases: Some(releases), revocations, tickets }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(mut releases) = self.releases.take() {
            let admission = Arc::clone(&self.admission);
            ctx.spawn(actix::fut::wrap_future(async move {
                // What queued meanwhile goes out together (one round trip for a shared store).
                let mut batch = Vec::with_capacity(RELEASE_BATCH);
                while releases.recv_many(&mut batch, RELEASE_BATCH).await > 0 {
                    admission.release_many(std::mem::take(&mut batch)).await;
                }
            }));
        }
        ctx.run_interval(SWEEP_INTERVAL, |this, _| {
            this.admission.sweep();
            this.tickets.sweep(Instant::now());
        });
        if let Some(every) = self.admission.upkeep_interval() {
            // Heartbeat, retried releases, reconcile: at once, then every period. A slow round
            // is not doubled up (the store skips a round while the previous one runs).
            let admission = Arc::clone(&self.admission);
            ctx.spawn(actix::fut::wrap_future(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let a = Arc::clone(&admission);
                    actix_web::rt::spawn(async move { a.upkeep().await });
                }
            }));
        }
        ctx.run_interval(COMPACT_INTERVAL, |this, _| {
            if let Err(e) = this.revocations.compact(unix_now()) {
                tracing::error!(error = %e, "revocation log compaction failed; the old log stays in use");
            }
        });
    }
}
