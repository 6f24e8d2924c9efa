//! The public listener: [`accept`] (PROXY protocol, TLS, parser refusals counted),
//! [`handshake`] (the handshake policy of docs/protocol.md, in order; a ticket's redemption in
//! `redeem`), `refusal` (a refusal's answer and log line), `ticket` (the ticket endpoint,
//! `POST /v1/ws-ticket`) and [`ws`] (the upgrade plumbing: the services, the refusal or the
//! 101, and the session started). The admin listener is `control::admin`, never on the public
//! port.

pub mod accept;
pub mod handshake;
mod redeem;
mod refusal;
mod ticket;
pub mod ws;
