//! One async function per client behaviour. Each runs until the run's deadline and records
//! into [`Stats`]; none loops without a bound.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::stats::Stats;
use crate::Run;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A JSON envelope of type `kind` padded to `size` bytes.
pub fn payload(kind: &str, size: usize) -> String {
    let head = format!(r#"{{"type":"{kind}","id":"lt","payload":{{"text":""#);
    let tail = r#""}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// The `i`-th client address in 127.0.0.0/8 (never 127.0.0.1, which the target may rate-limit).
pub fn local_addr(i: usize) -> IpAddr {
    let n = (i % (250 * 250 * 4)) as u32;
    IpAddr::V4(Ipv4Addr::new(127, 10 + (n / 62_500) as u8, (n / 250 % 250) as u8 + 1, (n % 250) as u8 + 1))
}

/// Open a WebSocket for client `client` to its `--url` (round robin over the URLs; the Host
/// header, address and path all come from that URL): `token` as a bearer header, `origin` if
/// given, from the `addr`-th local address with `--spread-ips`. Refusals are returned as
/// `http_<status>`; the handshake time is recorded.
pub async fn open(
    run: &Run,
    token: Option<&str>,
    origin: Option<&str>,
    client: usize,
    addr: usize,
) -> Result<Ws, String> {
    open_with_id(run, token, origin, client, addr).await.map(|(ws, _)| ws)
}

/// [`open`], also returning the `x-wsgate-connection-id` response header (`<node>-<n>` in
/// fleet mode; empty when the target sends none).
pub async fn open_with_id(
    run: &Run,
    token: Option<&str>,
    origin: Option<&str>,
    client: usize,
    addr: usize,
) -> Result<(Ws, String), String> {
    let a = &run.args;
    let target_index = run.targets.index(client);
    let mut req = run.targets.url(client).into_client_request().map_err(|e| format!("url: {e}"))?;
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| e.to_string())?);
    }
    if let Some(o) = origin {
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
        sock.bind(SocketAddr::new(local_addr(addr), 0)).map_err(|e| format!("bind: {e}"))?;
    }
    let started = Instant::now();
    let stream = sock.connect(target).await.map_err(|e| format!("connect_{:?}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let result = tokio_tungstenite::client_async_with_config(req, stream, Some(config)).await;
    Stats::add(&run.stats.handshakes, 1);
    match result {
        Ok((ws, resp)) => {
            let _ = run.stats.handshake_us.lock().expect("lock").record(started.elapsed().as_micros().max(1) as u64);
            Stats::add(&run.stats.connected, 1);
            Stats::add(run.targets.connected(target_index), 1);
            let id = resp.headers().get("x-wsgate-connection-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            Ok((ws, id.to_string()))
        }
        Err(WsError::Http(resp)) => Err(format!("http_{}", resp.status().as_u16())),
        Err(e) => Err(format!("handshake: {}", e.to_string().chars().take(40).collect::<String>())),
    }
}

pub fn note_error(stats: &Stats, e: &WsError) {
    let key = match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => "closed".to_string(),
        WsError::Io(io) => format!("io_{:?}", io.kind()),
        WsError::Protocol(_) => "protocol".to_string(),
        other => other.to_string().chars().take(40).collect(),
    };
    Stats::bump(&stats.errors, key);
}

/// What arrived next.
pub enum Incoming {
    /// A data message from the far end (an echo).
    Data,
    /// An error frame of the gateway (counted by code).
    Rejected,
    /// A gateway control frame (`auth.expiring`, `auth.refreshed`).
    Control(String),
    /// The connection ended (close code counted).
    Ended,
}

/// Read the next message, counting close codes and error frames.
pub async fn next<S>(ws: &mut S, stats: &Stats) -> Incoming
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        match ws.next().await {
            None => return Incoming::Ended,
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                Stats::bump(&stats.close_codes, code);
                return Incoming::Ended;
            }
            Some(Ok(Message::Text(t))) => {
                if stats.note_incoming(&t) {
                    return Incoming::Rejected;
                }
                if t.contains(r#""type":"auth."#) {
                    return Incoming::Control(t.to_string());
                }
                return Incoming::Data;
            }
            Some(Ok(Message::Binary(_))) => return Incoming::Data,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                note_error(stats, &e);
                return Incoming::Ended;
            }
        }
    }
}

async fn refused_pause(run: &Run, why: String) {
    Stats::bump(&run.stats.refused, why);
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Closed loop with `depth` messages in flight; every echo's round trip is timed.
pub async fn steady(run: Arc<Run>, i: usize, token: Option<String>) {
    let mut ws = match open(&run, token.as_deref(), run.args.origin.as_deref(), i, i).await {
        Ok(ws) => ws,
        Err(why) => return Stats::bump(&run.stats.refused, why),
    };
    exchange_until_deadline(&run, &mut ws, i, run.deadline, None).await;
    let _ = ws.close(None).await;
}

/// Answers a gateway control frame (`auth.expiring`, ...) with a frame to send, or nothing.
type OnControl<'a> = dyn FnMut(&str) -> Option<String> + Send + 'a;

/// The message exchange of [`steady`]: a closed loop with `--depth` in flight, or
/// [`open_loop`] with `--message-rate`; stops at `until`, at the end of the connection, or when
/// `stop` says so after an incoming control frame (which it receives).
async fn exchange_until_deadline(
    run: &Run,
    ws: &mut Ws,
    i: usize,
    until: Instant,
    mut on_control: Option<&mut OnControl<'_>>,
) {
    let a = &run.args;
    let stats = &run.stats;
    if a.skip_greeting && !matches!(next(ws, stats).await, Incoming::Data) {
        return;
    }
    if a.message_rate > 0.0 {
        return open_loop(run, ws, i, until, on_control).await;
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut sent, mut received) = (0u64, 0u64);
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(a.depth);
    let msg = payload(&a.message_type, a.size);
    for _ in 0..a.depth {
        in_flight.push_back(Instant::now());
        if let Err(e) = ws.send(Message::text(msg.clone())).await {
            return note_error(stats, &e);
        }
    }
    while Instant::now() < until {
        let Ok(incoming) = tokio::time::timeout_at(until.into(), next(ws, stats)).await else { break };
        match incoming {
            Incoming::Ended => break,
            Incoming::Control(text) => {
                if let Some(reply) = on_control.as_mut().and_then(|f| f(&text)) {
                    if ws.send(Message::text(reply)).await.is_err() {
                        break;
                    }
                }
                continue;
            }
            Incoming::Data | Incoming::Rejected => {}
        }
        let recording = stats.recording();
        if let Some(t) = in_flight.pop_front() {
            if recording {
                let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                received += 1;
            }
        }
        in_flight.push_back(Instant::now());
        if let Err(e) = ws.send(Message::text(msg.clone())).await {
            note_error(stats, &e);
            break;
        }
        if recording {
            sent += 1;
        }
    }
    Stats::add(&stats.sent, sent);
    Stats::add(&stats.received, received);
    let _ = stats.rtt.lock().expect("lock").add(&hist);
}

/// Messages due but not yet echoed, per connection, past which the open loop stops sending
/// (and counts `backlog_full`): the target has stalled and memory stays bounded.
const OPEN_LOOP_BACKLOG: usize = 100_000;

/// How late the generator's own timer may fire before a round trip is timed from when its
/// message was due instead of when it was sent (tokio's timer has a 1 ms resolution).
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// Open loop: one message every `1 / --message-rate` s whatever the echoes do (connection `i`
/// phase-shifted by `i / --connections` of that period). A message sent more than
/// [`TIMER_SLACK`] after it was due has its round trip timed from when it was *due*, so a
/// target that stalls the sender shows as latency rather than as fewer samples (no
/// coordinated omission).
async fn open_loop(run: &Run, ws: &mut Ws, i: usize, until: Instant, mut on_control: Option<&mut OnControl<'_>>) {
    let a = &run.args;
    let stats = &run.stats;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut sent, mut received) = (0u64, 0u64);
    let msg = payload(&a.message_type, a.size);
    let (mut sink, mut stream) = ws.split();
    let mut due: VecDeque<Instant> = VecDeque::new();
    // Connection `i` starts at phase i/N of the period: the connections' sends are spread
    // evenly instead of arriving as one burst per period.
    let period = Duration::from_secs_f64(1.0 / a.message_rate);
    let phase = period.mul_f64((i % a.connections) as f64 / a.connections as f64);
    let mut tick = tokio::time::interval_at((Instant::now() + phase).into(), period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let deadline = tokio::time::sleep_until(until.into());
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            at = tick.tick() => {
                if due.len() >= OPEN_LOOP_BACKLOG {
                    Stats::bump(&stats.events, "backlog_full".to_string());
                    continue;
                }
                // Lateness within the timer's resolution is the generator's own; past it the
                // round trip counts from when the message was due.
                let now = Instant::now();
                let due_at = at.into_std();
                due.push_back(if now.duration_since(due_at) <= TIMER_SLACK { now } else { due_at });
                if let Err(e) = sink.send(Message::text(msg.clone())).await {
                    note_error(stats, &e);
                    break;
                }
                if stats.recording() {
                    sent += 1;
                }
            }
            incoming = next(&mut stream, stats) => match incoming {
                Incoming::Ended => break,
                Incoming::Control(text) => {
                    if let Some(reply) = on_control.as_mut().and_then(|f| f(&text)) {
                        if sink.send(Message::text(reply)).await.is_err() {
                            break;
                        }
                    }
                }
                Incoming::Data | Incoming::Rejected => {
                    if let Some(t) = due.pop_front() {
                        if stats.recording() {
                            let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                            received += 1;
                        }
                    }
                }
            },
        }
    }
    Stats::add(&stats.sent, sent);
    Stats::add(&stats.received, received);
    let _ = stats.rtt.lock().expect("lock").add(&hist);
}

/// Connect, exchange `--exchanges` messages, close; repeat.
pub async fn churn(run: Arc<Run>, i: usize, token: Option<String>) {
    let a = &run.args;
    let msg = payload(&a.message_type, a.size);
    let mut n = 0usize;
    while Instant::now() < run.deadline {
        n += 1;
        let mut ws = match open(&run, token.as_deref(), a.origin.as_deref(), i, i * 1000 + n % 1000).await {
            Ok(ws) => ws,
            Err(why) => {
                refused_pause(&run, why).await;
                continue;
            }
        };
        if a.skip_greeting && !matches!(next(&mut ws, &run.stats).await, Incoming::Data) {
            continue;
        }
        let mut ok = true;
        for _ in 0..a.exchanges {
            let t0 = Instant::now();
            if ws.send(Message::text(msg.clone())).await.is_err()
                || !matches!(next(&mut ws, &run.stats).await, Incoming::Data)
            {
                ok = false;
                break;
            }
            if run.stats.recording() {
                let _ = run.stats.rtt.lock().expect("lock").record(t0.elapsed().as_micros().max(1) as u64);
                Stats::add(&run.stats.sent, 1);
                Stats::add(&run.stats.received, 1);
            }
        }
        let _ = ws.close(None).await;
        if ok {
            Stats::bump(&run.stats.events, "churn_cycles".to_string());
        }
    }
}

/// Connect and hold without traffic until the deadline.
pub async fn idle(run: Arc<Run>, i: usize, token: Option<String>) {
    match open(&run, token.as_deref(), run.args.origin.as_deref(), i, i).await {
        Ok(mut ws) => {
            let _ = tokio::time::timeout_at(run.deadline.into(), async { while ws.next().await.is_some() {} }).await;
            let _ = ws.close(None).await;
        }
        Err(why) => Stats::bump(&run.stats.refused, why),
    }
}

/// One handshake of a ramp; the connection is held until the deadline unless
/// `--close-after-handshake`.
pub async fn ramp_one(run: Arc<Run>, i: usize, token: Option<String>) {
    let Ok(permit) = run.in_flight.acquire().await else { return };
    if Instant::now() >= run.deadline {
        return;
    }
    let opened = open(&run, token.as_deref(), run.args.origin.as_deref(), i, i).await;
    drop(permit);
    match opened {
        Ok(mut ws) => {
            if run.args.close_after_handshake {
                let _ = ws.close(None).await;
                return;
            }
            let _ = tokio::time::timeout_at(run.deadline.into(), async { while ws.next().await.is_some() {} }).await;
        }
        Err(why) => Stats::bump(&run.stats.refused, why),
    }
}

/// Steady traffic on a short-lived token: a `--refresh-share` of the clients answer
/// `auth.expiring` with `auth.refresh` and a fresh token; the others are closed at expiry
/// (4001) and reconnect.
pub async fn expiry(run: Arc<Run>, i: usize) {
    let a = &run.args;
    let refresher = (i as f64 / a.connections as f64) < a.refresh_share;
    let sub = format!("{}-{i}", a.sub);
    while Instant::now() < run.deadline {
        let Some(token) = run.mint(&sub, a.ttl as i64) else { return };
        let mut ws = match open(&run, Some(&token), a.origin.as_deref(), i, i).await {
            Ok(ws) => ws,
            Err(why) => {
                refused_pause(&run, why).await;
                continue;
            }
        };
        let run2 = Arc::clone(&run);
        let sub2 = sub.clone();
        let mut on_control = move |text: &str| -> Option<String> {
            if text.contains("auth.refreshed") {
                Stats::bump(&run2.stats.events, "refreshed".to_string());
                return None;
            }
            if !refresher || !text.contains("auth.expiring") {
                return None;
            }
            Stats::bump(&run2.stats.events, "refresh_sent".to_string());
            let fresh = run2.mint(&sub2, run2.args.ttl as i64)?;
            Some(serde_json::json!({"type": "auth.refresh", "id": "r", "payload": {"token": fresh}}).to_string())
        };
        exchange_until_deadline(&run, &mut ws, i, run.deadline, Some(&mut on_control)).await;
        let _ = ws.close(None).await;
    }
}

/// The roles of the `abuse` mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Good,
    ForeignOrigin,
    BadToken,
    Expired,
    Flood,
    Oversize,
    Slow,
}

impl Role {
    pub const ALL: [Role; 7] =
        [Role::Good, Role::ForeignOrigin, Role::BadToken, Role::Expired, Role::Flood, Role::Oversize, Role::Slow];

    pub fn name(self) -> &'static str {
        match self {
            Role::Good => "good",
            Role::ForeignOrigin => "foreign-origin",
            Role::BadToken => "bad-token",
            Role::Expired => "expired",
            Role::Flood => "flood",
            Role::Oversize => "oversize",
            Role::Slow => "slow",
        }
    }
}

/// One client of the abuse mix, repeating its behaviour until the deadline.
pub async fn abuse(run: Arc<Run>, i: usize, role: Role, token: Option<String>) {
    let a = &run.args;
    let sub = format!("{}-{i}", a.sub);
    while Instant::now() < run.deadline {
        Stats::bump(&run.stats.events, format!("role_{}", role.name()));
        let (token, origin) = match role {
            Role::ForeignOrigin => (token.clone(), Some("https://evil.example")),
            Role::BadToken => (Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.forged".to_string()), a.origin.as_deref()),
            Role::Expired => (run.mint(&sub, -600), a.origin.as_deref()),
            _ => (token.clone(), a.origin.as_deref()),
        };
        let mut ws = match open(&run, token.as_deref(), origin, i, i).await {
            Ok(ws) => ws,
            Err(why) => {
                Stats::bump(&run.stats.refused, why);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match role {
            Role::Good | Role::ForeignOrigin | Role::BadToken | Role::Expired => {
                let until = (Instant::now() + Duration::from_secs(5)).min(run.deadline);
                exchange_until_deadline(&run, &mut ws, i, until, None).await;
            }
            Role::Flood => {
                let msg = payload(&a.message_type, a.size);
                for _ in 0..100_000 {
                    if Instant::now() >= run.deadline || ws.send(Message::text(msg.clone())).await.is_err() {
                        break;
                    }
                }
                while !matches!(next(&mut ws, &run.stats).await, Incoming::Ended) {}
            }
            Role::Oversize => {
                let big = payload(&a.message_type, a.oversize_bytes);
                let _ = ws.send(Message::text(big)).await;
                while !matches!(next(&mut ws, &run.stats).await, Incoming::Ended) {}
            }
            Role::Slow => {
                // Large messages at a pace under the rate limits, replies never read: the
                // gateway's queue towards this client grows until it closes it 4008.
                let msg = payload(&a.message_type, 60_000);
                let until = (Instant::now() + Duration::from_secs(20)).min(run.deadline);
                let mut tick = tokio::time::interval(Duration::from_millis(70));
                while Instant::now() < until {
                    tick.tick().await;
                    let sent = tokio::time::timeout_at(until.into(), ws.send(Message::text(msg.clone()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    while !matches!(next(&mut ws, &run.stats).await, Incoming::Ended) {}
                })
                .await;
            }
        }
        let _ = ws.close(None).await;
    }
}
