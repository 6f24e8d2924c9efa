//! Types the actors and the handshake path share. (Actix messages, when an actor gains
//! one, live here too: requests imperative, notifications a noun plus a past-tense verb.)

use std::time::Duration;

use crate::error::Denied;

/// Monotonic connection id, unique per process.
pub type ConnId = u64;

/// An admission refusal, with the wait a client should observe (`Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub denied: Denied,
    /// Suggested wait before retrying.
    pub retry_after: Option<Duration>,
}
