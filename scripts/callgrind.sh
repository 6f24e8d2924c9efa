#!/usr/bin/env bash
# User instructions in the gateway per echoed message, measured with callgrind.
#
#   scripts/callgrind.sh [WSGATE_BIN [ECHO_BIN [LOADTEST_BIN]]]
#
# Build first (profiling = release code with line tables, Cargo.toml):
#   cargo build --profile profiling --bin wsgate --bin wsgate-echo
#   cargo build --release -p wsgate-loadtest
# Binaries: the arguments, else $WSGATE_BIN / $ECHO_BIN / $LOADTEST_BIN, else
#   $CARGO_TARGET_DIR/profiling/wsgate, $CARGO_TARGET_DIR/profiling/wsgate-echo,
#   $CARGO_TARGET_DIR/release/wsgate-loadtest (CARGO_TARGET_DIR defaults to ./target).
#
# Each run starts a fresh gateway (1 worker) under `valgrind --tool=callgrind
# --instr-atstart=no` in front of wsgate-echo, opens CONNS (20) clients with `wsgate-loadtest
# steady` (closed loop, depth 1) on one route, waits until they are all connected and WARM
# (2000) messages have been echoed, then measures one window:
#   SIGSTOP the load generator, wait until the gateway is idle (every forwarded client message
#   echoed back), read the counters, `callgrind_control -i on`, SIGCONT, WINDOW (10) s of
#   traffic, SIGSTOP, SETTLE (1) s for the messages in flight to be echoed, `callgrind_control
#   -i off`, read the counters again.
# Nothing the measurement does itself runs in the gateway while instrumentation is on (the
# metrics are scraped before and after, with the traffic stopped), so Ir covers exactly the
# messages counted. ir_per_msg = Ir (all threads of the gateway, user space only) / echoed
# messages in the window (forwarded upstream->client); a run whose window is not balanced
# (client->upstream forwarded != upstream->client forwarded, or any client message rejected)
# is reported with `WARNING`.
#
# Cases (CASES, default "none:64 none:4096 full:64 full:4096"), each REPS (3) times,
# interleaved per repetition:
#   full  route /ws: envelope = "json", type chat.send (scope chat:write, JSON Schema), HS256
#         token with scopes at the handshake (the config of loadtest/gateway-config.sh, the
#         same as loadtest/compare.sh's)
#   none  route /raw: envelope = "none" (same auth, limits, framing and UTF-8 checks)
#   guarded  route /guarded: the full pipeline plus the sensitive-data guard's default pack
#         (not in the default CASES; e.g. CASES="full:64 guarded:64 full:4096 guarded:4096")
#   fleet route /ws of a gateway in fleet mode (`[fleet]` on a redis-server this script starts
#         on a unix socket in OUT): the per-message path must not change; the window also holds
#         the fleet's timed work (heartbeats, the revocation feed's blocking reads), not
#         per message (e.g. CASES="full:64 fleet:64")
# Output: one line per run, `case=<none|full|guarded> size=<bytes> ir_per_msg=<n>` followed by
# `rep= msgs= ir=` detail, then the median per case. Files in OUT (target/callgrind): the
# config, logs, the callgrind out files (callgrind_annotate them to see where the Ir go).
# Env: REPS, CASES, CONNS, WARM, WINDOW, SETTLE, OUT, CG_ARGS (extra callgrind options, e.g.
# "--cache-sim=yes --branch-sim=yes" for modelled cache misses and mispredicted branches),
# PIN (1: gateway on CPU 0, echo and
# generator on CPU 1; 0: no pinning).
#
# What this relies on in the gateway (change it here if they are renamed):
#   CLI      `wsgate serve --config FILE`, `wsgate-echo --listen ADDR`, loadtest `steady` flags
#   config   server.listen, server.workers, admin.listen, auth.keys[].algorithm/secret_env,
#            limits.{max_connections_per_ip, max_connections_per_subject,
#            handshakes_per_second_per_ip, handshake_burst_per_ip, messages_per_second,
#            message_burst, bytes_per_second}, timeouts.{idle_seconds, ping_interval_seconds,
#            drain_seconds}, routes[].{path, upstream, allow_missing_origin, envelope},
#            routes[].messages[].{type, scope, schema_file}
#   admin    GET /metrics (Prometheus text) on admin.listen
#   metrics  wsgate_connections_active{route}, wsgate_messages_total{route, direction="in"|"out",
#            verdict="forwarded"|<rejection code>}, counted per frame as it is forwarded
# Loopback only; every run is bounded (the generator's own deadline, and timeouts on each wait).
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtest/gateway-config.sh
TARGET=${CARGO_TARGET_DIR:-target}
WSGATE_BIN=${1:-${WSGATE_BIN:-$TARGET/profiling/wsgate}}
ECHO_BIN=${2:-${ECHO_BIN:-$TARGET/profiling/wsgate-echo}}
LOADTEST_BIN=${3:-${LOADTEST_BIN:-$TARGET/release/wsgate-loadtest}}
REPS=${REPS:-3}; CASES=${CASES:-"none:64 none:4096 full:64 full:4096"}
CONNS=${CONNS:-20}; WARM=${WARM:-2000}; WINDOW=${WINDOW:-10}; SETTLE=${SETTLE:-1}
OUT=${OUT:-$TARGET/callgrind}; PIN=${PIN:-1}
for b in "$WSGATE_BIN" "$ECHO_BIN" "$LOADTEST_BIN"; do
  [ -x "$b" ] || { echo "missing binary $b (see the header of $0 for the build commands)" >&2; exit 2; }
done
if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends valgrind >/dev/null
  else
    echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2
  fi
fi
rm -rf "$OUT"; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
ulimit -n 4096

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
pin() { if [ "$PIN" = 1 ]; then echo "taskset -c $1"; fi; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# wait_for SECONDS CMD...: retry CMD every 0.1 s until it succeeds or SECONDS pass.
wait_for() {
  local limit=$(( $1 * 10 )); shift
  for _ in $(seq 1 "$limit"); do "$@" && return 0; sleep 0.1; done
  return 1
}
port_up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# metric FILE NAME LABEL...: sum of the samples of NAME whose labels include every LABEL
# (`key="value"`), from a Prometheus text scrape in FILE; 0 when none matches.
metric() {
  local file=$1 name=$2; shift 2
  awk -v name="$name" -v want="$*" '
    BEGIN { n = split(want, w, " ") }
    $1 ~ "^" name "({|$)" {
      ok = 1; for (i = 1; i <= n; i++) if (index($1, w[i]) == 0) ok = 0
      if (ok) sum += $NF
    }
    END { printf "%.0f\n", sum }' "$file"
}
scrape() { curl -fsS --max-time 10 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$1"; }

ECHO_PORT=$(free_port)
$(pin 1) "$ECHO_BIN" --listen "127.0.0.1:$ECHO_PORT" >"$OUT/echo.out" 2>&1 &
PIDS+=($!)
wait_for 10 port_up "$ECHO_PORT" || { echo "echo backend did not start"; cat "$OUT/echo.out"; exit 1; }

if [[ " $CASES " == *" fleet:"* ]]; then
  command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 2; }
  mkdir -p "$OUT/redis"
  redis-server --port 0 --unixsocket "$OUT/redis/r.sock" --save '' --appendonly no --dir "$OUT/redis" \
    >"$OUT/redis/redis.out" 2>&1 &
  PIDS+=($!)
  wait_for 10 test -S "$OUT/redis/r.sock" || { echo "redis-server did not start"; exit 1; }
fi

cat >"$OUT/chat.send.json" <<'JSON'
{"type": "object", "required": ["text"], "properties": {"text": {"type": "string", "maxLength": 65536}}}
JSON
export WSGATE_CG_SECRET
WSGATE_CG_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

# run_one CASE SIZE REP: one gateway, one window; prints the result line.
run_one() {
  local case=$1 size=$2 rep=$3 path
  local tag="$case-$size-$rep"
  case $case in full|fleet) path=/ws ;; none) path=/raw ;; guarded) path=/guarded ;; *) echo "unknown case $case" >&2; return 1 ;; esac
  local route="route=\"$path\""
  PUBLIC_PORT=$(free_port); ADMIN_PORT=$(free_port)
  bench_gateway_config "127.0.0.1:$PUBLIC_PORT" "127.0.0.1:$ADMIN_PORT" WSGATE_CG_SECRET "$ECHO_PORT" "$OUT/chat.send.json" \
    >"$OUT/wsgate-$tag.toml"
  if [ "$case" = fleet ]; then
    printf '[fleet]\nredis_url = "redis+unix://%s"\nnode_id = "cg"\n' "$OUT/redis/r.sock" >>"$OUT/wsgate-$tag.toml"
  fi
  local cg="$OUT/callgrind.$tag.out"
  # shellcheck disable=SC2086 # CG_ARGS: extra callgrind options, word-split on purpose
  WSGATE_LOG=warn $(pin 0) valgrind --tool=callgrind --instr-atstart=no ${CG_ARGS:-} --callgrind-out-file="$cg" \
    "$WSGATE_BIN" serve --config "$OUT/wsgate-$tag.toml" >"$OUT/gw-$tag.out" 2>"$OUT/gw-$tag.log" &
  local gw=$!; PIDS+=("$gw")
  wait_for 120 port_up "$ADMIN_PORT" && wait_for 30 port_up "$PUBLIC_PORT" ||
    { echo "gateway did not start"; tail -20 "$OUT/gw-$tag.log"; return 1; }

  # The generator's own deadline bounds the run; it is stopped as soon as the window is over.
  $(pin 1) "$LOADTEST_BIN" steady --url "ws://127.0.0.1:$PUBLIC_PORT$path" --connections "$CONNS" \
    --depth 1 --size "$size" --message-type chat.send --hs256-secret "$WSGATE_CG_SECRET" \
    --scope "chat:read chat:write" --warmup 0 --duration 600 --quiet --label "$tag" \
    >"$OUT/loadtest-$tag.out" 2>&1 &
  local lt=$!; PIDS+=("$lt")
  local s="$OUT/scrape-$tag"
  warmed() {
    scrape "$s.warm" || return 1
    [ "$(metric "$s.warm" wsgate_connections_active "$route")" -ge "$CONNS" ] &&
      [ "$(metric "$s.warm" wsgate_messages_total "$route" 'direction="out"' 'verdict="forwarded"')" -ge "$WARM" ]
  }
  wait_for 180 warmed || { echo "no warm traffic on $path"; cat "$OUT/loadtest-$tag.out"; return 1; }
  # Idle: every forwarded client message echoed back, and nothing moving.
  idle() {
    scrape "$1.a" && sleep 0.3 && scrape "$1"
    local a b i o
    a=$(metric "$1.a" wsgate_messages_total "$route" 'direction="out"')
    b=$(metric "$1" wsgate_messages_total "$route" 'direction="out"')
    i=$(metric "$1" wsgate_messages_total "$route" 'direction="in"' 'verdict="forwarded"')
    o=$(metric "$1" wsgate_messages_total "$route" 'direction="out"' 'verdict="forwarded"')
    [ "$a" = "$b" ] && [ "$i" = "$o" ]
  }
  kill -STOP "$lt"
  wait_for 30 idle "$s.before" || echo "WARNING $tag: the gateway was not idle before the window" >&2
  callgrind_control -i on "$gw" >"$OUT/cgctl-$tag.on" 2>&1
  kill -CONT "$lt"
  sleep "$WINDOW"
  kill -STOP "$lt"
  sleep "$SETTLE"
  callgrind_control -i off "$gw" >"$OUT/cgctl-$tag.off" 2>&1
  idle "$s.after" || echo "WARNING $tag: the gateway was not idle after the window (raise SETTLE)" >&2
  kill -KILL "$lt" 2>/dev/null || true; wait "$lt" 2>/dev/null || true
  kill -TERM "$gw"; wait "$gw" 2>/dev/null || true

  local d_in d_out d_in_all ir
  d_in=$(( $(metric "$s.after" wsgate_messages_total "$route" 'direction="in"' 'verdict="forwarded"') -
           $(metric "$s.before" wsgate_messages_total "$route" 'direction="in"' 'verdict="forwarded"') ))
  d_in_all=$(( $(metric "$s.after" wsgate_messages_total "$route" 'direction="in"') -
               $(metric "$s.before" wsgate_messages_total "$route" 'direction="in"') ))
  d_out=$(( $(metric "$s.after" wsgate_messages_total "$route" 'direction="out"' 'verdict="forwarded"') -
            $(metric "$s.before" wsgate_messages_total "$route" 'direction="out"' 'verdict="forwarded"') ))
  # Ir: the first event of the out file's `totals:` line (its `summary:` line is 0 when
  # instrumentation starts off; older callgrinds write only `summary:`).
  ir=$(awk '/^totals:/ { t = $2 } /^summary:/ && $2 > 0 { s = $2 } END { print (t != "" ? t : s) }' "$cg")
  [ -n "$ir" ] && [ "$d_out" -gt 0 ] || { echo "no Ir or no messages in $cg ($d_out echoed)"; return 1; }
  if [ "$d_in" != "$d_out" ] || [ "$d_in_all" != "$d_in" ]; then
    echo "WARNING $tag: window not balanced: in forwarded $d_in, in total $d_in_all, out forwarded $d_out" >&2
  fi
  local per=$(( (ir + d_out / 2) / d_out ))
  echo "case=$case size=$size ir_per_msg=$per rep=$rep msgs=$d_out ir=$ir"
  echo "$case $size $per" >>"$OUT/results.txt"
}

echo "# $(git describe --always --dirty 2>/dev/null || echo '?') $(valgrind --version) conns=$CONNS depth=1 window=${WINDOW}s"
for rep in $(seq 1 "$REPS"); do
  for c in $CASES; do
    IFS=: read -r case size <<<"$c"
    run_one "$case" "$size" "$rep"
  done
done
echo "# median of $REPS (min-max):"
for c in $CASES; do
  IFS=: read -r case size <<<"$c"
  awk -v c="$case" -v s="$size" '$1 == c && $2 == s { print $3 }' "$OUT/results.txt" | sort -n |
    awk -v c="$case" -v s="$size" '{ v[NR] = $1 } END {
      m = (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2)
      printf "case=%s size=%s ir_per_msg=%d (%d-%d)\n", c, s, m, v[1], v[NR] }'
done
