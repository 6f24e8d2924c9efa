//! The public listener: [`accept`] (PROXY protocol, TLS, parser refusals counted),
//! [`handshake`] (the handshake policy of docs/protocol.md, in order) and [`ws`] (the upgrade
//! plumbing: the services, the refusal or the 101, and the session started). The admin listener is `control::admin`, never on
//! the public port.

pub mod accept;
pub mod handshake;
pub mod ws;
