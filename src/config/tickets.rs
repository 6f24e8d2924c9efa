//! `[tickets]`: one-time connection tickets (docs/protocol.md, "Browser tickets"). Absent = no
//! ticket endpoint (`POST /v1/ws-ticket` answers 404 like any unknown path) and no route may
//! list the `ticket` token source.
//!
//! Owns: the section's keys, defaults and bounds. Does not own: the cross-key rules with the
//! routes (the `ticket` source needs this section; see `super::validate_route`).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// Default `ttl_seconds`: long enough for a page to open its socket right after the fetch,
/// short enough that a ticket leaked through a URL is worthless soon after.
pub const DEFAULT_TTL_SECONDS: u64 = 30;
/// Longest `ttl_seconds` accepted: a ticket is a one-shot credential in a URL, not a session.
pub const MAX_TTL_SECONDS: u64 = 120;
/// Default `issue_per_subject_per_minute`.
pub const DEFAULT_ISSUE_PER_MINUTE: u32 = 30;
/// Largest `issue_per_subject_per_minute` accepted.
pub const MAX_ISSUE_PER_MINUTE: u32 = 10_000;
/// Default `max_outstanding_per_subject`.
pub const DEFAULT_MAX_OUTSTANDING: u32 = 10;
/// Largest `max_outstanding_per_subject` accepted.
pub const MAX_OUTSTANDING: u32 = 1_000;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTickets {
    /// Seconds a ticket stays redeemable (1..=120).
    #[serde(default = "default_ttl")]
    ttl_seconds: u64,
    /// Tickets one subject may be issued per minute: a bucket of this many, refilled at this
    /// many per minute (1..=10000; there is no unlimited).
    #[serde(default = "default_per_minute")]
    issue_per_subject_per_minute: u32,
    /// Tickets of one subject issued and neither redeemed nor expired, at most (1..=1000).
    #[serde(default = "default_outstanding")]
    max_outstanding_per_subject: u32,
    /// Redeem a ticket only from the address it was issued to (an IPv6 client by its /64).
    /// Off by default: mobile clients change address between two requests.
    #[serde(default)]
    bind_client_ip: bool,
}

fn default_ttl() -> u64 {
    DEFAULT_TTL_SECONDS
}
fn default_per_minute() -> u32 {
    DEFAULT_ISSUE_PER_MINUTE
}
fn default_outstanding() -> u32 {
    DEFAULT_MAX_OUTSTANDING
}

/// The validated `[tickets]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tickets {
    /// How long a ticket stays redeemable (`tickets.ttl_seconds`).
    pub ttl: Duration,
    /// Tickets per subject per minute: the bucket size and its refill per minute
    /// (`tickets.issue_per_subject_per_minute`, at least 1).
    pub issue_per_minute: u32,
    /// Outstanding (issued, not redeemed, not expired) tickets per subject, at most
    /// (`tickets.max_outstanding_per_subject`, at least 1).
    pub max_outstanding: u32,
    /// Bind each ticket to the issuing client's address (`tickets.bind_client_ip`).
    pub bind_client_ip: bool,
}

impl Default for Tickets {
    /// The defaults of an empty `[tickets]` section.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(DEFAULT_TTL_SECONDS),
            issue_per_minute: DEFAULT_ISSUE_PER_MINUTE,
            max_outstanding: DEFAULT_MAX_OUTSTANDING,
            bind_client_ip: false,
        }
    }
}

pub(super) fn validate(raw: RawTickets) -> Result<Tickets, ConfigError> {
    if !(1..=MAX_TTL_SECONDS).contains(&raw.ttl_seconds) {
        return Err(ConfigError::invalid(
            "tickets.ttl_seconds",
            format!("must be 1..={MAX_TTL_SECONDS}: a ticket is a one-shot credential, not a session"),
        ));
    }
    if !(1..=MAX_ISSUE_PER_MINUTE).contains(&raw.issue_per_subject_per_minute) {
        return Err(ConfigError::invalid(
            "tickets.issue_per_subject_per_minute",
            format!("must be 1..={MAX_ISSUE_PER_MINUTE} (there is no unlimited)"),
        ));
    }
    if !(1..=MAX_OUTSTANDING).contains(&raw.max_outstanding_per_subject) {
        return Err(ConfigError::invalid(
            "tickets.max_outstanding_per_subject",
            format!("must be 1..={MAX_OUTSTANDING} (there is no unlimited)"),
        ));
    }
    Ok(Tickets {
        ttl: Duration::from_secs(raw.ttl_seconds),
        issue_per_minute: raw.issue_per_subject_per_minute,
        max_outstanding: raw.max_outstanding_per_subject,
        bind_client_ip: raw.bind_client_ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Tickets, ConfigError> {
        let raw: RawTickets = toml::from_str(toml).map_err(|e| ConfigError::invalid("tickets", e.to_string()))?;
        validate(raw)
    }

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(parse("").expect("defaults"), Tickets::default());
        assert_eq!(parse("ttl_seconds = 120").expect("max").ttl, Duration::from_secs(120));
        for (bad, key) in [
            ("ttl_seconds = 0", "tickets.ttl_seconds"),
            ("ttl_seconds = 121", "tickets.ttl_seconds"),
            ("issue_per_subject_per_minute = 0", "tickets.issue_per_subject_per_minute"),
            ("issue_per_subject_per_minute = 10001", "tickets.issue_per_subject_per_minute"),
            ("max_outstanding_per_subject = 0", "tickets.max_outstanding_per_subject"),
            ("max_outstanding_per_subject = 1001", "tickets.max_outstanding_per_subject"),
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(err.starts_with(key), "{bad}: {err}");
        }
        assert!(parse("ttl = 3").is_err(), "unknown key");
    }
}
