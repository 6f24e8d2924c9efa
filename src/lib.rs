//! wsgate: an actor-based WebSocket security gateway.
//!
//! Component map (docs/architecture.md):
//! - [`config`]: the TOML config, parsed and validated into [`config::Config`].
//! - [`error`]: [`Error`] and [`error::Denied`] (refusals with status, close code, reason).
//! - [`auth`]: JWT verification against configured keys, claims, dev-token minting.
//! - [`policy`]: pure decisions: origin, token sources, token bucket, framing rules, message checks.
//! - [`actors`]: the `WsSession` connection actor (with its socket relay), admission and the
//!   `Registry` actor.
//! - [`upstream`]: dialing the backend WebSocket.
//! - [`wire`]: the RFC 6455 frame codec of the relay.
//! - [`log_text`]: client-supplied text bounded and escaped for log lines.
//! - [`http`]: the public WebSocket entry (handshake policy, upgrade) and the admin listener.
//! - [`metrics`]: every metric name and the recording helpers.
//! - [`tls`]: PEM files to a rustls server config.
//! - [`echo`]: the echo backend of `wsgate demo` (and tests).
//! - [`reload`]: config reload and the certificate file check; [`drain`]: draining;
//!   [`signals`]: SIGTERM/SIGINT (drain) and SIGHUP (reload).
//! - [`app`]: wiring: shared state, servers, the main loop.

#![forbid(unsafe_code)]

pub mod actors;
pub mod app;
pub mod auth;
pub mod config;
pub mod drain;
pub mod echo;
pub mod error;
pub mod http;
pub mod log_text;
pub mod metrics;
pub mod policy;
pub mod reload;
pub mod signals;
pub mod tls;
pub mod upstream;
pub mod wire;

pub use error::{Error, Result};
