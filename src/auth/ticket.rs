//! One-time connection tickets (docs/protocol.md, "Browser tickets"): what a ticket looks like,
//! how it is checked before any store sees it, the key it is stored under, and the record
//! that stands in for the token it was issued on.
//!
//! - A ticket is `wst_` + 32 random bytes in base64url without padding (43 characters), 47
//!   bytes in all. [`parse`] accepts exactly that and nothing else (another prefix or length,
//!   a character outside the alphabet, non-canonical trailing bits, percent-encoding), so a
//!   malformed ticket never costs a store call.
//! - The store key is the SHA-256 of the ticket ([`TicketKey`]): the ticket itself is never
//!   stored, so a copy of the store (a Redis dump) redeems nothing.
//! - The [`TicketRecord`] holds the verified claims of the token the ticket was issued on and
//!   what the ticket is bound to: the route, the `Origin` of the issuing request (none when it
//!   had none) and, with `tickets.bind_client_ip`, the client's address key.
//!
//! Owns: the ticket syntax, the key derivation, the record and its binding check. Does not
//! own: storing, the once-only redemption (`store::tickets`), the endpoint (`http::ticket`).

use std::net::IpAddr;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::Claims;
use crate::policy::client_ip::limit_key;

/// Prefix of every ticket (tells a ticket from a JWT at a glance, in a leak report too).
pub const PREFIX: &str = "wst_";
/// Random bytes in a ticket: 256 bits, beyond any guessing.
pub const RANDOM_BYTES: usize = 32;
/// Length of the random part, base64url without padding.
pub const ENCODED_LEN: usize = 43;
/// Length of a whole ticket.
pub const TICKET_LEN: usize = PREFIX.len() + ENCODED_LEN;
/// IPv6 prefix a ticket bound to its client's address is bound to (one subscriber's /64).
pub const BIND_IPV6_PREFIX: u8 = 64;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A freshly issued ticket. Its value goes into the issue response and nowhere else: `Debug`
/// does not show it.
pub struct Ticket(String);

/// The OS random source failed: no ticket can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no ticket: os random source failed ({0})")]
pub struct NoRandomness(String);

// === impl Ticket ===

impl Ticket {
    /// A new ticket from the OS random source.
    ///
    /// # Errors
    /// [`NoRandomness`] when the OS random source fails.
    pub fn generate() -> Result<Self, NoRandomness> {
        let mut bytes = [0u8; RANDOM_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| NoRandomness(e.to_string()))?;
        Ok(Self(format!("{PREFIX}{}", B64.encode(bytes))))
    }

    /// The ticket's value (for the issue response only).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key the ticket is stored under.
    pub fn key(&self) -> TicketKey {
        TicketKey::of(&self.0)
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticket(..)")
    }
}

/// The SHA-256 of a ticket: what stores key it by. `Debug` shows no digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TicketKey([u8; 32]);

// === impl TicketKey ===

impl TicketKey {
    fn of(ticket: &str) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, ticket.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        Self(key)
    }

    /// The key as 64 lowercase hex digits (the Redis key suffix).
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

/// The store key of `presented` when it has the exact ticket syntax; `None` otherwise (the
/// same answer for every malformed value, and no store is asked).
pub fn parse(presented: &str) -> Option<TicketKey> {
    if presented.len() != TICKET_LEN {
        return None;
    }
    let random = presented.strip_prefix(PREFIX)?;
    // Canonical base64url only: the decoder refuses characters outside the alphabet, padding
    // and set trailing bits, so one ticket has exactly one spelling.
    let decoded = B64.decode(random).ok()?;
    (decoded.len() == RANDOM_BYTES).then(|| TicketKey::of(presented))
}

/// What a ticket stands for: the verified claims of the token it was issued on, and what it
/// is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketRecord {
    /// The token's `sub`.
    pub sub: String,
    /// The token's `exp` (unix seconds): the session's deadline is the token's, not the
    /// ticket's.
    pub exp: u64,
    /// The token's `iat` (a subject revocation after the issue covers the ticket).
    pub iat: Option<u64>,
    /// The token's `jti` (a revocation of the token covers the ticket).
    pub jti: Option<String>,
    /// The token's scopes.
    pub scopes: Vec<String>,
    /// The route the ticket was issued for (its path).
    pub route: String,
    /// The `Origin` of the issuing request, lowercased; `None` when it carried none (then only
    /// a handshake without `Origin` may redeem it).
    pub origin: Option<String>,
    /// With `tickets.bind_client_ip`: the issuing client's address key ([`ip_key`]).
    pub ip: Option<IpAddr>,
    /// Unix seconds of the issue.
    pub issued_at: u64,
}

/// Why a found ticket does not fit the handshake that presented it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// Issued for another route.
    Route,
    /// Issued for another `Origin` (or with one, redeemed without, or the other way round).
    Origin,
    /// Bound to another client address.
    ClientIp,
}

impl Mismatch {
    /// The log detail.
    pub fn label(self) -> &'static str {
        match self {
            Self::Route => "ticket_route_mismatch",
            Self::Origin => "ticket_origin_mismatch",
            Self::ClientIp => "ticket_client_ip_mismatch",
        }
    }
}

/// The address key a ticket is bound to: an IPv4 address as it is, an IPv6 address by its
/// /64 ([`BIND_IPV6_PREFIX`]).
pub fn ip_key(ip: IpAddr) -> IpAddr {
    limit_key(ip, BIND_IPV6_PREFIX)
}

// === impl TicketRecord ===

impl TicketRecord {
    /// The record of a ticket issued on `claims` for `route`, from a request with `origin`
    /// (`None`: none), bound to `ip` when given (pass the client address; it is keyed here).
    pub fn new(claims: &Claims, route: &str, origin: Option<&str>, ip: Option<IpAddr>, issued_at: u64) -> Self {
        Self {
            sub: claims.sub.clone(),
            exp: claims.exp,
            iat: claims.iat,
            jti: claims.jti.clone(),
            scopes: claims.scopes.clone(),
            route: route.to_string(),
            origin: origin.map(|o| o.trim().to_ascii_lowercase()),
            ip: ip.map(ip_key),
            issued_at,
        }
    }

    /// The claims the session runs on: the original token's.
    pub fn claims(&self) -> Claims {
        Claims {
            sub: self.sub.clone(),
            exp: self.exp,
            iat: self.iat,
            jti: self.jti.clone(),
            scopes: self.scopes.clone(),
        }
    }

    /// Check the ticket against the handshake presenting it: on `route`, with `origin`
    /// (`None`: no `Origin` header), from `client`.
    ///
    /// # Errors
    /// The first [`Mismatch`] found.
    pub fn check_binding(&self, route: &str, origin: Option<&str>, client: IpAddr) -> Result<(), Mismatch> {
        if self.route != route {
            return Err(Mismatch::Route);
        }
        let same_origin = match (&self.origin, origin) {
            (None, None) => true,
            (Some(bound), Some(presented)) => bound.eq_ignore_ascii_case(presented.trim()),
            _ => false,
        };
        if !same_origin {
            return Err(Mismatch::Origin);
        }
        if self.ip.is_some_and(|bound| bound != ip_key(client)) {
            return Err(Mismatch::ClientIp);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            sub: "alice".into(),
            exp: 2_000_000_000,
            iat: Some(1_900_000_000),
            jti: Some("j-1".into()),
            scopes: vec!["chat:read".into()],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_generated_ticket_parses_to_its_own_key_and_two_differ() {
        let a = Ticket::generate().expect("rng");
        let b = Ticket::generate().expect("rng");
        assert_eq!(a.expose().len(), TICKET_LEN);
        assert!(a.expose().starts_with(PREFIX));
        assert_eq!(parse(a.expose()), Some(a.key()));
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key().hex().len(), 64);
        assert!(!format!("{a:?}{:?}", a.key()).contains(&a.expose()[4..12]), "Debug shows nothing");
    }

    #[test]
    fn only_the_exact_syntax_parses() {
        let good = Ticket::generate().expect("rng");
        let g = good.expose();
        let random = &g[PREFIX.len()..];
        let bad: Vec<String> = vec![
            String::new(),
            "wst_".into(),
            format!("wsx_{random}"),
            format!("WST_{random}"),
            format!("{g}A"),
            g[..TICKET_LEN - 1].to_string(),
            format!("wst_{}", "A".repeat(ENCODED_LEN - 1) + "é"),
            format!("wst_{}", "+".repeat(ENCODED_LEN)),
            format!("wst_{}", "/".repeat(ENCODED_LEN)),
            format!("wst_{}=", &random[..ENCODED_LEN - 1]),
            format!("wst%5F{}", &random[..ENCODED_LEN - 2]),
            // 43 characters whose last one carries set trailing bits (not canonical).
            format!("wst_{}B", "A".repeat(ENCODED_LEN - 1)),
            "a".repeat(10 * 1024),
        ];
        for b in &bad {
            assert_eq!(parse(b), None, "{b:?}");
        }
        assert!(parse(&format!("wst_{}A", "A".repeat(ENCODED_LEN - 1))).is_some(), "all zero bytes");
    }

    #[test]
    fn a_record_is_bound_to_route_origin_and_optionally_the_address() {
        let c = claims();
        let r = TicketRecord::new(&c, "/ws", Some("https://App.example.com"), None, 1);
        assert_eq!(r.claims(), c);
        let from = ip("203.0.113.7");
        assert_eq!(r.check_binding("/ws", Some("https://app.example.com"), from), Ok(()));
        assert_eq!(r.check_binding("/other", Some("https://app.example.com"), from), Err(Mismatch::Route));
        assert_eq!(r.check_binding("/ws", Some("https://evil.example.com"), from), Err(Mismatch::Origin));
        assert_eq!(r.check_binding("/ws", None, from), Err(Mismatch::Origin));
        let none = TicketRecord::new(&c, "/ws", None, None, 1);
        assert_eq!(none.check_binding("/ws", None, from), Ok(()));
        assert_eq!(none.check_binding("/ws", Some("https://app.example.com"), from), Err(Mismatch::Origin));
        let bound = TicketRecord::new(&c, "/ws", None, Some(ip("2001:db8:1:2::9")), 1);
        assert_eq!(bound.check_binding("/ws", None, ip("2001:db8:1:2:ffff::1")), Ok(()), "same /64");
        assert_eq!(bound.check_binding("/ws", None, ip("2001:db8:1:3::9")), Err(Mismatch::ClientIp));
        let v4 = TicketRecord::new(&c, "/ws", None, Some(from), 1);
        assert_eq!(v4.check_binding("/ws", None, ip("203.0.113.8")), Err(Mismatch::ClientIp));
        assert_eq!(v4.check_binding("/ws", None, ip("::ffff:203.0.113.7")), Ok(()), "IPv4-mapped is the same");
    }

    #[test]
    fn a_record_round_trips_as_json_and_refuses_unknown_fields() {
        let r = TicketRecord::new(&claims(), "/ws", Some("https://app.example.com"), Some(ip("203.0.113.7")), 5);
        let text = serde_json::to_string(&r).expect("json");
        assert_eq!(serde_json::from_str::<TicketRecord>(&text).expect("back"), r);
        let extra = text.replacen('{', "{\"admin\":true,", 1);
        assert!(serde_json::from_str::<TicketRecord>(&extra).is_err());
    }
}
