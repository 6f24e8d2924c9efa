//! Tokens: what a verified token says ([`Claims`]) and why one is refused ([`AuthError`]).
//!
//! - [`keys`]: the configured verification keys ([`keys::KeySet`]), each bound to one algorithm.
//! - [`jwt`]: `verify(token, &KeySet, &Settings, now)` and `mint` for `wsgate token`/`demo`.
//! - [`ticket`]: one-time connection tickets: syntax, store key, the record of the token.

pub mod jwt;
pub mod keys;
pub mod ticket;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The latest NumericDate accepted (9999-12-31T23:59:59Z). Later values, like `1e20` or
/// 2^64, cannot be turned into a deadline and are refused as invalid, never saturated.
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// What the gateway uses of a verified token (RFC 7519 §4.1 claims plus scopes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`: required; the identity forwarded upstream and counted per subject.
    pub sub: String,
    /// `exp`: required, seconds since the epoch.
    pub exp: u64,
    /// `iat`, if present (subject revocations refuse tokens issued at or before them).
    pub iat: Option<u64>,
    /// `jti`, if present (logged; the handle of a token revocation).
    pub jti: Option<String>,
    /// Scopes from the configured scope claim.
    pub scopes: Vec<String>,
}

// === impl Claims ===

impl Claims {
    /// The connection's deadline: `exp` plus the leeway that admitted the token.
    /// `exp` is at most [`MAX_NUMERIC_DATE`] for a verified token; an unrepresentable sum
    /// saturates at that date instead of overflowing.
    pub fn deadline(&self, leeway: Duration) -> SystemTime {
        let latest = UNIX_EPOCH + Duration::from_secs(MAX_NUMERIC_DATE);
        UNIX_EPOCH
            .checked_add(Duration::from_secs(self.exp.min(MAX_NUMERIC_DATE)))
            .and_then(|t| t.checked_add(leeway))
            .unwrap_or(latest)
    }

    /// Time left until the deadline at `now` (zero when already past).
    pub fn time_left(&self, leeway: Duration, now: SystemTime) -> Duration {
        self.deadline(leeway).duration_since(now).unwrap_or(Duration::ZERO)
    }

    /// True when the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a token or key was refused. Clients only ever learn expired versus invalid; the
/// `&'static str` detail goes to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `exp` (plus leeway) has passed.
    #[error("token expired")]
    Expired,
    /// Signature, algorithm, kid, issuer, audience, nbf or claim shape is wrong.
    #[error("invalid token ({0})")]
    Invalid(&'static str),
    /// A configured key could not be loaded.
    #[error("{key}: {reason}")]
    KeyLoad {
        /// Config path of the key (`auth.keys[0]`).
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A token could not be made.
    #[error("cannot mint token: {0}")]
    Mint(String),
}
