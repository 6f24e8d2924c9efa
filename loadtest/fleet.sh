#!/usr/bin/env bash
# Fleet mode measured (loopback only, every run bounded, about 2 minutes after the build):
#   1. revoke: three gateway nodes with [fleet] on one redis-server, CONNS connections spread
#      round robin over them, each busy at MSG_RATE messages per second; every connection is
#      then revoked (POST /admin/revoke {"jti"}) through ANOTHER node's admin API at
#      REVOKE_RATE per second, timing each request to its 4003 close on the client
#      (`wsgate-loadtest revoke`); prints the percentiles and the histogram.
#   2. handshakes: the same `ramp` (HS connections at HS_RATE per second, each closed after its
#      handshake, so its admission and its release are both in the window) against one node
#      without [fleet] and one node with it (same config otherwise), interleaved REPS times;
#      prints handshake p50/p99 and CPU per handshake of the gateway (and of redis-server)
#      side by side with the difference (medians over the repetitions).
# Servers (echo, redis-server, gateways; 1 worker each) pinned to CPU 0, the generator to
# CPU 1, as in compare.sh. Limits are permissive (no per-IP or per-subject caps, handshake rate
# 10^6/s) and clients use --spread-ips, so nothing is refused.
# Env: CONNS (1200), MSG_RATE (5), REVOKE_RATE (50), WARMUP (3 s), HS (2000), HS_RATE (500),
#      REPS (3), OUT (target/fleet).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-1200}; MSG_RATE=${MSG_RATE:-5}; REVOKE_RATE=${REVOKE_RATE:-50}; WARMUP=${WARMUP:-3}
HS=${HS:-2000}; HS_RATE=${HS_RATE:-500}; REPS=${REPS:-3}
OUT=${OUT:-target/fleet}; rm -rf "$OUT"; mkdir -p "$OUT"
command -v redis-server >/dev/null || { echo "fleet.sh needs redis-server (apt-get install redis-server)"; exit 1; }
cargo build -q --release -p wsgate -p wsgate-loadtest
ulimit -n 20000
# PIDS (stopped on exit by pid) and CLEANUP_DIRS (removed), trap on EXIT: scripts/lib.sh.
source scripts/lib.sh
source loadtest/gateway-config.sh
LT=./target/release/wsgate-loadtest

# redis-server on a unix socket in a private temp dir (a short path: sun_path holds 108 bytes).
RDIR=$(mktemp -d /tmp/wsgate-fleet.XXXXXX); CLEANUP_DIRS+=("$RDIR")
taskset -c 0 redis-server --port 0 --unixsocket "$RDIR/r.sock" --save '' --appendonly no --dir "$RDIR" \
  >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!; PIDS+=("$REDIS_PID")
for _ in $(seq 1 200); do [ "$(redis-cli -s "$RDIR/r.sock" ping 2>/dev/null)" = PONG ] && break; sleep 0.05; done
[ "$(redis-cli -s "$RDIR/r.sock" ping)" = PONG ] || { echo "redis-server did not start"; cat "$OUT/redis.log"; exit 1; }

start_echo release "$OUT" taskset -c 0
ECHO_PORT=${ECHO_ADDR##*:}
cat >"$OUT/chat.send.json" <<'JSON'
{"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
JSON
export WSGATE_BENCH_SECRET; WSGATE_BENCH_SECRET=$(random_secret)
export WSGATE_ADMIN_TOKEN; WSGATE_ADMIN_TOKEN=$(random_secret)
# The benchmarks' config (1 worker, limits out of the way) with an admin token; a node of the
# fleet adds [fleet].
bench_gateway_config 127.0.0.1:0 127.0.0.1:0 WSGATE_BENCH_SECRET "$ECHO_PORT" chat.send.json |
  sed '/^\[admin\]$/a token_env = "WSGATE_ADMIN_TOKEN"' >"$OUT/single.toml"
grep -q '^token_env = "WSGATE_ADMIN_TOKEN"$' "$OUT/single.toml"
fleet_config() {
  cat "$OUT/single.toml"
  printf '[fleet]\nredis_url = "redis+unix://%s"\nnode_id = "%s"\nheartbeat_seconds = 1\n' "$RDIR/r.sock" "$1"
}
# start_node NAME CONFIG: sets NODE_WS, NODE_ADMIN, NODE_PID.
start_node() {
  mkdir -p "$OUT/$1"
  start_gateway release "$2" "$OUT/$1" env WSGATE_LOG=warn taskset -c 0
  NODE_PID=$GW_PID; NODE_WS="ws://$GW_ADDR/ws"
  NODE_ADMIN=$(sed -n 's|.*admin=\(http://[^ ]*\).*|\1|p' "$OUT/$1/gw.out")
}
URLS=(); ADMINS=(); FLEET_PIDS=()
for n in a b c; do
  fleet_config "$n" >"$OUT/fleet-$n.toml"
  start_node "$n" "$OUT/fleet-$n.toml"
  URLS+=(--url "$NODE_WS"); ADMINS+=(--admin-url "$NODE_ADMIN"); FLEET_PIDS+=("$NODE_PID")
done
start_node single "$OUT/single.toml"
SINGLE_PID=$NODE_PID; SINGLE_WS=$NODE_WS
FLEET_A_PID=${FLEET_PIDS[0]}; FLEET_A_WS=${URLS[1]}
sleep 1  # a heartbeat: every node sees the others

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r); redis $(redis-server --version | awk '{print $3}')" |
  tee "$OUT/summary.txt"
echo "== revoke: $CONNS connections over 3 fleet nodes, $MSG_RATE msg/s each, $REVOKE_RATE revocations/s via another node" |
  tee -a "$OUT/summary.txt"
rc=0
taskset -c 1 $LT revoke "${URLS[@]}" "${ADMINS[@]}" --admin-token-env WSGATE_ADMIN_TOKEN \
  --hs256-secret "$WSGATE_BENCH_SECRET" --spread-ips --connections "$CONNS" --message-rate "$MSG_RATE" \
  --warmup "$WARMUP" --revoke-rate "$REVOKE_RATE" --label fleet-revoke --quiet --json "$OUT/revoke.json" \
  | tee -a "$OUT/summary.txt" || rc=$?

# CPU ticks (utime+stime, USER_HZ 100) of a process.
ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
echo "== handshakes: ramp of $HS connections at $HS_RATE/s, closed after the handshake, $REPS repetitions" |
  tee -a "$OUT/summary.txt"
window=$(( (HS + HS_RATE - 1) / HS_RATE + 2 ))
for rep in $(seq 1 "$REPS"); do
  for mode in single fleet; do
    if [ "$mode" = single ]; then url=$SINGLE_WS; pid=$SINGLE_PID; else url=$FLEET_A_WS; pid=$FLEET_A_PID; fi
    r0=$(ticks "$REDIS_PID")
    taskset -c 1 $LT ramp --url "$url" --hs256-secret "$WSGATE_BENCH_SECRET" --spread-ips --close-after-handshake \
      --rate "$HS_RATE" --rate-step 0 --max-connections "$HS" --warmup 0 --duration "$window" --cpu-pid "$pid" \
      --label "$mode" --quiet --json "$OUT/ramp-$rep-$mode.json" >"$OUT/ramp-$rep-$mode.txt"
    r1=$(ticks "$REDIS_PID")
    echo "{\"redis_cpu_ms\": $(( (r1 - r0) * 10 ))}" >"$OUT/redis-$rep-$mode.json"
    sleep 1
  done
done
python3 - "$OUT" "$REPS" <<'PY' | tee -a "$OUT/summary.txt"
import json, statistics, sys
out, reps = sys.argv[1], int(sys.argv[2])
def load(rep, mode):
    r = json.load(open(f"{out}/ramp-{rep}-{mode}.json"))
    redis = json.load(open(f"{out}/redis-{rep}-{mode}.json"))["redis_cpu_ms"]
    hs = max(r["handshakes"], 1)
    return {"p50": r["handshake_us"]["p50"] / 1000, "p99": r["handshake_us"]["p99"] / 1000,
            "cpu": (r["proxy_cpu_us_per_handshake"] or 0) / 1000, "redis": redis / hs,
            "hs": r["handshakes"], "refused": sum(r["refused"].values()), "errors": sum(r["errors"].values())}
runs = {m: [load(k, m) for k in range(1, reps + 1)] for m in ("single", "fleet")}
for m, rs in runs.items():
    for k, r in enumerate(rs, 1):
        print(f"  rep {k} {m:<6} handshakes {r['hs']} (refused {r['refused']}, errors {r['errors']}): "
              f"p50 {r['p50']:.3f} ms, p99 {r['p99']:.3f} ms, gateway CPU {r['cpu']:.3f} ms/handshake, "
              f"redis CPU {r['redis']:.3f} ms/handshake")
med = {m: {k: statistics.median(r[k] for r in rs) for k in ("p50", "p99", "cpu", "redis")} for m, rs in runs.items()}
rows = [("handshake p50 (ms)", "p50"), ("handshake p99 (ms)", "p99"),
        ("gateway CPU per handshake (ms)", "cpu"), ("redis-server CPU per handshake (ms)", "redis")]
print(f"\nmedians of {reps} interleaved repetitions:\n")
print("| | without [fleet] | with [fleet] | difference |")
print("|---|---|---|---|")
for label, k in rows:
    a, b = med["single"][k], med["fleet"][k]
    rel = f" ({(b - a) / a * 100:+.0f} %)" if a > 0 else ""
    print(f"| {label} | {a:.3f} | {b:.3f} | {b - a:+.3f}{rel} |")
bad = [r for rs in runs.values() for r in rs if r["refused"] or r["errors"]]
if bad:
    print(f"\nWARNING: {len(bad)} ramp runs had refusals or errors: see {out}/ramp-*.txt")
PY
exit "$rc"
