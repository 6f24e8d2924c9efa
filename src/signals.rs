//! Process signals: SIGTERM and SIGINT start a drain (a second one stops at once), SIGHUP
//! reloads the config.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use crate::app::Gateway;

/// Listen for the signals on the current (actix) runtime.
pub fn spawn(gw: Arc<Gateway>) {
    actix_web::rt::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
        else {
            tracing::error!("cannot install signal handlers: SIGTERM/SIGHUP will not drain or reload");
            return;
        };
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    let _ = crate::reload::reload(&gw, "SIGHUP");
                    continue;
                }
            };
            if gw.start_drain() {
                tracing::info!(signal = name, "draining; a second signal stops at once");
            } else {
                tracing::warn!(signal = name, "second signal while draining: stopping now");
                crate::app::request_stop(&gw);
            }
        }
    });
}
