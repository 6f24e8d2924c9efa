//! `paired`: the CPU cost per message of two routes (or two targets served by one process),
//! measured in alternating short slices instead of one long window each.
//!
//! A sequential A/B (one window per target) is at the mercy of a machine whose speed drifts
//! by tens of percent within minutes: a 3 % difference drowns in it. Here both URLs get
//! `--connections` clients each, opened up front; only one side sends at a time. Every
//! `--slice-ms` the active side stops sending, its messages in flight are echoed back, and
//! the other side starts; the sides run A B B A A B B A …, so a drift that is linear over four
//! slices cancels within them. For each slice the run records the messages echoed and the CPU
//! time of `--cpu-pid` (the sum over its threads of `/proc/PID/task/*/schedstat`: time on a
//! CPU, user and kernel, in nanoseconds — not the 10 ms ticks of `/proc/PID/stat`).
//!
//! Reported: each side's CPU per message, the ratio B / A over all slices (pooled), the median
//! of the ratios of the slice pairs (one A and one B, adjacent), and a 95 % bootstrap interval
//! of the pooled ratio over the pairs. `--warmup` seconds of alternating slices run first and
//! are not recorded.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::scenarios::{next, note_error, open, payload, Incoming};
use crate::stats::Stats;
use crate::Run;

/// No side is sending.
const NONE: usize = usize::MAX;

/// How long a side may take to have its messages in flight echoed after it stops sending.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// What the controller and the clients share.
struct Shared {
    /// The side sending now (0 = A, 1 = B), or [`NONE`].
    active: AtomicUsize,
    wake: tokio::sync::watch::Sender<usize>,
    /// Per side: messages sent and not yet echoed.
    outstanding: [AtomicU64; 2],
    /// Per side: messages echoed.
    echoed: [AtomicU64; 2],
    /// Error frames and ended connections, per side.
    rejected: [AtomicU64; 2],
    ended: [AtomicU64; 2],
    stop: std::sync::atomic::AtomicBool,
}

/// One recorded slice.
#[derive(Debug, Clone, Copy)]
struct Slice {
    side: usize,
    cpu_ns: u64,
    msgs: u64,
}

/// Time on a CPU of every thread of `pid`, in nanoseconds (`/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        total = total.saturating_add(s.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0));
    }
    Some(total)
}

/// The side of slice `k`: A B B A, repeated.
fn side_of(k: usize) -> usize {
    usize::from(matches!(k % 4, 1 | 2))
}

/// The CPU time and the messages of `side`'s slices.
fn totals(slices: &[Slice], side: usize) -> (u64, u64) {
    slices.iter().filter(|s| s.side == side).fold((0, 0), |(c, m), s| (c + s.cpu_ns, m + s.msgs))
}

/// (CPU per message of B) / (CPU per message of A) over `slices`; `None` if a side has none.
fn pooled(slices: &[Slice]) -> Option<f64> {
    let per = |(cpu, msgs): (u64, u64)| (msgs > 0 && cpu > 0).then(|| cpu as f64 / msgs as f64);
    Some(per(totals(slices, 1))? / per(totals(slices, 0))?)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// A 95 % percentile bootstrap interval of [`pooled`] over the slice pairs (2 000 resamples,
/// a fixed seed so a run's figures can be recomputed from its JSON).
fn bootstrap(pairs: &[[Slice; 2]]) -> Option<(f64, f64)> {
    if pairs.len() < 4 {
        return None;
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut ratios = Vec::with_capacity(2000);
    let mut sample = Vec::with_capacity(pairs.len() * 2);
    for _ in 0..2000 {
        sample.clear();
        for _ in 0..pairs.len() {
            sample.extend_from_slice(&pairs[(rand() % pairs.len() as u64) as usize]);
        }
        if let Some(r) = pooled(&sample) {
            ratios.push(r);
        }
    }
    ratios.sort_by(f64::total_cmp);
    let at = |p: f64| ratios.get(((ratios.len() as f64 - 1.0) * p).round() as usize).copied();
    Some((at(0.025)?, at(0.975)?))
}

/// One client: sends while its side is active (closed loop, `--depth` in flight), lets its
/// messages in flight be echoed when the side stops, then waits for its side's next slice.
async fn client(run: Arc<Run>, shared: Arc<Shared>, i: usize, token: Option<String>) {
    let side = run.targets.index(i);
    let mut ws = match open(&run, token.as_deref(), run.args.origin.as_deref(), i, i).await {
        Ok(ws) => ws,
        Err(why) => return Stats::bump(&run.stats.refused, why),
    };
    let msg = payload(&run.args.message_type, run.args.size);
    let mut wake = shared.wake.subscribe();
    let mut in_flight = 0usize;
    loop {
        if shared.stop.load(Ordering::SeqCst) && in_flight == 0 {
            break;
        }
        if in_flight < run.args.depth {
            // Counted before the side is checked: the controller, which stops the side first
            // and then waits for the count to reach zero, never misses a message sent late.
            shared.outstanding[side].fetch_add(1, Ordering::SeqCst);
            if shared.active.load(Ordering::SeqCst) == side {
                if let Err(e) = ws.send(Message::text(msg.clone())).await {
                    shared.outstanding[side].fetch_sub(1, Ordering::SeqCst);
                    shared.ended[side].fetch_add(1, Ordering::SeqCst);
                    return note_error(&run.stats, &e);
                }
                in_flight += 1;
                continue;
            }
            shared.outstanding[side].fetch_sub(1, Ordering::SeqCst);
        }
        if in_flight > 0 {
            match next(&mut ws, &run.stats).await {
                Incoming::Data => shared.echoed[side].fetch_add(1, Ordering::SeqCst),
                Incoming::Rejected => shared.rejected[side].fetch_add(1, Ordering::SeqCst),
                Incoming::Control(_) => continue,
                Incoming::Ended => {
                    shared.outstanding[side].fetch_sub(in_flight as u64, Ordering::SeqCst);
                    shared.ended[side].fetch_add(1, Ordering::SeqCst);
                    return;
                }
            };
            in_flight -= 1;
            shared.outstanding[side].fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        // idle: wait for the next change of the active side (or the stop); the change seen
        // is marked before the side is read again, so a change after this read still wakes
        let _ = wake.borrow_and_update();
        if shared.active.load(Ordering::SeqCst) == side || shared.stop.load(Ordering::SeqCst) {
            continue;
        }
        if tokio::time::timeout(Duration::from_secs(1), wake.changed()).await.is_ok_and(|r| r.is_err()) {
            break;
        }
    }
    let _ = ws.close(None).await;
}

/// Run the paired measurement and print (and write, `--json`) its summary.
pub async fn run(run: Arc<Run>, tokens: Vec<Option<String>>) -> anyhow::Result<()> {
    let a = &run.args;
    anyhow::ensure!(run.targets.urls().len() == 2, "paired: exactly two --url (A and B) are required");
    let pid = a.cpu_pid.context("paired: --cpu-pid is required (the process whose CPU is compared)")?;
    anyhow::ensure!(cpu_ns(pid).is_some(), "paired: cannot read /proc/{pid}/task/*/schedstat");
    anyhow::ensure!((20..=10_000).contains(&a.slice_ms), "--slice-ms must be 20..=10000");
    let (wake, _) = tokio::sync::watch::channel(NONE);
    let shared = Arc::new(Shared {
        active: AtomicUsize::new(NONE),
        wake,
        outstanding: Default::default(),
        echoed: Default::default(),
        rejected: Default::default(),
        ended: Default::default(),
        stop: Default::default(),
    });
    let clients = 2 * a.connections;
    let mut tasks = Vec::with_capacity(clients);
    for (i, token) in tokens.into_iter().enumerate().take(clients) {
        tasks.push(tokio::spawn(client(Arc::clone(&run), Arc::clone(&shared), i, token)));
    }
    // every connection open (or refused) before the first slice
    let open_by = Instant::now() + Duration::from_secs(30);
    while (run.stats.connected.load(Ordering::SeqCst) + refused(&run)) < clients as u64 && Instant::now() < open_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connected = run.stats.connected.load(Ordering::SeqCst);
    anyhow::ensure!(connected == clients as u64, "paired: {connected} of {clients} connections opened");

    let slice = Duration::from_millis(a.slice_ms);
    let warm_slices = (a.warmup * 1000).div_ceil(a.slice_ms) as usize;
    // a whole number of A B B A groups
    let slices = ((a.duration * 1000).div_ceil(a.slice_ms) as usize).div_ceil(4) * 4;
    let mut recorded = Vec::with_capacity(slices);
    for k in 0..warm_slices + slices {
        let side = side_of(k);
        let (cpu0, msgs0) = (cpu_ns(pid), shared.echoed[side].load(Ordering::SeqCst));
        shared.active.store(side, Ordering::SeqCst);
        shared.wake.send_replace(side);
        tokio::time::sleep(slice).await;
        shared.active.store(NONE, Ordering::SeqCst);
        shared.wake.send_replace(NONE);
        let drained_by = Instant::now() + DRAIN_LIMIT;
        while shared.outstanding[side].load(Ordering::SeqCst) > 0 {
            anyhow::ensure!(Instant::now() < drained_by, "paired: side {side}'s messages were not echoed within 5 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (cpu1, msgs1) = (cpu_ns(pid), shared.echoed[side].load(Ordering::SeqCst));
        if k >= warm_slices {
            let cpu = cpu0.zip(cpu1).map(|(c0, c1)| c1.saturating_sub(c0)).context("paired: the process is gone")?;
            recorded.push(Slice { side, cpu_ns: cpu, msgs: msgs1.saturating_sub(msgs0) });
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
    shared.wake.send_replace(NONE);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    summarize(&run, &shared, &recorded)
}

fn refused(run: &Run) -> u64 {
    run.stats.refused.lock().expect("lock").values().sum()
}

fn summarize(run: &Run, shared: &Shared, slices: &[Slice]) -> anyhow::Result<()> {
    let a = &run.args;
    let pairs: Vec<[Slice; 2]> =
        slices.chunks_exact(2).map(|p| if p[0].side == 0 { [p[0], p[1]] } else { [p[1], p[0]] }).collect();
    let ratio = pooled(slices);
    let pair_ratios: Vec<f64> = pairs.iter().filter_map(|p| pooled(p)).collect();
    let pair_median = median(pair_ratios.clone());
    let interval = bootstrap(&pairs);
    let side = |s: usize| {
        let (cpu, msgs) = totals(slices, s);
        let n = slices.iter().filter(|x| x.side == s).count();
        serde_json::json!({
            "url": run.targets.urls()[s],
            "slices": n,
            "messages": msgs,
            "cpu_us_per_msg": (msgs > 0).then(|| cpu as f64 / 1000.0 / msgs as f64),
            "msgs_per_s_while_active": (n > 0).then(|| msgs as f64 / (n as f64 * a.slice_ms as f64 / 1000.0)),
            "rejected": shared.rejected[s].load(Ordering::SeqCst),
            "connections_ended": shared.ended[s].load(Ordering::SeqCst),
        })
    };
    let summary = serde_json::json!({
        "label": a.label,
        "scenario": "paired",
        "connections_per_side": a.connections,
        "size": a.size,
        "depth": a.depth,
        "slice_ms": a.slice_ms,
        "a": side(0),
        "b": side(1),
        "ratio_b_over_a": ratio,
        "ratio_pair_median": pair_median,
        "ratio_ci95": interval.map(|(lo, hi)| [lo, hi]),
        "pair_ratios": pair_ratios,
        "slices": slices.iter().map(|s| [s.side as u64, s.cpu_ns, s.msgs]).collect::<Vec<_>>(),
    });
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
    let us = |s: usize| summary[["a", "b"][s]]["cpu_us_per_msg"].as_f64().map_or("-".into(), |x| format!("{x:.2}"));
    println!(
        "{}: {} conns x {} B x depth {}, {} slices of {} ms: A {} us/msg, B {} us/msg, B/A {} (pairs' median {}, 95% {})",
        a.label,
        a.connections,
        a.size,
        a.depth,
        slices.len(),
        a.slice_ms,
        us(0),
        us(1),
        f(ratio),
        f(pair_median),
        interval.map_or("-".to_string(), |(lo, hi)| format!("{lo:.3}-{hi:.3}")),
    );
    let lost: u64 =
        (0..2).map(|s| shared.rejected[s].load(Ordering::SeqCst) + shared.ended[s].load(Ordering::SeqCst)).sum();
    if lost > 0 {
        println!(
            "WARNING: {lost} messages rejected or connections ended during the run: the ratio compares unequal work"
        );
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(side: usize, cpu_ns: u64, msgs: u64) -> Slice {
        Slice { side, cpu_ns, msgs }
    }

    #[test]
    fn sides_alternate_a_b_b_a() {
        let order: Vec<usize> = (0..8).map(side_of).collect();
        assert_eq!(order, [0, 1, 1, 0, 0, 1, 1, 0]);
    }

    #[test]
    fn pooled_ratio_is_cpu_per_message_of_b_over_a() {
        // A: 1000 ns/msg, B: 1100 ns/msg
        let v = [s(0, 100_000, 100), s(1, 220_000, 200), s(1, 110_000, 100), s(0, 300_000, 300)];
        assert!((pooled(&v).unwrap() - 1.1).abs() < 1e-12);
        assert_eq!(pooled(&v[..1]), None);
        assert_eq!(pooled(&[s(0, 10, 0), s(1, 10, 5)]), None);
    }

    #[test]
    fn bootstrap_interval_holds_the_ratio_and_narrows_with_agreeing_pairs() {
        let pairs: Vec<[Slice; 2]> = (0..40).map(|k| [s(0, 1000 + k % 7, 1), s(1, 1030 + (k * 3) % 11, 1)]).collect();
        let (lo, hi) = bootstrap(&pairs).unwrap();
        let flat: Vec<Slice> = pairs.iter().flatten().copied().collect();
        let r = pooled(&flat).unwrap();
        assert!(lo <= r && r <= hi, "{lo} {r} {hi}");
        assert!(hi - lo < 0.02, "{lo} {hi}");
        assert!(lo > 1.0, "B is slower in every pair: {lo}");
        assert_eq!(bootstrap(&pairs[..3]), None);
    }
}
