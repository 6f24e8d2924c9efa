#!/usr/bin/env bash
# Soak: SOAK_CONNECTIONS (2000) steady clients plus churn and abusive clients for
# SOAK_SECONDS (300) against a release gateway; checks fds and RSS return to baseline.
# Loopback only (client addresses spread over 127.0.0.0/8); bounded by SOAK_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check 'websockets>=14,<18'
cargo build -q --release --bin wsgate --bin wsgate-echo
OUT=${SOAK_OUT:-target/soak}; mkdir -p "$OUT"
source scripts/lib.sh
ulimit -n 20000
start_echo release "$OUT"
upstream=$ECHO_ADDR
cat >"$OUT/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[[auth.keys]]
algorithm = "HS256"
secret_env = "WSGATE_SOAK_SECRET"
[limits]
max_connections_per_subject = 0
messages_per_second = 20
message_burst = 40
violations_before_close = 10
[[routes]]
path = "/ws"
upstream = "ws://$upstream/whoami"
allow_missing_origin = true
origins = ["https://app.example.com"]
subprotocols = ["chat.v1"]
[[routes.messages]]
type = "chat.send"
scope = "chat:write"
[[routes.messages]]
type = "chat.read"
TOML
export WSGATE_SOAK_SECRET=$(random_secret)
start_gateway release "$OUT/gateway.toml" "$OUT" env WSGATE_LOG=warn
public=$GW_ADDR; gw_pid=$GW_PID
token=$(./target/release/wsgate token --config "$OUT/gateway.toml" --sub soak --scope chat:write --ttl 2h)
timeout $(( 2 * ${SOAK_SECONDS:-300} + 300 )) "$VENV/bin/python" tests/soak/soak.py --url "ws://$public/ws" --token "$token" \
  --pid "$gw_pid" --connections "${SOAK_CONNECTIONS:-2000}" --duration "${SOAK_SECONDS:-300}" --json "$OUT/report.json"
