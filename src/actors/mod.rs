//! The actors: one [`session::WsSession`] per client connection (its two sockets driven by
//! [`relay`]), and one [`registry::Registry`] for admission and bookkeeping. Every message
//! they exchange is in [`messages`].

pub mod messages;
pub mod registry;
pub mod relay;
pub mod session;
