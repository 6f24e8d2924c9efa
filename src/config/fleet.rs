//! `[fleet]`: several gateway nodes acting as one through Redis (docs/fleet.md). Absent = a
//! single node, which needs nothing but the binary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// Default `op_timeout_ms`: every Redis call is bounded by it.
pub const DEFAULT_OP_TIMEOUT_MS: u64 = 100;
/// Default `heartbeat_seconds`: a node silent for [`HEARTBEATS_TO_DEATH`] of them drops out.
pub const DEFAULT_HEARTBEAT_SECONDS: u64 = 1;
/// A node whose heartbeat is this many periods old no longer counts anywhere.
pub const HEARTBEATS_TO_DEATH: u32 = 5;
/// Default `reconcile_seconds`: how often a node rewrites its absolute counts.
pub const DEFAULT_RECONCILE_SECONDS: u64 = 15;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    /// `redis://host:port/db`, `rediss://` (TLS) or `redis+unix:///path`. Not with `sentinel`.
    redis_url: Option<String>,
    /// Find the primary through Redis Sentinel instead of `redis_url`.
    sentinel: Option<RawSentinel>,
    /// Environment variable holding the Redis password (never written in the file).
    redis_password_env: Option<String>,
    /// `rediss://` only: PEM file of the CA that signs the Redis server's certificate (else
    /// the system roots).
    redis_ca_file: Option<PathBuf>,
    /// This node's name; empty = the host name. A boot id is always appended, so a restarted
    /// node never inherits the counts of its previous life.
    #[serde(default)]
    node_id: String,
    #[serde(default = "default_prefix")]
    key_prefix: String,
    #[serde(default = "default_op_timeout")]
    op_timeout_ms: u64,
    #[serde(default = "default_heartbeat")]
    heartbeat_seconds: u64,
    #[serde(default = "default_reconcile")]
    reconcile_seconds: u64,
    #[serde(default)]
    on_redis_down: RedisDown,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawSentinel {
    /// The monitored primary's name (`sentinel monitor <master> ...`).
    master: String,
    /// Sentinel addresses, `host:port`.
    addrs: Vec<String>,
    /// Redis database number on the primary.
    #[serde(default)]
    db: i64,
}

fn default_prefix() -> String {
    "wsgate:".into()
}
fn default_op_timeout() -> u64 {
    DEFAULT_OP_TIMEOUT_MS
}
fn default_heartbeat() -> u64 {
    DEFAULT_HEARTBEAT_SECONDS
}
fn default_reconcile() -> u64 {
    DEFAULT_RECONCILE_SECONDS
}

/// What new handshakes get while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedisDown {
    /// Admitted against this node's own counts, with every cap and the handshake rate divided
    /// by the last known number of live nodes (at least 1 each).
    #[default]
    Local,
    /// Refused with 503 (`/readyz` answers 503 too).
    Refuse,
}

impl RedisTarget {
    /// Where, for a log line or `check-config`: scheme, host and path only (never a query).
    pub fn describe(&self) -> String {
        match self {
            Self::Url(url) => url.split_once('?').map_or(url.as_str(), |(u, _)| u).to_string(),
            Self::Sentinel { master, addrs, .. } => format!("sentinel master {master} via {}", addrs.join(", ")),
        }
    }
}

impl RedisDown {
    /// The config value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Refuse => "refuse",
        }
    }
}

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One address (`redis://`, `rediss://`, `redis+unix://`).
    Url(String),
    /// The primary Sentinel names.
    Sentinel {
        /// The primary's name.
        master: String,
        /// Sentinel addresses.
        addrs: Vec<String>,
        /// Database number.
        db: i64,
    },
}

/// The validated `[fleet]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// Where Redis is.
    pub target: RedisTarget,
    /// Environment variable with the password.
    pub password_env: Option<String>,
    /// CA for `rediss://`.
    pub ca_file: Option<PathBuf>,
    /// The node's name (the boot id is appended at start).
    pub node_name: String,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Bound of every Redis call.
    pub op_timeout: Duration,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Reconcile period.
    pub reconcile: Duration,
    /// What handshakes get while Redis is unreachable.
    pub on_redis_down: RedisDown,
}

fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(super) fn validate(raw: RawFleet, base: &Path) -> Result<Fleet, ConfigError> {
    let target = match (raw.redis_url, raw.sentinel) {
        (Some(url), None) => {
            let scheme = url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("redis" | "rediss" | "redis+unix" | "unix")) {
                return Err(ConfigError::invalid(
                    "fleet.redis_url",
                    "must start with redis://, rediss:// or redis+unix://",
                ));
            }
            let query = url.split_once('?').map_or("", |(_, q)| q);
            let credential_param = query
                .split('&')
                .filter_map(|kv| kv.split('=').next())
                .any(|k| matches!(k.to_ascii_lowercase().as_str(), "pass" | "password" | "user" | "username"));
            if url.contains('@') || credential_param {
                return Err(ConfigError::invalid(
                    "fleet.redis_url",
                    "no credentials in the URL (they end up in logs and process listings): use fleet.redis_password_env",
                ));
            }
            RedisTarget::Url(url)
        }
        (None, Some(s)) => {
            if s.master.is_empty() {
                return Err(ConfigError::invalid("fleet.sentinel.master", "must not be empty"));
            }
            if s.addrs.is_empty() {
                return Err(ConfigError::invalid("fleet.sentinel.addrs", "at least one sentinel host:port"));
            }
            for (i, a) in s.addrs.iter().enumerate() {
                let ok =
                    a.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !ok {
                    return Err(ConfigError::invalid(
                        format!("fleet.sentinel.addrs[{i}]"),
                        format!("{a:?} is not host:port"),
                    ));
                }
            }
            if !(0..=15).contains(&s.db) {
                return Err(ConfigError::invalid("fleet.sentinel.db", "must be 0..=15"));
            }
            RedisTarget::Sentinel { master: s.master, addrs: s.addrs, db: s.db }
        }
        (None, None) => return Err(ConfigError::invalid("fleet", "set redis_url or sentinel")),
        (Some(_), Some(_)) => return Err(ConfigError::invalid("fleet", "set redis_url or sentinel, not both")),
    };
    let tls = matches!(&target, RedisTarget::Url(u) if u.starts_with("rediss://"));
    if raw.redis_ca_file.is_some() && !tls {
        return Err(ConfigError::invalid("fleet.redis_ca_file", "only applies to a rediss:// redis_url"));
    }
    if raw.redis_password_env.as_deref() == Some("") {
        return Err(ConfigError::invalid("fleet.redis_password_env", "must name an environment variable"));
    }
    if !raw.node_id.is_empty() && !name_ok(&raw.node_id) {
        return Err(ConfigError::invalid("fleet.node_id", "1-64 characters of A-Z a-z 0-9 . _ -"));
    }
    // No glob characters: the prefix is part of the pattern that finds every revocation.
    let prefix_ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-');
    if raw.key_prefix.is_empty() || raw.key_prefix.len() > 64 || !raw.key_prefix.bytes().all(prefix_ok) {
        return Err(ConfigError::invalid("fleet.key_prefix", "1-64 characters of A-Z a-z 0-9 : . _ -"));
    }
    if !(1..=10_000).contains(&raw.op_timeout_ms) {
        return Err(ConfigError::invalid("fleet.op_timeout_ms", "must be 1..=10000"));
    }
    if !(1..=60).contains(&raw.heartbeat_seconds) {
        return Err(ConfigError::invalid("fleet.heartbeat_seconds", "must be 1..=60"));
    }
    if !(1..=3600).contains(&raw.reconcile_seconds) {
        return Err(ConfigError::invalid("fleet.reconcile_seconds", "must be 1..=3600"));
    }
    Ok(Fleet {
        target,
        password_env: raw.redis_password_env,
        ca_file: raw.redis_ca_file.map(|p| base.join(p)),
        node_name: if raw.node_id.is_empty() { host_name() } else { raw.node_id },
        key_prefix: raw.key_prefix,
        op_timeout: Duration::from_millis(raw.op_timeout_ms),
        heartbeat: Duration::from_secs(raw.heartbeat_seconds),
        reconcile: Duration::from_secs(raw.reconcile_seconds),
        on_redis_down: raw.on_redis_down,
    })
}

/// The host name, reduced to the characters a node id may hold.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .take(64)
        .collect();
    if name.is_empty() {
        "wsgate".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Fleet, ConfigError> {
        let raw: RawFleet = toml::from_str(toml).map_err(|e| ConfigError::invalid("fleet", e.to_string()))?;
        validate(raw, Path::new("/etc/wsgate"))
    }

    #[test]
    fn defaults_and_refusals() {
        let f = parse("redis_url = \"redis://127.0.0.1:6379/0\"").expect("valid");
        assert_eq!(f.op_timeout, Duration::from_millis(100));
        assert_eq!(f.on_redis_down, RedisDown::Local);
        assert_eq!(f.key_prefix, "wsgate:");
        assert!(name_ok(&f.node_name));
        for bad in [
            "",
            "redis_url = \"http://x\"",
            "redis_url = \"redis://user:pw@h:1\"",
            "redis_url = \"redis://h:1\"\nop_timeout_ms = 0",
            "redis_url = \"redis://h:1\"\nheartbeat_seconds = 0",
            "redis_url = \"redis://h:1\"\nnode_id = \"a b\"",
            "redis_url = \"redis://h:1\"\nkey_prefix = \"\"",
            "redis_url = \"redis://h:1\"\nkey_prefix = \"fleet[1]:\"",
            "redis_url = \"redis://h:1\"\nkey_prefix = \"a*\"",
            "redis_url = \"redis+unix:///r.sock?pass=secret\"",
            "redis_url = \"redis://h:1/0?Password=secret\"",
            "redis_url = \"redis://h:1\"\nredis_ca_file = \"ca.pem\"",
            "redis_url = \"redis://h:1\"\non_redis_down = \"open\"",
            "sentinel = { master = \"m\", addrs = [] }",
            "sentinel = { master = \"m\", addrs = [\"h\"] }",
            "redis_url = \"redis://h:1\"\nsentinel = { master = \"m\", addrs = [\"h:1\"] }",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        let s = parse("sentinel = { master = \"m\", addrs = [\"127.0.0.1:26379\"] }").expect("sentinel");
        assert!(matches!(s.target, RedisTarget::Sentinel { .. }));
        let t = parse("redis_url = \"rediss://h:6380\"\nredis_ca_file = \"ca.pem\"").expect("tls");
        assert_eq!(t.ca_file.as_deref(), Some(Path::new("/etc/wsgate/ca.pem")));
    }
}
