//! Every actix message the actors exchange. Requests are imperative (`Admit`, `Acquire`,
//! `Release`); notifications are a noun plus a past-tense verb.

use std::net::IpAddr;
use std::time::Duration;

use actix::Message;

use crate::error::Denied;

/// Monotonic connection id, unique per process.
pub type ConnId = u64;

/// A refusal from the registry, with the wait a client should observe (`Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub denied: Denied,
    /// Suggested wait before retrying.
    pub retry_after: Option<Duration>,
}

/// Early admission of a handshake from `ip`: global cap and per-IP handshake rate
/// (DESIGN.md §1 checks 1–2). Takes a handshake token from the IP's bucket.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Refusal>")]
pub struct Admit {
    /// Client IP.
    pub ip: IpAddr,
}

/// Take a live-connection slot for `ip` and `subject` (check 8); refused at the per-IP,
/// per-subject or global cap. The returned id identifies the lease to release.
#[derive(Debug, Message)]
#[rtype(result = "Result<ConnId, Refusal>")]
pub struct Acquire {
    /// Client IP.
    pub ip: IpAddr,
    /// Token subject.
    pub subject: String,
}

/// Give back the slot taken by [`Acquire`]. Sent with `do_send`, which queues even when the
/// mailbox is full, so counts cannot leak.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Release {
    /// The lease id.
    pub id: ConnId,
    /// Client IP.
    pub ip: IpAddr,
    /// Token subject.
    pub subject: String,
}
