"""A backend behind wsgate, with the PyPI `websockets` package (>= 14).

wsgate authenticates every client before the backend sees it and tells the backend who the
client is in three request headers of the upstream handshake:
  X-Wsgate-Subject    the token's `sub`
  X-Wsgate-Scopes     its scopes, space-separated
  X-Wsgate-Client-Ip  the client's address as the gateway saw it
Clients cannot forge them: the gateway sends none of the client's headers upstream.

This backend greets each connection with who it is talking to, then echoes every message.

    python3 -m venv .venv && .venv/bin/pip install 'websockets>=14'
    .venv/bin/python examples/python/upstream.py --listen 127.0.0.1:9000
"""

import argparse
import asyncio
import json

from websockets.asyncio.server import serve


async def handle(ws):
    headers = ws.request.headers
    who = {
        "hello": headers.get("X-Wsgate-Subject", ""),
        "scopes": headers.get("X-Wsgate-Scopes", "").split(),
        "client_ip": headers.get("X-Wsgate-Client-Ip", ""),
        "backend": "python",
    }
    await ws.send(json.dumps({"type": "hello", "payload": who}))
    async for message in ws:
        await ws.send(message)


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:9000", help="host:port (port 0: any free port)")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    async with serve(handle, host, int(port)) as server:
        bound = server.sockets[0].getsockname()
        print(f"python upstream listening ws://{bound[0]}:{bound[1]}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
