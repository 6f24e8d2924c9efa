//! The revoke and kick use cases (docs/operations.md), apart from the HTTP handler that asks
//! for them, so that anything else holding a revocation (a fleet feed reader, a CLI) calls the
//! same code; and the follower of the revocation feed that tells the sessions.
//!
//! One close path for revoked sessions: a revocation is only ever *added* to the store. The
//! feed follower ([`follow`]) tells each live session the revocation may cover; the session
//! checks its own token against the store and closes itself with 4003 (the same check it makes
//! after each client read).

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use crate::auth::unix_now;
use crate::error::SessionClose;
use crate::session::index::Sessions;
use crate::session::messages::RevocationsChanged;
use crate::store::admission::ConnId;
use crate::store::revocation::{AddError, Revocation, RevocationStore, DEFAULT_KEEP_SECONDS};

/// What an operator asks to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One token, by its `jti`.
    Token(String),
    /// Every token of a subject issued up to now.
    Subject(String),
}

/// Why a revocation was not made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RevokeError {
    /// The `jti` or `sub` is empty.
    #[error("give exactly one of \"jti\" or \"sub\" (non-empty)")]
    Empty,
    /// The given `exp` has passed.
    #[error("exp is in the past: nothing to revoke")]
    InThePast,
    /// The given `exp` is further away than any token may live.
    #[error("exp is more than 10 years away: give the revoked tokens' real exp")]
    TooFar,
}

/// The latest `exp` a revocation may be kept until (from now).
pub const MAX_KEEP_SECONDS: u64 = 10 * 366 * 24 * 3600;

/// A revocation made.
#[derive(Debug)]
pub struct Revoked {
    /// The entry in force.
    pub entry: Revocation,
    /// Live sessions of this node it covers (each closes with 4003).
    pub closed: usize,
    /// `Err` when the entry is in force here but could not be persisted or shared.
    pub stored: Result<(), AddError>,
}

/// Revoke `target` until `exp` (unix seconds; by default the latest `exp` among the live
/// sessions it covers, and for a subject at least [`DEFAULT_KEEP_SECONDS`]).
///
/// # Errors
/// An empty target or an `exp` in the past.
pub async fn revoke(
    store: &dyn RevocationStore,
    sessions: &Sessions,
    target: Target,
    exp: Option<u64>,
) -> Result<Revoked, RevokeError> {
    let now = unix_now();
    let default_until = now.saturating_add(DEFAULT_KEEP_SECONDS);
    let entry = match target {
        Target::Token(jti) if !jti.is_empty() => {
            let live_exp = sessions.latest_exp(|_, t| t.jti.as_deref() == Some(jti.as_str()));
            Revocation::Token { until: exp.or(live_exp).unwrap_or(default_until), jti }
        }
        Target::Subject(sub) if !sub.is_empty() => {
            let live_exp = sessions.latest_exp(|s, _| s == sub);
            let until = exp.unwrap_or_else(|| live_exp.unwrap_or(0).max(default_until));
            Revocation::Subject { sub, before: now, until }
        }
        _ => return Err(RevokeError::Empty),
    };
    if entry.until() < now {
        return Err(RevokeError::InThePast);
    }
    if entry.until() > now.saturating_add(MAX_KEEP_SECONDS) {
        return Err(RevokeError::TooFar);
    }
    let closed = sessions.count_matching(|sub, t| entry.covers(sub, t.jti.as_deref(), t.iat));
    let stored = store.add(entry.clone()).await;
    crate::metrics::revocation();
    match &entry {
        Revocation::Token { jti, until } => {
            tracing::warn!(event = "revocation_added", jti = %jti, until, closed, "token revoked");
        }
        Revocation::Subject { sub, before, until } => {
            tracing::warn!(event = "revocation_added", subject = %sub, before, until, closed, "subject revoked");
        }
    }
    Ok(Revoked { entry, closed, stored })
}

/// Close live session `id` with 4003; false when no such session is live.
pub fn kick(sessions: &Sessions, id: ConnId) -> bool {
    let found = sessions.close(id, SessionClose::Kicked);
    if found {
        tracing::info!(event = "operator_kick_requested", conn_id = id, "connection kick requested");
    }
    found
}

/// Follow the store's change feed on the current runtime: each new revocation is told to the
/// live sessions it may cover. A follower that fell behind tells every session (each checks
/// its own token).
pub fn follow(store: &dyn RevocationStore, sessions: Arc<Sessions>) {
    let mut feed = store.subscribe();
    actix_web::rt::spawn(async move {
        loop {
            match feed.recv().await {
                Ok(r) => sessions.notify_matching(RevocationsChanged, |sub, t| r.covers(sub, t.jti.as_deref(), t.iat)),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "revocation feed fell behind: every session checks its token");
                    sessions.notify_matching(RevocationsChanged, |_, _| true);
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;
    use crate::store::revocation::LocalRevocations;

    #[test]
    fn empty_targets_and_past_exps_are_refused_and_nothing_is_added() {
        let (store, sessions) = (LocalRevocations::in_memory(), Sessions::new());
        let run = |t: Target, exp| revoke(&store, &sessions, t, exp).now_or_never().expect("ready").map(|r| r.entry);
        assert_eq!(run(Target::Token(String::new()), None).err(), Some(RevokeError::Empty));
        assert_eq!(run(Target::Subject(String::new()), None).err(), Some(RevokeError::Empty));
        assert_eq!(run(Target::Token("j".into()), Some(1)).err(), Some(RevokeError::InThePast));
        assert_eq!(run(Target::Token("j".into()), Some(100_000_000_000_000)).err(), Some(RevokeError::TooFar));
        assert_eq!(run(Target::Subject("s".into()), Some(u64::MAX)).err(), Some(RevokeError::TooFar));
        assert!(store.is_empty());
        // Without an exp and no live session: kept for the default time.
        match run(Target::Token("j".into()), None) {
            Ok(Revocation::Token { jti, until }) => {
                assert_eq!(jti, "j");
                assert!(until >= unix_now() + DEFAULT_KEEP_SECONDS - 1);
            }
            other => panic!("{other:?}"),
        }
        match run(Target::Subject("bob".into()), None) {
            Ok(Revocation::Subject { sub, before, .. }) => {
                assert_eq!((sub.as_str(), before <= unix_now()), ("bob", true))
            }
            other => panic!("{other:?}"),
        }
    }
}
