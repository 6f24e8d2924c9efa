//! Fleet-wide one-time tickets: issued on one node, redeemed once on any.
//!
//! - Issue is one script ([`scripts::TICKET_ISSUE`]): the subject's outstanding set (a ZSET of
//!   ticket hashes scored by expiry, expired members dropped first) against the cap, the
//!   subject's GCRA issue rate, then `SET NX` of the record under the SHA-256 of the ticket
//!   (never the ticket) with the TTL plus [`GRACE`]; the ticket's expiry itself is in the
//!   value and judged on Redis time.
//! - Redeem is one script ([`scripts::TICKET_REDEEM`]): `GETDEL` (atomic: of any number of
//!   concurrent redeems on any nodes exactly one gets the record), the hash taken off the
//!   outstanding set, a "used" marker kept through the grace.
//! - Redis unreachable (timeout, error, breaker open): issue fails with
//!   [`IssueRefusal::Unavailable`] (503) and redeem with [`StoreDown`] (401), whatever
//!   `on_redis_down` says for admissions: a ticket is a credential and no node may accept
//!   one it cannot prove unused. A redeem whose answer is lost (a timeout after the script
//!   ran) has consumed the ticket: the client gets 401 and fetches another; never twice.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::link::Link;
use super::{scripts, Keys};
use crate::auth::ticket::{TicketKey, TicketRecord};
use crate::store::tickets::{IssueLimits, IssueRefusal, Redeemed, StoreDown, TicketStore, GRACE};

/// Tickets shared through Redis.
pub struct RedisTickets {
    link: Arc<Link>,
    keys: Keys,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// === impl RedisTickets ===

impl RedisTickets {
    /// A store over `link` with key names of `keys`.
    pub fn new(link: Arc<Link>, keys: Keys) -> Self {
        Self { link, keys }
    }

    async fn issue_shared(
        &self,
        key: TicketKey,
        record: &TicketRecord,
        limits: IssueLimits,
    ) -> Result<(), IssueRefusal> {
        let hash = key.hex();
        let json = serde_json::to_string(record).map_err(|e| IssueRefusal::Unavailable(e.to_string()))?;
        let per_minute = u64::from(limits.per_minute.max(1));
        let interval_us = 60_000_000 / per_minute;
        let mut inv = scripts::TICKET_ISSUE.prepare_invoke();
        inv.key(self.keys.ticket(&hash))
            .key(self.keys.tickets_outstanding(&record.sub))
            .key(self.keys.ticket_issues(&record.sub))
            .arg(json)
            .arg(millis(limits.ttl).max(1))
            .arg(millis(GRACE))
            .arg(limits.max_outstanding.max(1))
            .arg(interval_us)
            .arg(per_minute)
            .arg(&hash);
        let (verdict, n): (String, u64) =
            self.link.script("ticket_issue", &inv).await.map_err(|e| IssueRefusal::Unavailable(e.to_string()))?;
        match verdict.as_str() {
            "ok" => Ok(()),
            "outstanding" => Err(IssueRefusal::Outstanding),
            "rate" => Err(IssueRefusal::Rate { retry_after: Duration::from_millis(n.max(1)) }),
            other => Err(IssueRefusal::Unavailable(format!("ticket issue script answered {other:?}"))),
        }
    }

    async fn redeem_shared(&self, key: TicketKey) -> Result<Redeemed, StoreDown> {
        let hash = key.hex();
        let mut inv = scripts::TICKET_REDEEM.prepare_invoke();
        inv.key(self.keys.ticket(&hash)).key(self.keys.ticket_used(&hash)).arg(millis(GRACE)).arg(&hash);
        let (verdict, record): (String, String) =
            self.link.script("ticket_redeem", &inv).await.map_err(|e| StoreDown(e.to_string()))?;
        match verdict.as_str() {
            "ok" => serde_json::from_str(&record)
                .map(Redeemed::Valid)
                .map_err(|e| StoreDown(format!("unreadable ticket record: {e}"))),
            "expired" => Ok(Redeemed::Expired),
            "replayed" => Ok(Redeemed::Replayed),
            "unknown" => Ok(Redeemed::Unknown),
            other => Err(StoreDown(format!("ticket redeem script answered {other:?}"))),
        }
    }
}

impl TicketStore for RedisTickets {
    fn issue<'a>(
        &'a self,
        key: TicketKey,
        record: &'a TicketRecord,
        limits: IssueLimits,
    ) -> BoxFuture<'a, Result<(), IssueRefusal>> {
        Box::pin(self.issue_shared(key, record, limits))
    }

    fn redeem(&self, key: TicketKey) -> BoxFuture<'_, Result<Redeemed, StoreDown>> {
        Box::pin(self.redeem_shared(key))
    }
}
