//! wsgate: an actor-based WebSocket security gateway.
//!
//! Component map (docs/architecture.md):
//! - [`config`]: the TOML config, parsed and validated into [`config::Config`].
//! - [`error`]: [`Error`] (the process), [`error::HandshakeRefusal`] (an HTTP status before any
//!   101) and [`error::SessionClose`] (a close code after it).
//! - [`auth`]: JWT verification against configured keys, claims, dev-token minting.
//! - [`policy`]: pure decisions: origin, token sources, token bucket, framing rules, message checks.
//! - [`state`]: the shared state, as narrow handles: the policy in force, the drain signal,
//!   the stop handle.
//! - [`store`]: admission (caps, handshake rates, leases) and revocations.
//! - [`session`]: the `WsSession` connection actor, its pump, its socket relay and the index of
//!   live sessions.
//! - [`upstream`]: dialing the backend WebSocket.
//! - [`wire`]: the RFC 6455 frame codec of the relay.
//! - [`log_text`]: client-supplied text bounded and escaped for log lines.
//! - [`http`]: the public listener: accept (PROXY, TLS) and the WebSocket entry (handshake
//!   policy, upgrade).
//! - [`metrics`]: every metric name and the recording helpers.
//! - [`tls`]: PEM files to a rustls server config.
//! - [`echo`]: the echo backend of `wsgate demo` (and tests).
//! - [`control`]: reload, drain, signals, the JWKS fetcher, the `Registry` actor, the admin API.
//! - [`app`]: wiring: builds the parts, hands each its handles, runs the servers.

#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod config;
pub mod control;
pub mod echo;
pub mod error;
pub mod http;
pub mod log_text;
pub mod metrics;
pub mod policy;
pub mod session;
pub mod state;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod wire;

pub use error::{Error, Result};
