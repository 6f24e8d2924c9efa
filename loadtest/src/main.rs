//! wsgate-loadtest: drives a WebSocket endpoint (wsgate or anything else) and reports
//! connections, messages, rejections by error code, close codes, throughput, round-trip
//! latency and, given the proxy's PID, its CPU time per message.
//!
//! Scenarios: `steady`, `ramp`, `churn`, `expiry`, `abuse`, `idle`, `revoke` (see `--help` and
//! loadtest/README.md). `--url` may be repeated: client `i` then uses the `i mod n`-th URL
//! (round robin), so a fleet of gateway nodes is driven as an L4 load balancer would. Every
//! run is bounded by `--duration` and `--max-connections`; client addresses can be spread over
//! 127.0.0.0/8 (`--spread-ips`) so per-IP caps and ephemeral ports do not limit a test.

mod paired;
mod revoke;
mod scenarios;
mod stats;
mod targets;
mod tokens;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{ArgAction, Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use revoke::RevokeVia;
use scenarios::Role;
use stats::{q, Stats};
use targets::Targets;
use tokens::Minter;

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
enum Scenario {
    /// N connections, closed loop with `--depth` messages in flight, echo round trip timed.
    Steady,
    /// Handshake storm: `--rate` new connections per second, `+ --rate-step` every second,
    /// until refusals appear or `--max-connections` are open.
    Ramp,
    /// Connect, exchange `--exchanges` messages, disconnect, repeat.
    Churn,
    /// Steady traffic on tokens living `--ttl` seconds; `--refresh-share` of the clients
    /// refresh in-band, the others are closed at expiry and reconnect.
    Expiry,
    /// A mix of good clients and abusive ones (`--mix`): foreign origins, bad and expired
    /// tokens, rate-limit violators, oversized frames, slow readers.
    Abuse,
    /// Connect and hold the connection without traffic until the deadline (memory per connection).
    Idle,
    /// `--connections` busy connections, each token with its own `jti`; then each revoked
    /// through `--admin-url` at `--revoke-rate`, timing the request to the client's 4003 close.
    Revoke,
    /// Two `--url`s served by one process (`--cpu-pid`), `--connections` clients each, sending
    /// in turn in `--slice-ms` slices (A B B A …): that process's CPU per message of B over A.
    Paired,
}

#[derive(Parser, Debug, Clone)]
#[command(name = "wsgate-loadtest", about = "WebSocket load generator")]
pub struct Args {
    /// Scenario to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Target, e.g. ws://127.0.0.1:8080/ws. Repeat to spread the clients over several
    /// targets round robin (client i uses the (i mod n)-th URL), as an L4 load balancer would.
    #[arg(long, value_name = "URL", required = true, action = ArgAction::Append)]
    url: Vec<String>,
    /// Concurrent connections (clients).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Ramp: stop opening connections at this many in total.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Measurement window in seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Warm-up seconds (traffic flows, nothing is recorded).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Message size in bytes (a JSON envelope padded to this size).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Envelope type of the messages sent.
    #[arg(long, default_value = "chat.send")]
    message_type: String,
    /// Messages in flight per connection (closed loop).
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Steady/expiry: send this many messages per second per connection whatever the echoes
    /// do (open loop; round trips timed from when each message was due). 0 = closed loop.
    #[arg(long, default_value_t = 0.0)]
    message_rate: f64,
    /// Churn: messages exchanged per connection before it closes.
    #[arg(long, default_value_t = 5)]
    exchanges: usize,
    /// Ramp: handshakes per second at the start.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Ramp: handshakes per second added every second.
    #[arg(long, default_value_t = 100)]
    rate_step: u64,
    /// Ramp: close each connection right after its handshake (measures handshakes/s).
    #[arg(long)]
    close_after_handshake: bool,
    /// Ramp: handshakes in progress at once at most (the storm queues behind them).
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Expiry: share of clients that refresh their token in-band (0..=1).
    #[arg(long, default_value_t = 0.5)]
    refresh_share: f64,
    /// Abuse: role weights, e.g. good=50,foreign-origin=10,bad-token=10,expired=5,flood=10,oversize=5,slow=10.
    #[arg(long, default_value = "good=50,foreign-origin=10,bad-token=10,expired=5,flood=10,oversize=5,slow=10")]
    mix: String,
    /// Abuse: size of the oversized frames.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    oversize_bytes: usize,
    /// Revoke: an admin listener to send `POST /admin/revoke` to, http://host:port. Repeat
    /// for several nodes; in the order of the `--url`s, so `--revoke-via` knows which is which.
    #[arg(long, value_name = "URL", action = ArgAction::Append)]
    admin_url: Vec<String>,
    /// Revoke: the environment variable holding the admin bearer token (`admin.token_env`).
    #[arg(long, value_name = "VAR")]
    admin_token_env: Option<String>,
    /// Revoke: revocations per second (one connection each, in order).
    #[arg(long, default_value_t = 50.0)]
    revoke_rate: f64,
    /// Revoke: which admin URL revokes a connection: another node's (the default), the
    /// connection's own node's, or round robin.
    #[arg(long, value_enum, default_value_t = RevokeVia::Other)]
    revoke_via: RevokeVia,
    /// Bearer token (Authorization header); or mint one with --hs256-secret / --private-key.
    #[arg(long)]
    token: Option<String>,
    /// Mint HS256 tokens with this secret.
    #[arg(long)]
    hs256_secret: Option<String>,
    /// Mint tokens with this PEM private key (see --alg).
    #[arg(long)]
    private_key: Option<String>,
    /// Algorithm for --private-key: ES256 or RS256.
    #[arg(long, default_value = "ES256")]
    alg: String,
    /// `kid` header of minted tokens.
    #[arg(long)]
    kid: Option<String>,
    /// Subject of minted tokens; each connection gets its own, `<sub>-<i>` (a gateway caps
    /// connections per subject), unless `--same-subject`.
    #[arg(long, default_value = "loadtest")]
    sub: String,
    /// Every connection uses one token for `--sub` (to exercise a per-subject cap).
    #[arg(long)]
    same_subject: bool,
    /// `iss` claim of minted tokens (for a gateway with `auth.issuer`).
    #[arg(long)]
    iss: Option<String>,
    /// `aud` claim of minted tokens (for a gateway with `auth.audience`).
    #[arg(long)]
    aud: Option<String>,
    #[arg(long, default_value = "chat:read chat:write")]
    scope: String,
    /// Token lifetime in seconds.
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
    /// Paired: the length of one side's turn, in milliseconds.
    #[arg(long, default_value_t = 250)]
    slice_ms: u64,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<String>,
    /// A label for the summary (target name).
    #[arg(long, default_value = "target")]
    label: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// What every client task shares.
pub struct Run {
    pub args: Args,
    pub stats: Stats,
    pub deadline: Instant,
    /// Ramp: permits for handshakes in progress.
    pub in_flight: tokio::sync::Semaphore,
    /// The `--url`s and the connections opened through each.
    pub targets: Targets,
    minter: Option<Minter>,
}

impl Run {
    /// A token for `sub` living `ttl` seconds with a `jti` claim, if the run mints tokens.
    pub fn mint_with_jti(&self, sub: &str, ttl: i64, jti: &str) -> Option<String> {
        let m = self.minter.as_ref()?;
        match m.mint_with_jti(sub, &self.args.scope, ttl, Some(jti)) {
            Ok(t) => Some(t),
            Err(e) => {
                Stats::bump(&self.stats.errors, format!("mint: {e}"));
                None
            }
        }
    }

    /// A token for `sub` living `ttl` seconds, if the run mints tokens.
    pub fn mint(&self, sub: &str, ttl: i64) -> Option<String> {
        let m = self.minter.as_ref()?;
        match m.mint(sub, &self.args.scope, ttl) {
            Ok(t) => Some(t),
            Err(e) => {
                Stats::bump(&self.stats.errors, format!("mint: {e}"));
                None
            }
        }
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

fn parse_mix(mix: &str) -> anyhow::Result<Vec<(Role, u32)>> {
    let mut out = Vec::new();
    for part in mix.split(',').filter(|p| !p.is_empty()) {
        let (name, weight) = part.split_once('=').with_context(|| format!("--mix: `{part}` is not role=weight"))?;
        let role = Role::ALL
            .into_iter()
            .find(|r| r.name() == name.trim())
            .with_context(|| format!("--mix: unknown role `{name}`"))?;
        out.push((role, weight.trim().parse().with_context(|| format!("--mix: weight of `{name}`"))?));
    }
    anyhow::ensure!(out.iter().any(|(_, w)| *w > 0), "--mix: no role has a weight");
    Ok(out)
}

/// The role of client `i` out of `n`, in proportion to the weights.
fn role_of(mix: &[(Role, u32)], i: usize, n: usize) -> Role {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let point = (i as u64 * u64::from(total) / n.max(1) as u64) as u32;
    let mut acc = 0;
    for (role, w) in mix {
        acc += w;
        if point < acc {
            return *role;
        }
    }
    mix.last().map_or(Role::Good, |(r, _)| *r)
}

fn progress(run: &Run, quiet: bool) -> ProgressBar {
    let total = run.args.warmup + run.args.duration;
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let targets = Targets::new(&a.url)?;
    anyhow::ensure!(a.duration > 0 && a.duration <= 3600, "--duration must be 1..=3600 s");
    anyhow::ensure!(a.connections > 0 && a.connections <= 20_000, "--connections must be 1..=20000");
    let cap = if a.close_after_handshake { 10_000_000 } else { 20_000 };
    anyhow::ensure!(a.max_connections > 0 && a.max_connections <= cap, "--max-connections must be 1..={cap}");
    anyhow::ensure!(a.depth > 0 && a.depth <= 1024, "--depth must be 1..=1024");
    anyhow::ensure!((0.0..=100_000.0).contains(&a.message_rate), "--message-rate must be within 0..=100000 per second");
    anyhow::ensure!((0.0..=1.0).contains(&a.refresh_share), "--refresh-share must be within 0..=1");
    let mix = parse_mix(&a.mix)?;
    let minter = Minter::new(a.hs256_secret.as_deref(), a.private_key.as_deref(), &a.alg, a.kid.clone())?
        .map(|m| m.with_issuer_audience(a.iss.clone(), a.aud.clone()));
    let revoking = a.scenario == Scenario::Revoke;
    if revoking {
        anyhow::ensure!(
            (0.1..=10_000.0).contains(&a.revoke_rate),
            "--revoke-rate must be within 0.1..=10000 per second"
        );
        anyhow::ensure!(
            a.connections as f64 / a.revoke_rate <= 3600.0,
            "revoke: --connections / --revoke-rate must be at most 3600 s"
        );
        anyhow::ensure!(a.warmup <= 3600, "--warmup must be at most 3600 s");
    }
    let start = Instant::now();
    let warm_end = start + Duration::from_secs(a.warmup);
    // A revoke run lasts as long as its revocations take (bounded above); the others
    // --warmup + --duration.
    let deadline = if revoking {
        start + revoke::run_length(a.connections, a.warmup, a.revoke_rate)
    } else {
        warm_end + Duration::from_secs(a.duration)
    };
    let quiet = a.quiet;
    let in_flight = tokio::sync::Semaphore::new(a.max_in_flight.max(1));
    let run = Arc::new(Run { args: a, stats: Stats::new()?, deadline, in_flight, targets, minter });
    if revoking {
        return revoke::run(run).await;
    }
    let a = &run.args;
    // One token for all (`--token`, `--same-subject`), else one subject per connection.
    let shared = match &a.token {
        Some(t) => Some(Some(t.clone())),
        None if a.same_subject || run.minter.is_none() => Some(run.mint(&a.sub, a.ttl as i64)),
        None => None,
    };
    let token_for = |i: usize| match &shared {
        Some(t) => t.clone(),
        None => run.mint(&format!("{}-{i}", a.sub), a.ttl as i64),
    };
    if a.scenario == Scenario::Paired {
        return paired::run(Arc::clone(&run), (0..2 * a.connections).map(token_for).collect()).await;
    }
    let bar = progress(&run, quiet);

    let mut tasks = Vec::new();
    let scenario = a.scenario;
    if scenario != Scenario::Ramp {
        for i in 0..a.connections {
            let (run, t) = (Arc::clone(&run), token_for(i));
            let role = role_of(&mix, i, a.connections);
            tasks.push(tokio::spawn(async move {
                match scenario {
                    Scenario::Steady => scenarios::steady(run, i, t).await,
                    Scenario::Churn => scenarios::churn(run, i, t).await,
                    Scenario::Idle => scenarios::idle(run, i, t).await,
                    Scenario::Expiry => scenarios::expiry(run, i).await,
                    Scenario::Abuse => scenarios::abuse(run, i, role, t).await,
                    Scenario::Ramp | Scenario::Revoke | Scenario::Paired => {}
                }
            }));
        }
    }

    let mut cpu0 = None;
    let mut t0 = Instant::now();
    let mut ramp_rate = a.rate;
    let mut opened = 0usize;
    let mut ramp_log = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (0u64, 0u64);
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if !run.stats.recording() && now >= warm_end {
            run.stats.recording.store(true, Ordering::Relaxed);
            cpu0 = a.cpu_pid.and_then(cpu_micros);
            t0 = now;
        }
        if scenario == Scenario::Ramp {
            let refused_before = run.stats.refused.lock().expect("lock").values().sum::<u64>();
            let batch = (ramp_rate as usize).min(a.max_connections.saturating_sub(opened));
            let spacing = Duration::from_secs(1) / (batch.max(1) as u32);
            for k in 0..batch {
                let i = opened + k;
                let (run, t) = (Arc::clone(&run), token_for(i));
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(spacing * k as u32).await;
                    scenarios::ramp_one(run, i, t).await
                }));
            }
            opened += batch;
            let refused_now = run.stats.refused.lock().expect("lock").values().sum::<u64>();
            ramp_log
                .push(serde_json::json!({"second": ramp_log.len() + 1, "rate": batch, "refused_so_far": refused_now}));
            if refused_now == refused_before && batch > 0 {
                ramp_rate += a.rate_step;
            }
        }
        let (sent, recv) = (run.stats.sent.load(Ordering::Relaxed), run.stats.received.load(Ordering::Relaxed));
        let refused: u64 = run.stats.refused.lock().expect("lock").values().sum();
        bar.set_position(start.elapsed().as_secs());
        bar.set_message(format!(
            "conn {} refused {} msg/s {}",
            run.stats.connected.load(Ordering::Relaxed),
            refused,
            recv.saturating_sub(last.1)
        ));
        last = (sent, recv);
    }
    run.stats.recording.store(false, Ordering::Relaxed);
    let window = t0.elapsed().as_secs_f64().max(0.001);
    let cpu1 = a.cpu_pid.and_then(cpu_micros);
    bar.finish_and_clear();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    // Clients numbered from 0: ramp opened `opened` of them, the others run `--connections`.
    let clients = if scenario == Scenario::Ramp { opened } else { a.connections };
    summarize(&run, window, cpu0, cpu1, ramp_log, clients)
}

/// Plain words when most connections or messages were refused, naming what refused them and
/// the wsgate settings or generator flags involved.
fn warnings(
    handshakes: u64,
    connected: u64,
    refused: &std::collections::BTreeMap<String, u64>,
    sent: u64,
    rejected: &std::collections::BTreeMap<String, u64>,
) -> Vec<String> {
    let mut out = Vec::new();
    let refused_total: u64 = refused.values().sum();
    if refused_total > 0 && refused_total * 2 >= handshakes.max(connected + refused_total) {
        let (why, count) = refused.iter().max_by_key(|(_, n)| **n).map(|(k, n)| (k.as_str(), *n)).unwrap_or(("", 0));
        let hint = match why {
            "http_429" => "a connection cap or the handshake rate (wsgate: limits.max_connections_per_subject, max_connections_per_ip, handshakes_per_second_per_ip / handshake_burst_per_ip); use a subject per connection (the default) and --spread-ips",
            "http_401" => "the token (wrong key, or the gateway wants iss/aud: --iss, --aud; or an expired --token)",
            "http_403" => "the Origin (--origin must be on the route's origins) or a connect scope (--scope)",
            "http_400" => "the request (a subprotocol the route does not list, or two tokens)",
            "http_404" => "the path of --url (no route)",
            "http_503" => "the gateway is draining or at limits.max_connections",
            "http_502" | "http_504" => "the gateway's upstream (is the backend running?)",
            _ => "the target",
        };
        out.push(format!(
            "{refused_total} of {} connection attempts were refused ({count} as {why}): refused by {hint}",
            connected + refused_total
        ));
    }
    let rejected_total: u64 = rejected.values().sum();
    if sent > 0 && rejected_total * 2 >= sent {
        let (why, count) = rejected.iter().max_by_key(|(_, n)| **n).map(|(k, n)| (k.as_str(), *n)).unwrap_or(("", 0));
        let hint = match why {
            "rate_limited" => "the per-connection message or byte rate (wsgate: limits.messages_per_second / message_burst / bytes_per_second); send below it with --message-rate",
            "unknown_type" => "the message type (--message-type must be a [[routes.messages]] type)",
            "forbidden" => "the token's scopes (--scope must hold the type's scope)",
            "schema_violation" => "the type's JSON Schema (the generator sends {\"text\": \"x...\"} payloads)",
            _ => "the gateway's message checks",
        };
        out.push(format!("{rejected_total} of {sent} messages were rejected ({count} as {why}): rejected by {hint}"));
    }
    out
}

fn summarize(
    run: &Run,
    window: f64,
    cpu0: Option<(u64, u64)>,
    cpu1: Option<(u64, u64)>,
    ramp_log: Vec<serde_json::Value>,
    clients: usize,
) -> anyhow::Result<()> {
    let a = &run.args;
    let s = &run.stats;
    let received = s.received.load(Ordering::Relaxed);
    let sent = s.sent.load(Ordering::Relaxed);
    let handshakes = s.handshakes.load(Ordering::Relaxed);
    let connected = s.connected.load(Ordering::Relaxed);
    let rate = received as f64 / window;
    let cpu = match (cpu0, cpu1) {
        (Some((u0, s0)), Some((u1, s1))) => Some((u1.saturating_sub(u0), s1.saturating_sub(s0))),
        _ => None,
    };
    let user_share = cpu.filter(|(u, s)| u + s > 0).map(|(u, s)| u as f64 / (u + s) as f64);
    let cpu_per_msg = cpu.filter(|_| received > 0).map(|(u, s)| (u + s) as f64 / received as f64);
    // Steady and idle runs open their connections before the window: no per-handshake figure.
    let per_handshake_scenario = !matches!(a.scenario, Scenario::Steady | Scenario::Idle);
    let cpu_per_handshake =
        cpu.filter(|_| handshakes > 0 && per_handshake_scenario).map(|(u, s)| (u + s) as f64 / handshakes as f64);
    let h = s.rtt.lock().expect("lock");
    let hs = s.handshake_us.lock().expect("lock");
    let refused = s.refused.lock().expect("lock").clone();
    let rejected = s.rejected.lock().expect("lock").clone();
    let errors = s.errors.lock().expect("lock").clone();
    let closes = s.close_codes.lock().expect("lock").clone();
    let events = s.events.lock().expect("lock").clone();
    let total_time = (a.warmup + a.duration) as f64;
    let per_url: Vec<(&str, usize, u64)> = run
        .targets
        .urls()
        .iter()
        .zip(run.targets.clients_per_url(clients))
        .enumerate()
        .map(|(k, (url, n))| (url.as_str(), n, run.targets.connected(k).load(Ordering::Relaxed)))
        .collect();
    let summary = serde_json::json!({
        "label": a.label, "scenario": format!("{:?}", a.scenario).to_lowercase(), "url": a.url.join(", "),
        "targets": per_url.iter().map(|(url, n, ok)| serde_json::json!({"url": url, "clients": n, "connected": ok}))
            .collect::<Vec<_>>(),
        "connections": a.connections, "size": a.size, "depth": a.depth, "message_rate": a.message_rate,
        "window_s": window,
        "handshakes": handshakes, "connected": connected, "refused": refused,
        "handshakes_per_s": handshakes as f64 / total_time,
        "handshake_us": {"p50": q(&hs, 0.5), "p99": q(&hs, 0.99), "max": hs.max()},
        "sent": sent, "received": received, "rejected": rejected, "errors": errors, "close_codes": closes,
        "events": events, "msgs_per_s": rate,
        "rtt_us": {"p50": q(&h, 0.5), "p90": q(&h, 0.9), "p99": q(&h, 0.99), "p999": q(&h, 0.999), "max": h.max()},
        "proxy_cpu_us_per_msg": cpu_per_msg, "proxy_cpu_user_share": user_share,
        "proxy_cpu_us_per_handshake": cpu_per_handshake,
        "ramp": ramp_log,
    });
    let mode = if a.message_rate > 0.0 {
        format!("open loop, {} msg/s per connection", a.message_rate)
    } else {
        format!("closed loop, depth {}", a.depth)
    };
    let us = |v: Option<f64>| v.map_or("-".to_string(), |c| format!("{c:.1} us"));
    println!(
        "{} — {:?}, {} connections, {} B, {mode}, {window:.1} s window",
        a.label, a.scenario, a.connections, a.size
    );
    let mut rows: Vec<(&str, String)> = Vec::new();
    if per_url.len() > 1 {
        let each: Vec<String> =
            per_url.iter().map(|(url, n, ok)| format!("{url} {n} clients ({ok} connected)")).collect();
        rows.push(("targets", format!("{} urls round robin: {}", per_url.len(), each.join(", "))));
    }
    rows.extend([
        ("connections", format!("{connected} ok, {handshakes} handshakes, refused {refused:?}")),
        ("messages", format!("{sent} sent, {received} received, rejected {rejected:?}")),
        ("throughput", format!("{rate:.0} msg/s")),
        (
            "rtt",
            format!(
                "p50 {} us  p90 {} us  p99 {} us  p99.9 {} us  max {} us",
                q(&h, 0.5),
                q(&h, 0.9),
                q(&h, 0.99),
                q(&h, 0.999),
                h.max()
            ),
        ),
        (
            "proxy cpu",
            format!(
                "{}/msg{} (user {})",
                us(cpu_per_msg),
                cpu_per_handshake.map_or(String::new(), |c| format!(", {c:.0} us/handshake")),
                user_share.map_or("-".to_string(), |u| format!("{:.0}%", u * 100.0))
            ),
        ),
        ("close codes", format!("{closes:?}")),
        ("errors", format!("{errors:?}")),
    ]);
    if a.scenario != Scenario::Steady {
        rows.push((
            "handshakes",
            format!(
                "{:.0}/s, p50 {} us, p99 {} us, max {} us",
                handshakes as f64 / total_time,
                q(&hs, 0.5),
                q(&hs, 0.99),
                hs.max()
            ),
        ));
        rows.push(("events", format!("{events:?}")));
    }
    for (name, value) in rows {
        println!("  {name:<12} {value}");
    }
    for warning in warnings(handshakes, connected, &refused, sent, &rejected) {
        println!("  WARNING      {warning}");
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}
