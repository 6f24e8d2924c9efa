//! The public listener: [`accept`] (PROXY protocol, TLS, parser refusals counted) and [`ws`]
//! (the handshake policy, then the session). The admin listener is `control::admin`, never on
//! the public port.

pub mod accept;
pub mod ws;
