//! The index of live sessions (docs/architecture.md): what the admin API lists, revokes, kicks and
//! drains. Sessions insert themselves when they start and remove themselves when they stop;
//! the map is a `DashMap` so connects and disconnects on different workers do not contend on
//! one lock, and nothing on the per-frame path touches it (a session publishes its message
//! counts to its own [`LiveStats`] once per wake-up).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::Addr;
use dashmap::DashMap;
use serde::Serialize;

use super::messages::CloseSession;
use super::WsSession;
use crate::auth::Claims;
use crate::error::SessionClose;
use crate::store::admission::ConnId;

/// The token facts of a live session that revocation matches on (they change on refresh).
#[derive(Debug, Clone, Default)]
pub struct TokenFacts {
    /// `jti` of the token in force.
    pub jti: Option<String>,
    /// `iat` of the token in force.
    pub iat: Option<u64>,
    /// `exp` of the token in force.
    pub exp: u64,
}

impl From<&Claims> for TokenFacts {
    fn from(c: &Claims) -> Self {
        Self { jti: c.jti.clone(), iat: c.iat, exp: c.exp }
    }
}

/// Figures a session publishes about itself.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Client messages forwarded upstream.
    pub messages_in: AtomicU64,
    /// Upstream messages forwarded to the client.
    pub messages_out: AtomicU64,
    /// The token in force.
    pub token: Mutex<TokenFacts>,
}

impl LiveStats {
    /// The token facts now.
    pub fn token(&self) -> TokenFacts {
        self.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A refresh put a new token in force.
    pub fn set_token(&self, claims: &Claims) {
        *self.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = TokenFacts::from(claims);
    }
}

/// One live session as the index knows it.
pub struct LiveSession {
    /// Where to send [`CloseSession`].
    pub addr: Addr<WsSession>,
    /// Route path.
    pub route: String,
    /// Token subject.
    pub subject: String,
    /// Client IP.
    pub client_ip: IpAddr,
    /// Unix seconds when the session opened.
    pub opened: u64,
    /// What the session publishes.
    pub stats: Arc<LiveStats>,
}

/// One row of `GET /admin/connections`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Connection id (also sent to the client as `x-wsgate-connection-id`).
    pub id: ConnId,
    /// Route path.
    pub route: String,
    /// Token subject.
    pub subject: String,
    /// Client IP.
    pub client_ip: String,
    /// Seconds since the handshake.
    pub age_seconds: u64,
    /// Client messages forwarded.
    pub messages_in: u64,
    /// Upstream messages forwarded.
    pub messages_out: u64,
    /// `exp` of the token in force (unix seconds).
    pub expires_at: u64,
}

/// The index.
#[derive(Default)]
pub struct Sessions {
    map: DashMap<ConnId, LiveSession>,
}

// === impl Sessions ===

impl Sessions {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// A session started.
    pub fn insert(&self, id: ConnId, live: LiveSession) {
        self.map.insert(id, live);
    }

    /// A session stopped.
    pub fn remove(&self, id: ConnId) {
        self.map.remove(&id);
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Up to `limit` sessions with ids above `after`, in id order, and the id to continue
    /// after when more remain.
    pub fn page(&self, after: ConnId, limit: usize, now: u64) -> (Vec<ConnectionInfo>, Option<ConnId>) {
        let mut ids: Vec<ConnId> = self.map.iter().map(|e| *e.key()).filter(|id| *id > after).collect();
        ids.sort_unstable();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let rows: Vec<ConnectionInfo> = ids
            .iter()
            .filter_map(|id| {
                let e = self.map.get(id)?;
                Some(ConnectionInfo {
                    id: *id,
                    route: e.route.clone(),
                    subject: e.subject.clone(),
                    client_ip: e.client_ip.to_string(),
                    age_seconds: now.saturating_sub(e.opened),
                    messages_in: e.stats.messages_in.load(Ordering::Relaxed),
                    messages_out: e.stats.messages_out.load(Ordering::Relaxed),
                    expires_at: e.stats.token().exp,
                })
            })
            .collect();
        let next = if more { ids.last().copied() } else { None };
        (rows, next)
    }

    /// Ask session `id` to close with `denied`; false when no such session is live.
    pub fn close(&self, id: ConnId, denied: SessionClose) -> bool {
        match self.map.get(&id) {
            Some(e) => {
                e.addr.do_send(CloseSession { denied });
                true
            }
            None => false,
        }
    }

    /// The latest `exp` among sessions whose subject and token facts satisfy `matches`.
    pub fn latest_exp(&self, matches: impl Fn(&str, &TokenFacts) -> bool) -> Option<u64> {
        self.map
            .iter()
            .filter_map(|e| {
                let token = e.stats.token();
                matches(&e.subject, &token).then_some(token.exp)
            })
            .max()
    }

    /// How many sessions' subject and token facts satisfy `matches`.
    pub fn count_matching(&self, matches: impl Fn(&str, &TokenFacts) -> bool) -> usize {
        self.map.iter().filter(|e| matches(&e.subject, &e.stats.token())).count()
    }

    /// Send `msg` to every session whose subject and token facts satisfy `matches`.
    pub fn notify_matching<M>(&self, msg: M, matches: impl Fn(&str, &TokenFacts) -> bool)
    where
        M: actix::Message<Result = ()> + Clone + Send + 'static,
        WsSession: actix::Handler<M>,
    {
        for e in self.map.iter() {
            if matches(&e.subject, &e.stats.token()) {
                e.addr.do_send(msg.clone());
            }
        }
    }

    /// The ids of every live session (for draining).
    pub fn ids(&self) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self.map.iter().map(|e| *e.key()).collect();
        ids.sort_unstable();
        ids
    }

    /// Call `f` with every live session's address (a config reload tells each one).
    pub fn each(&self, f: impl Fn(&Addr<WsSession>)) {
        for e in self.map.iter() {
            f(&e.addr);
        }
    }
}
