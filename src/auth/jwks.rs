//! Keys from `auth.jwks_url`: fetched at start, every `auth.jwks_refresh_seconds`, and when a
//! token names a `kid` no loaded key has (key rotation at the IdP) — at most once per
//! [`MIN_REFETCH_INTERVAL`], so a flood of tokens with made-up kids cannot hammer the IdP.
//! Each fetch is bounded by `auth.jwks_timeout_seconds` and [`MAX_JWKS_BYTES`]; a failed
//! fetch keeps the keys already loaded.
//!
//! The fetcher runs on the main runtime; handshakes ask it for a fetch through a
//! [`JwksDemand`] and may wait (bounded) for the outcome.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::keys::{parse_jwks, KeyOrigin};
use crate::app::{Gateway, Policy};

/// Shortest time between two fetches asked for by unknown kids.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// How handshakes ask for a fetch and learn that one finished.
pub struct JwksDemand {
    wake: Notify,
    /// Increments after every fetch attempt.
    done: watch::Sender<u64>,
    /// Milliseconds since `epoch` from which the next demand is let through.
    next_demand_ms: AtomicU64,
    epoch: Instant,
}

impl JwksDemand {
    /// A demand channel; the fetcher is started with [`spawn`].
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
}

/// Fetch the JWKS once.
///
/// # Errors
/// What went wrong, for the log.
async fn fetch(client: &awc::Client, url: &str, timeout: Duration) -> Result<Vec<super::keys::VerifyKey>, String> {
    let mut resp = client
        .get(url)
        .timeout(timeout)
        .insert_header(("accept", "application/json"))
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("answered {}", resp.status().as_u16()));
    }
    let body = tokio::time::timeout(timeout, resp.body().limit(MAX_JWKS_BYTES))
        .await
        .map_err(|_| "body not received in time".to_string())?
        .map_err(|e| format!("body: {e}"))?;
    parse_jwks(&body, KeyOrigin::JwksUrl)
}

/// Put `keys` in force as the URL's keys (the config and other keys unchanged).
fn install(gw: &Gateway, keys: Vec<super::keys::VerifyKey>) -> usize {
    let _one_at_a_time = gw.reload_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let current = gw.policy();
    let mut set = (*current.keys).clone();
    set.replace(KeyOrigin::JwksUrl, keys);
    let total = set.len();
    gw.set_policy(Policy { config: Arc::clone(&current.config), keys: Arc::new(set) });
    total
}

/// One fetch, installed on success; logged and counted either way.
async fn fetch_and_install(gw: &Gateway, client: &awc::Client, reason: &'static str) {
    let auth = gw.policy().config.auth.clone();
    let Some(url) = auth.jwks_url.as_deref() else { return };
    match fetch(client, url, auth.jwks_timeout).await {
        Ok(keys) => {
            let fetched = keys.len();
            let total = install(gw, keys);
            crate::metrics::jwks_fetch(true);
            tracing::info!(event = "jwks_fetched", reason, url, keys = fetched, keys_total = total, "JWKS fetched");
        }
        Err(e) => {
            crate::metrics::jwks_fetch(false);
            tracing::warn!(event = "jwks_fetch_failed", reason, url, error = %e, "JWKS fetch failed; the keys already loaded stay in force");
        }
    }
}

/// Run the fetcher on the current (actix) runtime: a first fetch now, then on the refresh
/// interval and on demand. Returns once the first fetch finished, so the gateway starts with
/// the IdP's keys when the IdP answers.
pub async fn spawn(gw: Arc<Gateway>, demand: Arc<JwksDemand>) {
    let tls = crate::tls::upstream_client_config(None).ok().map(Arc::new);
    let connector = match tls {
        Some(tls) => awc::Connector::new().rustls_0_23(tls),
        None => awc::Connector::new(),
    };
    let client = awc::Client::builder().connector(connector).disable_redirects().finish();
    fetch_and_install(&gw, &client, "start").await;
    demand.done.send_modify(|n| *n += 1);
    actix_web::rt::spawn(async move {
        loop {
            let every = gw.policy().config.auth.jwks_refresh;
            let reason = tokio::select! {
                () = tokio::time::sleep(every) => "interval",
                () = demand.wake.notified() => "unknown_kid",
            };
            fetch_and_install(&gw, &client, reason).await;
            demand.done.send_modify(|n| *n += 1);
        }
    });
}
