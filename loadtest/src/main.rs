//! wsgate-loadtest: drives a WebSocket endpoint (wsgate or anything else) and reports
//! throughput, round-trip latency and, given the proxy's PID, its CPU time per message.
//!
//! Scenarios implemented: `steady` (N connections, closed loop with a pipeline depth, echo
//! round trip timed), `churn` (connect, exchange, disconnect, repeat) and `idle` (connect and
//! hold, for memory per connection). Every run is bounded
//! by `--duration`; client addresses can be spread over 127.0.0.0/8 (`--spread-ips`) so per-IP
//! caps and ephemeral ports do not limit a test.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone, Copy, ValueEnum, Debug)]
enum Scenario {
    Steady,
    Churn,
    /// Connect and hold the connection without traffic until the deadline (memory per connection).
    Idle,
}

#[derive(Parser, Debug, Clone)]
#[command(name = "wsgate-loadtest", about = "WebSocket load generator")]
struct Args {
    /// Scenario to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Target, e.g. ws://127.0.0.1:8080/ws.
    #[arg(long)]
    url: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Measurement window in seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Warm-up seconds (traffic flows, nothing is recorded).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Message size in bytes (a JSON envelope padded to this size).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages in flight per connection (closed loop).
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Churn: messages exchanged per connection before it closes.
    #[arg(long, default_value_t = 5)]
    exchanges: usize,
    /// Bearer token (Authorization header); or mint one with --hs256-secret.
    #[arg(long)]
    token: Option<String>,
    /// Mint an HS256 token with this secret (sub/scope/ttl below).
    #[arg(long)]
    hs256_secret: Option<String>,
    #[arg(long, default_value = "loadtest")]
    sub: String,
    #[arg(long, default_value = "chat:read chat:write")]
    scope: String,
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// Origin header to send.
    #[arg(long)]
    origin: Option<String>,
    /// The endpoint sends one greeting message after connecting (wsgate demo's /whoami): skip it.
    #[arg(long)]
    skip_greeting: bool,
    /// Bind each connection to its own address in 127.0.0.0/8.
    #[arg(long)]
    spread_ips: bool,
    /// PID of the proxy process whose CPU time per message is reported.
    #[arg(long)]
    cpu_pid: Option<u32>,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<String>,
    /// A label for the summary (target name).
    #[arg(long, default_value = "target")]
    label: String,
}

#[derive(Default)]
struct Totals {
    connected: u64,
    refused: BTreeMap<String, u64>,
    sent: u64,
    received: u64,
    errors: BTreeMap<String, u64>,
    close_codes: BTreeMap<u16, u64>,
    cycles: u64,
}

struct Shared {
    totals: Mutex<Totals>,
    rtt: Mutex<Histogram<u64>>,
    recording: std::sync::atomic::AtomicBool,
}

fn mint(secret: &str, a: &Args) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({"sub": a.sub, "scope": a.scope, "iat": now, "exp": now + a.ttl});
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

fn payload(size: usize) -> String {
    let head = r#"{"type":"chat.send","id":"lt","payload":{"text":""#;
    let tail = r#""}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

fn local_addr(i: usize) -> IpAddr {
    let n = (i % (250 * 250)) as u32;
    IpAddr::V4(Ipv4Addr::new(127, 10 + (n / 62_500) as u8, (n / 250 % 250) as u8 + 1, (n % 250) as u8 + 1))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn open(a: &Args, token: Option<&str>, i: usize) -> Result<Ws, String> {
    let mut req = a.url.as_str().into_client_request().map_err(|e| format!("url: {e}"))?;
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| e.to_string())?);
    }
    if let Some(o) = &a.origin {
        req.headers_mut().insert("origin", HeaderValue::from_str(o).map_err(|e| e.to_string())?);
    }
    let host = req.uri().host().unwrap_or("127.0.0.1").to_string();
    let port = req.uri().port_u16().unwrap_or(80);
    let target: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("resolve: {e}"))?
        .next()
        .ok_or("resolve: no address")?;
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if a.spread_ips {
        sock.bind(SocketAddr::new(local_addr(i), 0)).map_err(|e| format!("bind: {e}"))?;
    }
    let stream = sock.connect(target).await.map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    match tokio_tungstenite::client_async_with_config(req, stream, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(format!("http_{}", resp.status().as_u16())),
        Err(e) => Err(format!("handshake: {e}")),
    }
}

fn note_error(shared: &Shared, e: &tokio_tungstenite::tungstenite::Error) {
    let key = match e {
        tokio_tungstenite::tungstenite::Error::ConnectionClosed => "closed".to_string(),
        tokio_tungstenite::tungstenite::Error::Io(io) => format!("io_{:?}", io.kind()),
        tokio_tungstenite::tungstenite::Error::Protocol(_) => "protocol".to_string(),
        other => format!("{other}").chars().take(40).collect(),
    };
    *shared.totals.lock().expect("lock").errors.entry(key).or_default() += 1;
}

/// Read the next data message; record close codes.
async fn next_data(ws: &mut Ws, shared: &Shared) -> Option<Message> {
    loop {
        match ws.next().await? {
            Ok(Message::Close(frame)) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                *shared.totals.lock().expect("lock").close_codes.entry(code).or_default() += 1;
                return None;
            }
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => return Some(m),
            Ok(_) => continue,
            Err(e) => {
                note_error(shared, &e);
                return None;
            }
        }
    }
}

async fn steady(a: Arc<Args>, token: Option<String>, shared: Arc<Shared>, i: usize, deadline: Instant) {
    let mut ws = match open(&a, token.as_deref(), i).await {
        Ok(ws) => ws,
        Err(why) => {
            *shared.totals.lock().expect("lock").refused.entry(why).or_default() += 1;
            return;
        }
    };
    shared.totals.lock().expect("lock").connected += 1;
    if a.skip_greeting && next_data(&mut ws, &shared).await.is_none() {
        return;
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut sent, mut received) = (0u64, 0u64);
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(a.depth);
    let msg = payload(a.size);
    for _ in 0..a.depth {
        in_flight.push_back(Instant::now());
        if let Err(e) = ws.send(Message::text(msg.clone())).await {
            note_error(&shared, &e);
            return;
        }
    }
    while Instant::now() < deadline {
        let Ok(next) = tokio::time::timeout_at(deadline.into(), next_data(&mut ws, &shared)).await else { break };
        let Some(_) = next else { break };
        let recording = shared.recording.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = in_flight.pop_front() {
            if recording {
                let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                received += 1;
            }
        }
        in_flight.push_back(Instant::now());
        if let Err(e) = ws.send(Message::text(msg.clone())).await {
            note_error(&shared, &e);
            break;
        }
        if recording {
            sent += 1;
        }
    }
    let _ = ws.close(None).await;
    let mut t = shared.totals.lock().expect("lock");
    t.sent += sent;
    t.received += received;
    drop(t);
    let _ = shared.rtt.lock().expect("lock").add(&hist);
}

async fn churn(a: Arc<Args>, token: Option<String>, shared: Arc<Shared>, i: usize, deadline: Instant) {
    let msg = payload(a.size);
    let mut n = 0usize;
    while Instant::now() < deadline {
        n += 1;
        let mut ws = match open(&a, token.as_deref(), i * 1000 + n % 1000).await {
            Ok(ws) => ws,
            Err(why) => {
                *shared.totals.lock().expect("lock").refused.entry(why).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        shared.totals.lock().expect("lock").connected += 1;
        if a.skip_greeting && next_data(&mut ws, &shared).await.is_none() {
            continue;
        }
        let mut ok = true;
        for _ in 0..a.exchanges {
            let t0 = Instant::now();
            if ws.send(Message::text(msg.clone())).await.is_err() || next_data(&mut ws, &shared).await.is_none() {
                ok = false;
                break;
            }
            if shared.recording.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = shared.rtt.lock().expect("lock").record(t0.elapsed().as_micros().max(1) as u64);
                let mut t = shared.totals.lock().expect("lock");
                t.sent += 1;
                t.received += 1;
            }
        }
        let _ = ws.close(None).await;
        if ok {
            shared.totals.lock().expect("lock").cycles += 1;
        }
    }
}

async fn idle(a: Arc<Args>, token: Option<String>, shared: Arc<Shared>, i: usize, deadline: Instant) {
    match open(&a, token.as_deref(), i).await {
        Ok(mut ws) => {
            shared.totals.lock().expect("lock").connected += 1;
            let _ = tokio::time::timeout_at(deadline.into(), async { while ws.next().await.is_some() {} }).await;
            let _ = ws.close(None).await;
        }
        Err(why) => *shared.totals.lock().expect("lock").refused.entry(why).or_default() += 1,
    }
}

/// (utime, stime) of a process, in microseconds.
fn cpu_micros(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((ticks(11)? * 10_000, ticks(12)? * 10_000)) // USER_HZ is 100 on Linux
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(a.duration > 0 && a.duration <= 3600, "--duration must be 1..=3600 s");
    anyhow::ensure!(a.connections > 0 && a.connections <= 20_000, "--connections must be 1..=20000");
    anyhow::ensure!(a.depth > 0 && a.depth <= 1024, "--depth must be 1..=1024");
    let token = match (&a.token, &a.hs256_secret) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(s)) => Some(mint(s, &a).context("mint token")?),
        (None, None) => None,
    };
    let shared = Arc::new(Shared {
        totals: Mutex::new(Totals::default()),
        rtt: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        recording: std::sync::atomic::AtomicBool::new(false),
    });
    let a = Arc::new(a);
    let start = Instant::now();
    let warm_end = start + Duration::from_secs(a.warmup);
    let deadline = warm_end + Duration::from_secs(a.duration);
    let mut tasks = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        let (a2, t, s) = (a.clone(), token.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            match a2.scenario {
                Scenario::Steady => steady(a2.clone(), t, s, i, deadline).await,
                Scenario::Churn => churn(a2.clone(), t, s, i, deadline).await,
                Scenario::Idle => idle(a2.clone(), t, s, i, deadline).await,
            }
        }));
    }
    tokio::time::sleep_until(warm_end.into()).await;
    shared.recording.store(true, std::sync::atomic::Ordering::Relaxed);
    let cpu0 = a.cpu_pid.and_then(cpu_micros);
    let t0 = Instant::now();
    tokio::time::sleep_until(deadline.into()).await;
    shared.recording.store(false, std::sync::atomic::Ordering::Relaxed);
    let window = t0.elapsed().as_secs_f64();
    let cpu1 = a.cpu_pid.and_then(cpu_micros);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let totals = shared.totals.lock().expect("lock");
    let h = shared.rtt.lock().expect("lock");
    let rate = totals.received as f64 / window;
    let (cpu_per_msg, user_share) = match (cpu0, cpu1) {
        (Some((u0, s0)), Some((u1, s1))) if totals.received > 0 => {
            let (user, sys) = (u1.saturating_sub(u0), s1.saturating_sub(s0));
            let share = if user + sys > 0 { user as f64 / (user + sys) as f64 } else { 0.0 };
            (Some((user + sys) as f64 / totals.received as f64), Some(share))
        }
        _ => (None, None),
    };
    let q = |p: f64| if h.is_empty() { 0 } else { h.value_at_quantile(p) };
    let summary = serde_json::json!({
        "label": a.label, "scenario": format!("{:?}", a.scenario).to_lowercase(), "url": a.url,
        "connections": a.connections, "size": a.size, "depth": a.depth, "window_s": window,
        "connected": totals.connected, "refused": totals.refused, "sent": totals.sent, "received": totals.received,
        "churn_cycles": totals.cycles, "errors": totals.errors, "close_codes": totals.close_codes,
        "msgs_per_s": rate, "rtt_us": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": h.max()},
        "proxy_cpu_us_per_msg": cpu_per_msg, "proxy_cpu_user_share": user_share,
    });
    println!(
        "{:<14} {:>6} conn {:>5} B depth {:>3}: {:>9.0} msg/s  rtt p50 {:>6} us p99 {:>7} us p99.9 {:>7} us max {:>8} us  cpu/msg {} (user {})  connected {} refused {:?} errors {:?} closes {:?}",
        a.label, a.connections, a.size, a.depth, rate, q(0.5), q(0.99), q(0.999), h.max(),
        cpu_per_msg.map_or("-".to_string(), |c| format!("{c:.1} us")),
        user_share.map_or("-".to_string(), |u| format!("{:.0}%", u * 100.0)),
        totals.connected, totals.refused, totals.errors, totals.close_codes
    );
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}
