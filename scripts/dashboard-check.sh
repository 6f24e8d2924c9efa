#!/usr/bin/env bash
# Proves grafana/wsgate-dashboard.json and grafana/alerts.yml against a real Prometheus:
# installs Debian's prometheus (and promtool) when missing, starts wsgate + its echo backend
# and Prometheus on loopback (1 s scrapes), drives mixed traffic (good clients, foreign
# origins, bad and expired tokens, rate-limit violators, oversized frames, slow readers,
# expiring tokens with in-band refreshes, a dead upstream), then evaluates every dashboard
# and alert expression through Prometheus's HTTP API, runs `promtool check rules` and
# `promtool check metrics`, and renders the panels into a PNG (matplotlib in .venv).
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
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
[ "${RENDER:-1}" = 1 ] && "$VENV/bin/pip" install -q --disable-pip-version-check 'matplotlib>=3.8,<4'
cargo build -q --release --bin wsgate --bin wsgate-echo
cargo build -q --release -p wsgate-loadtest

start_echo release "$OUT"
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
CONF
export WSGATE_CHECK_SECRET=$(random_secret) WSGATE_CHECK_ADMIN=$(random_secret)
start_gateway release "$OUT/gateway.toml" "$OUT" env WSGATE_LOG=info
ADMIN=$(sed -n 's|.*admin=http://\([^ ]*\).*|\1|p' "$OUT/gw.out")

PROM_PORT=$(free_port)
cp grafana/alerts.yml "$OUT/alerts.yml"
cat >"$OUT/prometheus.yml" <<CONF
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [alerts.yml]
scrape_configs:
  - job_name: wsgate
    static_configs: [{targets: ["$ADMIN"]}]
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
# Operator actions mid-traffic: a reload, a subject revocation, a kick (the operations and
# revocation panels need them).
sleep $(( TRAFFIC / 2 ))
auth=(-H "Authorization: Bearer $WSGATE_CHECK_ADMIN")
curl -sf "${auth[@]}" -X POST "http://$ADMIN/admin/reload" >/dev/null
curl -sf "${auth[@]}" -X POST -H 'content-type: application/json' -d '{"sub":"loadtest-3"}' "http://$ADMIN/admin/revoke"; echo
victim=$(curl -sf "${auth[@]}" "http://$ADMIN/admin/connections?limit=1" | python3 -c 'import json,sys; c=json.load(sys.stdin)["connections"]; print(c[0]["id"] if c else "")')
[ -n "$victim" ] && curl -sf "${auth[@]}" -X DELETE "http://$ADMIN/admin/connections/$victim"; echo
sleep $(( TRAFFIC / 4 )); PEAK=$(date +%s)   # stat panels show this moment
wait $L1 $L2 $L3 $L4 || true
sleep 3   # a few more scrapes after the traffic
cat "$OUT"/steady.txt "$OUT"/abuse.txt "$OUT"/expiry.txt "$OUT"/dead.txt | cut -c1-300

curl -sf "http://$ADMIN/metrics" >"$OUT/metrics.txt"
echo "promtool check metrics:"; promtool check metrics <"$OUT/metrics.txt"
echo "promtool check rules:"; promtool check rules grafana/alerts.yml
SINCE=$(( $(date +%s) - START ))
ARGS=("$PROM" grafana/wsgate-dashboard.json grafana/alerts.yml)
if [ "${RENDER:-1}" = 1 ]; then ARGS+=(--render "${PREVIEW:-$OUT/dashboard-preview.png}" --since "$SINCE" --peak "$PEAK"); fi
"$VENV/bin/python" tests/dashboard/check_dashboard.py "${ARGS[@]}"
