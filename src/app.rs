//! Wiring: start the registry, build the shared [`Gateway`] state, bind the public and admin
//! listeners, and run them until a signal stops the process.

use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_http::HttpService;
use actix_service::ServiceFactoryExt;
use actix_web::{web, App, HttpServer};

use crate::actors::registry::{Admission, Registry};
use crate::auth::keys::KeySet;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::admin::{self, AdminState};
use crate::http::ws::{self, Entry};

/// How often the metrics recorder's histograms are maintained.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What every handshake handler shares.
pub struct Gateway {
    /// The validated config.
    pub config: Arc<Config>,
    /// Verification keys.
    pub keys: Arc<KeySet>,
    /// Connection caps and handshake rates (called directly by the handshake path).
    pub admission: Arc<Admission>,
    /// The actor maintaining the admission state.
    pub registry: Addr<Registry>,
}

/// The addresses actually bound (port 0 resolved).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Public WebSocket listener.
    pub public: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// True when the public listener speaks TLS.
    pub tls: bool,
}

/// Run the gateway until SIGINT/SIGTERM. `announce` is called once both listeners are bound.
///
/// # Errors
/// Bind failures, TLS material errors, metrics recorder errors.
pub async fn run(config: Config, keys: KeySet, announce: impl FnOnce(Bound)) -> Result<()> {
    let handle = crate::metrics::install().map_err(Error::Metrics)?;
    crate::metrics::connections_max(config.limits.max_connections);
    for r in &config.routes {
        crate::metrics::register_route(&r.path);
    }
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });

    let config = Arc::new(config);
    let admission = Admission::new(config.limits.clone());
    let registry = Registry::new(Arc::clone(&admission)).start();
    let gateway = Arc::new(Gateway { config: Arc::clone(&config), keys: Arc::new(keys), admission, registry });

    let public_listener = TcpListener::bind(config.listen)?;
    let public_addr = public_listener.local_addr()?;
    let admin_listener = TcpListener::bind(config.admin_listen)?;
    let admin_addr = admin_listener.local_addr()?;
    if config.tls.is_none() && !public_addr.ip().is_loopback() {
        tracing::warn!(listen = %public_addr, "serving plain ws:// on a non-loopback address: tokens and messages travel unencrypted; configure [server.tls]");
    }

    let workers =
        if config.workers == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { config.workers };
    let per_worker_conns = (config.limits.max_connections as usize / workers).max(25_000);
    let handshake_timeout = Duration::from_secs(config.timeouts.handshake_seconds);
    let tls = match &config.tls {
        Some(files) => Some(crate::tls::server_config(files)?),
        None => None,
    };
    // actix-http's HTTP/1.1 service with an upgrade hook: `Upgrade: websocket` requests reach
    // `ws::upgrade` with their raw connection; every other request gets `ws::plain`.
    let public = actix_server::Server::build()
        .workers(workers)
        .backlog(4096)
        .max_concurrent_connections(per_worker_conns)
        .shutdown_timeout(config.timeouts.drain_seconds)
        .listen("wsgate-public", public_listener, move || {
            let entry = Entry::new(Arc::clone(&gateway));
            match &tls {
                Some(tls) => actix_service::boxed::factory(
                    HttpService::build()
                        .client_request_timeout(handshake_timeout)
                        .client_disconnect_timeout(Duration::ZERO)
                        .local_addr(public_addr)
                        .upgrade(ws::upgrade_service(Rc::clone(&entry)))
                        .h1(ws::plain_service(entry))
                        .rustls_0_23(tls.clone())
                        .map_err(|_| ()),
                ),
                None => actix_service::boxed::factory(
                    HttpService::build()
                        .client_request_timeout(handshake_timeout)
                        .client_disconnect_timeout(Duration::ZERO)
                        .local_addr(public_addr)
                        .upgrade(ws::upgrade_service(Rc::clone(&entry)))
                        .h1(ws::plain_service(entry))
                        .tcp()
                        .map_err(|_| ()),
                ),
            }
        })?
        .run();

    let admin_state = web::Data::new(AdminState { metrics: handle });
    let admin = HttpServer::new(move || App::new().app_data(admin_state.clone()).configure(admin::configure))
        .workers(1)
        .listen(admin_listener)?
        .run();

    announce(Bound { public: public_addr, admin: admin_addr, tls: config.tls.is_some() });
    tracing::info!(public = %public_addr, admin = %admin_addr, routes = config.routes.len(), "wsgate listening");
    let (a, b) = futures_util::future::join(public, admin).await;
    a?;
    b?;
    Ok(())
}
