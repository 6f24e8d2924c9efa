//! HTTP surfaces: [`ws`] the public WebSocket entry (handshake policy, then the session), and
//! [`admin`] the separate admin listener (metrics, health). Admin is never on the public port.

pub mod accept;
pub mod admin;
pub mod ws;
