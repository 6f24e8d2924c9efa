//! One-time tickets in fleet mode: three gateway processes on one real `redis-server` (on a
//! unix socket in a temp dir, stopped by pid). A ticket issued on one node is redeemed once on
//! any node; the per-subject limits hold fleet-wide; Redis holds hashes, never tickets; with
//! Redis gone, ticket auth fails closed (503 at issue, 401 at redeem). Fails loudly when
//! `redis-server` is not installed.

mod common;

use std::time::{Duration, Instant};

use common::redis::Redis;
use common::*;
use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Node `name` on `redis`, with `/ws` accepting tickets and `[tickets]` holding `tickets`.
fn node(upstream: &str, redis: &Redis, name: &str, tickets: &str) -> Setup {
    Setup::new(upstream).route("token_sources = [\"ticket\", \"header\"]").limits("handshake_burst_per_ip = 100").tail(
        &format!(
            "[fleet]\nredis_url = \"{}\"\nnode_id = \"{name}\"\nheartbeat_seconds = 1\n[tickets]\n{tickets}",
            redis.url()
        ),
    )
}

fn three(upstream: &str, redis: &Redis, tickets: &str) -> Vec<Gateway> {
    ["a", "b", "c"].iter().map(|n| spawn_gateway(&node(upstream, redis, n, tickets))).collect()
}

/// `POST /v1/ws-ticket` on `gw` from the allowed origin with `token`: status and ticket.
async fn issue(gw: &Gateway, token: &str) -> (u16, String) {
    let req = format!(
        "POST /v1/ws-ticket HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\nOrigin: {ORIGIN}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
    );
    let (status, text) = raw_request(gw.public, &req).await;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let ticket = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["ticket"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, ticket)
}

async fn ticket(gw: &Gateway, token: &str) -> String {
    let (status, t) = issue(gw, token).await;
    assert_eq!(status, 200);
    t
}

async fn redeem(gw: &Gateway, ticket: &str) -> Result<Ws, WsError> {
    gw.connect_with(&format!("/ws?ticket={ticket}"), Some(ORIGIN), None, &[]).await
}

async fn redeem_status(gw: &Gateway, ticket: &str) -> u16 {
    match redeem(gw, ticket).await {
        Ok(_) => 101,
        Err(e) => status(&e),
    }
}

async fn tickets_metric(gw: &Gateway, result: &str) -> u64 {
    let (_, text) = gw.admin_get("/metrics").await;
    let line = format!("wsgate_tickets_total{{result=\"{result}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&line)).and_then(|v| v.trim().parse().ok()).unwrap_or(u64::MAX)
}

/// Wait until `check` holds (bounded); panics with `what` otherwise.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_issued_on_one_node_is_redeemed_once_on_any_node() {
    let redis = Redis::start();
    let nodes = three(&echo_upstream().await, &redis, "");
    let t = ticket(&nodes[0], &token()).await;
    let mut ws = redeem(&nodes[1], &t).await.expect("issued on A, redeemed on B");
    let msg = json!({"type": "chat.send", "payload": {"text": "hi"}});
    ws.send(Message::text(msg.to_string())).await.expect("send");
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))), "the session runs on B");
    assert_eq!(redeem_status(&nodes[2], &t).await, 401, "a replay on C");
    assert_eq!(redeem_status(&nodes[0], &t).await, 401, "and on A");
    assert_eq!(tickets_metric(&nodes[0], "issued").await, 1);
    assert_eq!(tickets_metric(&nodes[1], "redeemed").await, 1);
    assert_eq!(tickets_metric(&nodes[2], "replayed").await, 1);

    // Nine clients, three per node, race for one ticket: exactly one wins.
    for round in 0..3 {
        let t = ticket(&nodes[round], &token()).await;
        let tries = (0..9).map(|i| redeem(&nodes[i % 3], &t));
        let won = join_all(tries).await.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: exactly one of nine redeems on three nodes wins");
    }

    // Redis holds the SHA-256 of the ticket, never the ticket.
    let t = ticket(&nodes[2], &token()).await;
    let keys = redis.cli(&["--scan", "--pattern", "wsgate:tkt:*"]);
    assert!(!keys.contains(&t[4..]), "a ticket in a key: {keys}");
    let live: Vec<&str> = keys.lines().filter(|k| k.len() == "wsgate:tkt:".len() + 64).collect();
    assert!(!live.is_empty(), "no record key: {keys}");
    for k in live {
        assert!(!redis.cli(&["GET", k]).contains(&t[4..]), "a ticket in a value");
    }
    for n in &nodes {
        assert!(!n.log().contains(&t[4..]), "the ticket is in a gateway log");
    }
    // A fleet node with [tickets] renders every metric of both, each with its help text (the
    // rest: tests/admin.rs).
    let (_, body) = nodes[0].admin_get("/metrics").await;
    let fleet_only = |name: &str| name.starts_with("wsgate_fleet_") || name == "wsgate_revocation_feed_lag_seconds";
    for name in wsgate::metrics::names::ALL.into_iter().filter(|n| fleet_only(n) || n.starts_with("wsgate_tickets")) {
        assert!(body.contains(&format!("# HELP {name}")), "no HELP for {name}");
    }
    assert!(body.contains("wsgate_fleet_redis_errors_total{op=\"ticket_redeem\"} 0"), "ticket ops pre-registered");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_subjects_limits_and_revocations_hold_fleet_wide() {
    let redis = Redis::start();
    let nodes = three(&echo_upstream().await, &redis, "max_outstanding_per_subject = 2\nttl_seconds = 1");
    let first = ticket(&nodes[0], &token()).await;
    ticket(&nodes[1], &token()).await;
    assert_eq!(issue(&nodes[2], &token()).await.0, 429, "two outstanding on A and B: a third on C is refused");
    assert_eq!(redeem_status(&nodes[2], &first).await, 101, "redeemed on C");
    ticket(&nodes[0], &token()).await; // a redeemed ticket no longer counts
                                       // Both outstanding ones expire (1 s): room again, and they read as expired.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ticket(&nodes[1], &token()).await;
    let late = ticket(&nodes[1], &token()).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(redeem_status(&nodes[0], &late).await, 401, "past its ttl");
    assert_eq!(tickets_metric(&nodes[0], "expired").await, 1);

    // A subject revoked on B: its ticket from A dies on C.
    let nodes = three(&echo_upstream().await, &redis, "");
    let bob = sign(&claims("bob", "chat:read", 3600));
    let t = ticket(&nodes[0], &bob).await;
    let (code, _) = nodes[1].admin("POST", "/admin/revoke", Some(&json!({"sub": "bob"}))).await;
    assert_eq!(code, 200);
    eventually("C refuses bob's token", Duration::from_secs(5), || async {
        nodes[2].connect_with("/ws", Some(ORIGIN), Some(&bob), &[]).await.is_err()
    })
    .await;
    assert_eq!(redeem_status(&nodes[2], &t).await, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_gone_ticket_auth_fails_closed_whatever_on_redis_down_says() {
    let mut redis = Redis::start();
    let up = echo_upstream().await;
    let a = spawn_gateway(&node(&up, &redis, "a", ""));
    let t = ticket(&a, &token()).await;
    redis.stop();
    // on_redis_down = "local" (the default) admits JWT handshakes; tickets stay shut.
    let (status, ticket_text) = issue(&a, &token()).await;
    assert_eq!(status, 503);
    assert!(ticket_text.is_empty());
    assert_eq!(redeem_status(&a, &t).await, 401);
    a.connect_with("/ws", Some(ORIGIN), Some(&token()), &[]).await.expect("a JWT handshake admitted locally");
    // Redis back (empty): issuing works again once the link reconnects.
    redis.restart();
    eventually("issue works again", Duration::from_secs(15), || async { issue(&a, &token()).await.0 == 200 }).await;
    let t = ticket(&a, &token()).await;
    assert_eq!(redeem_status(&a, &t).await, 101);
}
