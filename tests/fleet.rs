//! Fleet mode through real gateway processes and a real `redis-server` (started here, on a
//! unix socket in a temp dir, stopped by pid). The test plays the L4 load balancer: it picks
//! the node for every connection, and binds client sockets to distinct 127.x.y.z sources for
//! the per-IP cases. Fails loudly when `redis-server` is not installed.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::MaybeTlsStream;

fn fleet_setup(upstream: &str, redis: &Redis, name: &str, limits: &str, fleet: &str) -> Setup {
    Setup::new(upstream).limits(limits).tail(&format!(
        "[fleet]\nredis_url = \"{}\"\nnode_id = \"{name}\"\nheartbeat_seconds = 1\n{fleet}",
        redis.url()
    ))
}

/// Three nodes over one Redis.
fn three(upstream: &str, redis: &Redis, limits: &str) -> Vec<Gateway> {
    ["a", "b", "c"].iter().map(|n| spawn_gateway(&fleet_setup(upstream, redis, n, limits, ""))).collect()
}

fn token_for(sub: &str, jti: Option<&str>) -> String {
    let mut c = claims(sub, "chat:read chat:write", 3600);
    if let Some(j) = jti {
        c["jti"] = json!(j);
    }
    sign(&c)
}

/// Open `/ws` on `gw` from source address `src` with `token`; the connection id header too.
async fn connect_from(gw: &Gateway, src: &str, token: &str) -> Result<(Ws, String), WsError> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{src}:0").parse().expect("source")).expect("bind source");
    let stream = socket.connect(gw.public).await.expect("tcp connect");
    let mut req = gw.url("/ws").into_client_request().expect("request");
    req.headers_mut().insert("origin", HeaderValue::from_static(ORIGIN));
    req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).expect("header"));
    let (ws, resp) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("handshake timed out")?;
    let id = resp.headers().get("x-wsgate-connection-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    Ok((ws, id))
}

async fn refused(gw: &Gateway, src: &str, token: &str) -> u16 {
    match connect_from(gw, src, token).await {
        Ok(_) => 101,
        Err(e) => status(&e),
    }
}

/// Wait until `check` holds (bounded); panics with `what` otherwise.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of an unlabelled metric line `name value` (0 when absent).
async fn metric(gw: &Gateway, name: &str) -> f64 {
    let (_, text) = gw.admin_get("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Send one chat message and get its echo.
async fn echoes(ws: &mut Ws) -> bool {
    let msg = json!({"type": "chat.send", "payload": {"text": "hi"}});
    if ws.send(Message::text(msg.to_string())).await.is_err() {
        return false;
    }
    matches!(tokio::time::timeout(Duration::from_secs(5), ws.next()).await, Ok(Some(Ok(Message::Text(_)))))
}

/// This node's count in a count HASH of Redis (0 when absent).
fn redis_count(redis: &Redis, key: &str, node_prefix: &str) -> u64 {
    let all = redis.cli(&["HGETALL", key]);
    let lines: Vec<&str> = all.lines().collect();
    lines
        .chunks(2)
        .filter(|p| p.len() == 2 && p[0].starts_with(node_prefix))
        .filter_map(|p| p[1].parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_caps_hold_across_nodes() {
    let redis = Redis::start();
    let up = echo_upstream().await;
    let nodes =
        three(&up, &redis, "max_connections_per_ip = 2\nmax_connections_per_subject = 3\nhandshake_burst_per_ip = 50");
    let alice = token_for("alice", None);
    // A cap of 2 per IP: one connection on A, one on B, the third refused on C.
    let (a1, _) = connect_from(&nodes[0], "127.0.0.2", &alice).await.expect("first on A");
    let (_b1, _) = connect_from(&nodes[1], "127.0.0.2", &alice).await.expect("second on B");
    assert_eq!(refused(&nodes[2], "127.0.0.2", &alice).await, 429, "third from the same IP, on another node");
    assert_eq!(refused(&nodes[0], "127.0.0.2", &alice).await, 429, "and on the first node");
    // Another IP: fine, and it takes alice's third (last) subject slot.
    let (_c1, _) = connect_from(&nodes[2], "127.0.0.3", &alice).await.expect("another IP");
    assert_eq!(refused(&nodes[1], "127.0.0.4", &alice).await, 429, "subject cap of 3 across nodes");
    let (_bob, _) = connect_from(&nodes[1], "127.0.0.4", &token_for("bob", None)).await.expect("another subject");
    // A slot given back on A is free on C.
    drop(a1);
    eventually("a released slot counts again on another node", Duration::from_secs(10), || async {
        match connect_from(&nodes[2], "127.0.0.2", &alice).await {
            Ok((ws, _)) => {
                drop(ws);
                true
            }
            Err(_) => false,
        }
    })
    .await;
    // What Redis counts per node is what each node holds: A nothing now, B two, C one.
    eventually("redis counts match the nodes", Duration::from_secs(10), || async {
        redis_count(&redis, "wsgate:cc:all", "a.") == 0
            && redis_count(&redis, "wsgate:cc:all", "b.") == 2
            && redis_count(&redis, "wsgate:cc:all", "c.") == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_handshake_rate_is_shared_by_the_fleet() {
    let redis = Redis::start();
    let up = echo_upstream().await;
    let nodes = three(&up, &redis, "handshake_burst_per_ip = 3\nhandshakes_per_second_per_ip = 1");
    let t = token_for("alice", None);
    // Each node alone would allow a burst of 3; the fleet allows 3 in all.
    for gw in &nodes {
        let (ws, _) = connect_from(gw, "127.0.0.5", &t).await.expect("within the shared burst");
        drop(ws);
    }
    let err = connect_from(&nodes[0], "127.0.0.5", &t).await.expect_err("the fourth is refused");
    assert_eq!(status(&err), 429);
    assert!(refusal_header(&err, "retry-after").is_some(), "with a retry-after");
    // The denial is cached locally: Redis is not asked again until the retry-after.
    assert_eq!(refused(&nodes[0], "127.0.0.5", &t).await, 429);
    // Another IP has its own budget.
    assert_eq!(refused(&nodes[1], "127.0.0.6", &t).await, 101);
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_and_kicks_reach_every_node_and_survive_restarts() {
    let redis = Redis::start();
    let up = echo_upstream().await;
    let mut nodes = three(&up, &redis, "");
    let stolen = token_for("alice", Some("stolen-1"));
    let (mut on_c, _) = connect_from(&nodes[2], "127.0.0.7", &stolen).await.expect("connect on C");
    let started = Instant::now();
    let (status_code, body) = nodes[0].admin("POST", "/admin/revoke", Some(&json!({"jti": "stolen-1"}))).await;
    assert_eq!(status_code, 200, "{body}");
    assert_eq!(close_code(&mut on_c).await, 4003, "the socket on C closes");
    println!("revoke on A -> close on C: {:?}", started.elapsed());
    for gw in &nodes {
        assert_eq!(refused(gw, "127.0.0.7", &stolen).await, 401, "refused at every node's handshake");
    }
    // A subject revocation too.
    let (mut bob, _) = connect_from(&nodes[1], "127.0.0.8", &token_for("bob", None)).await.expect("bob on B");
    let (s, _) = nodes[2].admin("POST", "/admin/revoke", Some(&json!({"sub": "bob"}))).await;
    assert_eq!(s, 200);
    assert_eq!(close_code(&mut bob).await, 4003);

    // Kick by a node-qualified id, from another node; the fleet listing shows every node.
    let (mut carol, id) = connect_from(&nodes[1], "127.0.0.9", &token_for("carol", None)).await.expect("carol on B");
    assert!(id.starts_with("b.") && id.contains('-'), "connection ids name their node: {id}");
    let (s, list) = nodes[0].admin("GET", "/admin/connections?fleet=1", None).await;
    assert_eq!(s, 200, "{list}");
    let listed: Vec<String> = list["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .flat_map(|n| n["connections"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["id"].as_str().map(str::to_string))
        .collect();
    assert!(listed.contains(&id), "{id} in {list}");
    assert_eq!(list["nodes"].as_array().map(Vec::len), Some(3), "{list}");
    let (s, body) = nodes[0].admin("DELETE", &format!("/admin/connections/{id}"), None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(close_code(&mut carol).await, 4003, "kicked through another node");
    // (A closing session stays listed until its close handshake ends or times out.)
    eventually("the kicked connection is gone", Duration::from_secs(15), || async {
        nodes[0].admin("DELETE", &format!("/admin/connections/{id}"), None).await.0 == 404
    })
    .await;
    let (s, _) = nodes[0].admin("DELETE", "/admin/connections/nosuchnode.00-1", None).await;
    assert_eq!(s, 404);
    let (s, _) = nodes[0].admin("DELETE", "/admin/connections/x-y", None).await;
    assert_eq!(s, 400);

    // Every gateway restarts: the revocation still holds, at the handshake and auth.refresh.
    nodes.clear();
    let nodes = three(&up, &redis, "");
    for gw in &nodes {
        assert_eq!(refused(gw, "127.0.0.7", &stolen).await, 401, "still refused after the restart");
    }
    let (mut fresh, _) =
        connect_from(&nodes[1], "127.0.0.10", &token_for("alice", Some("fresh-1"))).await.expect("fresh");
    send_json(&mut fresh, &json!({"type": "auth.refresh", "payload": {"token": stolen}})).await;
    let reply = recv_json(&mut fresh).await;
    assert_eq!(reply["type"], "error", "a revoked token is no refresh: {reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_stops_counting_and_a_restarted_one_starts_from_zero() {
    let redis = Redis::start();
    let up = echo_upstream().await;
    let limits = "max_connections_per_subject = 1";
    let a = spawn_gateway(&fleet_setup(&up, &redis, "a", limits, ""));
    let mut b = spawn_gateway(&fleet_setup(&up, &redis, "b", limits, ""));
    let t = token_for("dora", None);
    let (_held, _) = connect_from(&b, "127.0.0.11", &t).await.expect("dora on B");
    assert_eq!(refused(&a, "127.0.0.12", &t).await, 429, "the cap holds while B lives");
    // SIGKILL: no release ever runs on B.
    let killed = Instant::now();
    b.kill();
    let took = eventually("B's slot stops counting within 5 heartbeats", Duration::from_secs(15), || async {
        refused(&a, "127.0.0.12", &t).await == 101
    })
    .await;
    println!("SIGKILL -> slot free after {:?} ({took:?} of polling)", killed.elapsed());
    eventually("B leaves the node set", Duration::from_secs(5), || async {
        redis.cli(&["ZRANGE", "wsgate:nodes", "0", "-1"]).lines().all(|n| !n.starts_with("b."))
    })
    .await;
    // A restarted B has a new boot id and counts nothing of its old life.
    let b2 = spawn_gateway(&fleet_setup(&up, &redis, "b", limits, ""));
    let (_, list) = b2.admin("GET", "/admin/connections", None).await;
    assert_eq!(list["connections"].as_array().map(Vec::len), Some(0));
    assert_ne!(list["node"].as_str().unwrap_or(""), "", "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_falls_back_to_local_counts_then_reconciles() {
    let mut redis = Redis::start();
    let up = echo_upstream().await;
    let limits = "max_connections_per_ip = 4\nhandshake_burst_per_ip = 100";
    let a = spawn_gateway(&fleet_setup(&up, &redis, "a", limits, "on_redis_down = \"local\"\nreconcile_seconds = 2"));
    let b = spawn_gateway(&fleet_setup(&up, &redis, "b", limits, "on_redis_down = \"local\""));
    let (mut open, _) = connect_from(&a, "127.0.0.13", &token_for("erin", Some("erin-1"))).await.expect("before");
    let (_other, _) = connect_from(&b, "127.0.0.13", &token_for("finn", None)).await.expect("before");
    eventually("both nodes see the fleet", Duration::from_secs(10), || async {
        metric(&a, "wsgate_fleet_nodes").await == 2.0
    })
    .await;
    redis.stop();
    // Open connections keep running.
    assert!(echoes(&mut open).await, "an open connection keeps working without redis");
    // New handshakes: admitted on local counts (cap 4 / 2 nodes = 2 per node here).
    let mut latencies = Vec::new();
    let mut held = Vec::new();
    for _ in 0..6 {
        let t0 = Instant::now();
        let r = connect_from(&a, "127.0.0.13", &token_for("gus", None)).await;
        latencies.push(t0.elapsed());
        if let Ok((ws, _)) = r {
            held.push(ws);
        }
    }
    println!("handshakes with redis down: {latencies:?}");
    assert_eq!(held.len(), 1, "node A admits its share of the cap (4 / 2 nodes) minus what it holds (1)");
    assert_eq!(metric(&a, "wsgate_fleet_breaker_open").await, 1.0, "the breaker opened");
    assert!(metric(&a, "wsgate_fleet_fallback_admissions_total").await >= 1.0);
    // Revoke answers 503 but closes the matching socket on the node it reached.
    let (s, body) = a.admin("POST", "/admin/revoke", Some(&json!({"jti": "erin-1"}))).await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(body["closed"], 1, "{body}");
    assert_eq!(close_code(&mut open).await, 4003);
    let (ready, _) = a.admin_get("/readyz").await;
    assert_eq!(ready, 200, "local mode stays ready");

    // Redis back, empty: counts rewritten from local state, the pending revocation shared.
    redis.restart();
    eventually("A's counts reconciled", Duration::from_secs(15), || async {
        redis_count(&redis, "wsgate:cc:all", "a.") == 1 && redis_count(&redis, "wsgate:cc:all", "b.") == 1
    })
    .await;
    eventually("the revocation made during the outage is shared", Duration::from_secs(15), || async {
        redis.cli(&["EXISTS", "wsgate:rev:jti:erin-1"]) == "1"
    })
    .await;
    assert_eq!(refused(&b, "127.0.0.14", &token_for("erin", Some("erin-1"))).await, 401, "B refuses it now");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_with_refuse_answers_503_and_not_ready() {
    let mut redis = Redis::start();
    let up = echo_upstream().await;
    let a = spawn_gateway(&fleet_setup(&up, &redis, "a", "", "on_redis_down = \"refuse\""));
    let (mut open, _) = connect_from(&a, "127.0.0.15", &token_for("hana", None)).await.expect("before");
    redis.stop();
    let t0 = Instant::now();
    let err = connect_from(&a, "127.0.0.15", &token_for("hana", None)).await.expect_err("refused");
    println!("refusal with redis down took {:?}", t0.elapsed());
    assert_eq!(status(&err), 503);
    for _ in 0..5 {
        assert_eq!(refused(&a, "127.0.0.15", &token_for("hana", None)).await, 503);
    }
    eventually("readyz reports the outage", Duration::from_secs(5), || async { a.admin_get("/readyz").await.0 == 503 })
        .await;
    assert!(echoes(&mut open).await, "open connections keep running");
    redis.restart();
    eventually("admitted again once redis is back", Duration::from_secs(15), || async {
        refused(&a, "127.0.0.15", &token_for("hana", None)).await == 101
    })
    .await;
    assert_eq!(a.admin_get("/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_feed_survives_a_killed_reader_and_a_redis_that_lost_its_data() {
    let mut redis = Redis::start();
    let up = echo_upstream().await;
    let a = spawn_gateway(&fleet_setup(&up, &redis, "a", "", ""));
    let c = spawn_gateway(&fleet_setup(&up, &redis, "c", "", ""));
    let (s, _) = a.admin("POST", "/admin/revoke", Some(&json!({"jti": "old-1"}))).await;
    assert_eq!(s, 200);
    // Every client connection is killed (the feed readers among them).
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    let (mut on_c, _) = connect_from(&c, "127.0.0.16", &token_for("ivan", Some("ivan-1"))).await.expect("connect");
    let (s, _) = a.admin("POST", "/admin/revoke", Some(&json!({"jti": "ivan-1"}))).await;
    assert_eq!(s, 200);
    assert_eq!(close_code(&mut on_c).await, 4003, "the reader came back and resumed");
    // The reader's cursor trimmed away while it was disconnected (and a revocation only its
    // marker tells of): it reloads every marker on reconnect.
    let (mut trimmed, _) = connect_from(&c, "127.0.0.19", &token_for("lou", Some("lou-1"))).await.expect("connect");
    let tx =
        "MULTI\nCLIENT KILL TYPE normal\nXTRIM wsgate:rev:log MAXLEN 0\nSET wsgate:rev:jti:lou-1 1 PX 600000\nEXEC\n";
    let mut cli = Command::new("redis-cli")
        .arg("-s")
        .arg(redis.sock())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-cli");
    std::io::Write::write_all(cli.stdin.as_mut().expect("stdin"), tx.as_bytes()).expect("write");
    drop(cli.stdin.take());
    let _ = cli.wait();
    assert_eq!(close_code(&mut trimmed).await, 4003, "resynced from the markers after the trim");
    // A stalled Redis: calls time out (bounded), and everything resumes after the pause.
    redis.cli(&["CLIENT", "PAUSE", "1500", "ALL"]);
    let t0 = Instant::now();
    let stalled = refused(&c, "127.0.0.17", &token_for("jo", None)).await;
    println!("handshake during CLIENT PAUSE: {stalled} after {:?}", t0.elapsed());
    assert_eq!(stalled, 101, "local fallback during the stall");
    // Redis loses everything: the nodes put their revocations back.
    redis.stop();
    redis.restart();
    eventually("markers restored from the nodes' caches", Duration::from_secs(15), || async {
        redis.cli(&["EXISTS", "wsgate:rev:jti:old-1"]) == "1" && redis.cli(&["EXISTS", "wsgate:rev:jti:ivan-1"]) == "1"
    })
    .await;
    let (mut late, _) = connect_from(&c, "127.0.0.18", &token_for("kim", Some("kim-1"))).await.expect("connect");
    let (s, _) = a.admin("POST", "/admin/revoke", Some(&json!({"jti": "kim-1"}))).await;
    assert_eq!(s, 200);
    assert_eq!(close_code(&mut late).await, 4003, "the feed follows the new data set");
}

/// A free loopback TCP port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A redis-server (or sentinel) process on a TCP port, killed on drop.
struct Proc(Child);

impl Proc {
    fn redis(dir: &std::path::Path, name: &str, args: &[&str]) -> Self {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("dir");
        let child = Command::new("redis-server")
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--dir"])
            .arg(&d)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (install the redis-server package)");
        Self(child)
    }

    fn sentinel(dir: &std::path::Path, port: u16, primary: u16) -> Self {
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor wsgate 127.0.0.1 {primary} 2\nsentinel down-after-milliseconds wsgate 1000\nsentinel failover-timeout wsgate 5000\nsentinel parallel-syncs wsgate 1\n"
            ),
        )
        .expect("sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        Self(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cli_tcp(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_failover_is_survived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p1, p2) = (free_port(), free_port());
    let mut primary = Proc::redis(dir.path(), "primary", &["--port", &p1.to_string()]);
    let _replica =
        Proc::redis(dir.path(), "replica", &["--port", &p2.to_string(), "--replicaof", "127.0.0.1", &p1.to_string()]);
    wait_for("replica in sync", Duration::from_secs(10), || {
        cli_tcp(p2, &["INFO", "replication"]).contains("master_link_status:up")
    })
    .await;
    let sentinels: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _s: Vec<Proc> = sentinels.iter().map(|s| Proc::sentinel(dir.path(), *s, p1)).collect();
    wait_for("sentinels see the replica", Duration::from_secs(15), || {
        cli_tcp(sentinels[0], &["SENTINEL", "replicas", "wsgate"]).contains(&p2.to_string())
    })
    .await;
    let addrs = sentinels.iter().map(|s| format!("\"127.0.0.1:{s}\"")).collect::<Vec<_>>().join(", ");
    let up = echo_upstream().await;
    let fleet = |name: &str| {
        Setup::new(&up).tail(&format!(
            "[fleet]\nsentinel = {{ master = \"wsgate\", addrs = [{addrs}] }}\nnode_id = \"{name}\"\nheartbeat_seconds = 1"
        ))
    };
    let a = spawn_gateway(&fleet("a"));
    let b = spawn_gateway(&fleet("b"));
    let (mut before, _) = connect_from(&b, "127.0.0.20", &token_for("lee", Some("lee-1"))).await.expect("connect");
    let (s, _) = a.admin("POST", "/admin/revoke", Some(&json!({"jti": "lee-1"}))).await;
    assert_eq!(s, 200);
    assert_eq!(close_code(&mut before).await, 4003, "fan-out through the first primary");

    let (mut open, _) = connect_from(&b, "127.0.0.21", &token_for("max", Some("max-1"))).await.expect("connect");
    let killed = Instant::now();
    primary.kill();
    wait_for("sentinel promotes the replica", Duration::from_secs(30), || {
        cli_tcp(sentinels[0], &["SENTINEL", "get-master-addr-by-name", "wsgate"]).contains(&p2.to_string())
    })
    .await;
    println!("failover: new primary after {:?}", killed.elapsed());
    assert!(echoes(&mut open).await, "open connections ran through the failover");
    // Both nodes find the new primary: a revoke on A reaches B's socket again.
    let took = eventually("revocations flow through the new primary", Duration::from_secs(20), || async {
        a.admin("POST", "/admin/revoke", Some(&json!({"jti": "max-1"}))).await.0 == 200
    })
    .await;
    assert_eq!(close_code(&mut open).await, 4003);
    println!("revoke accepted by the new primary {took:?} after promotion, {:?} after the kill", killed.elapsed());
    // A connection A holds is counted on the new primary (held through the wait: its release
    // would remove the field again).
    let (_held, _) = connect_from(&a, "127.0.0.22", &token_for("ned", None)).await.expect("admitted");
    eventually("A's held connection counted on the new primary", Duration::from_secs(20), || async {
        let all = cli_tcp(p2, &["HGETALL", "wsgate:cc:all"]);
        let lines: Vec<&str> = all.lines().collect();
        lines.chunks(2).any(|kv| kv.len() == 2 && kv[0].starts_with("a.") && kv[1] == "1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_with_a_password_is_verified_like_an_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("cert");
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    std::fs::write(dir.path().join("redis.crt"), &cert_pem).expect("crt");
    std::fs::write(dir.path().join("redis.key"), &key_pem).expect("key");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    std::fs::write(dir.path().join("other.crt"), other.cert.pem()).expect("crt");
    let port = free_port();
    let crt = dir.path().join("redis.crt").display().to_string();
    let key = dir.path().join("redis.key").display().to_string();
    let _redis = Proc::redis(
        dir.path(),
        "tls",
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &crt,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &crt,
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "s3cret-redis",
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let up = echo_upstream().await;
    let fleet = |ca: &str, name: &str| {
        Setup::new(&up).limits("max_connections_per_subject = 1").tail(&format!(
            "[fleet]\nredis_url = \"rediss://127.0.0.1:{port}\"\nredis_ca_file = \"{}\"\nredis_password_env = \"WSGATE_TEST_REDIS_PASSWORD\"\nnode_id = \"{name}\"\non_redis_down = \"refuse\"",
            dir.path().join(ca).display()
        ))
    };
    let a = spawn_gateway(&fleet("redis.crt", "a"));
    let b = spawn_gateway(&fleet("redis.crt", "b"));
    let t = token_for("olga", None);
    let (_held, _) = connect_from(&a, "127.0.0.23", &t).await.expect("through TLS redis");
    assert_eq!(refused(&b, "127.0.0.24", &t).await, 429, "the subject cap is shared over TLS");
    // A node that does not trust the server's certificate never talks to it.
    let c = spawn_gateway(&fleet("other.crt", "c"));
    assert_eq!(refused(&c, "127.0.0.25", &token_for("pia", None)).await, 503, "unverified redis: refused, never open");
    let connect_errors = metric(&c, "wsgate_fleet_redis_errors_total{op=\"connect\"}").await;
    assert!(connect_errors >= 1.0, "the TLS verification failure is counted: {connect_errors}");
    assert!(!c.log().contains("s3cret-redis") && !a.log().contains("s3cret-redis"), "the password is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_whose_answer_is_lost_leave_the_counts_exact() {
    let redis = Redis::start();
    let up = echo_upstream().await;
    let a = spawn_gateway(&fleet_setup(
        &up,
        &redis,
        "a",
        "max_connections_per_subject = 1\nmax_connections_per_ip = 3\nhandshake_burst_per_ip = 100",
        "on_redis_down = \"refuse\"",
    ));
    // A handshake whose script runs while Redis is paused for writes: the answer comes too late
    // (503), but the script ran when the pause ended. The count it left must not stay.
    redis.cli(&["CLIENT", "PAUSE", "600", "WRITE"]);
    assert_eq!(refused(&a, "127.0.0.30", &token_for("quinn", None)).await, 503);
    tokio::time::sleep(Duration::from_millis(700)).await;
    eventually("the unknown outcome is rewritten from the node's counts", Duration::from_secs(10), || async {
        redis_count(&redis, "wsgate:cc:sub:quinn", "a.") == 0
            && redis_count(&redis, "wsgate:cc:ip:127.0.0.30", "a.") == 0
    })
    .await;
    let (_q, _) = connect_from(&a, "127.0.0.30", &token_for("quinn", None)).await.expect("no phantom slot");
    // A release whose answer is lost is not replayed (that would count it twice).
    let (_r1, _) = connect_from(&a, "127.0.0.31", &token_for("r1", None)).await.expect("r1");
    let (r2, _) = connect_from(&a, "127.0.0.31", &token_for("r2", None)).await.expect("r2");
    let (_r3, _) = connect_from(&a, "127.0.0.31", &token_for("r3", None)).await.expect("r3");
    redis.cli(&["CLIENT", "PAUSE", "400", "WRITE"]);
    drop(r2);
    tokio::time::sleep(Duration::from_millis(600)).await;
    eventually("redis counts what the node holds", Duration::from_secs(10), || async {
        redis_count(&redis, "wsgate:cc:ip:127.0.0.31", "a.") == 2 && redis_count(&redis, "wsgate:cc:all", "a.") == 3
    })
    .await;
    // And it stays so (no late replay takes one more off).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(redis_count(&redis, "wsgate:cc:ip:127.0.0.31", "a."), 2);
    assert_eq!(redis_count(&redis, "wsgate:cc:all", "a."), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_never_reached_redis_refuses_even_in_local_mode() {
    let mut redis = Redis::start();
    let up = echo_upstream().await;
    let url = redis.url();
    redis.stop();
    let setup =
        Setup::new(&up).tail(&format!("[fleet]\nredis_url = \"{url}\"\nnode_id = \"late\"\non_redis_down = \"local\""));
    let gw = spawn_gateway(&setup);
    // It knows neither the fleet's revocations nor how many nodes share the caps.
    assert_eq!(refused(&gw, "127.0.0.32", &token_for("rita", None)).await, 503);
    assert_eq!(gw.admin_get("/readyz").await.0, 503, "not ready before it joined");
    redis.restart();
    eventually("joins once redis answers", Duration::from_secs(15), || async {
        refused(&gw, "127.0.0.32", &token_for("rita", None)).await == 101
    })
    .await;
    eventually("ready once it joined", Duration::from_secs(15), || async { gw.admin_get("/readyz").await.0 == 200 })
        .await;
}
