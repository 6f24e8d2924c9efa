//! Every actix message the actors exchange. Requests are imperative (`Admit`, `Acquire`,
//! `Release`); notifications are a noun plus a past-tense verb (`UpstreamEnded`).

use std::net::IpAddr;
use std::time::Duration;

use actix::Message;
use actix_http::ws::Frame;

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

/// A frame read from the upstream, for the session to relay to its client.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct UpstreamFrame {
    /// The frame.
    pub frame: Frame,
    /// Bytes it counted against the outbound buffer.
    pub size: usize,
}

/// Why the upstream side ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamEnd {
    /// The upstream stream ended without a close frame, or failed (close 1014).
    Lost,
    /// The upstream sent a frame over `max_message_bytes` (close 1009).
    TooBig,
    /// The client does not read: the outbound buffer passed its limit (close 4008).
    SlowConsumer,
}

/// The upstream reader stopped; the session closes its client accordingly.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct UpstreamEnded {
    /// Why.
    pub end: UpstreamEnd,
}

/// Ask the upstream reader to stop (its session is going away).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopReading;
