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
source scripts/lib.sh
start_echo release "$OUT"
sed "s|@UPSTREAM@|$ECHO_ADDR|" tests/autobahn/gateway.toml.in >"$OUT/gateway.toml"
export WSGATE_AUTOBAHN_SECRET=$(random_secret)
start_gateway release "$OUT/gateway.toml" "$OUT" env WSGATE_LOG=warn
public=$GW_ADDR
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
