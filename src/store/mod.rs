//! Stores (docs/architecture.md): what admission and revocation decide against.
//!
//! - [`admission`]: connection caps and handshake rates, and the [`admission::Lease`] a
//!   session holds.
//! - [`revocation`]: revoked tokens and subjects, persisted in `server.state_dir`.

pub mod admission;
pub mod revocation;
