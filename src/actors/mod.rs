//! The actors: one [`session::WsSession`] per client connection, one [`registry::Registry`]
//! for admission and bookkeeping, and one [`crate::upstream::UpstreamReader`] per upstream
//! socket. Every message they exchange is in [`messages`].

pub mod messages;
pub mod registry;
pub mod session;
