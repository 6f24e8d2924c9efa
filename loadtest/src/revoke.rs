//! The `revoke` scenario: how long a revocation takes to close its connection, across a fleet.
//!
//! `--connections` N WebSockets are opened round robin over the `--url`s, each with its own
//! token and `jti`, and kept busy at `--message-rate` messages per second each (open loop, the
//! echoes timed). After `--warmup` seconds of that traffic, connection after connection (at
//! `--revoke-rate` per second) is revoked with `POST /admin/revoke {"jti": …}` on one of the
//! `--admin-url`s, and the time from just before the request to the client receiving its 4003
//! close frame is measured. With as many admin URLs as URLs, in the same order, each
//! revocation goes by default to another node than the one holding the connection
//! (`--revoke-via`). A connection not closed 4003 within [`CLOSE_LIMIT`] of its request is a
//! failure, and so is a refused connection or a request not answered 200: the run then exits
//! non-zero. Everything is bounded: the connection phase by [`CONNECT_BUDGET`], the rest by
//! N / `--revoke-rate`.

use std::collections::{BTreeMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::ValueEnum;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::Message;

use crate::scenarios::{note_error, open_with_id, payload};
use crate::stats::{q, Stats};
use crate::Run;

/// A revoked connection not closed with 4003 within this time of its request is a failure.
pub const CLOSE_LIMIT: Duration = Duration::from_secs(2);
/// The connection phase (every handshake) ends after this long at most.
pub const CONNECT_BUDGET: Duration = Duration::from_secs(60);
/// Upper bounds (ms) of the histogram's buckets; one more bucket holds what is above the last.
pub const BUCKETS_MS: [f64; 10] = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];
/// Echoes awaited per connection at most (then sending pauses): memory stays bounded.
const BACKLOG: usize = 10_000;
/// An admin answer is read up to this many bytes.
const MAX_ANSWER: usize = 64 * 1024;

/// Which admin URL revokes connection `i`.
#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum RevokeVia {
    /// Another node than the one holding the connection, alternating over the others (needs as
    /// many `--admin-url`s as `--url`s, in the same order; otherwise round robin).
    Other,
    /// The node holding the connection (same condition): no fleet hop, the local baseline.
    Same,
    /// Round robin over the admin URLs whatever node holds the connection.
    RoundRobin,
}

/// The index of the admin URL that revokes connection `i`, which lives on URL `i mod urls`.
pub fn admin_for(i: usize, urls: usize, admins: usize, via: RevokeVia) -> usize {
    let node = i % urls.max(1);
    let paired = admins == urls && urls > 1;
    match via {
        // The k-th connection of a node goes to the (k mod (n-1))+1-th node after it: every
        // other node revokes an equal share of each node's connections.
        RevokeVia::Other if paired => (node + 1 + (i / urls) % (urls - 1)) % urls,
        RevokeVia::Same if admins == urls => node,
        _ => i % admins.max(1),
    }
}

/// How long the whole run may last: the connection phase, the warm-up, the revocations at
/// their rate and the last one's wait for its close, plus a margin.
pub fn run_length(connections: usize, warmup: u64, rate: f64) -> Duration {
    CONNECT_BUDGET
        + Duration::from_secs(warmup)
        + Duration::from_secs_f64(connections as f64 / rate)
        + CLOSE_LIMIT
        + Duration::from_secs(5)
}

/// One `--admin-url`: `http://host:port[/]`, resolved once.
#[derive(Debug, Clone)]
pub struct AdminUrl {
    pub url: String,
    addr: SocketAddr,
    authority: String,
}

impl AdminUrl {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri =
            url.parse().with_context(|| format!("--admin-url {url}: not a URL (expected http://host:port)"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "--admin-url {url}: expected http://host:port (the admin listener, plain HTTP)"
        );
        anyhow::ensure!(
            matches!(uri.path(), "" | "/"),
            "--admin-url {url}: give the listener only (http://host:port); the path is /admin/revoke"
        );
        let host = uri.host().filter(|h| !h.is_empty()).with_context(|| format!("--admin-url {url}: no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        anyhow::ensure!(port > 0, "--admin-url {url}: port 0");
        let addr = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("--admin-url {url}: resolve {host}"))?
            .find(SocketAddr::is_ipv4)
            .with_context(|| format!("--admin-url {url}: no IPv4 address"))?;
        Ok(Self { url: url.to_string(), addr, authority: format!("{host}:{port}") })
    }
}

/// The status code of an HTTP/1.x answer's first line.
pub fn parse_status(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

/// Whether `answer` holds a complete HTTP answer: its head and `Content-Length` bytes of body
/// (without a `Content-Length`, the head; `Connection: close` ends the rest anyway).
fn complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    answer.len() >= end + 4 + length
}

/// `POST /admin/revoke {"jti": jti}` on `admin` with a bearer `token`, on a connection of its
/// own (`Connection: close`); the answer's status, or why there is none. The caller bounds it.
pub async fn post_revoke(admin: &AdminUrl, token: &str, jti: &str) -> Result<u16, String> {
    let body = serde_json::json!({ "jti": jti }).to_string();
    let request = format!(
        "POST /admin/revoke HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        admin.authority,
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(admin.addr).await.map_err(|e| format!("connect_{:?}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("write_{:?}", e.kind()))?;
    let mut answer = Vec::with_capacity(512);
    let mut buf = [0u8; 4096];
    while !complete(&answer) && answer.len() < MAX_ANSWER {
        let n = stream.read(&mut buf).await.map_err(|e| format!("read_{:?}", e.kind()))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    parse_status(&answer).ok_or_else(|| "no_http_answer".to_string())
}

/// The `p` quantile (nearest rank) of sorted values (0 when empty).
pub fn quantile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How many of `us` (microseconds) fall in each bucket of [`BUCKETS_MS`] (upper bound
/// inclusive), plus the one above the last.
pub fn bucket_counts(us: &[u64]) -> Vec<u64> {
    let mut counts = vec![0u64; BUCKETS_MS.len() + 1];
    for &v in us {
        let k = BUCKETS_MS.iter().position(|b| v as f64 <= b * 1000.0).unwrap_or(BUCKETS_MS.len());
        counts[k] += 1;
    }
    counts
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// The text histogram of the revoke → 4003 latencies (microseconds) and of the failures.
pub fn histogram_text(us: &[u64], failed: usize) -> String {
    let counts = bucket_counts(us);
    let total = us.len() + failed;
    let biggest = counts.iter().copied().chain([failed as u64]).max().unwrap_or(0).max(1);
    let share = |n: u64| if total == 0 { 0.0 } else { n as f64 * 100.0 / total as f64 };
    let mut out = format!("revoke -> 4003 close, {total} revocations (bucket upper bound inclusive)\n");
    let mut cumulative = 0u64;
    let mut row = |label: String, n: u64, cumulative: Option<u64>| {
        let bar = "#".repeat(((n as f64 / biggest as f64) * 40.0).ceil() as usize);
        let cum = cumulative.map_or(String::new(), |c| format!("{:6.1}%", share(c)));
        let line = format!("  {label:>14} {n:>6} {:5.1}% {cum:>7}  {bar}", share(n));
        out.push_str(line.trim_end());
        out.push('\n');
    };
    let mut lower = 0.0;
    for (k, &n) in counts.iter().enumerate() {
        cumulative += n;
        let label = match BUCKETS_MS.get(k) {
            Some(upper) => format!("{lower}-{upper} ms"),
            None => format!("> {lower} ms"),
        };
        row(label, n, Some(cumulative));
        lower = BUCKETS_MS.get(k).copied().unwrap_or(lower);
    }
    row(format!("> {} s, failed", CLOSE_LIMIT.as_secs()), failed as u64, None);
    out
}

/// What happened to one revocation.
#[derive(Debug)]
struct Outcome {
    /// When the request started, from the first revocation's (ms).
    at_ms: u64,
    admin: usize,
    node: usize,
    /// The admin answer's status, or why there is none.
    http: Result<u16, String>,
    /// From just before the request to its answer.
    http_us: u64,
    /// From just before the request to the close frame, with its code; `Err` says why not.
    closed: Result<(u64, u16), &'static str>,
}

impl Outcome {
    /// The revoke → close time when it worked: answer 200, closed 4003 within the limit.
    fn ok_us(&self) -> Option<u64> {
        match (&self.http, self.closed) {
            (Ok(200), Ok((us, 4003))) => Some(us),
            _ => None,
        }
    }

    /// The revoke → close time, past the limit for a failure (slowest first when sorted).
    fn sort_key(&self) -> u64 {
        self.ok_us().unwrap_or(u64::MAX)
    }

    fn failure(&self) -> Option<String> {
        match (&self.http, self.closed) {
            (Ok(200), Ok((_, 4003))) => None,
            (Ok(200), Ok((_, code))) => Some(format!("closed_{code}")),
            (Ok(200), Err(why)) => Some(why.to_string()),
            (Ok(status), _) => Some(format!("http_{status}")),
            (Err(why), _) => Some(format!("http_{why}")),
        }
    }
}

/// One client: open, report the connection id, send at `--message-rate` and time the echoes,
/// report when and with which code the connection ends (1006 without a close frame), or stop
/// when told.
async fn client(
    run: Arc<Run>,
    i: usize,
    token: Option<String>,
    ready: oneshot::Sender<Option<String>>,
    closed: oneshot::Sender<(Instant, u16)>,
    mut stop: watch::Receiver<bool>,
) {
    let a = &run.args;
    let stats = &run.stats;
    let opened = {
        let Ok(_permit) = run.in_flight.acquire().await else { return };
        tokio::time::timeout(CONNECT_BUDGET, open_with_id(&run, token.as_deref(), a.origin.as_deref(), i, i)).await
    };
    let ws = match opened {
        Ok(Ok((ws, id))) => {
            let _ = ready.send(Some(id));
            ws
        }
        Ok(Err(why)) => {
            Stats::bump(&stats.refused, why);
            let _ = ready.send(None);
            return;
        }
        Err(_) => {
            Stats::bump(&stats.refused, "handshake_timeout".to_string());
            let _ = ready.send(None);
            return;
        }
    };
    let (mut sink, mut stream) = ws.split();
    let sending = a.message_rate > 0.0;
    let period = if sending { Duration::from_secs_f64(1.0 / a.message_rate) } else { Duration::from_secs(3600) };
    let phase = period.mul_f64((i % a.connections) as f64 / a.connections as f64);
    let mut tick = tokio::time::interval_at((Instant::now() + phase).into(), period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let msg = payload(&a.message_type, a.size);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut sent, mut received) = (0u64, 0u64);
    let mut due: VecDeque<Instant> = VecDeque::new();
    let deadline = tokio::time::sleep_until(run.deadline.into());
    tokio::pin!(deadline);
    let ended = loop {
        tokio::select! {
            _ = &mut deadline => break None,
            _ = stop.changed() => break None,
            _ = tick.tick(), if sending => {
                if due.len() >= BACKLOG {
                    Stats::bump(&stats.events, "backlog_full".to_string());
                    continue;
                }
                due.push_back(Instant::now());
                if let Err(e) = sink.send(Message::text(msg.clone())).await {
                    note_error(stats, &e);
                    break Some((Instant::now(), 1006));
                }
                if stats.recording() {
                    sent += 1;
                }
            }
            frame = stream.next() => {
                let now = Instant::now();
                match frame {
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map_or(1005, |f| u16::from(f.code));
                        Stats::bump(&stats.close_codes, code);
                        break Some((now, code));
                    }
                    Some(Ok(Message::Text(t))) if stats.note_incoming(&t) => {}
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                        if let Some(t) = due.pop_front() {
                            if stats.recording() {
                                let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                                received += 1;
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        note_error(stats, &e);
                        break Some((now, 1006));
                    }
                    None => break Some((now, 1006)),
                }
            }
        }
    };
    if let Some(end) = ended {
        let _ = closed.send(end);
    }
    // Answer the close (or close first when stopped), briefly.
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    Stats::add(&stats.sent, sent);
    Stats::add(&stats.received, received);
    let _ = stats.rtt.lock().expect("lock").add(&hist);
}

/// Revoke connection `i` through `admin` and wait for its close.
async fn revoke_one(
    at_ms: u64,
    admin: Arc<AdminUrl>,
    admin_index: usize,
    node: usize,
    token: Arc<String>,
    jti: String,
    closed: oneshot::Receiver<(Instant, u16)>,
) -> Outcome {
    let t0 = Instant::now();
    let limit = t0 + CLOSE_LIMIT;
    let http = match tokio::time::timeout_at(limit.into(), post_revoke(&admin, &token, &jti)).await {
        Ok(r) => r,
        Err(_) => Err("timeout".to_string()),
    };
    let http_us = t0.elapsed().as_micros() as u64;
    let closed = match tokio::time::timeout_at(limit.into(), closed).await {
        Ok(Ok((at, _))) if at < t0 => Err("closed_before_revoke"),
        Ok(Ok((at, code))) => Ok((at.duration_since(t0).as_micros().max(1) as u64, code)),
        Ok(Err(_)) => Err("client_ended"),
        Err(_) => Err("not_closed_within_2s"),
    };
    Outcome { at_ms, admin: admin_index, node, http, http_us, closed }
}

fn percentiles_ms(sorted: &[u64]) -> serde_json::Value {
    let f = |p: f64| quantile(sorted, p) as f64 / 1000.0;
    serde_json::json!({"count": sorted.len(), "p50": f(0.5), "p90": f(0.9), "p99": f(0.99),
        "max": sorted.last().map_or(0.0, |v| *v as f64 / 1000.0)})
}

fn percentiles_text(sorted: &[u64]) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  max {}",
        ms(quantile(sorted, 0.5)),
        ms(quantile(sorted, 0.9)),
        ms(quantile(sorted, 0.99)),
        ms(sorted.last().copied().unwrap_or(0))
    )
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// Run the scenario (see the module documentation); prints the summary, writes `--json`.
pub async fn run(run: Arc<Run>) -> anyhow::Result<()> {
    let a = &run.args;
    let quiet = a.quiet;
    let admins: Vec<Arc<AdminUrl>> =
        a.admin_url.iter().map(|u| AdminUrl::parse(u).map(Arc::new)).collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(
        !admins.is_empty(),
        "revoke: give the admin listener(s) to revoke through, --admin-url http://host:port"
    );
    let env = a
        .admin_token_env
        .as_deref()
        .context("revoke: --admin-token-env VAR names the variable holding the admin token")?;
    let admin_token = Arc::new(
        std::env::var(env)
            .ok()
            .filter(|t| !t.is_empty())
            .with_context(|| format!("revoke: ${env} is unset or empty"))?,
    );
    anyhow::ensure!(
        a.token.is_none() && !a.same_subject && run.minter.is_some(),
        "revoke: every connection needs a token of its own with its own jti: mint them (--hs256-secret or --private-key), without --token or --same-subject"
    );
    let n = a.connections;
    let urls = run.targets.urls().len();
    // Unique per run, so that a rerun against the same fleet (revocations kept in Redis) does
    // not present tokens revoked already.
    let nonce = format!("{:x}{:x}", SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis(), std::process::id());
    let jtis: Vec<String> = (0..n).map(|i| format!("lt-{nonce}-{i}")).collect();

    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut ready = Vec::with_capacity(n);
    let mut closes = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for (i, jti) in jtis.iter().enumerate() {
        let token = run.mint_with_jti(&format!("{}-{i}", a.sub), a.ttl as i64, jti);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (closed_tx, closed_rx) = oneshot::channel();
        ready.push(ready_rx);
        closes.push(Some(closed_rx));
        tasks.push(tokio::spawn(client(Arc::clone(&run), i, token, ready_tx, closed_tx, stop_rx.clone())));
    }
    let connect_end = started + CONNECT_BUDGET;
    let mut ids: Vec<Option<String>> = Vec::with_capacity(n);
    for r in ready {
        ids.push(tokio::time::timeout_at(connect_end.into(), r).await.ok().and_then(Result::ok).flatten());
    }
    let connected = ids.iter().filter(|id| id.is_some()).count();
    let connect_s = started.elapsed().as_secs_f64();
    if !quiet {
        eprintln!(
            "revoke: {connected} of {n} connections open in {connect_s:.1} s; {} s of traffic, then revocations",
            a.warmup
        );
    }
    tokio::time::sleep(Duration::from_secs(a.warmup)).await;
    run.stats.recording.store(true, std::sync::atomic::Ordering::Relaxed);
    let traffic_from = Instant::now();

    // Revocations at --revoke-rate, open loop: one every 1/rate s whatever the answers do.
    let period = Duration::from_secs_f64(1.0 / a.revoke_rate);
    let revoke_start = Instant::now();
    let mut pending = Vec::with_capacity(connected);
    let mut issued = 0usize;
    for (i, id) in ids.iter().enumerate() {
        if id.is_none() {
            continue;
        }
        tokio::time::sleep_until((revoke_start + period * issued as u32).into()).await;
        issued += 1;
        let admin_index = admin_for(i, urls, admins.len(), a.revoke_via);
        let closed = closes[i].take().expect("one revocation per connection");
        pending.push(tokio::spawn(revoke_one(
            revoke_start.elapsed().as_millis() as u64,
            Arc::clone(&admins[admin_index]),
            admin_index,
            run.targets.index(i),
            Arc::clone(&admin_token),
            jtis[i].clone(),
            closed,
        )));
        if !quiet && issued.is_multiple_of(200) {
            eprintln!("revoke: {issued} of {connected} revocations sent");
        }
    }
    let mut outcomes = Vec::with_capacity(pending.len());
    for p in pending {
        match tokio::time::timeout(CLOSE_LIMIT + Duration::from_secs(1), p).await {
            Ok(Ok(o)) => outcomes.push(o),
            _ => Stats::bump(&run.stats.errors, "revocation_task_lost".to_string()),
        }
    }
    let revoke_s = revoke_start.elapsed().as_secs_f64();
    run.stats.recording.store(false, std::sync::atomic::Ordering::Relaxed);
    let window = traffic_from.elapsed().as_secs_f64().max(0.001);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    drop(stop_tx);
    summarize(&run, &admins, &ids, &outcomes, connect_s, revoke_s, window)
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    run: &Run,
    admins: &[Arc<AdminUrl>],
    ids: &[Option<String>],
    outcomes: &[Outcome],
    connect_s: f64,
    revoke_s: f64,
    window: f64,
) -> anyhow::Result<()> {
    let a = &run.args;
    let s = &run.stats;
    let n = a.connections;
    let connected = ids.iter().filter(|id| id.is_some()).count();
    // Connections per node, by the node part of x-wsgate-connection-id (`<node>-<n>`).
    let mut nodes: BTreeMap<String, u64> = BTreeMap::new();
    for id in ids.iter().flatten() {
        let node = id.rsplit_once('-').map_or("(no id)", |(node, _)| node);
        *nodes.entry(node.to_string()).or_default() += 1;
    }
    let ok = sorted(outcomes.iter().filter_map(Outcome::ok_us).collect());
    let http = sorted(outcomes.iter().map(|o| o.http_us).collect());
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for f in outcomes.iter().filter_map(Outcome::failure) {
        *failures.entry(f).or_default() += 1;
    }
    let failed = outcomes.len() - ok.len();
    let not_connected = n - connected;
    let before_answer = outcomes.iter().filter(|o| matches!(o.closed, Ok((us, _)) if us < o.http_us)).count();
    let after_answer =
        sorted(outcomes.iter().filter_map(|o| o.ok_us().map(|us| us.saturating_sub(o.http_us))).collect());
    let mut paths: BTreeMap<(usize, usize), Vec<u64>> = BTreeMap::new();
    for o in outcomes {
        if let Some(us) = o.ok_us() {
            paths.entry((o.admin, o.node)).or_default().push(us);
        }
    }
    let urls = run.targets.urls();
    // The slowest revocations (failures first) with when they started: a stall of the whole
    // fleet shows as consecutive requests, one node's as its path only.
    let mut by_latency: Vec<&Outcome> = outcomes.iter().collect();
    by_latency.sort_by_key(|o| std::cmp::Reverse(o.sort_key()));
    let slowest: Vec<serde_json::Value> = by_latency
        .iter()
        .take(20)
        .map(|o| {
            serde_json::json!({"at_s": o.at_ms as f64 / 1000.0, "admin_url": admins[o.admin].url, "url": urls[o.node],
                "http": o.http.as_ref().map_or_else(|e| e.clone(), |s| s.to_string()),
                "http_ms": o.http_us as f64 / 1000.0,
                "close_ms": o.closed.ok().map(|(us, _)| us as f64 / 1000.0), "failure": o.failure()})
        })
        .collect();
    let slowest_text: Vec<String> = by_latency
        .iter()
        .take(3)
        .map(|o| {
            let close = match o.closed {
                Ok((us, code)) => format!("{code} after {}", ms(us)),
                Err(why) => why.to_string(),
            };
            format!("at {:.2} s: answer after {}, {close}", o.at_ms as f64 / 1000.0, ms(o.http_us))
        })
        .collect();
    let h = s.rtt.lock().expect("lock");
    let sent = Stats::load(&s.sent);
    let received = Stats::load(&s.received);
    let rejected = s.rejected.lock().expect("lock").clone();
    let refused = s.refused.lock().expect("lock").clone();
    let errors = s.errors.lock().expect("lock").clone();
    let closes = s.close_codes.lock().expect("lock").clone();
    let events = s.events.lock().expect("lock").clone();
    let counts = bucket_counts(&ok);
    let histogram: Vec<serde_json::Value> =
        counts.iter().enumerate().map(|(k, c)| serde_json::json!({"le_ms": BUCKETS_MS.get(k), "count": c})).collect();
    let per_path: Vec<serde_json::Value> = paths
        .iter()
        .map(|((admin, node), v)| {
            let v = sorted(v.clone());
            serde_json::json!({"admin_url": admins[*admin].url, "url": urls[*node], "latency_ms": percentiles_ms(&v)})
        })
        .collect();
    let summary = serde_json::json!({
        "label": a.label, "scenario": "revoke", "url": a.url.join(", "),
        "admin_urls": admins.iter().map(|u| u.url.clone()).collect::<Vec<_>>(),
        "revoke_via": format!("{:?}", a.revoke_via).to_lowercase(), "revoke_rate": a.revoke_rate,
        "connections": n, "connected": connected, "refused": refused, "nodes": nodes,
        "connect_s": connect_s, "revoke_s": revoke_s, "window_s": window,
        "message_rate": a.message_rate, "size": a.size,
        "sent": sent, "received": received, "rejected": rejected, "msgs_per_s": received as f64 / window,
        "rtt_us": {"p50": q(&h, 0.5), "p90": q(&h, 0.9), "p99": q(&h, 0.99), "p999": q(&h, 0.999), "max": h.max()},
        "revocations": {
            "sent": outcomes.len(), "closed_4003": ok.len(), "failed": failed, "not_connected": not_connected,
            "failures": failures, "latency_ms": percentiles_ms(&ok), "http_ms": percentiles_ms(&http),
            "close_after_answer_ms": percentiles_ms(&after_answer), "closed_before_answer": before_answer,
            "histogram": histogram, "paths": per_path, "slowest": slowest,
        },
        "close_codes": closes, "errors": errors, "events": events,
    });
    let via = match a.revoke_via {
        RevokeVia::Other if admins.len() == urls.len() && urls.len() > 1 => "another node's admin",
        RevokeVia::Same if admins.len() == urls.len() => "the connection's own node",
        _ => "admin URLs round robin",
    };
    let load = if a.message_rate > 0.0 {
        format!("{} msg/s per connection", a.message_rate)
    } else {
        "idle connections".to_string()
    };
    println!(
        "{} — revoke, {n} connections over {} url(s), {load}, {} revocations/s via {via}",
        a.label,
        urls.len(),
        a.revoke_rate
    );
    let per_url: Vec<String> = urls
        .iter()
        .zip(run.targets.clients_per_url(n))
        .enumerate()
        .map(|(k, (url, c))| format!("{url} {c} clients ({} connected)", Stats::load(run.targets.connected(k))))
        .collect();
    let mut rows: Vec<(&str, String)> = vec![
        ("targets", per_url.join(", ")),
        ("connections", format!("{connected} ok in {connect_s:.1} s, refused {refused:?}")),
        ("nodes", format!("{nodes:?} (x-wsgate-connection-id)")),
        ("messages", format!("{sent} sent, {received} received, rejected {rejected:?}, {window:.1} s window")),
        ("throughput", format!("{:.0} msg/s", received as f64 / window)),
        (
            "rtt",
            format!("p50 {} us  p90 {} us  p99 {} us  max {} us", q(&h, 0.5), q(&h, 0.9), q(&h, 0.99), h.max()),
        ),
        (
            "revocations",
            format!(
                "{} sent in {revoke_s:.1} s, {} closed 4003 within {} s, {failed} failed {failures:?}, {not_connected} not connected",
                outcomes.len(),
                ok.len(),
                CLOSE_LIMIT.as_secs()
            ),
        ),
        ("revoke->4003", percentiles_text(&ok)),
        ("http answer", percentiles_text(&http)),
        ("after answer", format!("{} ({before_answer} closed before the answer)", percentiles_text(&after_answer))),
    ];
    for ((admin, node), v) in &paths {
        let v = sorted(v.clone());
        rows.push((
            "path",
            format!("{} -> {}: {} revocations, {}", admins[*admin].url, urls[*node], v.len(), percentiles_text(&v)),
        ));
    }
    rows.push(("slowest", slowest_text.join("; ")));
    rows.extend([
        ("close codes", format!("{closes:?}")),
        ("errors", format!("{errors:?}")),
        ("events", format!("{events:?}")),
    ]);
    for (name, value) in rows {
        println!("  {name:<12} {value}");
    }
    print!("{}", histogram_text(&ok, failed));
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    anyhow::ensure!(
        failed == 0 && not_connected == 0,
        "revoke: {failed} of {} revocations did not close their connection with 4003 within {} s ({failures:?}), {not_connected} of {n} connections not open",
        outcomes.len(),
        CLOSE_LIMIT.as_secs()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_go_to_the_other_nodes_evenly() {
        // Three nodes: each node's connections are revoked by the two others, half each.
        let mut pairs: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        for i in 0..1200 {
            let admin = admin_for(i, 3, 3, RevokeVia::Other);
            assert_ne!(admin, i % 3, "connection {i}");
            *pairs.entry((admin, i % 3)).or_default() += 1;
        }
        assert_eq!(pairs.len(), 6);
        assert!(pairs.values().all(|n| *n == 200), "{pairs:?}");
        // Two nodes: always the other one.
        assert!((0..10).all(|i| admin_for(i, 2, 2, RevokeVia::Other) == 1 - i % 2));
        // Same: the connection's own node.
        assert!((0..10).all(|i| admin_for(i, 3, 3, RevokeVia::Same) == i % 3));
        // One node, or admin URLs not paired with the URLs: round robin.
        assert_eq!((0..4).map(|i| admin_for(i, 1, 1, RevokeVia::Other)).collect::<Vec<_>>(), [0, 0, 0, 0]);
        assert_eq!((0..4).map(|i| admin_for(i, 3, 2, RevokeVia::Other)).collect::<Vec<_>>(), [0, 1, 0, 1]);
        assert_eq!((0..4).map(|i| admin_for(i, 3, 3, RevokeVia::RoundRobin)).collect::<Vec<_>>(), [0, 1, 2, 0]);
    }

    #[test]
    fn admin_urls_are_checked() {
        let u = AdminUrl::parse("http://127.0.0.1:9090").unwrap();
        assert_eq!(u.addr, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(u.authority, "127.0.0.1:9090");
        AdminUrl::parse("http://127.0.0.1:9090/").unwrap();
        for (bad, why) in [
            ("ws://127.0.0.1:9090", "expected http://"),
            ("http://127.0.0.1:9090/admin/revoke", "listener only"),
            ("127.0.0.1:9090", "expected http://"),
            ("http://127.0.0.1:0", "port 0"),
            ("", "not a URL"),
        ] {
            let err = AdminUrl::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn answers_are_read() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n{\"closed\":1}"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service Unavailable\r\n\r\n"), Some(503));
        assert_eq!(parse_status(b"garbage"), None);
        assert_eq!(parse_status(b""), None);
        assert!(complete(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\n"));
        assert!(complete(b"HTTP/1.1 204 No Content\r\n\r\n"));
    }

    #[tokio::test]
    async fn a_revocation_is_posted_with_the_token_and_jti() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !complete(&got) {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nconnection: close\r\n\r\n{\"closed\":1}")
                .await
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let admin = AdminUrl::parse(&format!("http://{addr}")).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(5), post_revoke(&admin, "tok", "lt-1-2")).await.unwrap();
        assert_eq!(status, Ok(200));
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /admin/revoke HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("\r\nAuthorization: Bearer tok\r\n"), "{request}");
        assert!(request.ends_with("\r\n\r\n{\"jti\":\"lt-1-2\"}"), "{request}");
        // Nobody listening: the reason, no status.
        drop(admin);
        let closed = AdminUrl::parse(&format!("http://{addr}")).unwrap();
        assert!(post_revoke(&closed, "tok", "x").await.unwrap_err().starts_with("connect_"));
    }

    #[test]
    fn the_histogram_counts_every_revocation_once() {
        // 0.3 ms, 0.5 ms (inclusive upper bound), 0.7, 3, 99, 150, 700 ms.
        let us = [300, 500, 700, 3_000, 99_000, 150_000, 700_000];
        let counts = bucket_counts(&us);
        assert_eq!(counts, vec![2, 1, 0, 1, 0, 0, 0, 1, 1, 0, 1]);
        let text = histogram_text(&us, 2);
        assert!(text.starts_with("revoke -> 4003 close, 9 revocations"), "{text}");
        assert!(text.contains("0-0.5 ms      2"), "{text}");
        assert!(text.contains("> 500 ms      1"), "{text}");
        assert!(text.contains("> 2 s, failed      2"), "{text}");
        assert_eq!(text.lines().count(), 1 + BUCKETS_MS.len() + 2);
        let sorted = sorted(us.to_vec());
        assert_eq!(quantile(&sorted, 0.5), 3_000);
        assert_eq!(quantile(&sorted, 0.99), 700_000);
        assert_eq!(quantile(&sorted, 0.0), 300);
        assert_eq!(quantile(&[], 0.99), 0);
    }
}
