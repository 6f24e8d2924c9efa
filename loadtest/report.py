#!/usr/bin/env python3
"""Summarise loadtest/compare.sh output: medians over repetitions per point and target, and
ratios against NGINX and HAProxy (medians of per-repetition ratios). Prints markdown."""
import glob, json, os, statistics, sys
from collections import defaultdict

out = sys.argv[1]
runs = defaultdict(lambda: defaultdict(dict))  # point -> target -> rep -> summary
for f in glob.glob(os.path.join(out, "run-*.json")):
    _, rep, conns, size, depth, target = os.path.basename(f)[:-5].split("-", 5)
    runs[(int(conns), int(size), int(depth))][target][int(rep)] = json.load(open(f))

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def ratio(point, target, ref, key):
    rs = []
    for rep, s in runs[point][target].items():
        r = runs[point].get(ref, {}).get(rep)
        a, b = key(s), (key(r) if r else None)
        if a is not None and b:
            rs.append(a / b)
    return med(rs)

targets = ["direct", "nginx", "haproxy", "wsgate", "wsgate-none", "wsgate-guarded"]
print("\n| point (conns x bytes x depth) | target | msg/s | p50 us | p99 us | proxy CPU us/msg | CPU vs nginx | msg/s vs nginx | CPU vs haproxy |")
print("|---|---|---|---|---|---|---|---|---|")
cpu = lambda s: s.get("proxy_cpu_us_per_msg")
rate = lambda s: s.get("msgs_per_s")
fmt = lambda x, d=1: "-" if x is None else f"{x:.{d}f}"
for point in sorted(runs):
    for t in targets:
        reps = list(runs[point].get(t, {}).values())
        if not reps:
            continue
        print(f"| {point[0]} x {point[1]} x {point[2]} | {t} | {fmt(med([rate(s) for s in reps]),0)} | "
              f"{fmt(med([s['rtt_us']['p50'] for s in reps]),0)} | {fmt(med([s['rtt_us']['p99'] for s in reps]),0)} | "
              f"{fmt(med([cpu(s) for s in reps]))} | {fmt(ratio(point, t, 'nginx', cpu), 2)} | "
              f"{fmt(ratio(point, t, 'nginx', rate), 2)} | {fmt(ratio(point, t, 'haproxy', cpu), 2)} |")
guarded = [p for p in sorted(runs) if runs[p].get("wsgate-guarded") and runs[p].get("wsgate")]
if guarded:
    print("\n| point (conns x bytes x depth) | sensitive-data guard (default pack, log): CPU vs the full pipeline without it | msg/s vs it |")
    print("|---|---|---|")
    for point in guarded:
        print(f"| {point[0]} x {point[1]} x {point[2]} | {fmt(ratio(point, 'wsgate-guarded', 'wsgate', cpu), 3)} | "
              f"{fmt(ratio(point, 'wsgate-guarded', 'wsgate', rate), 3)} |")
rss = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, "rss-*.json")))]
if rss:
    print("\n| proxy | idle connections | RSS before KiB | RSS with them KiB | KiB per connection |")
    print("|---|---|---|---|---|")
    for r in rss:
        per = (r["rss_idle_kib"] - r["rss_before_kib"]) / r["connections"]
        print(f"| {r['target']} | {r['connections']} | {r['rss_before_kib']} | {r['rss_idle_kib']} | {per:.1f} |")
hs_rows = [(name, os.path.join(out, f"handshakes-{name}.json")) for name in ("es256", "hs256", "nginx")]
hs_rows = [(name, json.load(open(p))) for name, p in hs_rows if os.path.exists(p)]
if hs_rows:
    print("\n| handshake storm (1 worker, connections closed at once) | completed | refused | handshakes/s | p50 us | p99 us | proxy CPU us/handshake | user share | handshakes/s per core |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, h in hs_rows:
        cpu_hs = h.get("proxy_cpu_us_per_handshake")
        per_core = 1e6 / cpu_hs if cpu_hs else None
        what = {"es256": "wsgate, ES256 verify + upstream dial", "hs256": "wsgate, HS256 verify + upstream dial"}.get(
            name, "nginx, plain proxy (no auth)")
        share = h.get("proxy_cpu_user_share")
        print(f"| {what} | {h['connected']} | {sum(h['refused'].values())} | {h['handshakes_per_s']:.0f} | "
              f"{h['handshake_us']['p50']} | {h['handshake_us']['p99']} | {fmt(cpu_hs, 0)} | "
              f"{fmt(share * 100 if share is not None else None, 0)}% | {fmt(per_core, 0)} |")
# Against the per-handshake targets: HS256 <= 1.2x NGINX's CPU per proxied handshake; ES256 <=
# NGINX's plus one ES256 verification (aws-lc, measured in the same run).
hs = dict(hs_rows)
verify_path = os.path.join(out, "verify-es256.json")
verify = json.load(open(verify_path)).get("cpu_us_per_verify") if os.path.exists(verify_path) else None
nginx_hs = hs.get("nginx", {}).get("proxy_cpu_us_per_handshake")
if nginx_hs:
    print("\n| per handshake | wsgate CPU us | yardstick us | wsgate / yardstick |\n|---|---|---|---|")
    hs256 = hs.get("hs256", {}).get("proxy_cpu_us_per_handshake")
    if hs256:
        print(f"| HS256 vs 1.2 x NGINX's | {hs256:.0f} | {1.2 * nginx_hs:.0f} | {hs256 / (1.2 * nginx_hs):.2f} |")
    es256 = hs.get("es256", {}).get("proxy_cpu_us_per_handshake")
    if es256 and verify:
        print(f"| ES256 vs NGINX's + one ES256 verification ({verify:.0f} us) | {es256:.0f} | {nginx_hs + verify:.0f} | "
              f"{es256 / (nginx_hs + verify):.2f} |")
# The guard's cost in alternating slices (compare.sh's PAIRED step): /guarded over /ws of one
# gateway, CPU per echoed message; the target is within 3 %.
paired = []
for f in glob.glob(os.path.join(out, "paired-*.json")):
    p = json.load(open(f))
    paired.append(((p["connections_per_side"], p["size"], p["depth"]), p))
if paired:
    print("\n| guard, paired slices (conns x bytes x depth) | slices | /ws CPU us/msg | /guarded CPU us/msg | /guarded / /ws | pairs' median | 95 % interval |")
    print("|---|---|---|---|---|---|---|")
    for (c, s, d), p in sorted(paired):
        ci = p.get("ratio_ci95")
        print(f"| {c} x {s} x {d} | {len(p['slices'])} of {p['slice_ms']} ms | {fmt(p['a']['cpu_us_per_msg'], 2)} | "
              f"{fmt(p['b']['cpu_us_per_msg'], 2)} | {fmt(p['ratio_b_over_a'], 3)} | {fmt(p['ratio_pair_median'], 3)} | "
              + (f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-") + " |")
