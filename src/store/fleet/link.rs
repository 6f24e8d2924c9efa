//! The connection to Redis: found directly or through Sentinel, reconnected on demand, every
//! call bounded by `op_timeout_ms`, and a circuit breaker that stops calling for a while after
//! repeated failures (so an outage does not cost every handshake the full timeout).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, FromRedisValue, IntoConnectionInfo};

use crate::config::{Fleet, RedisTarget};

/// Consecutive failures that open the breaker.
const BREAKER_FAILURES: u32 = 3;
/// First open period of the breaker; doubled on each failed probe, up to [`BREAKER_MAX`].
const BREAKER_BASE: Duration = Duration::from_millis(500);
/// Longest open period.
const BREAKER_MAX: Duration = Duration::from_secs(5);
/// How long the feed reader may take to have Sentinel name the primary (a hung sentinel costs
/// the client's own timeouts before the next one is asked).
const SENTINEL_RESOLVE: Duration = Duration::from_secs(5);

/// Why a Redis call did not give an answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FleetError {
    /// The breaker is open: the call was not made.
    #[error("redis calls paused after repeated failures (circuit breaker open)")]
    Breaker,
    /// No answer within `op_timeout_ms`.
    #[error("redis did not answer within the op timeout")]
    Timeout,
    /// Another task is (re)connecting and did not finish within the op timeout.
    #[error("redis connection is being re-established")]
    Connecting,
    /// No connection could be made: the call was not sent.
    #[error("redis unreachable: {0}")]
    Unreachable(String),
    /// Redis or the connection failed after the call was sent.
    #[error("redis: {0}")]
    Redis(String),
}

impl FleetError {
    /// True when the call may have run in Redis (its answer was lost): a script that counts
    /// must not simply be replayed.
    pub fn may_have_run(&self) -> bool {
        matches!(self, Self::Timeout | Self::Redis(_))
    }
}

/// How one try of a call failed.
enum Attempt {
    /// The connection was dead: worth one more try on a new one.
    Broken(FleetError),
    Failed(FleetError),
}

/// Where connections come from.
enum Source {
    Direct(Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// The circuit breaker: after [`BREAKER_FAILURES`] failures in a row it opens for a backoff;
/// then one call at a time probes; a failed probe doubles the backoff (up to [`BREAKER_MAX`]),
/// a success closes it.
#[derive(Debug)]
struct Breaker {
    failures: AtomicU32,
    /// Milliseconds since `origin` until which calls are skipped.
    open_until: AtomicU64,
    backoff_ms: AtomicU64,
    open: AtomicBool,
    probing: AtomicBool,
    origin: Instant,
}

impl Breaker {
    fn new() -> Self {
        Self {
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(millis(BREAKER_BASE)),
            open: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            origin: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.origin.elapsed())
    }

    /// May a call go out now? While open, only one probe after the backoff.
    fn allows(&self) -> bool {
        if !self.open.load(Ordering::Acquire) {
            return true;
        }
        if self.now_ms() < self.open_until.load(Ordering::Acquire) {
            return false;
        }
        !self.probing.swap(true, Ordering::AcqRel)
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Release);
        self.backoff_ms.store(millis(BREAKER_BASE), Ordering::Release);
        self.probing.store(false, Ordering::Release);
        if self.open.swap(false, Ordering::AcqRel) {
            crate::metrics::fleet_breaker(false);
            tracing::info!(event = "fleet_breaker_closed", "redis answers again: fleet calls resumed");
        }
    }

    /// A failure; true when it opened the breaker or a probe failed (the connection should be
    /// started over).
    fn failed(&self) -> bool {
        if self.open.load(Ordering::Acquire) {
            if !self.probing.swap(false, Ordering::AcqRel) {
                // A call that started before the breaker opened.
                return false;
            }
            let backoff = self.backoff_ms.load(Ordering::Acquire).saturating_mul(2).min(millis(BREAKER_MAX));
            self.backoff_ms.store(backoff, Ordering::Release);
            self.open_until.store(self.now_ms().saturating_add(backoff), Ordering::Release);
            return true;
        }
        let n = self.failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        if n < BREAKER_FAILURES || self.open.swap(true, Ordering::AcqRel) {
            return false;
        }
        let backoff = self.backoff_ms.load(Ordering::Acquire);
        self.open_until.store(self.now_ms().saturating_add(backoff), Ordering::Release);
        crate::metrics::fleet_breaker(true);
        tracing::error!(
            event = "fleet_breaker_open",
            backoff_ms = backoff,
            "redis failed repeatedly: fleet calls paused"
        );
        true
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The shared connection to Redis.
pub struct Link {
    source: Source,
    /// With Sentinel: the primary's client last resolved (the shared connection dials it
    /// within its budget; the feed reader resolves again after each lost connection).
    resolved: ArcSwapOption<Client>,
    conn: ArcSwapOption<MultiplexedConnection>,
    connecting: tokio::sync::Mutex<()>,
    op_timeout: Duration,
    breaker: Breaker,
    /// Bumped by every new connection (a reconnect: the registry reconciles its counts).
    connects: AtomicU64,
}

// === impl Link ===

impl Link {
    /// A link for `fleet` (nothing is connected yet).
    ///
    /// # Errors
    /// The URL does not parse, the password variable is unset, the CA file is unreadable.
    pub fn new(fleet: &Fleet) -> Result<Arc<Self>, String> {
        let password = match &fleet.password_env {
            Some(var) => match std::env::var(var) {
                Ok(p) if !p.is_empty() => Some(p),
                _ => return Err(format!("fleet.redis_password_env names an unset or empty variable {var}")),
            },
            None => None,
        };
        let source = match &fleet.target {
            RedisTarget::Url(url) => {
                let mut info = url.as_str().into_connection_info().map_err(|e| format!("fleet.redis_url: {e}"))?;
                if let Some(p) = &password {
                    let settings = info.redis_settings().clone().set_password(p);
                    info = info.set_redis_settings(settings);
                }
                let client = match &fleet.ca_file {
                    Some(ca) => {
                        let root =
                            std::fs::read(ca).map_err(|e| format!("fleet.redis_ca_file {}: {e}", ca.display()))?;
                        Client::build_with_tls(info, redis::TlsCertificates { client_tls: None, root_cert: Some(root) })
                    }
                    None => Client::open(info),
                }
                .map_err(|e| format!("fleet.redis_url: {e}"))?;
                Source::Direct(client)
            }
            RedisTarget::Sentinel { master, addrs, db } => {
                let mut nodes = Vec::with_capacity(addrs.len());
                for a in addrs {
                    let (host, port) = a.rsplit_once(':').ok_or_else(|| format!("fleet.sentinel.addrs: {a:?}"))?;
                    let port = port.parse::<u16>().map_err(|_| format!("fleet.sentinel.addrs: {a:?}"))?;
                    nodes.push(ConnectionAddr::Tcp(host.to_string(), port));
                }
                let mut b = SentinelClientBuilder::new(nodes, master, SentinelServerType::Master)
                    .map_err(|e| format!("fleet.sentinel: {e}"))?
                    .set_client_to_redis_db(*db);
                if let Some(p) = &password {
                    b = b.set_client_to_redis_password(p);
                }
                Source::Sentinel(tokio::sync::Mutex::new(b.build().map_err(|e| format!("fleet.sentinel: {e}"))?))
            }
        };
        Ok(Arc::new(Self {
            source,
            resolved: ArcSwapOption::empty(),
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            op_timeout: fleet.op_timeout,
            breaker: Breaker::new(),
            connects: AtomicU64::new(0),
        }))
    }

    /// The bound of every call.
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// Connections made so far (changes on every reconnect).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Acquire)
    }

    /// True while the breaker is open (from repeated failures to a success).
    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// The client of the primary: the configured one, or the one Sentinel names (resolved
    /// again when `fresh`, else the last one resolved), within `budget`.
    async fn client(&self, fresh: bool, budget: Duration) -> Result<Client, FleetError> {
        let sentinel = match &self.source {
            Source::Direct(c) => return Ok(c.clone()),
            Source::Sentinel(s) => s,
        };
        if !fresh {
            if let Some(c) = self.resolved.load_full() {
                return Ok((*c).clone());
            }
        }
        let resolve = async {
            let mut s = sentinel.lock().await;
            s.async_get_client().await
        };
        match tokio::time::timeout(budget, resolve).await {
            Ok(Ok(c)) => {
                self.resolved.store(Some(Arc::new(c.clone())));
                Ok(c)
            }
            Ok(Err(e)) => Err(FleetError::Unreachable(format!("sentinel: {e}"))),
            Err(_) => Err(FleetError::Unreachable("sentinel: no primary named within the time allowed".into())),
        }
    }

    /// A new connection of its own (the feed reader's blocking reads must not stall the
    /// shared one), whose answers may take up to `response_timeout`; with Sentinel the primary
    /// is asked for again (up to [`SENTINEL_RESOLVE`]).
    ///
    /// # Errors
    /// Redis cannot be reached (or Sentinel names no primary).
    pub async fn open(&self, response_timeout: Duration) -> Result<MultiplexedConnection, FleetError> {
        let client = self.client(true, SENTINEL_RESOLVE).await?;
        self.dial(&client, response_timeout).await
    }

    async fn dial(&self, client: &Client, response_timeout: Duration) -> Result<MultiplexedConnection, FleetError> {
        let connect = self.connect_budget();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(response_timeout));
        match tokio::time::timeout(connect, client.get_multiplexed_async_connection_with_config(&config)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(FleetError::Unreachable(e.to_string())),
            Err(_) => Err(FleetError::Unreachable("connect timed out".into())),
        }
    }

    /// What a connect may take.
    fn connect_budget(&self) -> Duration {
        self.op_timeout.max(Duration::from_millis(200))
    }

    async fn connection(&self) -> Result<MultiplexedConnection, FleetError> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        // One connect at a time; the others wait for it, within the op timeout.
        let Ok(_guard) = tokio::time::timeout(self.op_timeout, self.connecting.lock()).await else {
            return Err(FleetError::Connecting);
        };
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let started = Instant::now();
        let opened = match self.client(false, self.op_timeout).await {
            Ok(client) => self.dial(&client, self.op_timeout).await,
            Err(e) => Err(e),
        };
        match opened {
            Ok(mut c) => {
                // Every script loaded in one round trip before the first handshake needs one
                // (after a failover or a restart Redis knows none); on failure they are sent
                // on first use.
                let mut p = redis::pipe();
                for lua in super::scripts::ALL {
                    p.cmd("SCRIPT").arg("LOAD").arg(lua).ignore();
                }
                if !matches!(tokio::time::timeout(self.op_timeout, p.query_async::<()>(&mut c)).await, Ok(Ok(()))) {
                    tracing::debug!("loading the fleet scripts failed; they are sent on first use");
                }
                crate::metrics::fleet_redis("connect", started.elapsed());
                self.conn.store(Some(Arc::new(c.clone())));
                self.connects.fetch_add(1, Ordering::AcqRel);
                tracing::info!(event = "fleet_redis_connected", "connected to redis");
                Ok(c)
            }
            Err(e) => {
                // With Sentinel, the next connect asks again.
                self.resolved.store(None);
                crate::metrics::fleet_redis_error("connect");
                Err(e)
            }
        }
    }

    /// Run `f` on the shared connection within the op timeout, unless the breaker is open.
    /// A failed call counts towards the breaker; a broken connection is dropped so the next
    /// call reconnects (asking Sentinel again for the primary).
    ///
    /// # Errors
    /// [`FleetError`].
    pub async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, FleetError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.breaker.allows() {
            crate::metrics::fleet_redis_error(op);
            return Err(FleetError::Breaker);
        }
        let started = Instant::now();
        let mut result = self.attempt(&f, self.op_timeout).await;
        if matches!(result, Err(Attempt::Broken(_))) {
            // A connection found dead (Redis restarted, the client was killed): one more try on
            // a fresh one, within what is left of one op timeout.
            let left = self.op_timeout.saturating_sub(started.elapsed());
            if !left.is_zero() {
                result = self.attempt(&f, left).await;
            }
        }
        let result = result.map_err(|e| match e {
            Attempt::Broken(e) => e,
            Attempt::Failed(e) => e,
        });
        match &result {
            Ok(_) => {
                crate::metrics::fleet_redis(op, started.elapsed());
                self.breaker.succeeded();
            }
            Err(FleetError::Connecting) => crate::metrics::fleet_redis_error(op),
            Err(e) => {
                crate::metrics::fleet_redis_error(op);
                if self.breaker.failed() {
                    // A partitioned link can hang without an error: start over after the pause.
                    self.conn.store(None);
                }
                tracing::debug!(op, error = %e, "redis call failed");
            }
        }
        result
    }

    async fn attempt<T, F, Fut>(&self, f: &F, limit: Duration) -> Result<T, Attempt>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await.map_err(Attempt::Failed)?;
        match tokio::time::timeout(limit, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => Err(Attempt::Failed(FleetError::Timeout)),
            Ok(Err(e)) => {
                let dead = e.is_connection_dropped() || e.is_unrecoverable_error();
                let replace = dead || e.is_io_error() || e.code() == Some("READONLY") || e.code() == Some("LOADING");
                if replace {
                    self.conn.store(None);
                    if e.code() == Some("READONLY") {
                        // A primary turned replica: ask Sentinel again.
                        self.resolved.store(None);
                    }
                }
                // Only a connection found dead is worth a second try: the call did not reach a
                // live Redis. Anything else may have run (a script that counted a slot).
                if dead {
                    return Err(Attempt::Broken(FleetError::Redis(e.to_string())));
                }
                Err(Attempt::Failed(FleetError::Redis(e.to_string())))
            }
            Err(_) => Err(Attempt::Failed(FleetError::Timeout)),
        }
    }

    /// Run one command.
    ///
    /// # Errors
    /// [`FleetError`].
    pub async fn query<T: FromRedisValue>(&self, op: &'static str, cmd: &redis::Cmd) -> Result<T, FleetError> {
        self.call(op, |mut c| async move { cmd.query_async(&mut c).await }).await
    }

    /// Run a pipeline.
    ///
    /// # Errors
    /// [`FleetError`].
    pub async fn pipe<T: FromRedisValue>(&self, op: &'static str, p: &redis::Pipeline) -> Result<T, FleetError> {
        self.call(op, |mut c| async move { p.query_async(&mut c).await }).await
    }

    /// Run a script (EVALSHA, loading it when Redis does not know it, as after a failover).
    ///
    /// # Errors
    /// [`FleetError`].
    pub async fn script<T: FromRedisValue>(
        &self,
        op: &'static str,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, FleetError> {
        self.call(op, |mut c| async move { inv.invoke_async(&mut c).await }).await
    }
}
