"""Bounded soak of a running wsgate: steady connections, churn and abusive clients at once,
recording the gateway's RSS and open file descriptors before, during and after.

Usage: soak.py --url ws://HOST:PORT/ws --token JWT --pid GATEWAY_PID [--connections 2000]
               [--duration 300] [--warmup SECONDS] [--json report.json] [--check CMD]
--url and --pid may be repeated (a fleet: clients go to the URLs round robin; every pid is
watched). With --check, CMD runs twice at the end and must exit 0: once after the churn and
abusive clients stopped while the steady ones are still connected, once after every client
left (fleet mode: the shared counts must equal the nodes' own).
Passes when, after all clients left, each process's open fds are back at its baseline and its
RSS (VmRSS) is within 10% of the baseline taken after a warm-up of the same mix (steady,
churn and abusive clients; --warmup seconds, by default as long as the run: the allocator
keeps what a cycle grew, its high-water after a cycle depends on how long the cycle ran, and
the error paths' code pages stay resident once faulted in — so the baseline is the same cycle
once before, and a leak is what the second cycle leaves on top of the first); when its resident anonymous memory
(RssAnon: the allocator's, without the executable's file-backed pages) did not grow under the
load (the last two samples of the measured phase within 5% of its first two: a leak per
connection or message grows it); and every check passed.
"""
import argparse, asyncio, json, os, random, subprocess, sys, time

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, ConnectionClosed


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    return status_kib(pid, "VmRSS")


def anon_kib(pid):
    """Resident anonymous memory: what the allocator holds. VmRSS also counts the executable's
    own pages, which the first abusive client's error paths fault in and which stay resident
    (they are file-backed and shared, not an allocation)."""
    return status_kib(pid, "RssAnon")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Stats:
    def __init__(self):
        self.c = {}

    def inc(self, k, n=1):
        self.c[k] = self.c.get(k, 0) + n


async def steady(url, token, stop, stats, idx):
    local = ("127.0.%d.%d" % (1 + idx // 250, 1 + idx % 250), 0)
    try:
        async with connect(url, subprotocols=["chat.v1", "bearer." + token], local_addr=local, open_timeout=30) as ws:
            stats.inc("steady_open")
            await ws.recv()  # whoami
            n = 0
            while not stop.is_set():
                msg = json.dumps({"type": "chat.send", "payload": {"text": "tick"}, "id": f"{idx}-{n}"})
                await ws.send(msg)
                if await ws.recv() == msg:
                    stats.inc("steady_echo")
                n += 1
                await asyncio.sleep(1.0 + random.random() * 0.2)
    except (ConnectionClosed, InvalidStatus, OSError, asyncio.TimeoutError) as e:
        stats.inc("steady_error_" + type(e).__name__)


async def churn(url, token, stop, stats, idx):
    while not stop.is_set():
        try:
            async with connect(url, additional_headers={"Authorization": "Bearer " + token},
                               local_addr=("127.1.0.%d" % (1 + idx), 0), open_timeout=30) as ws:
                await ws.recv()
                for i in range(5):
                    await ws.send(json.dumps({"type": "chat.read", "payload": {}, "id": i}))
                    await ws.recv()
                stats.inc("churn_cycle")
        except (ConnectionClosed, InvalidStatus, OSError, asyncio.TimeoutError) as e:
            stats.inc("churn_error_" + type(e).__name__)
            await asyncio.sleep(0.5)


async def abuse(url, token, stop, stats, idx):
    kinds = ["origin", "token", "oversize", "flood", "json"]
    local = ("127.2.0.%d" % (1 + idx), 0)
    while not stop.is_set():
        kind = kinds[random.randrange(len(kinds))]
        try:
            if kind == "origin":
                async with connect(url, origin="https://evil.example", local_addr=local,
                                   subprotocols=["chat.v1", "bearer." + token]):
                    stats.inc("abuse_origin_admitted")
            elif kind == "token":
                async with connect(url, additional_headers={"Authorization": "Bearer x.y.z"}, local_addr=local):
                    stats.inc("abuse_token_admitted")
            else:
                async with connect(url, additional_headers={"Authorization": "Bearer " + token},
                                   local_addr=local, max_size=None) as ws:
                    await ws.recv()
                    if kind == "oversize":
                        await ws.send("x" * 70000)
                    elif kind == "flood":
                        for _ in range(300):
                            await ws.send(json.dumps({"type": "chat.read", "payload": {}}))
                    else:
                        for _ in range(20):
                            await ws.send("{not json")
                    try:
                        while True:
                            await asyncio.wait_for(ws.recv(), 10)
                    except ConnectionClosed:
                        stats.inc("abuse_closed_%s_%s" % (kind, ws.close_code))
        except InvalidStatus as e:
            stats.inc("abuse_refused_%s_%d" % (kind, e.response.status_code))
        except (ConnectionClosed, OSError, asyncio.TimeoutError) as e:
            stats.inc("abuse_error_%s_%s" % (kind, type(e).__name__))
        await asyncio.sleep(0.2)


def pick(urls, i):
    return urls[i % len(urls)]


def run_check(cmd, phase):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120)
    print("check %s: exit %d\n%s%s" % (phase, r.returncode, r.stdout, r.stderr), flush=True)
    return {"phase": phase, "exit": r.returncode, "output": r.stdout[-4000:]}


async def mix(urls, token, n, seconds, stats):
    """n steady clients, 20 churners and 10 abusers for `seconds`, then every client leaves."""
    stop_rest = asyncio.Event()
    rest = [asyncio.create_task(churn(pick(urls, i), token, stop_rest, stats, i)) for i in range(20)]
    rest += [asyncio.create_task(abuse(pick(urls, i), token, stop_rest, stats, i)) for i in range(10)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(steady(pick(urls, i), token, stop, stats, i)) for i in range(n)]
    await asyncio.sleep(seconds)
    stop_rest.set()
    stop.set()
    await asyncio.wait(tasks + rest, timeout=90)
    for t in tasks + rest:
        t.cancel()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, action="append")
    ap.add_argument("--token", required=True)
    ap.add_argument("--pid", type=int, required=True, action="append")
    ap.add_argument("--check")
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--duration", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=None,
                    help="seconds of the warm-up mix, the baseline (default: --duration)")
    ap.add_argument("--json")
    a = ap.parse_args()
    samples = []
    sample = lambda phase: samples.append({"t": round(time.time() - t0, 1), "phase": phase,
                                           "rss_kib": [rss_kib(p) for p in a.pid],
                                           "anon_kib": [anon_kib(p) for p in a.pid], "fds": [fds(p) for p in a.pid]})
    t0 = time.time()
    sample("start")
    fd_base = samples[-1]["fds"]
    warm = Stats()
    warmup = a.duration if a.warmup is None else a.warmup
    await mix(a.url, a.token, a.connections, warmup, warm)
    await asyncio.sleep(5)  # as after the run
    sample("after-warmup")
    rss_base = samples[-1]["rss_kib"]
    anon_base = samples[-1]["anon_kib"]

    stats = Stats()
    stop_steady, stop_rest = asyncio.Event(), asyncio.Event()
    steady_tasks = [asyncio.create_task(steady(pick(a.url, i), a.token, stop_steady, stats, i)) for i in range(a.connections)]
    rest = [asyncio.create_task(churn(pick(a.url, i), a.token, stop_rest, stats, i)) for i in range(20)]
    rest += [asyncio.create_task(abuse(pick(a.url, i), a.token, stop_rest, stats, i)) for i in range(10)]
    end = time.time() + a.duration
    while time.time() < end:
        await asyncio.sleep(min(10, max(0, end - time.time())))
        sample("during")
        print("soak t=%5.0fs rss=%s KiB anon=%s KiB fds=%s" % (samples[-1]["t"], samples[-1]["rss_kib"],
              samples[-1]["anon_kib"], samples[-1]["fds"]), flush=True)
    checks = []
    stop_rest.set()
    await asyncio.wait(rest, timeout=90)
    for t in rest:
        t.cancel()
    if a.check:
        await asyncio.sleep(5)
        checks.append(run_check(a.check, "steady clients connected"))
    stop_steady.set()
    await asyncio.wait(steady_tasks, timeout=90)
    for t in steady_tasks:
        t.cancel()
    await asyncio.sleep(5)
    if a.check:
        checks.append(run_check(a.check, "every client gone"))
    sample("after")
    after = samples[-1]
    peak = [max(s["rss_kib"][i] for s in samples) for i in range(len(a.pid))]
    ok_fds = all(x <= b for x, b in zip(after["fds"], fd_base))
    ok_rss = all(x <= b * 1.10 for x, b in zip(after["rss_kib"], rss_base))
    # growth under the same load: the last two samples of the measured phase against its
    # first two, in resident anonymous memory (a leak per connection or message grows it)
    during = [s_["anon_kib"] for s_ in samples if s_["phase"] == "during"]
    growth = [(during[-1][i] + during[-2][i]) / max(1, during[0][i] + during[1][i]) for i in range(len(a.pid))] \
        if len(during) >= 4 else [1.0] * len(a.pid)
    ok_growth = all(g <= 1.05 for g in growth)
    ok_checks = all(c["exit"] == 0 for c in checks)
    report = {"connections": a.connections, "duration_s": a.duration, "urls": a.url, "fd_baseline": fd_base,
              "rss_baseline_kib": rss_base, "anon_baseline_kib": anon_base,
              "anon_start_kib": samples[0]["anon_kib"], "rss_start_kib": samples[0]["rss_kib"], "rss_peak_kib": peak,
              "after": after, "counters": stats.c, "samples": samples, "checks": checks,
              "fds_back_to_baseline": ok_fds, "rss_within_10pct": ok_rss,
              "anon_growth_under_load": [round(g, 3) for g in growth], "anon_flat_under_load": ok_growth, "checks_passed": ok_checks}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    results = [ok_fds, ok_rss, ok_growth] + ([ok_checks] if a.check else [])
    print("soak: %d passed, %d failed" % (sum(results), len(results) - sum(results)))
    sys.exit(0 if all(results) else 1)


asyncio.run(main())
