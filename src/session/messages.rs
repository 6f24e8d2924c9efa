//! The messages a session's actor receives (requests imperative, notifications a noun plus a
//! past-tense verb).

use crate::error::SessionClose;

/// Request to a session: close the client with `denied`'s code (revocation and kick: 4003,
/// drain: 1001); the upstream gets 1001.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct CloseSession {
    /// Why (its close code and reason label).
    pub denied: SessionClose,
}

/// Notification to a session: a reload put a new config in force. The session takes its
/// route's new rules (message types, schemas, limits) from the gateway's policy in force;
/// a route removed by the reload keeps its old rules until the connection ends. A session
/// that reads from its client before this arrives has taken the new rules already (it
/// compares the policy generation after each client read); this reaches the idle ones, whose
/// timers may change.
#[derive(Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct ConfigReloaded;

/// Notification to a session: a revocation that may cover its token was put in force. The
/// session checks its token against the revocation store and, when covered, closes with 4003
/// (the same check it makes after each client read: one close path for revoked sessions).
#[derive(Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct RevocationsChanged;
