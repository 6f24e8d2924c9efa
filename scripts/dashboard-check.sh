#!/usr/bin/env bash
# Proves grafana/wsgate-dashboard.json and grafana/alerts.yml against a real Prometheus:
# installs Debian's prometheus (and promtool) when missing, starts a Redis of its own
# (redis-server on a unix socket in a temporary folder; it must be installed: Debian's
# redis-server package), two wsgate nodes in fleet mode sharing it ([fleet], docs/fleet.md),
# an echo backend and Prometheus on loopback (1 s scrapes), drives mixed traffic (good
# clients, foreign origins, bad and expired tokens, rate-limit violators, oversized frames,
# slow readers, expiring tokens with in-band refreshes, a dead upstream; a few good clients on
# the second node; one-time tickets issued on the first node, redeemed on the second and
# replayed on the first), mid-way reloads, revokes, kicks a connection of each node through the
# first one and pauses Redis for 3 s (the breaker and fallback admissions of the Fleet row),
# checks that both nodes saw the fleet of 2 and closed their breaker again, then evaluates
# every dashboard and alert expression through Prometheus's HTTP API, runs `promtool check
# rules` and `promtool check metrics`, and renders the panels into a PNG (matplotlib in .venv).
# Bounded: about 90 s of traffic; every process is stopped on exit.
# Env: TRAFFIC_SECONDS (45), RENDER (1), OUT (target/dashboard-check), PREVIEW (where the PNG
# goes: $OUT/dashboard-preview.png; PREVIEW=grafana/dashboard-preview.png refreshes the README's).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
OUT=${OUT:-target/dashboard-check}; rm -rf "$OUT"; mkdir -p "$OUT"
TRAFFIC=${TRAFFIC_SECONDS:-45}
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null || ! command -v curl >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "dashboard-check: install Debian's prometheus package first"; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus curl >/dev/null
  # The package may start its own service; this check runs its own instance on its own port.
fi
command -v redis-server >/dev/null || {
  echo "dashboard-check: redis-server not found: install Debian's redis-server package (the Fleet row needs a real Redis)" >&2
  exit 1
}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
[ "${RENDER:-1}" = 1 ] && "$VENV/bin/pip" install -q --disable-pip-version-check 'matplotlib>=3.8,<4'
cargo build -q --release --bin wsgate --bin wsgate-echo
cargo build -q --release -p wsgate-loadtest

start_echo release "$OUT"
# A Redis of its own for fleet mode: no port, no persistence, its folder removed on exit.
# SIGCONT first on exit: a Redis stopped by the pause below would not act on SIGTERM.
REDIS_DIR=$(mktemp -d); CLEANUP_DIRS+=("$REDIS_DIR")
redis-server --port 0 --unixsocket "$REDIS_DIR/r.sock" --save '' --appendonly no --dir "$REDIS_DIR" \
  >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!; PIDS+=("$REDIS_PID")
trap 'kill -CONT "$REDIS_PID" 2>/dev/null || true; stop_all' EXIT
wait_line "$OUT/redis.log" "eady to accept connections"   # 7.0: "ready to accept connections at", 7.2: "Ready to accept connections unix"
DEAD_PORT=$(free_port)   # nothing listens here: the /dead route's dials are refused
cat >"$OUT/chat.send.json" <<'JSON'
{"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
JSON
cat >"$OUT/gateway.toml" <<CONF
[server]
listen = "127.0.0.1:0"
workers = 1
[admin]
listen = "127.0.0.1:0"
token_env = "WSGATE_CHECK_ADMIN"
[auth]
expiry_warning_seconds = 4
[[auth.keys]]
algorithm = "HS256"
secret_env = "WSGATE_CHECK_SECRET"
[limits]
max_connections = 5000
max_connections_per_ip = 0
max_connections_per_subject = 0
handshakes_per_second_per_ip = 40
handshake_burst_per_ip = 80
messages_per_second = 200
message_burst = 400
max_message_bytes = 65536
outbound_buffer_bytes = 262144
violations_before_close = 20
[timeouts]
ping_interval_seconds = 5
[[routes]]
path = "/ws"
upstream = "ws://$ECHO_ADDR/"
origins = ["https://app.example.com"]
allow_missing_origin = false
token_sources = ["header", "subprotocol", "ticket"]
[[routes.messages]]
type = "chat.send"
scope = "chat:write"
schema_file = "chat.send.json"
[[routes.sensitive]]
rule = "card_number"
direction = "client_to_upstream"
action = "block"
[[routes.sensitive]]
rule = "password_field"
action = "log"
[[routes]]
path = "/dead"
upstream = "ws://127.0.0.1:$DEAD_PORT/"
allow_missing_origin = true
envelope = "none"
[fleet]
redis_url = "redis+unix://$REDIS_DIR/r.sock"
node_id = "check-a"
heartbeat_seconds = 1
op_timeout_ms = 100
on_redis_down = "local"
[tickets]
ttl_seconds = 30
CONF
# The second node: the same config under another node id.
sed 's/^node_id = "check-a"$/node_id = "check-b"/' "$OUT/gateway.toml" >"$OUT/gateway-b.toml"
grep -q '^node_id = "check-b"$' "$OUT/gateway-b.toml"
export WSGATE_CHECK_SECRET=$(random_secret) WSGATE_CHECK_ADMIN=$(random_secret)
mkdir -p "$OUT/node-b"
start_gateway release "$OUT/gateway-b.toml" "$OUT/node-b" env WSGATE_LOG=info
GW_B_ADDR=$GW_ADDR
ADMIN_B=$(sed -n 's|.*admin=http://\([^ ]*\).*|\1|p' "$OUT/node-b/gw.out")
start_gateway release "$OUT/gateway.toml" "$OUT" env WSGATE_LOG=info
ADMIN=$(sed -n 's|.*admin=http://\([^ ]*\).*|\1|p' "$OUT/gw.out")

PROM_PORT=$(free_port)
cp grafana/alerts.yml "$OUT/alerts.yml"
cat >"$OUT/prometheus.yml" <<CONF
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [alerts.yml]
scrape_configs:
  - job_name: wsgate
    static_configs: [{targets: ["$ADMIN", "$ADMIN_B"]}]
CONF
prometheus --config.file="$OUT/prometheus.yml" --storage.tsdb.path="$OUT/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$OUT/prometheus.log" 2>&1 &
PIDS+=($!)
PROM="http://127.0.0.1:$PROM_PORT"
for _ in $(seq 1 100); do curl -sf "$PROM/-/ready" >/dev/null && break; sleep 0.2; done
curl -sf "$PROM/-/ready" >/dev/null || { echo "prometheus did not start"; tail "$OUT/prometheus.log"; exit 1; }
START=$(date +%s)

LT=./target/release/wsgate-loadtest
COMMON=(--hs256-secret "$WSGATE_CHECK_SECRET" --origin https://app.example.com --quiet --spread-ips --warmup 0)
$LT steady --url "ws://$GW_ADDR/ws" --connections 50 --duration "$TRAFFIC" "${COMMON[@]}" --label good >"$OUT/steady.txt" &
L1=$!
$LT abuse --url "ws://$GW_ADDR/ws" --connections 60 --duration "$TRAFFIC" --oversize-bytes 200000 "${COMMON[@]}" \
  --label abuse >"$OUT/abuse.txt" &
L2=$!
$LT expiry --url "ws://$GW_ADDR/ws" --connections 20 --ttl 8 --refresh-share 0.5 --duration "$TRAFFIC" "${COMMON[@]}" \
  --label expiry >"$OUT/expiry.txt" &
L3=$!
$LT churn --url "ws://$GW_ADDR/dead" --connections 2 --duration "$TRAFFIC" --quiet --warmup 0 --label dead \
  --hs256-secret "$WSGATE_CHECK_SECRET" >"$OUT/dead.txt" &
L4=$!
# Open loop well under messages_per_second: these stay connected until the revocation and kick.
$LT steady --url "ws://$GW_B_ADDR/ws" --connections 10 --message-rate 20 --duration "$TRAFFIC" "${COMMON[@]}" \
  --label node-b >"$OUT/node-b.txt" &
L5=$!
# One-time tickets (the Tickets row): issued on the first node, redeemed on the second (the
# 101 is held for a second), replayed on the first (401), one every 2 s.
TICKET_TOKEN=$(./target/release/wsgate token --config "$OUT/gateway.toml" --sub ticket-user --scope chat:write --ttl 10m)
(
  upgrade=(-s -o /dev/null --max-time 1 -H "Connection: Upgrade" -H "Upgrade: websocket" -H "Sec-WebSocket-Version: 13"
    -H "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" -H "Origin: https://app.example.com")
  for _ in $(seq 1 $(( TRAFFIC / 2 ))); do
    t=$(curl -sf -X POST -H "Authorization: Bearer $TICKET_TOKEN" -H "Origin: https://app.example.com" \
      -d '{"route": "/ws"}' "http://$GW_ADDR/v1/ws-ticket" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ticket"])') \
      || { sleep 1; continue; }   # 503 while Redis is paused: tickets fail closed
    curl "${upgrade[@]}" "http://$GW_B_ADDR/ws?ticket=$t" || true
    curl "${upgrade[@]}" "http://$GW_ADDR/ws?ticket=$t" || true
    sleep 1
  done
) >"$OUT/tickets.txt" 2>&1 &
L6=$!
# Operator actions mid-traffic: a reload, a subject revocation (made on the first node, read
# by both from the Redis stream), a kick of a connection of each node, both through the first
# node (the second's through the Redis command stream), then Redis paused for 3 s (the
# operations, revocation and Fleet panels need them).
sleep $(( TRAFFIC / 2 ))
auth=(-H "Authorization: Bearer $WSGATE_CHECK_ADMIN")
curl -sf "${auth[@]}" -X POST "http://$ADMIN/admin/reload" >/dev/null
curl -sf "${auth[@]}" -X POST -H 'content-type: application/json' -d '{"sub":"loadtest-3"}' "http://$ADMIN/admin/revoke"; echo
victim=$(curl -sf "${auth[@]}" "http://$ADMIN/admin/connections?limit=1" | python3 -c 'import json,sys; c=json.load(sys.stdin)["connections"]; print(c[0]["id"] if c else "")')
[ -n "$victim" ] && curl -sf "${auth[@]}" -X DELETE "http://$ADMIN/admin/connections/$victim"; echo
victim=$(curl -sf "${auth[@]}" "http://$ADMIN_B/admin/connections?limit=1" | python3 -c 'import json,sys; c=json.load(sys.stdin)["connections"]; print(c[0]["id"] if c else "")')
[ -n "$victim" ] || { echo "dashboard-check: no live connection on the second node to kick"; exit 1; }
curl -sf "${auth[@]}" -X DELETE "http://$ADMIN/admin/connections/$victim"; echo
kill -STOP "$REDIS_PID"; sleep 3; kill -CONT "$REDIS_PID"
sleep $(( TRAFFIC / 4 > 3 ? TRAFFIC / 4 - 3 : 1 )); PEAK=$(date +%s)   # stat panels show this moment
wait $L1 $L2 $L3 $L4 $L5 $L6 || true
sleep 3   # a few more scrapes after the traffic
cat "$OUT"/steady.txt "$OUT"/abuse.txt "$OUT"/expiry.txt "$OUT"/dead.txt "$OUT"/node-b.txt | cut -c1-300

curl -sf "http://$ADMIN/metrics" >"$OUT/metrics.txt"
curl -sf "http://$ADMIN_B/metrics" >"$OUT/metrics-b.txt"
# Fleet mode registers its series at 0 whether Redis answers or not: the panels having series
# proves little, so both nodes must have seen the fleet of 2 and closed their breaker again.
grep -Eq '^wsgate_tickets_total\{result="issued"\} [1-9]' "$OUT/metrics.txt" \
  || { echo "dashboard-check: no ticket was issued on the first node"; exit 1; }
grep -Eq '^wsgate_tickets_total\{result="redeemed"\} [1-9]' "$OUT/metrics-b.txt" \
  || { echo "dashboard-check: no ticket of the first node was redeemed on the second"; exit 1; }
for m in "$OUT/metrics.txt" "$OUT/metrics-b.txt"; do
  grep -E '^wsgate_fleet_(nodes|breaker_open|fallback_admissions_total) ' "$m" | tr '\n' ' '
  grep -Eq '^wsgate_fleet_nodes 2$' "$m" || { echo "dashboard-check: $m: wsgate_fleet_nodes is not 2"; exit 1; }
  grep -Eq '^wsgate_fleet_breaker_open 0$' "$m" || { echo "dashboard-check: $m: the Redis breaker is still open"; exit 1; }
  echo
done
echo "promtool check metrics:"; promtool check metrics <"$OUT/metrics.txt"; promtool check metrics <"$OUT/metrics-b.txt"
echo "promtool check rules:"; promtool check rules grafana/alerts.yml
SINCE=$(( $(date +%s) - START ))
ARGS=("$PROM" grafana/wsgate-dashboard.json grafana/alerts.yml)
if [ "${RENDER:-1}" = 1 ]; then ARGS+=(--render "${PREVIEW:-$OUT/dashboard-preview.png}" --since "$SINCE" --peak "$PEAK"); fi
"$VENV/bin/python" tests/dashboard/check_dashboard.py "${ARGS[@]}"
