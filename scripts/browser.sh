#!/usr/bin/env bash
# Headless Chromium against the gateway (tests/browser): the demo's own page (with a screenshot
# in target/browser/demo.png), subprotocol and cookie tokens from an
# allowed origin, cross-site WebSocket hijacking from a foreign origin refused, one-time tickets
# fetched with fetch() from the allowed origin (in the URL and as a subprotocol entry; replays
# refused), a foreign origin unable to read a ticket answer, no ticket in the gateway log. Needs
# Debian's chromium (installed by .ci/run) and npm; installs playwright-core into tests/browser.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { echo "chromium is not installed (apt-get install chromium)"; exit 1; }
[ -d tests/browser/node_modules/playwright-core ] || (cd tests/browser && timeout 300 npm install --no-audit --no-fund --silent)
cargo build -q --bin wsgate --bin wsgate-echo
source scripts/lib.sh
OUT=$(mktemp -d); CLEANUP_DIRS+=("$OUT")
start_echo debug "$OUT"
upstream=$ECHO_ADDR
# Two static servers for the page: the allowed origin and a foreign one (same site, other port).
serve_page() {
  python3 -u -c 'import http.server,functools,sys
h=functools.partial(http.server.SimpleHTTPRequestHandler, directory="tests/browser")
s=http.server.ThreadingHTTPServer(("127.0.0.1",0),h); print("port",s.server_address[1]); s.serve_forever()' >"$1" 2>/dev/null &
  PIDS+=($!)
  wait_line "$1" "^port"
}
serve_page "$OUT/allowed.out"; serve_page "$OUT/foreign.out"
allowed="http://127.0.0.1:$(sed -n 's/^port //p' "$OUT/allowed.out")"
foreign="http://127.0.0.1:$(sed -n 's/^port //p' "$OUT/foreign.out")"
cat >"$OUT/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[[auth.keys]]
algorithm = "HS256"
secret_env = "WSGATE_BROWSER_SECRET"
[[routes]]
path = "/ws"
upstream = "ws://$upstream/whoami"
origins = ["$allowed"]
token_sources = ["subprotocol"]
subprotocols = ["chat.v1"]
[[routes.messages]]
type = "chat.send"
scope = "chat:write"
[[routes]]
path = "/c"
upstream = "ws://$upstream/whoami"
origins = ["$allowed"]
token_sources = ["cookie"]
subprotocols = ["chat.v1"]
[[routes.messages]]
type = "chat.send"
scope = "chat:write"
[[routes]]
path = "/t"
upstream = "ws://$upstream/whoami"
origins = ["$allowed"]
token_sources = ["ticket"]
subprotocols = ["chat.v1"]
[[routes.messages]]
type = "chat.send"
scope = "chat:write"
[tickets]
ttl_seconds = 30
TOML
export WSGATE_BROWSER_SECRET=$(random_secret)
start_gateway debug "$OUT/gateway.toml" "$OUT"
gw=$GW_ADDR
token=$(./target/debug/wsgate token --config "$OUT/gateway.toml" --sub browser --scope chat:write --ttl 10m)
# The spent tickets the pages report go to the file only (to check the gateway log), not the console.
timeout 120 node tests/browser/browser_test.js "$gw" "$allowed" "$foreign" "$token" | tee "$OUT/browser.out" |
  { grep -v '^ticket-used ' || true; }
grep -q '"reason":"origin"' "$OUT/gw.log" || { echo "FAIL: no origin refusal logged"; exit 1; }
! grep -q "$token" "$OUT/gw.log" || { echo "FAIL: token in the gateway log"; exit 1; }
tickets=$(sed -n 's/^ticket-used \(wst_.*\)$/\1/p' "$OUT/browser.out")
[ "$(echo "$tickets" | grep -c '^wst_')" = 2 ] || { echo "FAIL: the ticket pages reported no tickets"; exit 1; }
for t in $tickets; do
  ! grep -qF -- "${t#wst_}" "$OUT/gw.log" || { echo "FAIL: a ticket in the gateway log"; exit 1; }
done
grep -q '"event":"ticket_redeemed"' "$OUT/gw.log" || { echo "FAIL: no ticket redemption logged"; exit 1; }
grep -q '"reason":"preflight_refused"' "$OUT/gw.log" || { echo "FAIL: the foreign preflight was not refused"; exit 1; }

# The demo's own page: `wsgate demo` serves it at `/`; a short-lived token shows the warning.
demo_port=$(free_port); demo_admin=$(free_port)
./target/debug/wsgate demo --listen "127.0.0.1:$demo_port" --admin-listen "127.0.0.1:$demo_admin" --token-ttl 40s \
  >"$OUT/demo.out" 2>"$OUT/demo.log" &
PIDS+=($!)
wait_line "$OUT/demo.out" "^browser page: "
grep -q "^allowed origins: http://127.0.0.1:$demo_port, http://localhost:$demo_port" "$OUT/demo.out" \
  || { echo "FAIL: the demo does not print its allowed origins"; cat "$OUT/demo.out"; exit 1; }
page_url=$(sed -n 's/^browser page: //p' "$OUT/demo.out")
mkdir -p target/browser
timeout 120 node tests/browser/demo_test.js "$page_url" target/browser/demo.png
echo "screenshot: target/browser/demo.png"
