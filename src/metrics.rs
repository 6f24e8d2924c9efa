//! Prometheus metrics: every name in one place ([`names`]), described once, with label values
//! only from bounded sets (route paths from the config, reasons, verdicts) — never an IP,
//! subject or token.
//!
//! How to add one: add the const to [`names`], describe it in [`install`], pre-register its
//! label sets at 0 in [`register_route`] if it is a counter, then update grafana/ and the
//! metrics table of docs/observability.md in the same commit.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::{HandshakeRefusal, SessionClose};
use crate::policy::sensitive::{Direction, Guard};
use crate::policy::validate::Rejection;

/// Metric names (docs/observability.md).
pub mod names {
    /// Gauge: live client connections, by route.
    pub const CONNECTIONS_ACTIVE: &str = "wsgate_connections_active";
    /// Counter: handshakes by route and result (`accepted` or a refusal reason).
    pub const HANDSHAKES_TOTAL: &str = "wsgate_handshakes_total";
    /// Counter: frames by route, direction (`in` client→upstream, `out` upstream→client) and verdict.
    pub const MESSAGES_TOTAL: &str = "wsgate_messages_total";
    /// Counter: payload bytes forwarded, by route and direction.
    pub const MESSAGE_BYTES_TOTAL: &str = "wsgate_message_bytes_total";
    /// Counter: closed connections by route and reason.
    pub const DISCONNECTS_TOTAL: &str = "wsgate_disconnects_total";
    /// Counter: in-band token refreshes by result (`ok`, `failed`).
    pub const AUTH_REFRESH_TOTAL: &str = "wsgate_auth_refresh_total";
    /// Counter: revocations applied.
    pub const REVOCATIONS_TOTAL: &str = "wsgate_revocations_total";
    /// Histogram: gateway time per client frame (checks + hand-off to the upstream writer),
    /// sampled: one frame in `FORWARD_TIME_SAMPLE` (16) per connection.
    pub const MESSAGE_FORWARD_SECONDS: &str = "wsgate_message_forward_seconds";
    /// Histogram: time from request to upgrade answer (includes the upstream dial).
    pub const HANDSHAKE_SECONDS: &str = "wsgate_handshake_seconds";
    /// Histogram: upstream WebSocket dial time.
    pub const UPSTREAM_CONNECT_SECONDS: &str = "wsgate_upstream_connect_seconds";
    /// Histogram: connection lifetime.
    pub const CONNECTION_DURATION_SECONDS: &str = "wsgate_connection_duration_seconds";
    /// Counter: upstream failures by kind (`connect_failed`, `connect_timeout`, `lost`, `too_big`).
    pub const UPSTREAM_ERRORS_TOTAL: &str = "wsgate_upstream_errors_total";
    /// Gauge: `limits.max_connections` (0 = unlimited), for "near the cap" alerts.
    pub const CONNECTIONS_MAX: &str = "wsgate_connections_max";
    /// Gauge: always 1, labelled with the version.
    pub const BUILD_INFO: &str = "wsgate_build_info";
    /// Counter: config reloads by result (`ok`, `failed`).
    pub const CONFIG_RELOADS_TOTAL: &str = "wsgate_config_reloads_total";
    /// Counter: certificate reloads by the timed file check, by result (`ok`, `failed`).
    pub const TLS_RELOADS_TOTAL: &str = "wsgate_tls_reloads_total";
    /// Counter: JWKS URL fetches by result (`ok`, `failed`).
    pub const JWKS_FETCHES_TOTAL: &str = "wsgate_jwks_fetches_total";
    /// Gauge: 1 while draining, else 0.
    pub const DRAINING: &str = "wsgate_draining";
    /// Counter: sensitive-data guard hits by route, rule, direction and action.
    pub const SENSITIVE_HITS_TOTAL: &str = "wsgate_sensitive_hits_total";
    /// Histogram: Redis call time in fleet mode, by operation.
    pub const FLEET_REDIS_SECONDS: &str = "wsgate_fleet_redis_seconds";
    /// Counter: failed Redis calls (error, timeout, breaker open) by operation.
    pub const FLEET_REDIS_ERRORS_TOTAL: &str = "wsgate_fleet_redis_errors_total";
    /// Gauge: 1 while the Redis circuit breaker is open (calls skipped), else 0.
    pub const FLEET_BREAKER_OPEN: &str = "wsgate_fleet_breaker_open";
    /// Gauge: live nodes of the fleet as this node last saw them.
    pub const FLEET_NODES: &str = "wsgate_fleet_nodes";
    /// Counter: handshakes admitted against local counts while Redis was unreachable.
    pub const FLEET_FALLBACK_ADMISSIONS_TOTAL: &str = "wsgate_fleet_fallback_admissions_total";
    /// Gauge: age of the newest revocation-feed entry when it was read (0 when idle).
    pub const REVOCATION_FEED_LAG_SECONDS: &str = "wsgate_revocation_feed_lag_seconds";
    /// Counter: one-time tickets by result (`issued`, `redeemed`, `expired`, `replayed`,
    /// `mismatched`, `refused`).
    pub const TICKETS_TOTAL: &str = "wsgate_tickets_total";

    /// The names that exist only in fleet mode (`[fleet]`).
    pub const FLEET_ONLY: [&str; 6] = [
        FLEET_REDIS_SECONDS,
        FLEET_REDIS_ERRORS_TOTAL,
        FLEET_BREAKER_OPEN,
        FLEET_NODES,
        FLEET_FALLBACK_ADMISSIONS_TOTAL,
        REVOCATION_FEED_LAG_SECONDS,
    ];

    /// Every name above (the metrics table of docs/observability.md and the admin test check against it).
    pub const ALL: [&str; 26] = [
        CONNECTIONS_ACTIVE,
        HANDSHAKES_TOTAL,
        MESSAGES_TOTAL,
        MESSAGE_BYTES_TOTAL,
        DISCONNECTS_TOTAL,
        AUTH_REFRESH_TOTAL,
        REVOCATIONS_TOTAL,
        MESSAGE_FORWARD_SECONDS,
        HANDSHAKE_SECONDS,
        UPSTREAM_CONNECT_SECONDS,
        CONNECTION_DURATION_SECONDS,
        UPSTREAM_ERRORS_TOTAL,
        CONNECTIONS_MAX,
        BUILD_INFO,
        CONFIG_RELOADS_TOTAL,
        TLS_RELOADS_TOTAL,
        JWKS_FETCHES_TOTAL,
        DRAINING,
        SENSITIVE_HITS_TOTAL,
        FLEET_REDIS_SECONDS,
        FLEET_REDIS_ERRORS_TOTAL,
        FLEET_BREAKER_OPEN,
        FLEET_NODES,
        FLEET_FALLBACK_ADMISSIONS_TOTAL,
        REVOCATION_FEED_LAG_SECONDS,
        TICKETS_TOTAL,
    ];
}

/// Route label used where no route matched (never the raw request path).
pub const NO_ROUTE: &str = "none";

/// Verdict label of frames forwarded.
pub const VERDICT_FORWARDED: &str = "forwarded";
/// Verdict label of gateway control messages (`auth.refresh`).
pub const VERDICT_CONTROL: &str = "control";

/// Close reasons that are not refusals.
pub const DISCONNECT_CLIENT: &str = "client_closed";
/// The upstream closed normally; its code was relayed.
pub const DISCONNECT_UPSTREAM: &str = "upstream_closed";

const ALL_REJECTIONS: [Rejection; 8] = [
    Rejection::RateLimited,
    Rejection::InvalidJson,
    Rejection::InvalidEnvelope,
    Rejection::UnknownType,
    Rejection::Forbidden,
    Rejection::SchemaViolation,
    Rejection::BinaryNotAllowed,
    Rejection::SensitiveData,
];

/// Refusals made before a route is known: counted under route `none` only.
const NOT_ROUTED: [HandshakeRefusal; 4] = [
    HandshakeRefusal::NoRoute,
    HandshakeRefusal::BadRequest,
    HandshakeRefusal::HeaderTooLarge,
    HandshakeRefusal::RequestTimeout,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process-wide recorder (once) and describe every metric.
///
/// # Errors
/// A description when the recorder cannot be installed.
pub fn install() -> Result<&'static PrometheusHandle, String> {
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let frame = [5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2];
    let dial = [1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    let redis = [5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0];
    let life = [1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(names::MESSAGE_FORWARD_SECONDS.into()), &frame)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(names::HANDSHAKE_SECONDS.into()), &dial))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(names::UPSTREAM_CONNECT_SECONDS.into()), &dial))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(names::CONNECTION_DURATION_SECONDS.into()), &life))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(names::FLEET_REDIS_SECONDS.into()), &redis))
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe();
    gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    counter!(names::AUTH_REFRESH_TOTAL, "result" => "ok").increment(0);
    counter!(names::AUTH_REFRESH_TOTAL, "result" => "failed").increment(0);
    counter!(names::REVOCATIONS_TOTAL).increment(0);
    for result in ["ok", "failed"] {
        counter!(names::CONFIG_RELOADS_TOTAL, "result" => result).increment(0);
        counter!(names::TLS_RELOADS_TOTAL, "result" => result).increment(0);
        counter!(names::JWKS_FETCHES_TOTAL, "result" => result).increment(0);
    }
    gauge!(names::DRAINING).set(0.0);
    for d in NOT_ROUTED {
        counter!(names::HANDSHAKES_TOTAL, "route" => NO_ROUTE, "result" => d.reason()).increment(0);
    }
    Ok(HANDLE.get_or_init(|| handle))
}

fn describe() {
    describe_gauge!(names::CONNECTIONS_ACTIVE, Unit::Count, "Live client WebSocket connections.");
    describe_counter!(
        names::HANDSHAKES_TOTAL,
        Unit::Count,
        "WebSocket handshakes by result (accepted or refusal reason)."
    );
    describe_counter!(
        names::MESSAGES_TOTAL,
        Unit::Count,
        "Frames by direction (in: client to upstream, out: upstream to client) and verdict."
    );
    describe_counter!(names::MESSAGE_BYTES_TOTAL, Unit::Bytes, "Payload bytes forwarded, by direction.");
    describe_counter!(names::DISCONNECTS_TOTAL, Unit::Count, "Closed connections by reason.");
    describe_counter!(names::AUTH_REFRESH_TOTAL, Unit::Count, "In-band token refreshes by result.");
    describe_counter!(names::REVOCATIONS_TOTAL, Unit::Count, "Token revocations applied.");
    describe_counter!(
        names::SENSITIVE_HITS_TOTAL,
        Unit::Count,
        "Sensitive-data guard hits, by route, rule, direction (in: client to upstream, out: upstream to client) and action."
    );
    describe_histogram!(
        names::MESSAGE_FORWARD_SECONDS,
        Unit::Seconds,
        "Gateway time per client frame: checks and hand-off to the upstream (one frame in 16 per connection is timed)."
    );
    describe_histogram!(
        names::HANDSHAKE_SECONDS,
        Unit::Seconds,
        "Handshake time from request to answer, upstream dial included."
    );
    describe_histogram!(names::UPSTREAM_CONNECT_SECONDS, Unit::Seconds, "Upstream WebSocket dial time.");
    describe_histogram!(names::CONNECTION_DURATION_SECONDS, Unit::Seconds, "Client connection lifetime.");
    describe_gauge!(names::BUILD_INFO, Unit::Count, "Build information; always 1.");
    describe_counter!(names::UPSTREAM_ERRORS_TOTAL, Unit::Count, "Upstream failures by kind.");
    describe_gauge!(names::CONNECTIONS_MAX, Unit::Count, "Configured limits.max_connections (0 = unlimited).");
    describe_counter!(
        names::CONFIG_RELOADS_TOTAL,
        Unit::Count,
        "Config reloads (SIGHUP, POST /admin/reload) by result."
    );
    describe_counter!(names::TLS_RELOADS_TOTAL, Unit::Count, "Certificate reloads by the timed file check, by result.");
    describe_counter!(names::JWKS_FETCHES_TOTAL, Unit::Count, "JWKS URL fetches by result.");
    describe_gauge!(names::DRAINING, Unit::Count, "1 while the gateway drains (readyz 503), else 0.");
    describe_histogram!(names::FLEET_REDIS_SECONDS, Unit::Seconds, "Fleet mode: Redis call time by operation.");
    describe_counter!(
        names::FLEET_REDIS_ERRORS_TOTAL,
        Unit::Count,
        "Fleet mode: failed Redis calls (error, timeout, or skipped while the breaker is open) by operation."
    );
    describe_gauge!(names::FLEET_BREAKER_OPEN, Unit::Count, "Fleet mode: 1 while the Redis circuit breaker is open.");
    describe_gauge!(names::FLEET_NODES, Unit::Count, "Fleet mode: live nodes as this node last saw them.");
    describe_counter!(
        names::FLEET_FALLBACK_ADMISSIONS_TOTAL,
        Unit::Count,
        "Fleet mode: handshakes admitted against this node's own counts while Redis was unreachable."
    );
    describe_gauge!(
        names::REVOCATION_FEED_LAG_SECONDS,
        Unit::Seconds,
        "Fleet mode: age of the last revocation-feed entry when this node read it."
    );
    describe_counter!(
        names::TICKETS_TOTAL,
        Unit::Count,
        "One-time connection tickets by result: issued, redeemed, expired, replayed, mismatched (route, origin or \
         address), refused (an issue refused, or an unknown ticket or a token no longer valid at redeem)."
    );
    for kind in UPSTREAM_ERROR_KINDS {
        counter!(names::UPSTREAM_ERRORS_TOTAL, "kind" => kind).increment(0);
    }
}

/// Pre-register a route's label sets at 0 so `rate()` and `increase()` have a baseline.
pub fn register_route(route: &str) {
    let r = route.to_string();
    // Registered without a value change: a reload calls this for routes already live.
    gauge!(names::CONNECTIONS_ACTIVE, "route" => r.clone()).increment(0.0);
    counter!(names::HANDSHAKES_TOTAL, "route" => r.clone(), "result" => "accepted").increment(0);
    for d in HandshakeRefusal::ALL.iter().filter(|d| !NOT_ROUTED.contains(d) && **d != HandshakeRefusal::Internal) {
        counter!(names::HANDSHAKES_TOTAL, "route" => r.clone(), "result" => d.reason()).increment(0);
    }
    for dir in ["in", "out"] {
        counter!(names::MESSAGES_TOTAL, "route" => r.clone(), "direction" => dir, "verdict" => VERDICT_FORWARDED)
            .increment(0);
        counter!(names::MESSAGE_BYTES_TOTAL, "route" => r.clone(), "direction" => dir).increment(0);
    }
    for rej in ALL_REJECTIONS {
        counter!(names::MESSAGES_TOTAL, "route" => r.clone(), "direction" => "in", "verdict" => rej.code())
            .increment(0);
    }
    for reason in SessionClose::ALL.iter().map(SessionClose::reason).chain([DISCONNECT_CLIENT, DISCONNECT_UPSTREAM]) {
        counter!(names::DISCONNECTS_TOTAL, "route" => r.clone(), "reason" => reason).increment(0);
    }
}

/// A handshake ended (accepted or refused) after `elapsed`.
pub fn handshake(route: &str, result: &'static str, elapsed: Duration) {
    counter!(names::HANDSHAKES_TOTAL, "route" => route.to_string(), "result" => result).increment(1);
    histogram!(names::HANDSHAKE_SECONDS).record(elapsed.as_secs_f64());
}

/// Kinds of [`names::UPSTREAM_ERRORS_TOTAL`].
pub const UPSTREAM_ERROR_KINDS: [&str; 4] = ["connect_failed", "connect_timeout", "lost", "too_big"];

/// The upstream failed in a way of `kind` (one of [`UPSTREAM_ERROR_KINDS`]).
pub fn upstream_error(kind: &'static str) {
    counter!(names::UPSTREAM_ERRORS_TOTAL, "kind" => kind).increment(1);
}

/// Publish the connection cap (0 = unlimited).
pub fn connections_max(max: u64) {
    gauge!(names::CONNECTIONS_MAX).set(max as f64);
}

/// An upstream dial took `elapsed`.
pub fn upstream_connect(elapsed: Duration) {
    histogram!(names::UPSTREAM_CONNECT_SECONDS).record(elapsed.as_secs_f64());
}

/// A config reload succeeded or was refused.
pub fn config_reload(ok: bool) {
    counter!(names::CONFIG_RELOADS_TOTAL, "result" => if ok { "ok" } else { "failed" }).increment(1);
}

/// The timed check reloaded the certificate, or found changed files unusable.
pub fn tls_reload(ok: bool) {
    counter!(names::TLS_RELOADS_TOTAL, "result" => if ok { "ok" } else { "failed" }).increment(1);
}

/// A JWKS URL fetch succeeded or failed.
pub fn jwks_fetch(ok: bool) {
    counter!(names::JWKS_FETCHES_TOTAL, "result" => if ok { "ok" } else { "failed" }).increment(1);
}

/// The drain started.
pub fn draining(on: bool) {
    gauge!(names::DRAINING).set(if on { 1.0 } else { 0.0 });
}

/// A revocation was recorded.
pub fn revocation() {
    counter!(names::REVOCATIONS_TOTAL).increment(1);
}

/// A refresh succeeded or failed.
pub fn auth_refresh(ok: bool) {
    counter!(names::AUTH_REFRESH_TOTAL, "result" => if ok { "ok" } else { "failed" }).increment(1);
}

/// Per-connection metric handles, resolved once at session start so the per-frame path does
/// no label lookups.
#[derive(Clone)]
pub struct SessionMetrics {
    route: String,
    /// Frames forwarded client → upstream.
    pub in_forwarded: Counter,
    /// Bytes forwarded client → upstream.
    pub in_bytes: Counter,
    /// Frames forwarded upstream → client.
    pub out_forwarded: Counter,
    /// Bytes forwarded upstream → client.
    pub out_bytes: Counter,
    /// Gateway time per client frame.
    pub forward_seconds: metrics::Histogram,
    /// Client frames refused, one counter per [`Rejection`] (in `ALL_REJECTIONS` order).
    rejected: [Counter; ALL_REJECTIONS.len()],
    /// Gateway control messages handled.
    control: Counter,
}

// === impl SessionMetrics ===

impl SessionMetrics {
    /// Handles for `route`.
    pub fn new(route: &str) -> Self {
        let r = route.to_string();
        Self {
            in_forwarded: counter!(names::MESSAGES_TOTAL, "route" => r.clone(), "direction" => "in", "verdict" => VERDICT_FORWARDED),
            in_bytes: counter!(names::MESSAGE_BYTES_TOTAL, "route" => r.clone(), "direction" => "in"),
            out_forwarded: counter!(names::MESSAGES_TOTAL, "route" => r.clone(), "direction" => "out", "verdict" => VERDICT_FORWARDED),
            out_bytes: counter!(names::MESSAGE_BYTES_TOTAL, "route" => r.clone(), "direction" => "out"),
            forward_seconds: histogram!(names::MESSAGE_FORWARD_SECONDS, "route" => r.clone()),
            rejected: ALL_REJECTIONS.map(|rej| {
                counter!(names::MESSAGES_TOTAL, "route" => r.clone(), "direction" => "in", "verdict" => rej.code())
            }),
            control: counter!(names::MESSAGES_TOTAL, "route" => r.clone(), "direction" => "in", "verdict" => VERDICT_CONTROL),
            route: r,
        }
    }

    /// The connection is open (counted active until [`SessionMetrics::closed`]).
    pub fn opened(&self) {
        gauge!(names::CONNECTIONS_ACTIVE, "route" => self.route.clone()).increment(1.0);
    }

    /// A client frame was refused.
    pub fn rejected(&self, rejection: Rejection) {
        if let Some(i) = ALL_REJECTIONS.iter().position(|r| *r == rejection) {
            self.rejected[i].increment(1);
        }
    }

    /// A gateway control message was handled.
    pub fn control(&self) {
        self.control.increment(1);
    }

    /// The connection closed for `reason` after `lifetime`; no longer active.
    pub fn closed(&self, reason: &'static str, lifetime: Duration) {
        gauge!(names::CONNECTIONS_ACTIVE, "route" => self.route.clone()).decrement(1.0);
        counter!(names::DISCONNECTS_TOTAL, "route" => self.route.clone(), "reason" => reason).increment(1);
        histogram!(names::CONNECTION_DURATION_SECONDS).record(lifetime.as_secs_f64());
    }
}

/// Pre-register a route's sensitive-data label sets at 0: each rule, in each direction it
/// reads, with its action.
pub fn register_sensitive(route: &str, guard: Option<&Guard>) {
    for (rule, direction, action) in guard.into_iter().flat_map(Guard::labels) {
        let dir = if direction == Direction::UpstreamToClient { "out" } else { "in" };
        counter!(names::SENSITIVE_HITS_TOTAL, "route" => route.to_string(), "rule" => rule.to_string(), "direction" => dir, "action" => action.label())
            .increment(0);
    }
}

/// `n` hits of one sensitive-data rule in one message on `route` (`direction` "in" or "out").
pub fn sensitive_hits(route: &str, rule: &str, direction: &'static str, action: &'static str, n: u64) {
    counter!(names::SENSITIVE_HITS_TOTAL, "route" => route.to_string(), "rule" => rule.to_string(), "direction" => direction, "action" => action).increment(n);
}

/// Results of [`names::TICKETS_TOTAL`].
pub const TICKET_RESULTS: [&str; 6] = ["issued", "redeemed", "expired", "replayed", "mismatched", "refused"];

/// `[tickets]` is set: its series start at 0 (at start and after a reload that adds it).
pub fn register_tickets() {
    for result in TICKET_RESULTS {
        counter!(names::TICKETS_TOTAL, "result" => result).increment(0);
    }
}

/// A ticket was issued, redeemed or refused (`result` one of [`TICKET_RESULTS`]).
pub fn ticket(result: &'static str) {
    counter!(names::TICKETS_TOTAL, "result" => result).increment(1);
}

/// Redis operations of fleet mode (the `op` label).
pub const FLEET_OPS: [&str; 11] = [
    "acquire",
    "release",
    "heartbeat",
    "reconcile",
    "revoke",
    "feed",
    "resync",
    "command",
    "connect",
    "ticket_issue",
    "ticket_redeem",
];

/// Fleet mode is on: its series start at 0.
pub fn register_fleet() {
    for op in FLEET_OPS {
        counter!(names::FLEET_REDIS_ERRORS_TOTAL, "op" => op).increment(0);
    }
    gauge!(names::FLEET_BREAKER_OPEN).set(0.0);
    gauge!(names::FLEET_NODES).set(0.0);
    gauge!(names::REVOCATION_FEED_LAG_SECONDS).set(0.0);
    counter!(names::FLEET_FALLBACK_ADMISSIONS_TOTAL).increment(0);
}

/// A Redis call of `op` succeeded after `elapsed`.
pub fn fleet_redis(op: &'static str, elapsed: Duration) {
    histogram!(names::FLEET_REDIS_SECONDS, "op" => op).record(elapsed.as_secs_f64());
}

/// A Redis call of `op` failed (or was skipped by the open breaker).
pub fn fleet_redis_error(op: &'static str) {
    counter!(names::FLEET_REDIS_ERRORS_TOTAL, "op" => op).increment(1);
}

/// The breaker opened or closed.
pub fn fleet_breaker(open: bool) {
    gauge!(names::FLEET_BREAKER_OPEN).set(if open { 1.0 } else { 0.0 });
}

/// Live nodes seen by the last heartbeat.
pub fn fleet_nodes(n: u64) {
    #[allow(clippy::cast_precision_loss)]
    gauge!(names::FLEET_NODES).set(n as f64);
}

/// A handshake was admitted on local counts while Redis was unreachable.
pub fn fleet_fallback_admission() {
    counter!(names::FLEET_FALLBACK_ADMISSIONS_TOTAL).increment(1);
}

/// The revocation feed delivered an entry `lag` after it was written.
pub fn revocation_feed_lag(lag: Duration) {
    gauge!(names::REVOCATION_FEED_LAG_SECONDS).set(lag.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn the_docs_metrics_table_lists_every_metric() {
        let doc = include_str!("../docs/observability.md");
        for name in names::ALL {
            assert!(
                doc.contains(&format!("| `{name}` |")),
                "{name} is missing from docs/observability.md's metrics table"
            );
        }
    }
}
