//! Wiring: build the shared state and the stores, hand each part only the handles it uses,
//! bind the public and admin listeners, and run them until a drain (SIGTERM, SIGINT, `POST
//! /admin/drain`) has emptied the gateway. SIGHUP reloads the config (`control::reload`), a
//! timed check reloads a changed certificate.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_http::error::DispatchError;
use actix_http::HttpService;
use actix_service::{fn_service, ServiceFactoryExt};
use actix_web::{web, App, HttpServer};
use tokio::net::TcpStream;

use crate::auth::keys::KeySet;
use crate::config::Config;
use crate::control::admin::{self, AdminState};
use crate::control::registry::Registry;
use crate::control::reload::Reloader;
use crate::error::{Error, Result};
use crate::http::accept::{self, Watched};
use crate::http::ws::{self, Entry, EntryHandles};
use crate::session::index::Sessions;
use crate::session::SessionHandles;
use crate::state::{control_channel, Control, JwksDemand, Policy, PolicyCell};
use crate::store::admission::{Admission, AdmissionStore, MemoryAdmission};
use crate::store::fleet::admission::{RedisAdmission, Settings};
use crate::store::fleet::link::Link;
use crate::store::fleet::revocation::RedisRevocations;
use crate::store::fleet::tickets::RedisTickets;
use crate::store::fleet::{node_id, Keys};
use crate::store::revocation::{LocalRevocations, RevocationStore};
use crate::store::tickets::{MemoryTickets, TicketStore};
use crate::tls::ReloadableCert;

/// How long a fleet node waits at start to join the fleet before it serves anyway.
const FLEET_JOIN_WAIT: Duration = Duration::from_secs(3);

/// How often the metrics recorder's histograms are maintained.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

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
fn open_revocations(config: &Config) -> Result<LocalRevocations> {
    match &config.state_dir {
        Some(dir) => LocalRevocations::open(dir)
            .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("server.state_dir {}: {e}", dir.display())))),
        None => {
            tracing::warn!("server.state_dir is not set: revocations are kept in memory and forgotten on restart");
            Ok(LocalRevocations::in_memory())
        }
    }
}

/// The stores a config asks for: in memory (and `state_dir`) for a single node, shared
/// through Redis with `[fleet]`.
struct Stores {
    admission: Arc<dyn AdmissionStore>,
    revocations: Arc<dyn RevocationStore>,
    /// One-time tickets (used while `[tickets]` is in force; a reload may add it).
    tickets: Arc<dyn TicketStore>,
    fleet: Option<Arc<RedisRevocations>>,
}

fn open_stores(config: &Config) -> Result<Stores> {
    let cache = open_revocations(config)?;
    let Some(f) = &config.fleet else {
        return Ok(Stores {
            admission: Arc::new(MemoryAdmission::new(config.limits.clone())),
            revocations: Arc::new(cache),
            tickets: Arc::new(MemoryTickets::new()),
            fleet: None,
        });
    };
    let link = Link::new(f).map_err(Error::Fleet)?;
    let node = node_id(&f.node_name);
    let keys = Keys::new(&f.key_prefix);
    let settings = Settings {
        node: node.clone(),
        keys: keys.clone(),
        heartbeat: f.heartbeat,
        reconcile: f.reconcile,
        on_redis_down: f.on_redis_down,
    };
    crate::metrics::register_fleet();
    tracing::info!(node = %node, "fleet mode: caps, handshake rate, revocations, kicks and tickets are shared through redis");
    let fleet = Arc::new(RedisRevocations::new(Arc::clone(&link), keys.clone(), node, cache));
    Ok(Stores {
        admission: Arc::new(RedisAdmission::new(Arc::clone(&link), settings, config.limits.clone(), fleet.loaded())),
        revocations: Arc::clone(&fleet) as Arc<dyn RevocationStore>,
        tickets: Arc::new(RedisTickets::new(link, keys)),
        fleet: Some(fleet),
    })
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
        crate::metrics::register_sensitive(&r.path, r.sensitive.as_deref());
    }
    if config.tickets.is_some() {
        crate::metrics::register_tickets();
    }
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });

    let config = Arc::new(config);
    let stores = open_stores(&config)?;
    let revocations = Arc::clone(&stores.revocations);
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
    let (admission, releases) = Admission::new(stores.admission);
    Registry::new(Arc::clone(&admission), releases, Arc::clone(&revocations), Arc::clone(&stores.tickets)).start();
    let (drain, stop, mut control_rx) = control_channel();
    let policy = PolicyCell::new(Policy { config: Arc::clone(&config), keys: Arc::new(keys) });
    let sessions = Arc::new(Sessions::new());
    crate::control::revoke::follow(revocations.as_ref(), Arc::clone(&sessions));
    if let Some(fleet) = &stores.fleet {
        let (commands, inbox) = tokio::sync::mpsc::unbounded_channel();
        let (synced, loaded) = tokio::sync::oneshot::channel();
        actix_web::rt::spawn(Arc::clone(fleet).follow(commands, synced));
        crate::control::fleet::serve(Arc::clone(fleet), Arc::clone(&sessions), inbox);
        // Serve once this node has joined (connected, heartbeat, counts) and holds the fleet's
        // revocations, or after FLEET_JOIN_WAIT with Redis unreachable (then on_redis_down
        // decides, and both catch up in the background).
        let joined = async {
            let _ = loaded.await;
            while !admission.ready() {
                admission.upkeep().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(FLEET_JOIN_WAIT, joined).await.is_err() {
            tracing::warn!(wait = ?FLEET_JOIN_WAIT, "fleet: redis not reached at start; serving with on_redis_down until it is");
        }
    }
    let node: Option<Arc<str>> = stores.fleet.as_ref().map(|f| Arc::from(f.node()));
    let session = SessionHandles {
        policy: Arc::clone(&policy),
        revocations: Arc::clone(&revocations),
        sessions: Arc::clone(&sessions),
        drain: Arc::clone(&drain),
    };
    let jwks = config.auth.jwks_url.is_some().then(JwksDemand::new);
    let entry_handles = EntryHandles {
        session,
        admission: Arc::clone(&admission),
        jwks: jwks.clone(),
        demo_page,
        node: node.clone(),
        tickets: Arc::clone(&stores.tickets),
    };
    let reloader = Arc::new(Reloader {
        policy: Arc::clone(&policy),
        admission: Arc::clone(&admission),
        sessions: Arc::clone(&sessions),
        cert: cert.clone(),
        source,
    });

    if let Some(demand) = jwks {
        crate::control::jwks::spawn(Arc::clone(&policy), demand).await;
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
    let trusted = policy.trusted_proxies();
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
            let entry = Entry::new(entry_handles.clone());
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
            let trusted = trusted.clone();
            match &tls {
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let accept = fn_service(move |mut io: TcpStream| {
                        let (trusted, acceptor) = (trusted.clone(), acceptor.clone());
                        accept::set_nodelay(&io);
                        async move {
                            let peer =
                                accept::client_peer(&trusted, &mut io, proxy_protocol, handshake_timeout).await?;
                            let tls = accept::tls_handshake(&acceptor, io, handshake_timeout).await?;
                            Ok::<_, DispatchError>((Watched::new(tls, peer), Some(peer)))
                        }
                    });
                    actix_service::boxed::factory(accept.and_then(h1!()).map_err(|_| ()))
                }
                None => {
                    let accept = fn_service(move |mut io: TcpStream| {
                        let trusted = trusted.clone();
                        accept::set_nodelay(&io);
                        async move {
                            let peer =
                                accept::client_peer(&trusted, &mut io, proxy_protocol, handshake_timeout).await?;
                            Ok::<_, DispatchError>((Watched::new(io, peer), Some(peer)))
                        }
                    });
                    actix_service::boxed::factory(accept.and_then(h1!()).map_err(|_| ()))
                }
            }
        })?
        .run();

    let admin_state = web::Data::new(AdminState {
        metrics: handle,
        sessions: Arc::clone(&sessions),
        revocations,
        reloader: Arc::clone(&reloader),
        drain: Arc::clone(&drain),
        token: admin_token,
        admission,
        fleet: stores.fleet.clone(),
    });
    let admin = HttpServer::new(move || App::new().app_data(admin_state.clone()).configure(admin::configure))
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(admin_listener)?
        .run();
    let (public_handle, admin_handle) = (public.handle(), admin.handle());

    crate::control::signals::spawn(reloader, drain, stop.clone());
    if let Some(cert) = cert {
        crate::control::reload::spawn_cert_watch(cert, config.tls.as_ref().map_or(Duration::ZERO, |t| t.reload_check));
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
                    let spread = policy.load().config.timeouts.drain;
                    actix_web::rt::spawn(crate::control::drain::run(Arc::clone(&sessions), stop.clone(), spread));
                }
                Some(Control::Stop) | None => break,
            },
        }
    }
    tracing::info!(live = sessions.len(), "wsgate stopping");
    // The servers process the stop commands while they are polled: await both together.
    let stop = futures_util::future::join(public_handle.stop(false), admin_handle.stop(false));
    let (_, (a, b)) = futures_util::future::join(stop, servers).await;
    a?;
    b?;
    Ok(())
}
