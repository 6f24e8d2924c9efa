#!/usr/bin/env bash
# Real third-party peers against `wsgate demo`: the PyPI `websockets` client.
# Installs what it needs into .venv (Python venv); bounded in time; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check 'websockets>=14,<18'
cargo build -q --bin wsgate
# lib.sh's EXIT trap stops every process in PIDS and removes CLEANUP_DIRS (a trap of this
# script's own would be replaced by it).
source scripts/lib.sh
out=$(mktemp); err=$(mktemp); CLEANUP_DIRS+=("$out" "$err")
./target/debug/wsgate demo --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$out" 2>"$err" &
PIDS+=("$!")
for _ in $(seq 1 100); do grep -q '^token: ' "$out" && break; sleep 0.1; done
url=$(grep -o 'ws://[^ ]*/ws' "$out" | head -1)
token=$(sed -n 's/^token: //p' "$out")
[ -n "$url" ] && [ -n "$token" ] || { echo "demo did not start"; cat "$err"; exit 1; }
timeout 60 "$VENV/bin/python" tests/peers/python_client.py "$url" "$token"
if grep -q "$token" "$err"; then echo "FAIL: the demo token appeared in the gateway log"; exit 1; fi

# wss:// with Python's ssl module: a certificate made by openssl, a TLS gateway in front of
# wsgate-echo, a reload that swaps the certificate while a connection stays open.
cargo build -q --bin wsgate-echo
work=$(mktemp -d); CLEANUP_DIRS+=("$work")
make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$1" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$work/$1.key" -out "$work/$1.crt" 2>/dev/null
}
make_cert first; make_cert second
cp "$work/first.crt" "$work/gw.crt"; cp "$work/first.key" "$work/gw.key"
start_echo debug "$work"
secret=$(random_secret)
cat >"$work/wsgate.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[server.tls]
cert_file = "gw.crt"
key_file = "gw.key"
reload_check_seconds = 0
[admin]
listen = "127.0.0.1:0"
token_env = "PEERS_ADMIN_TOKEN"
[[auth.keys]]
algorithm = "HS256"
secret_env = "PEERS_SECRET"
[[routes]]
path = "/ws"
upstream = "ws://$ECHO_ADDR/"
allow_missing_origin = true
envelope = "none"
TOML
export PEERS_SECRET=$secret PEERS_ADMIN_TOKEN=$(random_secret)
start_gateway debug "$work/wsgate.toml" "$work"
admin=$(sed -n 's|.*admin=http://\([^ ]*\).*|\1|p' "$work/gw.out")
tls_token=$(./target/debug/wsgate token --config "$work/wsgate.toml" --sub py-tls --scope "" --ttl 10m)
timeout 60 "$VENV/bin/python" tests/peers/python_tls.py "$GW_ADDR" "$tls_token" "$work" "$admin" "$PEERS_ADMIN_TOKEN"
