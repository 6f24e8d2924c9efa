//! The actors: one [`session::WsSession`] per client connection (its two sockets driven by
//! [`relay`]), one [`registry::Registry`] for admission and bookkeeping, and the [`index`] of live
//! sessions the admin API works on. Every message
//! they exchange is in [`messages`].

pub mod index;
pub mod messages;
pub mod registry;
pub mod relay;
pub mod session;
