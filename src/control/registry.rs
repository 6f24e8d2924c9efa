//! The `Registry` actor: the node's admission bookkeeping over time. It forgets idle handshake
//! buckets and compacts the revocation log as entries expire.
//!
//! Owns: the periodic upkeep of the stores. Does not own: the admission decision itself (the
//! handshake calls the store directly: three mailbox round trips per connection cost six
//! cross-thread wake-ups).

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context};

use crate::auth::unix_now;
use crate::store::admission::Admission;
use crate::store::revocation::Revocations;

/// How often idle handshake buckets are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// How often expired revocations are dropped (and the log rewritten when mostly expired).
const COMPACT_INTERVAL: Duration = Duration::from_secs(60);

/// The registry actor.
pub struct Registry {
    admission: Arc<Admission>,
    revocations: Arc<Revocations>,
}

impl Registry {
    /// A registry maintaining `admission` and `revocations`.
    pub fn new(admission: Arc<Admission>, revocations: Arc<Revocations>) -> Self {
        Self { admission, revocations }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SWEEP_INTERVAL, |this, _| this.admission.sweep());
        ctx.run_interval(COMPACT_INTERVAL, |this, _| {
            if let Err(e) = this.revocations.compact(unix_now()) {
                tracing::error!(error = %e, "revocation log compaction failed; the old log stays in use");
            }
        });
    }
}
