//! Wiring: build the shared [`Gateway`] state, bind the public and admin listeners, and run
//! them until a drain (SIGTERM, SIGINT, `POST /admin/drain`) has emptied the gateway. SIGHUP
//! reloads the config (`reload`), a timed check reloads a changed certificate.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr};
use actix_http::error::DispatchError;
use actix_http::HttpService;
use actix_service::{fn_service, ServiceFactoryExt};
use actix_web::{web, App, HttpServer};
use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::actors::index::Sessions;
use crate::actors::messages::Refusal;
use crate::actors::registry::{Admission, Registry};
use crate::auth::jwks::JwksDemand;
use crate::auth::keys::KeySet;
use crate::auth::revocation::Revocations;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::accept::{self, Watched};
use crate::http::admin::{self, AdminState};
use crate::http::ws::{self, Entry};
use crate::tls::ReloadableCert;

/// How often the metrics recorder's histograms are maintained.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The config and keys in force; replaced as a whole by a reload.
pub struct Policy {
    /// The validated config.
    pub config: Arc<Config>,
    /// Verification keys (`[[auth.keys]]`, the JWKS file and the JWKS URL's keys).
    pub keys: Arc<KeySet>,
}

/// `Retry-After` of the 503 answered while draining: the process is going away, so a client
/// should come back soon, through the load balancer, to another node.
pub const DRAIN_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What the process's listeners, sessions and admin API share.
pub struct Gateway {
    policy: ArcSwap<Policy>,
    /// Bumped after each new policy is stored; sessions compare it after each client read.
    policy_generation: AtomicU64,
    /// Connection caps and handshake rates (called directly by the handshake path).
    pub admission: Arc<Admission>,
    /// The actor maintaining the admission state.
    pub registry: Addr<Registry>,
    /// Live sessions (admin list, revoke, kick, drain).
    pub sessions: Sessions,
    /// Revoked tokens and subjects.
    pub revocations: Arc<Revocations>,
    /// The config file a reload reads (`None`: a built-in config, as in `wsgate demo`).
    pub source: Option<PathBuf>,
    /// `wsgate demo` only: the public listener serves the demo's browser page at `/`.
    pub demo_page: bool,
    /// The public listener's certificate, when it serves TLS.
    pub cert: Option<Arc<ReloadableCert>>,
    /// Asks the JWKS URL fetcher for a fetch (when `auth.jwks_url` is set).
    pub jwks: Option<Arc<JwksDemand>>,
    /// Serialises reloads (SIGHUP and `POST /admin/reload` at once).
    pub(crate) reload_lock: Mutex<()>,
    draining: AtomicBool,
    control: mpsc::UnboundedSender<Control>,
}

/// Requests to the process's main loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Start draining (idempotent).
    Drain,
    /// Stop the listeners now (the drain finished, or a second signal arrived).
    Stop,
}

// === impl Gateway ===

impl Gateway {
    /// The config and keys in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Put a reloaded config and keys in force: for new handshakes at once, for open sessions
    /// from their next client read (they compare [`Gateway::policy_generation`]).
    pub(crate) fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
        self.policy_generation.fetch_add(1, Ordering::Release);
    }

    /// Changes whenever a reload puts a new policy in force: a session that sees another value
    /// takes the new rules before it judges the bytes it just read.
    pub fn policy_generation(&self) -> u64 {
        self.policy_generation.load(Ordering::Acquire)
    }

    /// Early admission of a connection from `ip` (the admission stage of docs/protocol.md), refused outright
    /// while draining.
    ///
    /// # Errors
    /// [`Refusal`] with `Draining`, `Overloaded` or `HandshakeRate`.
    pub fn admit(&self, ip: std::net::IpAddr) -> std::result::Result<(), Refusal> {
        if self.is_draining() {
            return Err(Refusal { denied: crate::error::Denied::Draining, retry_after: Some(DRAIN_RETRY_AFTER) });
        }
        self.admission.admit(ip)
    }

    /// True once a drain started: new handshakes get 503, `/readyz` 503.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Start draining (SIGTERM and `POST /admin/drain`); false when already draining.
    pub fn start_drain(&self) -> bool {
        let first = !self.draining.swap(true, Ordering::AcqRel);
        if first {
            crate::metrics::draining(true);
            let _ = self.control.send(Control::Drain);
        }
        first
    }
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

/// Open the revocation store: persistent in `state_dir`, else in memory with a warning.
fn open_revocations(config: &Config) -> Result<Revocations> {
    match &config.state_dir {
        Some(dir) => Revocations::open(dir)
            .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("server.state_dir {}: {e}", dir.display())))),
        None => {
            tracing::warn!("server.state_dir is not set: revocations are kept in memory and forgotten on restart");
            Ok(Revocations::in_memory())
        }
    }
}

/// Bind `addr`, the value of config key `key`.
fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|cause| Error::Bind { key, addr, cause })
}

/// Where the config in force came from.
#[derive(Debug, Clone)]
pub enum ConfigOrigin {
    /// A file: a reload reads it again.
    File(PathBuf),
    /// `wsgate demo`'s built-in config: no reload; the browser page is served at `/`.
    Demo,
}

/// Run the gateway until a drain completes. `origin` says where the config came from.
/// `announce` is called once both listeners are bound.
///
/// # Errors
/// Bind failures, TLS material errors, state directory errors, metrics recorder errors.
pub async fn run(config: Config, keys: KeySet, origin: ConfigOrigin, announce: impl FnOnce(Bound)) -> Result<()> {
    let (source, demo_page) = match origin {
        ConfigOrigin::File(path) => (Some(path), false),
        ConfigOrigin::Demo => (None, true),
    };
    // Bound first: an address in use ends the run before anything else was started.
    let public_listener = bind("server.listen", config.listen)?;
    let public_addr = public_listener.local_addr()?;
    let admin_listener = bind("admin.listen", config.admin_listen)?;
    let admin_addr = admin_listener.local_addr()?;
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
    let revocations = Arc::new(open_revocations(&config)?);
    let cert = match &config.tls {
        Some(files) => Some(ReloadableCert::load(&files.cert_file, &files.key_file)?),
        None => None,
    };
    let admin_token = match &config.admin_token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) if !t.is_empty() => Some(t),
            _ => {
                tracing::warn!(env = %var, "admin.token_env names an unset or empty variable: /admin/* is disabled");
                None
            }
        },
        None => None,
    };
    let admission = Admission::new(config.limits.clone());
    let registry = Registry::new(Arc::clone(&admission), Arc::clone(&revocations)).start();
    let (control, mut control_rx) = mpsc::unbounded_channel();
    let gateway = Arc::new(Gateway {
        policy: ArcSwap::from_pointee(Policy { config: Arc::clone(&config), keys: Arc::new(keys) }),
        policy_generation: AtomicU64::new(0),
        admission,
        registry,
        sessions: Sessions::new(),
        revocations,
        source,
        demo_page,
        cert: cert.clone(),
        jwks: config.auth.jwks_url.is_some().then(JwksDemand::new),
        reload_lock: Mutex::new(()),
        draining: AtomicBool::new(false),
        control,
    });

    if let Some(demand) = &gateway.jwks {
        crate::auth::jwks::spawn(Arc::clone(&gateway), Arc::clone(demand)).await;
    }

    if config.tls.is_none() && !public_addr.ip().is_loopback() {
        tracing::warn!(listen = %public_addr, "serving plain ws:// on a non-loopback address: tokens and messages travel unencrypted; configure [server.tls]");
    }

    let workers =
        if config.workers == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { config.workers };
    let per_worker_conns = (config.limits.max_connections as usize / workers).max(25_000);
    let handshake_timeout = config.timeouts.handshake;
    let tls = match &cert {
        Some(cert) => Some(accept::tls_acceptor(crate::tls::server_config(Arc::clone(cert))?)),
        None => None,
    };
    let gw = Arc::clone(&gateway);
    let proxy_protocol = config.proxy_protocol;
    // Per connection: the PROXY header (when enabled) and TLS (`http::accept`), then
    // actix-http's HTTP/1.1 service with an upgrade hook: `Upgrade: websocket` requests reach
    // `ws::upgrade` with their raw connection; every other request gets `ws::plain`.
    let public = actix_server::Server::build()
        .workers(workers)
        .backlog(4096)
        .max_concurrent_connections(per_worker_conns)
        .disable_signals()
        .shutdown_timeout(1)
        .listen("wsgate-public", public_listener, move || {
            let entry = Entry::new(Arc::clone(&gw));
            // (A macro, not a value: the builder's type is fixed by the connection type.)
            macro_rules! h1 {
                () => {
                    HttpService::build()
                        .on_connect_ext(|io: &_, ext: &mut actix_http::Extensions| {
                            let io: &Watched<_> = io;
                            ext.insert(io.watch());
                        })
                        .client_request_timeout(handshake_timeout)
                        .client_disconnect_timeout(Duration::ZERO)
                        .local_addr(public_addr)
                        .upgrade(ws::upgrade_service(Rc::clone(&entry)))
                        .h1(ws::plain_service(Rc::clone(&entry)))
                };
            }
            let gw = Arc::clone(&gw);
            match &tls {
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let accept = fn_service(move |mut io: TcpStream| {
                        let (gw, acceptor) = (Arc::clone(&gw), acceptor.clone());
                        accept::set_nodelay(&io);
                        async move {
                            let peer = accept::client_peer(&gw, &mut io, proxy_protocol, handshake_timeout).await?;
                            let tls = accept::tls_handshake(&acceptor, io, handshake_timeout).await?;
                            Ok::<_, DispatchError>((Watched::new(tls, peer), Some(peer)))
                        }
                    });
                    actix_service::boxed::factory(accept.and_then(h1!()).map_err(|_| ()))
                }
                None => {
                    let accept = fn_service(move |mut io: TcpStream| {
                        let gw = Arc::clone(&gw);
                        accept::set_nodelay(&io);
                        async move {
                            let peer = accept::client_peer(&gw, &mut io, proxy_protocol, handshake_timeout).await?;
                            Ok::<_, DispatchError>((Watched::new(io, peer), Some(peer)))
                        }
                    });
                    actix_service::boxed::factory(accept.and_then(h1!()).map_err(|_| ()))
                }
            }
        })?
        .run();

    let admin_state = web::Data::new(AdminState { metrics: handle, gateway: Arc::clone(&gateway), token: admin_token });
    let admin = HttpServer::new(move || App::new().app_data(admin_state.clone()).configure(admin::configure))
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(admin_listener)?
        .run();
    let (public_handle, admin_handle) = (public.handle(), admin.handle());

    crate::signals::spawn(Arc::clone(&gateway));
    if let Some(cert) = cert {
        crate::reload::spawn_cert_watch(cert, config.tls.as_ref().map_or(Duration::ZERO, |t| t.reload_check));
    }

    announce(Bound { public: public_addr, admin: admin_addr, tls: config.tls.is_some() });
    tracing::info!(public = %public_addr, admin = %admin_addr, routes = config.routes.len(), "wsgate listening");
    let mut servers = Box::pin(futures_util::future::join(public, admin));
    loop {
        tokio::select! {
            (a, b) = &mut servers => {
                a?;
                b?;
                return Ok(());
            }
            ctl = control_rx.recv() => match ctl {
                Some(Control::Drain) => {
                    let spread = gateway.policy().config.timeouts.drain;
                    actix_web::rt::spawn(crate::drain::run(Arc::clone(&gateway), spread));
                }
                Some(Control::Stop) | None => break,
            },
        }
    }
    tracing::info!(live = gateway.sessions.len(), "wsgate stopping");
    // The servers process the stop commands while they are polled: await both together.
    let stop = futures_util::future::join(public_handle.stop(false), admin_handle.stop(false));
    let (_, (a, b)) = futures_util::future::join(stop, servers).await;
    a?;
    b?;
    Ok(())
}

/// Ask the main loop to stop the listeners (end of a drain, or a second signal).
pub(crate) fn request_stop(gw: &Gateway) {
    let _ = gw.control.send(Control::Stop);
}
