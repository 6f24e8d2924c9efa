#!/usr/bin/env bash
# Runs the load-test quick start of loadtest/README.md exactly as printed (the block between
# the loadtest-quickstart markers) and checks its summary: every connection opened, messages
# echoed, nothing refused or rejected, no WARNING. Loopback only; bounded by the block itself.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
sed -n '/<!-- loadtest-quickstart -->/,/<!-- \/loadtest-quickstart -->/p' loadtest/README.md \
  | sed -n '/^```sh$/,/^```$/p' | sed '1d;$d' >"$OUT/block.sh"
[ -s "$OUT/block.sh" ] || { echo "FAIL: no quick-start block in loadtest/README.md"; exit 1; }
echo "--- running:"; cat "$OUT/block.sh"
timeout 600 bash -euo pipefail "$OUT/block.sh" >"$OUT/run.out" 2>"$OUT/run.err" || {
  echo "FAIL: the block failed"; cat "$OUT/run.out"; tail -20 "$OUT/run.err"; exit 1; }
cat "$OUT/run.out"
grep -qE '^  connections +100 ok' "$OUT/run.out" || { echo "FAIL: not every connection opened"; exit 1; }
grep -qE 'refused \{\}' "$OUT/run.out" || { echo "FAIL: connections refused"; exit 1; }
grep -qE 'received, rejected \{\}' "$OUT/run.out" || { echo "FAIL: messages rejected"; exit 1; }
! grep -q WARNING "$OUT/run.out" || { echo "FAIL: the summary warns"; exit 1; }
rate=$(sed -n 's/^  throughput *\([0-9]*\) msg\/s/\1/p' "$OUT/run.out")
[ "${rate:-0}" -ge 1000 ] || { echo "FAIL: throughput ${rate:-0} msg/s (100 connections x 20/s = 2000 expected)"; exit 1; }
echo "loadtest quick start: ok (${rate} msg/s)"
