//! Control (docs/architecture.md): what changes the running gateway from outside the data path.
//!
//! - [`reload`]: config reload and the certificate file check.
//! - [`drain`]: draining; [`signals`]: SIGTERM/SIGINT (drain) and SIGHUP (reload).
//! - [`jwks`]: the JWKS URL fetcher.
//! - [`registry`]: the `Registry` actor (admission and revocation upkeep).
//! - [`admin`]: the admin HTTP API (metrics, health, connections, revoke, kick, reload, drain).

pub mod admin;
pub mod drain;
pub mod jwks;
pub mod registry;
pub mod reload;
pub mod signals;
