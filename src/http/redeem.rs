//! The token stage of a handshake that presents a one-time ticket (`ticket` token source):
//! the ticket's syntax, its redemption (once, atomically, in the ticket store), its binding
//! (route, origin, and the client address when bound), then the original token's claims
//! checked as a JWT's are (expiry with the leeway, revocation). The session then runs on those
//! claims.
//!
//! Every failure is the same 401 as an invalid token: a client learns nothing about whether
//! a ticket was unknown, expired, used, issued elsewhere or its token revoked; the log and
//! `wsgate_tickets_total{result}` tell the operator. A ticket found is consumed whatever
//! follows: a mismatched one cannot be tried again on the right route.
//!
//! Owns: this stage's order and its counting. Does not own: the store (`store::tickets`),
//! the syntax and binding (`auth::ticket`), the stages around it (`handshake.rs`).

use std::time::SystemTime;

use super::refusal::{Attempt, Refused};
use crate::auth::ticket::{self, TicketRecord};
use crate::auth::{unix_now, Claims};
use crate::config::{AuthConfig, Route};
use crate::error::HandshakeRefusal;
use crate::log_text::log_text;
use crate::metrics as m;
use crate::store::revocation::RevocationStore;
use crate::store::tickets::{Redeemed, TicketStore};

/// Count `result` and refuse like an invalid token, with `detail` for the log.
fn refuse(result: &'static str, denied: HandshakeRefusal, detail: &'static str) -> Refused {
    m::ticket(result);
    Refused::new(denied, detail)
}

/// Redeem `presented` for a handshake on `route` (its origin and client address in
/// `attempt`); the claims of the token it was issued on.
///
/// # Errors
/// A 401 [`Refused`] (`InvalidToken`, or `Revoked`, answered alike) for every failure.
pub(crate) async fn redeem(
    tickets: &dyn TicketStore,
    revocations: &dyn RevocationStore,
    auth: &AuthConfig,
    presented: &str,
    route: &Route,
    attempt: &mut Attempt<'_>,
) -> Result<Claims, Refused> {
    // Strict syntax first: a malformed value never reaches the store.
    let Some(key) = ticket::parse(presented) else {
        return Err(refuse("refused", HandshakeRefusal::InvalidToken, "ticket_malformed"));
    };
    let record = match tickets.redeem(key).await {
        Ok(Redeemed::Valid(record)) => record,
        Ok(Redeemed::Expired) => return Err(refuse("expired", HandshakeRefusal::InvalidToken, "ticket_expired")),
        Ok(Redeemed::Replayed) => return Err(refuse("replayed", HandshakeRefusal::InvalidToken, "ticket_replayed")),
        Ok(Redeemed::Unknown) => return Err(refuse("refused", HandshakeRefusal::InvalidToken, "ticket_unknown")),
        Err(e) => {
            // Fail closed: a ticket the store cannot vouch for is no credential.
            tracing::warn!(event = "ticket_store_unavailable", error = %e, "a ticket could not be redeemed");
            return Err(refuse("refused", HandshakeRefusal::InvalidToken, "ticket_store_unavailable"));
        }
    };
    attempt.subject = Some(record.sub.clone());
    attempt.jti.clone_from(&record.jti);
    if let Err(mismatch) = record.check_binding(&route.path, attempt.origin, attempt.ip) {
        return Err(refuse("mismatched", HandshakeRefusal::InvalidToken, mismatch.label()));
    }
    let claims = record.claims();
    // The token the ticket was issued on must still be good: its expiry (with the leeway that
    // admitted it) and no revocation since (a subject revoked after the issue covers the
    // ticket through the token's `iat`).
    if claims.time_left(auth.leeway, SystemTime::now()).is_zero() {
        return Err(refuse("refused", HandshakeRefusal::InvalidToken, "ticket_token_expired"));
    }
    if revocations.check(&claims, unix_now()) {
        return Err(refuse("refused", HandshakeRefusal::Revoked, "ticket_token_revoked"));
    }
    m::ticket("redeemed");
    log_redeemed(&record, attempt);
    Ok(claims)
}

fn log_redeemed(record: &TicketRecord, attempt: &Attempt<'_>) {
    tracing::info!(
        event = "ticket_redeemed",
        route = %record.route,
        client_ip = %attempt.ip,
        origin = &*attempt.origin_log(),
        subject = &*log_text(record.sub.as_bytes()),
        jti = &*log_text(record.jti.as_deref().unwrap_or("").as_bytes()),
        age_seconds = unix_now().saturating_sub(record.issued_at),
    );
}
