#!/usr/bin/env bash
# Autobahn|Testsuite fuzzing client through wsgate (opaque route) in front of wsgate-echo.
# Installs wstest into .autobahn if missing, runs cases 1.*-10.* (12.*/13.* need
# permessage-deflate, which wsgate does not negotiate), and fails on any FAILED, WRONG CODE or
# UNCLEAN verdict (wstest itself exits 0 even then). Loopback only; bounded by timeouts.
set -euo pipefail
cd "$(dirname "$0")/.."
AB=${AUTOBAHN_DIR:-.autobahn}
OUT=${AUTOBAHN_OUT:-target/autobahn}
[ -x "$AB/wstest" ] || timeout 900 bash scripts/install-autobahn.sh "$AB"
cargo build -q --release --bin wsgate --bin wsgate-echo
rm -rf "$OUT" && mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_line() { # file pattern
  for _ in $(seq 1 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "timed out waiting for '$2' in $1"; cat "$1"; return 1
}

./target/release/wsgate-echo --listen 127.0.0.1:0 >"$OUT/echo.out" 2>&1 &
pids+=($!)
wait_line "$OUT/echo.out" "echo listening"
upstream=$(sed -n 's|^echo listening ws://||p' "$OUT/echo.out")
sed "s|@UPSTREAM@|$upstream|" tests/autobahn/gateway.toml.in >"$OUT/gateway.toml"
export WSGATE_AUTOBAHN_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
./target/release/wsgate serve --config "$OUT/gateway.toml" >"$OUT/gateway.out" 2>"$OUT/gateway.log" &
pids+=($!)
wait_line "$OUT/gateway.out" "wsgate listening"
public=$(sed -n 's|.*public=ws://\([^ ]*\).*|\1|p' "$OUT/gateway.out")
token=$(./target/release/wsgate token --config "$OUT/gateway.toml" --sub autobahn --ttl 1h)

cat >"$OUT/fuzzingclient.json" <<JSON
{
  "options": {"failByDrop": false},
  "outdir": "$OUT/report",
  "servers": [{"agent": "wsgate", "url": "ws://$public/ab?access_token=$token"}],
  "cases": ["${AUTOBAHN_CASES:-*}"],
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
JSON
start=$(date +%s)
timeout 1200 "$AB/wstest" -m fuzzingclient -s "$OUT/fuzzingclient.json" >"$OUT/wstest.log" 2>&1
echo "autobahn: wstest took $(( $(date +%s) - start )) s"
python3 tests/autobahn/check_report.py "$OUT/report/index.json"
