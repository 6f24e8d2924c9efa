#!/usr/bin/env bash
# Real third-party peers against `wsgate demo`: the PyPI `websockets` client.
# Installs what it needs into .venv (Python venv); bounded in time; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check 'websockets>=14,<18'
cargo build -q --bin wsgate
out=$(mktemp); err=$(mktemp)
./target/debug/wsgate demo --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$out" 2>"$err" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$out" "$err"' EXIT
for _ in $(seq 1 100); do grep -q '^token: ' "$out" && break; sleep 0.1; done
url=$(grep -o 'ws://[^ ]*/ws' "$out" | head -1)
token=$(sed -n 's/^token: //p' "$out")
[ -n "$url" ] && [ -n "$token" ] || { echo "demo did not start"; cat "$err"; exit 1; }
timeout 60 "$VENV/bin/python" tests/peers/python_client.py "$url" "$token"
if grep -q "$token" "$err"; then echo "FAIL: the demo token appeared in the gateway log"; exit 1; fi
