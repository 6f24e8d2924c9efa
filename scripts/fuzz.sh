#!/usr/bin/env bash
# Run every cargo-fuzz target for FUZZ_SECONDS (default 30) each, starting from the committed
# seeds in fuzz/seeds/<target>. Uses the stable toolchain (RUSTC_BOOTSTRAP for cargo-fuzz's
# flags) without a sanitizer; installs cargo-fuzz if missing. Exits non-zero on any crash
# (the input is left in fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || timeout 900 cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
SECS=${FUZZ_SECONDS:-30}
timeout 1800 cargo fuzz build -s none -O
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t"
  echo "fuzz: $t for ${SECS}s"
  timeout $((SECS + 120)) cargo fuzz run -s none -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 2>&1 | \
    grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY)|panicked|ERROR" || true
  [ -z "$(ls -A "artifacts/$t" 2>/dev/null)" ] || { echo "fuzz: $t found a crash: fuzz/artifacts/$t"; exit 1; }
done
echo "fuzz: all targets ran ${SECS}s without a crash"
