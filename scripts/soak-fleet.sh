#!/usr/bin/env bash
# Fleet soak: three release gateways in fleet mode on one redis-server (unix socket, started
# and stopped here), SOAK_CONNECTIONS (2000) steady clients spread over them round robin plus
# churn and abusive clients for SOAK_SECONDS (300). Passes when every gateway's fds and RSS
# return to baseline and, with the steady clients still connected and again once every client
# left, every count in Redis equals what the nodes hold themselves: per node, its field of the
# global count equals its live connections, and the per-IP and per-subject counts add up to the
# same totals (nothing leaked). Loopback only; bounded by SOAK_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 2; }
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check 'websockets>=14,<18'
cargo build -q --release --bin wsgate --bin wsgate-echo
OUT=${SOAK_OUT:-target/soak-fleet}; rm -rf "$OUT"; mkdir -p "$OUT/redis"; OUT=$(cd "$OUT" && pwd)
source scripts/lib.sh
ulimit -n 20000
redis-server --port 0 --unixsocket "$OUT/redis/r.sock" --save '' --appendonly no --dir "$OUT/redis" >"$OUT/redis/out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -S "$OUT/redis/r.sock" ] && break; sleep 0.05; done
rcli() { redis-cli -s "$OUT/redis/r.sock" "$@"; }
start_echo release "$OUT"
upstream=$ECHO_ADDR
export WSGATE_SOAK_SECRET=$(random_secret) WSGATE_SOAK_ADMIN=$(random_secret)
urls=(); pids=(); admins=()
for node in a b c; do
  mkdir -p "$OUT/$node"
  cat >"$OUT/$node/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
token_env = "WSGATE_SOAK_ADMIN"
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
[fleet]
redis_url = "redis+unix://$OUT/redis/r.sock"
node_id = "$node"
# Races of a reconcile with handshakes over-count until the next one (never under): the checks
# run 5 s after the traffic stopped, so at least one reconcile has run by then.
reconcile_seconds = 2
TOML
  start_gateway release "$OUT/$node/gateway.toml" "$OUT/$node" env WSGATE_LOG=warn
  urls+=(--url "ws://$GW_ADDR/ws"); pids+=(--pid "$GW_PID")
  admins+=("$(sed -n 's|.*admin=http://\([^ ]*\).*|\1|p' "$OUT/$node/gw.out")")
done
printf '%s\n' "${admins[@]}" >"$OUT/admins"

# The check soak.py runs at the end: Redis against the nodes.
cat >"$OUT/check.sh" <<CHECK
#!/usr/bin/env bash
set -euo pipefail
rcli() { redis-cli -s "$OUT/redis/r.sock" "\$@"; }
sum_fields() { # KEYS...: the sum of every field of these hashes
  local t=0 k v
  for k in "\$@"; do
    while read -r v; do t=\$(( t + v )); done < <(rcli HVALS "\$k")
  done
  echo "\$t"
}
fail=0; total_local=0
while read -r admin; do
  page=\$(curl -fsS -H "Authorization: Bearer \$WSGATE_SOAK_ADMIN" "http://\$admin/admin/connections?limit=1")
  node=\$(python3 -c 'import json,sys; print(json.load(sys.stdin)["node"])' <<<"\$page")
  live=\$(curl -fsS "http://\$admin/metrics" | awk '/^wsgate_connections_active\{/ { s += \$NF } END { printf "%d", s }')
  shared=\$(rcli HGET "wsgate:cc:all" "\$node"); shared=\${shared:-0}
  echo "node \$node: live \$live, redis \$shared"
  [ "\$live" = "\$shared" ] || fail=1
  total_local=\$(( total_local + live ))
done <"$OUT/admins"
all=\$(sum_fields wsgate:cc:all)
mapfile -t ipkeys < <(rcli --scan --pattern 'wsgate:cc:ip:*')
mapfile -t subkeys < <(rcli --scan --pattern 'wsgate:cc:sub:*')
ips=\$(sum_fields "\${ipkeys[@]}"); subs=\$(sum_fields "\${subkeys[@]}")
echo "fleet: nodes \$total_local, redis all \$all, per-ip sum \$ips (\${#ipkeys[@]} keys), per-subject sum \$subs (\${#subkeys[@]} keys)"
[ "\$all" = "\$total_local" ] && [ "\$ips" = "\$total_local" ] && [ "\$subs" = "\$total_local" ] || fail=1
exit \$fail
CHECK
chmod +x "$OUT/check.sh"

token=$(./target/release/wsgate token --config "$OUT/a/gateway.toml" --sub soak --scope chat:write --ttl 2h)
timeout $(( 2 * ${SOAK_SECONDS:-300} + 400 )) "$VENV/bin/python" tests/soak/soak.py "${urls[@]}" --token "$token" \
  "${pids[@]}" --connections "${SOAK_CONNECTIONS:-2000}" --duration "${SOAK_SECONDS:-300}" \
  --check "$OUT/check.sh" --json "$OUT/report.json"
