//! Pure decisions, no actix types: each check is a plain function or struct with unit tests,
//! used by the handshake handler and the session actor.
//!
//! - [`origin`]: the `Origin` allowlist (exact and `https://*.domain` entries).
//! - [`token_source`]: where a token is found (header, subprotocol, cookie, query).
//! - [`ratelimit`]: the token bucket (time passed in).
//! - [`validate`]: the per-message pipeline after the size check: JSON, envelope, type, scope, schema.
//! - [`framing`]: a frame-header guard that refuses oversized frames before they are buffered.
//! - [`sensitive`]: the sensitive-data guard's detection engine (cards, IBANs, keys, JWTs, secret fields, custom patterns; redaction).

pub mod client_ip;
pub mod framing;
pub mod origin;
pub mod proxy_protocol;
pub mod ratelimit;
pub mod sensitive;
pub mod token_source;
pub mod validate;
