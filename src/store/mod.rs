//! Stores (docs/architecture.md): what admission and revocation decide against.
//!
//! - [`admission`]: connection caps and handshake rates, and the [`admission::Lease`] a
//!   session holds.
//! - [`revocation`]: revoked tokens and subjects, persisted in `server.state_dir`.
//! - [`tickets`]: one-time connection tickets (issued, redeemed once, reaped).
//! - [`fleet`]: all three shared by several nodes through Redis (`[fleet]`).

pub mod admission;
pub mod fleet;
pub mod revocation;
pub mod tickets;
