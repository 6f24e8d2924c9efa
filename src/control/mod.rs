//! Control (docs/architecture.md): what changes the running gateway from outside the data path.
//!
//! - [`reload`]: config reload and the certificate file check.
//! - [`drain`]: draining; [`signals`]: SIGTERM/SIGINT (drain) and SIGHUP (reload).
//! - [`jwks`]: the JWKS URL fetcher.
//! - [`registry`]: the `Registry` actor (admission releases and upkeep, revocation log upkeep).
//! - [`revoke`]: the revoke and kick use cases, and the follower of the revocation feed.
//! - [`fleet`]: fleet mode: commands from other nodes, node-qualified connection ids.
//! - [`admin`]: the admin HTTP API (metrics, health, connections, revoke, kick, reload, drain).

pub mod admin;
pub mod drain;
pub mod fleet;
pub mod jwks;
pub mod registry;
pub mod reload;
pub mod revoke;
pub mod signals;
