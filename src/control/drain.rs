//! Drain (docs/operations.md): once started, new handshakes get 503 and `/readyz` 503; every open
//! session is told to drain at a moment spread evenly over the first 80 % of `drain_seconds`,
//! so clients do not reconnect elsewhere in one stampede. A draining session stops reading its
//! client, closes the upstream after what it already accepted, relays the upstream's last
//! answers, then closes the client with 1001 (the session's `start_drain`). The process stops as
//! soon as no session is left, at the latest shortly after `drain_seconds`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::SessionClose;
use crate::session::index::Sessions;
use crate::state::StopHandle;

/// Share of `drain_seconds` over which the 1001s are spread; the rest is for the close
/// handshakes to complete.
const SPREAD_SHARE: f64 = 0.8;

/// How often the drain looks for sessions left (and ones that finished a handshake late).
const POLL: Duration = Duration::from_millis(50);

/// Time allowed past `drain_seconds` for the last close handshakes.
const OVERRUN: Duration = Duration::from_secs(1);

/// Drain the live `sessions`, then ask the main loop to stop.
pub async fn run(sessions: Arc<Sessions>, stop: StopHandle, drain: Duration) {
    let started = Instant::now();
    let ids = sessions.ids();
    tracing::info!(connections = ids.len(), drain_seconds = drain.as_secs(), "drain started");
    let spread = drain.mul_f64(SPREAD_SHARE);
    let n = ids.len().max(1) as f64;
    let mut told = HashSet::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        tokio::time::sleep_until((started + spread.mul_f64(i as f64 / n)).into()).await;
        sessions.close(id, SessionClose::Draining);
        told.insert(id);
    }
    let deadline = started + drain + OVERRUN;
    while !sessions.is_empty() && Instant::now() < deadline {
        // A handshake that passed the draining check just before the drain began.
        for id in sessions.ids() {
            if told.insert(id) {
                sessions.close(id, SessionClose::Draining);
            }
        }
        tokio::time::sleep(POLL).await;
    }
    tracing::info!(
        left = sessions.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "drain finished; stopping"
    );
    stop.stop();
}
