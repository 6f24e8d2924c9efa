//! Keys from `auth.jwks_url`: fetched at start, every `auth.jwks_refresh_seconds`, and when a
//! token names a `kid` no loaded key has (key rotation at the IdP) — at most once per
//! [`crate::state::MIN_REFETCH_INTERVAL`], so a flood of tokens with made-up kids cannot hammer the IdP.
//! Each fetch is bounded by `auth.jwks_timeout_seconds` and [`MAX_JWKS_BYTES`]; a failed
//! fetch keeps the keys already loaded.
//!
//! The fetcher runs on the main runtime; handshakes ask it for a fetch through a
//! [`JwksDemand`] and may wait (bounded) for the outcome.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::keys::{parse_jwks, KeyOrigin, VerifyKey};
use crate::state::{JwksDemand, Policy, PolicyCell};

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Fetch the JWKS once.
///
/// # Errors
/// What went wrong, for the log.
async fn fetch(client: &awc::Client, url: &str, timeout: Duration) -> Result<Vec<VerifyKey>, String> {
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
fn install(policy: &PolicyCell, keys: Vec<VerifyKey>) -> usize {
    let _one_at_a_time = policy.lock_writers();
    let current = policy.load();
    let mut set = (*current.keys).clone();
    set.replace(KeyOrigin::JwksUrl, keys);
    let total = set.len();
    policy.store(Policy { config: Arc::clone(&current.config), keys: Arc::new(set) });
    total
}

/// One fetch, installed on success; logged and counted either way.
async fn fetch_and_install(policy: &PolicyCell, client: &awc::Client, reason: &'static str) {
    let auth = policy.load().config.auth.clone();
    let Some(url) = auth.jwks_url.as_deref() else { return };
    match fetch(client, url, auth.jwks_timeout).await {
        Ok(keys) => {
            let fetched = keys.len();
            let total = install(policy, keys);
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
pub async fn spawn(policy: Arc<PolicyCell>, demand: Arc<JwksDemand>) {
    let tls = crate::tls::upstream_client_config(None).ok().map(Arc::new);
    let connector = match tls {
        Some(tls) => awc::Connector::new().rustls_0_23(tls),
        None => awc::Connector::new(),
    };
    let client = awc::Client::builder().connector(connector).disable_redirects().finish();
    fetch_and_install(&policy, &client, "start").await;
    demand.fetched();
    actix_web::rt::spawn(async move {
        loop {
            let every = policy.load().config.auth.jwks_refresh;
            let reason = tokio::select! {
                () = tokio::time::sleep(every) => "interval",
                () = demand.demanded() => "unknown_kid",
            };
            fetch_and_install(&policy, &client, reason).await;
            demand.fetched();
        }
    });
}
