//! Fleet mode (docs/fleet.md): the stores of several gateway nodes shared through Redis.
//!
//! - [`link`]: the connection (direct or through Sentinel), op timeouts, the circuit breaker.
//! - [`scripts`]: the Lua scripts; every one reads the time from Redis `TIME`, never a node's
//!   clock.
//! - [`admission`]: [`admission::RedisAdmission`], fleet-wide caps and handshake rate, one
//!   round trip per handshake; heartbeats, releases retried, reconcile of absolute counts.
//! - [`revocation`]: [`revocation::RedisRevocations`], markers and the revocation stream, a
//!   local cache that every check reads; the feed reader, which also carries kick and list
//!   commands between nodes ([`revocation::Command`]).
//! - [`tickets`]: [`tickets::RedisTickets`], one-time tickets issued on one node and redeemed
//!   once on any (`SET NX` at issue, `GETDEL` at redeem, keyed by the ticket's SHA-256).

pub mod admission;
pub mod link;
pub mod revocation;
pub mod scripts;
pub mod tickets;

use std::net::IpAddr;

/// Key names under the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

// === impl Keys ===

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push_str(p);
        }
        k
    }

    /// ZSET node id → heartbeat deadline (ms, Redis time).
    pub fn nodes(&self) -> String {
        self.key(&["nodes"])
    }
    /// HASH node id → live connections (all of the node's).
    pub fn conns_all(&self) -> String {
        self.key(&["cc:all"])
    }
    /// HASH node id → live connections of one per-IP key.
    pub fn conns_ip(&self, ip: IpAddr) -> String {
        self.key(&["cc:ip:", &ip.to_string()])
    }
    /// HASH node id → live connections of one subject.
    pub fn conns_sub(&self, sub: &str) -> String {
        self.key(&["cc:sub:", sub])
    }
    /// The GCRA theoretical arrival time of one per-IP key.
    pub fn handshakes(&self, ip: IpAddr) -> String {
        self.key(&["hs:ip:", &ip.to_string()])
    }
    /// Marker of a revoked `jti` (expires with the token).
    pub fn revoked_jti(&self, jti: &str) -> String {
        self.key(&["rev:jti:", jti])
    }
    /// Marker of a revoked subject: its value is the revocation time (unix seconds).
    pub fn revoked_sub(&self, sub: &str) -> String {
        self.key(&["rev:sub:", sub])
    }
    /// The pattern matching every marker.
    pub fn revoked_any(&self) -> String {
        self.key(&["rev:*:*"])
    }
    /// The prefix of a jti marker.
    pub fn revoked_jti_prefix(&self) -> String {
        self.key(&["rev:jti:"])
    }
    /// The prefix of a subject marker.
    pub fn revoked_sub_prefix(&self) -> String {
        self.key(&["rev:sub:"])
    }
    /// The revocation stream.
    pub fn revocation_log(&self) -> String {
        self.key(&["rev:log"])
    }
    /// The command stream (kick, list) between nodes.
    pub fn commands(&self) -> String {
        self.key(&["ctl"])
    }
    /// Where the answers to command `id` are pushed.
    pub fn reply(&self, id: &str) -> String {
        self.key(&["reply:", id])
    }
    /// Set once per Redis data set: a changed or missing epoch means Redis lost its data.
    pub fn epoch(&self) -> String {
        self.key(&["epoch"])
    }
    /// A live ticket's record, by the SHA-256 of the ticket (hex).
    pub fn ticket(&self, hash: &str) -> String {
        self.key(&["tkt:", hash])
    }
    /// A redeemed (or late) ticket, remembered through its grace (replays told apart).
    pub fn ticket_used(&self, hash: &str) -> String {
        self.key(&["tkt:used:", hash])
    }
    /// ZSET of one subject's outstanding tickets (hash → expiry ms, Redis time).
    pub fn tickets_outstanding(&self, sub: &str) -> String {
        self.key(&["tkt:out:", sub])
    }
    /// The GCRA theoretical arrival time of one subject's ticket issues.
    pub fn ticket_issues(&self, sub: &str) -> String {
        self.key(&["tkt:rate:", sub])
    }
}

/// A random 64-bit value as 16 hex digits (boot ids, epochs, reply ids).
pub fn random_hex() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: the time and the pid still tell a restarted node apart.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        #[allow(clippy::cast_possible_truncation)]
        let v = (t as u64) ^ u64::from(std::process::id()).rotate_left(40);
        b = v.to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// This process's node id: the configured (or host) name and a boot id, so a restarted node
/// never inherits the counts of its previous life.
pub fn node_id(name: &str) -> String {
    format!("{name}.{}", &random_hex()[..8])
}

/// Milliseconds of a Unix time in seconds.
pub fn ms(secs: u64) -> u64 {
    secs.saturating_mul(1000)
}
