# Shared helpers for the test and benchmark scripts: `source scripts/lib.sh` from the repo root.
# Processes started with start_echo/start_gateway (or added to PIDS) are stopped on exit, and
# folders added to CLEANUP_DIRS are removed.

PIDS=()
CLEANUP_DIRS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in "${CLEANUP_DIRS[@]}"; do rm -rf "$d"; done
}
trap stop_all EXIT

# wait_line FILE PATTERN: wait up to 10 s for PATTERN to appear in FILE.
wait_line() {
  for _ in $(seq 1 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "timed out waiting for '$2' in $1"; cat "$1"; return 1
}

# random_secret: 32 random bytes, hex (an HMAC secret for a test gateway).
random_secret() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# start_echo PROFILE OUTDIR [PREFIX...]: run wsgate-echo on a free port; sets ECHO_ADDR, ECHO_PID.
start_echo() {
  local profile=$1 out=$2; shift 2
  "$@" ./target/"$profile"/wsgate-echo --listen 127.0.0.1:0 >"$out/echo.out" 2>&1 &
  ECHO_PID=$!; PIDS+=("$ECHO_PID")
  wait_line "$out/echo.out" "echo listening"
  ECHO_ADDR=$(sed -n 's|^echo listening ws://||p' "$out/echo.out")
}

# start_gateway PROFILE CONFIG OUTDIR [PREFIX...]: run `wsgate serve` (JSON logs in OUTDIR/gw.log);
# sets GW_ADDR (host:port of the public listener), GW_PID.
# A free TCP port on 127.0.0.1 (for servers that cannot bind port 0 themselves).
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# Wait up to 5 s for 127.0.0.1:$1 to accept connections.
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up"; return 1; }

start_gateway() {
  local profile=$1 config=$2 out=$3; shift 3
  "$@" ./target/"$profile"/wsgate --log-format json serve --config "$config" >"$out/gw.out" 2>"$out/gw.log" &
  GW_PID=$!; PIDS+=("$GW_PID")
  wait_line "$out/gw.out" "wsgate listening"
  GW_ADDR=$(sed -n 's|.*public=wss*://\([^ ]*\).*|\1|p' "$out/gw.out")
}
