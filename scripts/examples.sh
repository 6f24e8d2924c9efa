#!/usr/bin/env bash
# The example backends (examples/python, examples/node) behind a real gateway: a client
# connecting through wsgate is greeted with its own identity as the backend read it from the
# X-Wsgate-* headers (a forged X-Wsgate-Subject from the client never arrives), and its
# message comes back. Installs websockets into .venv and ws into examples/node; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check 'websockets>=14,<18'
[ -d examples/node/node_modules/ws ] || (cd examples/node && timeout 300 npm install --no-audit --no-fund --silent)
cargo build -q --bin wsgate
source scripts/lib.sh
OUT=$(mktemp -d); CLEANUP_DIRS+=("$OUT")

"$VENV/bin/python" -u examples/python/upstream.py --listen 127.0.0.1:0 >"$OUT/py.out" 2>&1 &
PIDS+=($!)
node examples/node/upstream.js --listen 127.0.0.1:0 >"$OUT/node.out" 2>&1 &
PIDS+=($!)
wait_line "$OUT/py.out" "listening"
wait_line "$OUT/node.out" "listening"
py=$(sed -n 's|.*listening ws://||p' "$OUT/py.out")
nd=$(sed -n 's|.*listening ws://||p' "$OUT/node.out")

cat >"$OUT/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[[auth.keys]]
algorithm = "HS256"
secret_env = "WSGATE_EXAMPLES_SECRET"
[[routes]]
path = "/py"
upstream = "ws://$py/"
allow_missing_origin = true
[[routes.messages]]
type = "chat.send"
scope = "chat:write"
[[routes]]
path = "/node"
upstream = "ws://$nd/"
allow_missing_origin = true
[[routes.messages]]
type = "chat.send"
scope = "chat:write"
TOML
export WSGATE_EXAMPLES_SECRET=$(random_secret)
start_gateway debug "$OUT/gateway.toml" "$OUT"
token=$(./target/debug/wsgate token --config "$OUT/gateway.toml" --sub example-user --scope "chat:write" --ttl 5m)

cat >"$OUT/client.py" <<'PY'
import asyncio, json, sys
from websockets.asyncio.client import connect

async def main(url, token, backend):
    headers = {"Authorization": f"Bearer {token}", "X-Wsgate-Subject": "forged-admin"}
    async with connect(url, additional_headers=headers) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        who = hello["payload"]
        assert who["backend"] == backend, hello
        assert who["hello"] == "example-user", f"subject as the backend saw it: {who}"
        assert who["scopes"] == ["chat:write"], who
        assert who["client_ip"] == "127.0.0.1", who
        msg = json.dumps({"type": "chat.send", "payload": {"text": "hi"}})
        await ws.send(msg)
        assert await asyncio.wait_for(ws.recv(), 10) == msg
    print(f"ok   {backend} backend: identity headers read, forged header stripped, echo received")

asyncio.run(main(*sys.argv[1:]))
PY
timeout 60 "$VENV/bin/python" "$OUT/client.py" "ws://$GW_ADDR/py" "$token" python
timeout 60 "$VENV/bin/python" "$OUT/client.py" "ws://$GW_ADDR/node" "$token" node
echo "examples: 2 passed, 0 failed"
