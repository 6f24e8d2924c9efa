//! Config reload (SIGHUP, `POST /admin/reload`) and the timed certificate check.
//!
//! A reload reads the config file again, validates it completely and loads its keys and
//! certificate; only when all of that succeeded is anything swapped in: the new config and
//! keys for new handshakes, the new limits for admission, the new route rules for the frames
//! that follow on open connections (each session is told). A bad new config changes nothing
//! and is reported with its reason. Nothing is ever closed by a reload.
//!
//! Settings that belong to sockets and threads already created (listen addresses, workers,
//! `state_dir`, the admin token, TLS on or off) keep their value until a restart; a reload that
//! changes them says so in the log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::session::index::Sessions;
use crate::session::messages::ConfigReloaded;
use crate::state::{Policy, PolicyCell};
use crate::store::admission::Admission;
use crate::tls::ReloadableCert;

/// What a reload reads and changes.
pub struct Reloader {
    /// The policy in force, replaced by a reload.
    pub policy: Arc<PolicyCell>,
    /// Takes the new limits.
    pub admission: Arc<Admission>,
    /// The open sessions, told about the new rules.
    pub sessions: Arc<Sessions>,
    /// The public listener's certificate, when it serves TLS.
    pub cert: Option<Arc<ReloadableCert>>,
    /// The config file a reload reads (`None`: a built-in config, as in `wsgate demo`).
    pub source: Option<PathBuf>,
}

/// What a successful reload changed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    /// Routes in force now.
    pub routes: usize,
    /// Keys in force now.
    pub keys: usize,
    /// Open sessions told about the new rules.
    pub sessions: usize,
    /// Settings that changed in the file but need a restart.
    pub restart_needed: Vec<&'static str>,
}

/// Settings a reload cannot apply.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.listen != new.listen {
        changed.push("server.listen");
    }
    if old.workers != new.workers {
        changed.push("server.workers");
    }
    if old.proxy_protocol != new.proxy_protocol {
        changed.push("server.proxy_protocol");
    }
    if old.auth.jwks_url.is_none() && new.auth.jwks_url.is_some() {
        changed.push("auth.jwks_url (added)");
    }
    if old.state_dir != new.state_dir {
        changed.push("server.state_dir");
    }
    if old.admin_listen != new.admin_listen {
        changed.push("admin.listen");
    }
    if old.admin_token_env != new.admin_token_env {
        changed.push("admin.token_env");
    }
    if old.fleet != new.fleet {
        changed.push("fleet");
    }
    changed
}

impl Reloader {
    /// Reload the config file (`trigger` names what asked, for the log).
    ///
    /// # Errors
    /// Why the new config was refused; the old one stays in force.
    pub fn reload(&self, trigger: &'static str) -> Result<Reloaded, String> {
        let _one_at_a_time = self.policy.lock_writers();
        let result = load_and_apply(self);
        crate::metrics::config_reload(result.is_ok());
        match &result {
            Ok(r) => tracing::info!(
                event = "config_reloaded",
                trigger,
                routes = r.routes,
                keys = r.keys,
                sessions = r.sessions,
                restart_needed = ?r.restart_needed,
                "config reloaded"
            ),
            Err(e) => {
                tracing::error!(event = "config_reload_failed", trigger, error = %e, "config reload refused; the previous config stays in force")
            }
        }
        result
    }
}

fn load_and_apply(gw: &Reloader) -> Result<Reloaded, String> {
    let Some(path) = &gw.source else {
        return Err("this gateway runs on a built-in config (wsgate demo): nothing to reload".into());
    };
    let config = Config::load(path).map_err(|e| format!("config {}: {e}", path.display()))?;
    let keys =
        crate::auth::keys::load_configured(&config.auth).map_err(|e| format!("config {}: {e}", path.display()))?;
    let old = gw.policy.load();
    let restart_needed = restart_only(&old.config, &config);
    match (&gw.cert, &config.tls) {
        (Some(cert), Some(files)) => cert.reload(&files.cert_file, &files.key_file).map_err(|e| e.to_string())?,
        (None, None) => {}
        (None, Some(_)) => return Err("server.tls was added: serving TLS needs a restart".into()),
        (Some(_), None) => return Err("server.tls was removed: serving plain ws:// needs a restart".into()),
    }
    // Nothing can fail past this point: apply.
    let keys = crate::auth::keys::with_fetched(keys, &old.keys);
    gw.admission.set_limits(config.limits.clone());
    crate::metrics::connections_max(config.limits.max_connections);
    for r in &config.routes {
        crate::metrics::register_route(&r.path);
        crate::metrics::register_sensitive(&r.path, r.sensitive.as_deref());
    }
    if config.tickets.is_some() {
        crate::metrics::register_tickets();
    }
    let config = Arc::new(config);
    let reloaded =
        Reloaded { routes: config.routes.len(), keys: keys.len(), sessions: gw.sessions.len(), restart_needed };
    gw.policy.store(Policy { config: Arc::clone(&config), keys: Arc::new(keys) });
    gw.sessions.each(|s| s.do_send(ConfigReloaded));
    Ok(reloaded)
}

/// Check the certificate files every `every` (zero: never) and reload them when their
/// modification time changed.
pub fn spawn_cert_watch(cert: Arc<ReloadableCert>, every: Duration) {
    if every.is_zero() {
        return;
    }
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match cert.reload_if_changed() {
                Ok(false) => {}
                Ok(true) => {
                    crate::metrics::tls_reload(true);
                    tracing::info!(event = "certificate_reloaded", trigger = "file_change", "TLS certificate reloaded");
                }
                Err(e) => {
                    crate::metrics::tls_reload(false);
                    tracing::error!(event = "certificate_reload_failed", error = %e, "changed TLS files not usable; the previous certificate stays in force");
                }
            }
        }
    });
}
