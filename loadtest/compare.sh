#!/usr/bin/env bash
# Side-by-side: the same wsgate-loadtest run, interleaved per repetition, against
#   direct   the echo backend itself (wsgate-echo)
#   nginx    Debian NGINX as a plain WebSocket reverse proxy (1 worker, access log off)
#   haproxy  Debian HAProxy (mode http, timeout tunnel, 1 thread)
#   wsgate   wsgate with the full pipeline (JWT, scopes, token bucket, JSON envelope + schema)
#   wsgate-none  wsgate with envelope = "none"
#   wsgate-guarded  the full pipeline plus the sensitive-data guard's default pack (every
#                built-in rule, action log, both directions)
# Servers pinned to CPU 0, the generator to CPU 1. Loopback only; every run is bounded.
# Env: REPS (3), WINDOW (6 s), POINTS ("100:64:1 1000:64:1 100:4096:1 1000:4096:1 100:64:16"),
#      IDLE (9000 idle connections for the RSS figure; 0 to skip), OUT (target/compare),
#      TARGETS (all six), HANDSHAKES (1: the ES256 handshake storm), SYSCALLS (0; 1: syscalls
#      per echoed message of each target, with strace, at SYSCALL_POINT), PAIRED (1: the
#      guard's cost in alternating slices; PAIRED_POINTS, PAIRED_WINDOW, PAIRED_SLICE_MS).
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}; WINDOW=${WINDOW:-6}; IDLE=${IDLE:-9000}
POINTS=${POINTS:-"100:64:1 1000:64:1 100:4096:1 1000:4096:1 100:64:16"}
OUT=${OUT:-target/compare}; rm -rf "$OUT"; mkdir -p "$OUT"
# Installed when missing (root only). policy-rc.d keeps the packages from starting their
# system services (NGINX would listen on 0.0.0.0:80): only the loopback instances below run.
if ! { command -v nginx && command -v haproxy; } >/dev/null && [ "$(id -u)" = 0 ]; then
  guard=/usr/sbin/policy-rc.d; own_guard=0
  [ -e $guard ] || { printf '#!/bin/sh\nexit 101\n' >$guard; chmod +x $guard; own_guard=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx-light haproxy >/dev/null
  if [ $own_guard = 1 ]; then rm -f $guard; fi
fi
cargo build -q --release --bin wsgate --bin wsgate-echo -p wsgate-loadtest --bin wsgate-loadtest --bin wsgate-verify-cost 2>/dev/null || \
  { cargo build -q --release --bin wsgate --bin wsgate-echo && cargo build -q --release -p wsgate-loadtest; }
ulimit -n 20000
source scripts/lib.sh
source loadtest/gateway-config.sh

start_echo release "$OUT" taskset -c 0
ECHO_PORT=${ECHO_ADDR##*:}

NGINX_PORT=$(free_port); mkdir -p "$OUT/nginx/logs"
cat >"$OUT/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid nginx.pid;
error_log logs/error.log warn;
events { worker_connections 20000; }
worker_rlimit_nofile 20000;
http {
  access_log off;
  client_body_temp_path tmp_body; proxy_temp_path tmp_proxy; fastcgi_temp_path tmp_fcgi;
  uwsgi_temp_path tmp_uwsgi; scgi_temp_path tmp_scgi;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://127.0.0.1:$ECHO_PORT;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header Host \$host;
      proxy_read_timeout 3600s;
      proxy_buffer_size 16k;
      proxy_buffers 4 16k;
      proxy_busy_buffers_size 32k;
    }
  }
}
CONF
taskset -c 0 nginx -p "$PWD/$OUT/nginx/" -c nginx.conf & PIDS+=($!)
wait_port $NGINX_PORT
NGINX_PID=$(cat "$OUT/nginx/nginx.pid"); NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1)

HAPROXY_PORT=$(free_port)
cat >"$OUT/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 9900
defaults
  mode http
  timeout connect 5s
  timeout client 3600s
  timeout server 3600s
  timeout tunnel 3600s
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend be
backend be
  server echo 127.0.0.1:$ECHO_PORT
CONF
taskset -c 0 haproxy -f "$OUT/haproxy.cfg" -db >"$OUT/haproxy.log" 2>&1 & PIDS+=($!); HAPROXY_PID=$!
wait_port $HAPROXY_PORT

cat >"$OUT/chat.send.json" <<'JSON'
{"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
JSON
bench_gateway_config 127.0.0.1:0 127.0.0.1:0 WSGATE_BENCH_SECRET "$ECHO_PORT" chat.send.json >"$OUT/wsgate.toml"
export WSGATE_BENCH_SECRET=$(random_secret)
start_gateway release "$OUT/wsgate.toml" "$OUT" env WSGATE_LOG=warn taskset -c 0
WSGATE_PID=$GW_PID; WSGATE_ADDR=$GW_ADDR

declare -A URL=( [direct]="ws://127.0.0.1:$ECHO_PORT/" [nginx]="ws://127.0.0.1:$NGINX_PORT/" [haproxy]="ws://127.0.0.1:$HAPROXY_PORT/"
                 [wsgate]="ws://$WSGATE_ADDR/ws" [wsgate-none]="ws://$WSGATE_ADDR/raw"
                 [wsgate-guarded]="ws://$WSGATE_ADDR/guarded" )
declare -A CPU=( [direct]=$ECHO_PID [nginx]=$NGINX_WORKER [haproxy]=$HAPROXY_PID [wsgate]=$WSGATE_PID [wsgate-none]=$WSGATE_PID [wsgate-guarded]=$WSGATE_PID )
TARGETS=${TARGETS:-"direct nginx haproxy wsgate wsgate-none wsgate-guarded"}
LT=./target/release/wsgate-loadtest
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)" | tee "$OUT/summary.txt"
for rep in $(seq 1 "$REPS"); do
  for point in $POINTS; do
    IFS=: read -r conns size depth <<<"$point"
    # odd repetitions run the targets in the listed order, even ones in reverse, so a target's
    # place in the sequence (a warmer or a more loaded gateway) averages out
    order=$TARGETS; [ $((rep % 2)) = 0 ] && order=$(printf '%s\n' $TARGETS | tac | xargs)
    for t in $order; do
      taskset -c 1 $LT steady --url "${URL[$t]}" --connections "$conns" --size "$size" --depth "$depth" \
        --warmup 1 --duration "$WINDOW" --hs256-secret "$WSGATE_BENCH_SECRET" --scope chat:write \
        --cpu-pid "${CPU[$t]}" --label "$t" --json "$OUT/run-$rep-$conns-$size-$depth-$t.json" | tee -a "$OUT/runs.txt"
    done
  done
done
rss() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
if [ "$IDLE" -gt 0 ]; then
  for t in nginx haproxy wsgate; do
    before=$(rss "${CPU[$t]}")
    taskset -c 1 $LT idle --url "${URL[$t]}" --connections "$IDLE" --warmup 8 --duration 4 \
      --hs256-secret "$WSGATE_BENCH_SECRET" --label "$t" --cpu-pid "${CPU[$t]}" --json "$OUT/idle-$t.json" >/dev/null &
    lt=$!
    sleep 10
    during=$(rss "${CPU[$t]}")
    wait $lt || true
    echo "{\"target\":\"$t\",\"rss_before_kib\":$before,\"rss_idle_kib\":$during,\"connections\":$IDLE}" >"$OUT/rss-$t.json"
    sleep 3
  done
fi
# Handshakes per second with ES256 verification: a second gateway (1 worker, CPU 0) whose
# only key is an ES256 public key; the generator opens and closes connections as fast as the
# ramp allows (spread over 127.0.0.0/8 so no per-IP limit or port range interferes).
if [ "${HANDSHAKES:-1}" = 1 ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$OUT/es256.key" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$OUT/es256.key" -out "$OUT/es256.pk8.pem"
  openssl ec -in "$OUT/es256.key" -pubout -out "$OUT/es256.pub.pem" 2>/dev/null
  sed -e 's/^algorithm = "HS256"/algorithm = "ES256"/' -e 's|^secret_env = .*|public_key_file = "es256.pub.pem"|' \
    "$OUT/wsgate.toml" >"$OUT/wsgate-es256.toml"
  mkdir -p "$OUT/es256"
  start_gateway release "$OUT/wsgate-es256.toml" "$OUT/es256" env WSGATE_LOG=warn taskset -c 0
  taskset -c 1 $LT ramp --url "ws://$GW_ADDR/ws" --private-key "$OUT/es256.pk8.pem" --alg ES256 \
    --close-after-handshake --spread-ips --rate 1000 --rate-step 1000 --max-connections 1000000 \
    --warmup 0 --duration "${HS_WINDOW:-8}" --cpu-pid "$GW_PID" --label wsgate-es256 --quiet \
    --json "$OUT/handshakes-es256.json" | tee -a "$OUT/runs.txt"
  # HS256, a fresh token per handshake, on the main gateway's full-pipeline route.
  taskset -c 1 $LT ramp --url "ws://$WSGATE_ADDR/ws" --hs256-secret "$WSGATE_BENCH_SECRET" --scope chat:write \
    --close-after-handshake --spread-ips --rate 1000 --rate-step 1000 --max-connections 1000000 \
    --warmup 0 --duration "${HS_WINDOW:-8}" --cpu-pid "$WSGATE_PID" --label wsgate-hs256 --quiet \
    --json "$OUT/handshakes-hs256.json" | tee -a "$OUT/runs.txt"
  # The same storm through NGINX (no token check at all): the cost of proxying a handshake.
  taskset -c 1 $LT ramp --url "ws://127.0.0.1:$NGINX_PORT/" --close-after-handshake --spread-ips \
    --rate 1000 --rate-step 1000 --max-connections 1000000 --warmup 0 --duration "${HS_WINDOW:-8}" \
    --cpu-pid "$NGINX_WORKER" --label nginx --quiet --json "$OUT/handshakes-nginx.json" | tee -a "$OUT/runs.txt"
  # The yardstick: one ES256 verification with the gateway's library and backend, on CPU 0.
  taskset -c 0 ./target/release/wsgate-verify-cost --private-key "$OUT/es256.pk8.pem" \
    --public-key "$OUT/es256.pub.pem" --alg ES256 --count 5000 >"$OUT/verify-es256.json"
fi
# Syscalls per echoed message (SYSCALLS=1; strace is installed when missing): each target once
# at SYSCALL_POINT (100:64:1), `strace -c -f` attached to its process for the whole run (no
# warmup, so the counted messages are every message of the run; the handshakes are in the
# count too, about 1 % of it at 100 connections). strace slows the process it traces, so the
# counts are the figure, not the rate; a closed loop of depth 1 keeps one message in flight
# per connection, so a slower process cannot batch more of one connection's messages.
if [ "${SYSCALLS:-0}" = 1 ]; then
  if ! command -v strace >/dev/null && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends strace >/dev/null
  fi
  IFS=: read -r conns size depth <<<"${SYSCALL_POINT:-100:64:1}"
  for t in $TARGETS; do
    strace -c -f -q -p "${CPU[$t]}" -o "$OUT/strace-$t.txt" & tracer=$!
    sleep 1
    taskset -c 1 $LT steady --url "${URL[$t]}" --connections "$conns" --size "$size" --depth "$depth" \
      --warmup 0 --duration "${SYSCALL_WINDOW:-4}" --hs256-secret "$WSGATE_BENCH_SECRET" --scope chat:write \
      --label "$t" --quiet --json "$OUT/syscalls-$t.json" >/dev/null
    kill -INT $tracer; wait $tracer || true
  done
  python3 - "$OUT" $TARGETS <<'PY' | tee -a "$OUT/summary.txt"
import json, re, sys
out, targets = sys.argv[1], sys.argv[2:]
print("\n| target | echoed messages | syscalls per message | the largest, per message |\n|---|---|---|---|")
for t in targets:
    msgs = json.load(open(f"{out}/syscalls-{t}.json"))["received"]
    calls = {}
    for line in open(f"{out}/strace-{t}.txt"):
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$", line)
        if m and m.group(3) != "total":
            calls[m.group(3)] = (int(m.group(1)), int(m.group(2) or 0))
    top = sorted(calls.items(), key=lambda kv: -kv[1][0])[:6]
    per = lambda n: n / msgs if msgs else float("nan")
    total = sum(c for c, _ in calls.values())
    show = lambda k, c, e: f"{k} {per(c):.2f}" + (f" ({per(e):.2f} failed)" if e else "")
    print(f"| {t} | {msgs} | {per(total):.2f} | " + ", ".join(show(k, c, e) for k, (c, e) in top) + " |")
PY
fi
# The guard's cost, paired (PAIRED=1, the default): /ws and /guarded of the same gateway,
# `--connections` clients on each, sending in turn in PAIRED_SLICE_MS (50) slices, A B B A …,
# for PAIRED_WINDOW (24) s per point after a 2 s warm-up; the gateway's CPU (schedstat, ns)
# per echoed message, /guarded over /ws. Alternating slices cancel the machine's drift that
# sinks a 3 % difference in the sequential windows above.
if [ "${PAIRED:-1}" = 1 ]; then
  for point in ${PAIRED_POINTS:-$POINTS}; do
    IFS=: read -r conns size depth <<<"$point"
    taskset -c 1 $LT paired --url "ws://$WSGATE_ADDR/ws" --url "ws://$WSGATE_ADDR/guarded" \
      --connections "$conns" --size "$size" --depth "$depth" --warmup 2 --duration "${PAIRED_WINDOW:-24}" \
      --slice-ms "${PAIRED_SLICE_MS:-50}" --hs256-secret "$WSGATE_BENCH_SECRET" --scope chat:write \
      --cpu-pid "$WSGATE_PID" --label "guard-paired-$conns-$size-$depth" \
      --json "$OUT/paired-$conns-$size-$depth.json" | tee -a "$OUT/runs.txt"
  done
fi
python3 loadtest/report.py "$OUT" | tee -a "$OUT/summary.txt"
