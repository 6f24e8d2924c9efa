//! Fleet-wide revocation: a marker per revoked `jti` or subject (the handshake script reads
//! them) and an entry on the revocation stream that every node follows.
//!
//! Every check reads the node's local cache ([`LocalRevocations`]), never Redis. The feed
//! reader ([`RedisRevocations::follow`]) runs on a connection of its own (blocking reads would
//! stall the shared one): it resumes from its last stream id after a reconnect; when that id
//! was trimmed away, or the epoch key says Redis lost its data, it reloads every marker (and
//! after a data loss first puts back the markers its cache holds). Revocations that could
//! not be shared are retried on every reconnect.
//!
//! The same reader carries commands between nodes ([`Command`]: a kick for a connection
//! another node owns, a listing of the whole fleet), answered on short-lived reply lists.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadReply};
use redis::AsyncCommands;
use tokio::sync::{broadcast, mpsc};

use super::link::{FleetError, Link};
use super::{random_hex, scripts, Keys};
use crate::auth::{unix_now, Claims};
use crate::store::revocation::{AddError, LocalRevocations, Revocation, RevocationStore, DEFAULT_KEEP_SECONDS};

/// Entries kept on the revocation stream (approximately).
const LOG_MAX_LEN: u64 = 100_000;
/// Entries kept on the command stream (approximately).
const COMMANDS_MAX_LEN: u64 = 10_000;
/// How long one blocking read waits for new entries.
const BLOCK: Duration = Duration::from_secs(1);
/// Entries read per call.
const READ_COUNT: usize = 512;
/// Markers read per scan step.
const SCAN_COUNT: usize = 1000;
/// Reconnect backoff of the reader.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a command waits for its answers.
const COMMAND_WAIT: Duration = Duration::from_secs(1);
/// Revocations kept for sharing while Redis is unreachable.
const MAX_UNSHARED: usize = 100_000;
/// Tolerated difference between Redis's clock (stream ids) and this node's.
const COMMAND_CLOCK_SKEW_MS: u64 = 5_000;
/// Reply lists expire after this.
const REPLY_TTL_MS: u64 = 10_000;

/// A command for this node from another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Close local connection `id` (4003) and answer whether it was live.
    Kick {
        /// The local connection number.
        id: u64,
        /// Where to push the answer.
        reply: String,
    },
    /// Answer a page of this node's connections.
    List {
        /// Rows at most.
        limit: usize,
        /// Local connection numbers above this one.
        after: u64,
        /// Where to push the answer.
        reply: String,
    },
}

/// Where the reader stands.
#[derive(Debug, Default)]
struct Cursor {
    revocations: Option<String>,
    commands: Option<String>,
    epoch: Option<String>,
}

/// Revocations shared through Redis.
pub struct RedisRevocations {
    link: Arc<Link>,
    keys: Keys,
    node: String,
    cache: LocalRevocations,
    unshared: Mutex<Vec<Revocation>>,
    /// Set once every marker was loaded (admission refuses to fall back before).
    loaded: Arc<AtomicBool>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `(ms, seq)` of a stream id, for ordering.
fn stream_pos(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn field(e: &StreamId, name: &str) -> Option<String> {
    e.get::<String>(name)
}

/// The revocation a stream entry carries.
fn entry_revocation(e: &StreamId) -> Option<Revocation> {
    let value = field(e, "v")?;
    let until = field(e, "u")?.parse().ok()?;
    match field(e, "k")?.as_str() {
        "jti" => Some(Revocation::Token { jti: value, until }),
        "sub" => Some(Revocation::Subject { sub: value, before: field(e, "b")?.parse().ok()?, until }),
        _ => None,
    }
}

// === impl RedisRevocations ===

impl RedisRevocations {
    /// A store over `link` for node `node`, checking against `cache`.
    pub fn new(link: Arc<Link>, keys: Keys, node: String, cache: LocalRevocations) -> Self {
        Self { link, keys, node, cache, unshared: Mutex::new(Vec::new()), loaded: Arc::new(AtomicBool::new(false)) }
    }

    /// Set once this node holds the fleet's revocations.
    pub fn loaded(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.loaded)
    }

    fn marker(&self, r: &Revocation) -> String {
        match r {
            Revocation::Token { jti, .. } => self.keys.revoked_jti(jti),
            Revocation::Subject { sub, .. } => self.keys.revoked_sub(sub),
        }
    }

    async fn share(&self, r: &Revocation) -> Result<String, FleetError> {
        let (kind, value, before) = match r {
            Revocation::Token { jti, .. } => ("jti", jti.as_str(), 0),
            Revocation::Subject { sub, before, .. } => ("sub", sub.as_str(), *before),
        };
        let mut inv = scripts::REVOKE.prepare_invoke();
        inv.key(self.marker(r))
            .key(self.keys.revocation_log())
            .arg(kind)
            .arg(value)
            .arg(before)
            .arg(super::ms(r.until()))
            .arg(&self.node)
            .arg(LOG_MAX_LEN);
        self.link.script("revoke", &inv).await
    }

    async fn add_shared(&self, r: Revocation) -> Result<(), AddError> {
        // In force here first: the sessions of this node close whatever Redis says.
        let persisted = self.cache.add(r.clone());
        if let Err(e) = self.share(&r).await {
            let mut pending = self.unshared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if pending.len() < MAX_UNSHARED {
                pending.push(r);
            } else {
                tracing::error!(
                    kept = pending.len(),
                    "too many revocations waiting for redis: this one stays on this node only"
                );
            }
            return Err(AddError::NotShared(e.to_string()));
        }
        persisted.map_err(AddError::from)
    }

    /// Live node ids (their heartbeat deadline ahead).
    ///
    /// # Errors
    /// [`FleetError`].
    pub async fn live_nodes(&self) -> Result<Vec<String>, FleetError> {
        let (secs, micros): (u64, u64) = self.link.query("command", &redis::cmd("TIME")).await?;
        let now = secs.saturating_mul(1000).saturating_add(micros / 1000);
        self.link.query("command", redis::cmd("ZRANGEBYSCORE").arg(self.keys.nodes()).arg(now).arg("+inf")).await
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Send a command to `to` (a node id, or `*` for every node) and collect up to `expect`
    /// answers within a second.
    async fn command(&self, fields: &[(&str, String)], to: &str, expect: usize) -> Result<Vec<String>, FleetError> {
        let reply = self.keys.reply(&random_hex());
        let mut xadd = redis::cmd("XADD");
        xadd.arg(self.keys.commands()).arg("MAXLEN").arg("~").arg(COMMANDS_MAX_LEN).arg("*");
        xadd.arg("to").arg(to).arg("from").arg(&self.node).arg("r").arg(&reply);
        for (k, v) in fields {
            xadd.arg(*k).arg(v);
        }
        let _: String = self.link.query("command", &xadd).await?;
        let started = Instant::now();
        let mut count = 0usize;
        while count < expect && started.elapsed() < COMMAND_WAIT {
            tokio::time::sleep(Duration::from_millis(5)).await;
            count = self.link.query("command", redis::cmd("LLEN").arg(&reply)).await?;
        }
        let answers: Vec<String> = self.link.query("command", redis::cmd("LRANGE").arg(&reply).arg(0).arg(-1)).await?;
        let _: Result<i64, _> = self.link.query("command", redis::cmd("DEL").arg(&reply)).await;
        Ok(answers)
    }

    /// Ask node `owner` to close its connection `id`: `Some(found)`, or `None` when the node
    /// did not answer in time.
    ///
    /// # Errors
    /// [`FleetError`].
    pub async fn kick_remote(&self, owner: &str, id: u64) -> Result<Option<bool>, FleetError> {
        let answers = self.command(&[("t", "kick".into()), ("id", id.to_string())], owner, 1).await?;
        Ok(answers.first().map(|a| a == "1"))
    }

    /// A page of every other live node's connections (JSON answers, one per node), and the
    /// nodes that did not answer in time.
    ///
    /// # Errors
    /// [`FleetError`].
    pub async fn list_remote(&self, limit: usize, after: u64) -> Result<(Vec<String>, Vec<String>), FleetError> {
        let others: Vec<String> = self.live_nodes().await?.into_iter().filter(|n| *n != self.node).collect();
        if others.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let fields = [("t", "list".to_string()), ("lim", limit.to_string()), ("after", after.to_string())];
        let answers = self.command(&fields, "*", others.len()).await?;
        let answered: Vec<String> = answers
            .iter()
            .filter_map(|a| serde_json::from_str::<serde_json::Value>(a).ok())
            .filter_map(|v| v.get("node").and_then(|n| n.as_str()).map(str::to_string))
            .collect();
        let missing = others.into_iter().filter(|n| !answered.contains(n)).collect();
        Ok((answers, missing))
    }

    /// Answer a command.
    ///
    /// # Errors
    /// [`FleetError`].
    pub async fn answer(&self, reply: &str, body: String) -> Result<(), FleetError> {
        let mut p = redis::pipe();
        p.rpush(reply, body).ignore().pexpire(reply, i64::try_from(REPLY_TTL_MS).unwrap_or(i64::MAX)).ignore();
        self.link.pipe("command", &p).await
    }

    /// Follow the revocation and command streams until the process ends: revocations go into
    /// the cache (and so to the sessions), commands for this node to `commands`.
    /// `synced` is told once the first load of every marker is done.
    pub async fn follow(
        self: Arc<Self>,
        commands: mpsc::UnboundedSender<Command>,
        synced: tokio::sync::oneshot::Sender<()>,
    ) {
        let mut synced = Some(synced);
        let mut cursor = Cursor::default();
        let mut backoff = BACKOFF_MIN;
        loop {
            let conn = match self.link.open(BLOCK + self.link.op_timeout().max(Duration::from_millis(500))).await {
                Ok(c) => c,
                Err(e) => {
                    crate::metrics::fleet_redis_error("feed");
                    tracing::debug!(error = %e, "revocation feed: redis unreachable");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let mut conn = conn;
            if let Err(e) = self.sync(&mut conn, &mut cursor).await {
                crate::metrics::fleet_redis_error("resync");
                tracing::warn!(error = %e, "revocation feed: resync failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            backoff = BACKOFF_MIN;
            if let Some(tell) = synced.take() {
                let _ = tell.send(());
            }
            if let Err(e) = self.read(&mut conn, &mut cursor, &commands).await {
                crate::metrics::fleet_redis_error("feed");
                tracing::warn!(error = %e, "revocation feed: connection lost; resuming from the last entry read");
            }
            if commands.is_closed() {
                return;
            }
        }
    }

    /// After a (re)connect: notice a data loss or a trimmed cursor and reload; push what was
    /// not shared.
    async fn sync(&self, conn: &mut MultiplexedConnection, cursor: &mut Cursor) -> redis::RedisResult<()> {
        let started = Instant::now();
        let epoch_key = self.keys.epoch();
        let _: bool = conn.set_nx(&epoch_key, random_hex()).await?;
        let epoch: Option<String> = conn.get(&epoch_key).await?;
        let lost = cursor.epoch.is_some() && cursor.epoch != epoch;
        let log = self.keys.revocation_log();
        // The stream ends before the cursor: a failover to a replica that lagged, or a restored
        // copy; what the cursor saw beyond may be missing there too.
        let rewound = match (&cursor.revocations, lost) {
            (Some(last), false) => stream_pos(&last_id(conn, &log).await?) < stream_pos(last),
            _ => false,
        };
        if lost || rewound {
            tracing::warn!(
                event = if lost { "fleet_data_lost" } else { "fleet_feed_rewound" },
                "redis lost data (a new epoch, or a stream that ends before this node's cursor): putting back this node's revocations and reloading"
            );
            self.restore(conn).await?;
            cursor.revocations = None;
            if lost {
                cursor.commands = None;
            }
        }
        cursor.epoch = epoch;
        if let Some(last) = &cursor.revocations {
            let first: Vec<StreamId> = redis::cmd("XRANGE")
                .arg(&log)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async::<redis::streams::StreamRangeReply>(conn)
                .await?
                .ids;
            let trimmed = match first.first() {
                Some(e) => stream_pos(&e.id) > stream_pos(last),
                None => stream_pos(last) > (0, 0),
            };
            if trimmed {
                tracing::warn!(
                    event = "fleet_feed_trimmed",
                    "revocation feed cursor was trimmed away: reloading every revocation"
                );
                cursor.revocations = None;
            }
        }
        if cursor.revocations.is_none() {
            let tail = last_id(conn, &log).await?;
            let loaded = self.reload(conn).await?;
            tracing::info!(event = "fleet_revocations_loaded", markers = loaded, "revocations loaded from redis");
            cursor.revocations = Some(tail);
            crate::metrics::fleet_redis("resync", started.elapsed());
        }
        if cursor.commands.is_none() {
            cursor.commands = Some(last_id(conn, &self.keys.commands()).await?);
        }
        self.loaded.store(true, Ordering::Release);
        self.flush_unshared().await;
        Ok(())
    }

    /// Write back every revocation this node holds (after Redis lost data).
    async fn restore(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        for r in self.cache.entries(unix_now()) {
            let (kind, before) = match &r {
                Revocation::Token { .. } => ("jti", 0),
                Revocation::Subject { before, .. } => ("sub", *before),
            };
            let mut inv = scripts::RESTORE.prepare_invoke();
            inv.key(self.marker(&r)).arg(kind).arg(before).arg(super::ms(r.until()));
            if let Err(e) = inv.invoke_async::<i64>(conn).await {
                if e.is_io_error() || e.is_connection_dropped() {
                    return Err(e);
                }
                tracing::warn!(error = %e, "a revocation could not be put back in redis; it stays in force on this node");
            }
        }
        Ok(())
    }

    /// Share the revocations that could not be shared when they were made (in order; stops at
    /// the first failure, kept for the next try).
    async fn flush_unshared(&self) {
        let pending = std::mem::take(&mut *self.unshared.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for (i, r) in pending.iter().enumerate() {
            if self.share(r).await.is_err() {
                let mut back = self.unshared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let newer = std::mem::take(&mut *back);
                back.extend(pending[i..].iter().cloned());
                back.extend(newer);
                return;
            }
        }
        if !pending.is_empty() {
            tracing::info!(
                event = "fleet_revocations_shared",
                count = pending.len(),
                "revocations made while redis was unreachable are now shared"
            );
        }
    }

    fn has_unshared(&self) -> bool {
        !self.unshared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
    }

    /// Every marker into the cache; how many there were.
    async fn reload(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<usize> {
        let (jti_prefix, sub_prefix) = (self.keys.revoked_jti_prefix(), self.keys.revoked_sub_prefix());
        let pattern = self.keys.revoked_any();
        let mut scan_cursor: u64 = 0;
        let mut count = 0usize;
        let now = unix_now();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(scan_cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(conn)
                .await?;
            if !keys.is_empty() {
                let mut p = redis::pipe();
                for k in &keys {
                    p.get(k).cmd("PEXPIRETIME").arg(k);
                }
                let values: Vec<(Option<String>, i64)> = p.query_async(conn).await?;
                for (k, (value, expires)) in keys.iter().zip(values) {
                    let Some(value) = value else { continue };
                    let until = match expires {
                        -2 => continue,
                        -1 => now.saturating_add(DEFAULT_KEEP_SECONDS),
                        ms => u64::try_from(ms).unwrap_or(0) / 1000,
                    };
                    let r = if let Some(jti) = k.strip_prefix(&jti_prefix) {
                        Revocation::Token { jti: jti.to_string(), until }
                    } else if let Some(sub) = k.strip_prefix(&sub_prefix) {
                        let Ok(before) = value.parse() else { continue };
                        Revocation::Subject { sub: sub.to_string(), before, until }
                    } else {
                        continue;
                    };
                    count += 1;
                    self.cache.learn(r);
                }
            }
            if next == 0 {
                return Ok(count);
            }
            scan_cursor = next;
        }
    }

    async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        cursor: &mut Cursor,
        commands: &mpsc::UnboundedSender<Command>,
    ) -> redis::RedisResult<()> {
        let (log, ctl) = (self.keys.revocation_log(), self.keys.commands());
        let block_ms = u64::try_from(BLOCK.as_millis()).unwrap_or(1000);
        loop {
            if commands.is_closed() {
                return Ok(());
            }
            let rev_id = cursor.revocations.clone().unwrap_or_else(|| "0-0".into());
            let ctl_id = cursor.commands.clone().unwrap_or_else(|| "0-0".into());
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS")
                .arg(&log)
                .arg(&ctl)
                .arg(&rev_id)
                .arg(&ctl_id)
                .query_async(conn)
                .await?;
            if self.has_unshared() {
                self.flush_unshared().await;
            }
            let Some(reply) = reply else {
                crate::metrics::revocation_feed_lag(Duration::ZERO);
                continue;
            };
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
            for stream in reply.keys {
                for e in stream.ids {
                    if stream.key == log {
                        let lag = now_ms.saturating_sub(stream_pos(&e.id).0);
                        crate::metrics::revocation_feed_lag(Duration::from_millis(lag));
                        match entry_revocation(&e) {
                            Some(r) => {
                                self.cache.learn(r);
                            }
                            None => tracing::warn!(id = %e.id, "revocation feed: unreadable entry skipped"),
                        }
                        cursor.revocations = Some(e.id.clone());
                    } else {
                        self.command_entry(&e, commands, now_ms);
                        cursor.commands = Some(e.id.clone());
                    }
                }
            }
        }
    }

    fn command_entry(&self, e: &StreamId, commands: &mpsc::UnboundedSender<Command>, now_ms: u64) {
        // A command older than its sender waits for (read after a reconnect) is not run: its
        // sender has answered already (a kick of long ago must not close a connection now).
        let age = now_ms.saturating_sub(stream_pos(&e.id).0);
        if age > millis(COMMAND_WAIT).saturating_add(COMMAND_CLOCK_SKEW_MS) {
            return;
        }
        let to = field(e, "to").unwrap_or_default();
        let from = field(e, "from").unwrap_or_default();
        if (to != self.node && to != "*") || from == self.node {
            return;
        }
        let Some(reply) = field(e, "r") else { return };
        let command = match field(e, "t").as_deref() {
            Some("kick") => field(e, "id").and_then(|id| id.parse().ok()).map(|id| Command::Kick { id, reply }),
            Some("list") => {
                let limit = field(e, "lim").and_then(|l| l.parse().ok()).unwrap_or(100);
                let after = field(e, "after").and_then(|a| a.parse().ok()).unwrap_or(0);
                Some(Command::List { limit, after, reply })
            }
            _ => None,
        };
        if let Some(c) = command {
            let _ = commands.send(c);
        }
    }
}

/// The id of the last entry of `stream` (`0-0` when empty or absent).
async fn last_id(conn: &mut MultiplexedConnection, stream: &str) -> redis::RedisResult<String> {
    let last: redis::streams::StreamRangeReply =
        redis::cmd("XREVRANGE").arg(stream).arg("+").arg("-").arg("COUNT").arg(1).query_async(conn).await?;
    Ok(last.ids.first().map_or_else(|| "0-0".to_string(), |e| e.id.clone()))
}

impl RevocationStore for RedisRevocations {
    fn add(&self, r: Revocation) -> BoxFuture<'_, Result<(), AddError>> {
        Box::pin(self.add_shared(r))
    }

    fn check(&self, claims: &Claims, now: u64) -> bool {
        self.cache.revokes(claims, now)
    }

    fn generation(&self) -> u64 {
        self.cache.generation()
    }

    fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.cache.subscribe()
    }

    fn compact(&self, now: u64) -> std::io::Result<()> {
        self.cache.compact(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        assert!(stream_pos("1700000000000-1") > stream_pos("1700000000000-0"));
        assert!(stream_pos("1700000000001-0") > stream_pos("1700000000000-9"));
        assert_eq!(stream_pos("garbage"), (0, 0));
    }
}
