//! Process signals: SIGTERM and SIGINT start a drain (a second one stops at once), SIGHUP
//! reloads the config.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use super::reload::Reloader;
use crate::state::{DrainSignal, StopHandle};

/// Listen for the signals on the current (actix) runtime. The handlers are installed before
/// this returns (so before the gateway announces itself): a SIGHUP sent right after the
/// listening line must reload, not hit the default action and end the process.
pub fn spawn(reloader: Arc<Reloader>, drain: Arc<DrainSignal>, stop: StopHandle) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        tracing::error!("cannot install signal handlers: SIGTERM/SIGHUP will not drain or reload");
        return;
    };
    actix_web::rt::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    let _ = reloader.reload("SIGHUP");
                    continue;
                }
            };
            if drain.start() {
                tracing::info!(signal = name, "draining; a second signal stops at once");
            } else {
                tracing::warn!(signal = name, "second signal while draining: stopping now");
                stop.stop();
            }
        }
    });
}
