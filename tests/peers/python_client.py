"""Real-peer check with the PyPI `websockets` client against a running `wsgate demo`.

Usage: python_client.py WS_URL TOKEN
Asserts the browser-style subprotocol token, header token, identity headers, echo through the
upstream, error frames with `ref`, and a refused foreign origin. Exits non-zero on any failure.
"""
import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


async def main(url: str, token: str) -> None:
    async with connect(url, subprotocols=["chat.v1", "bearer." + token]) as ws:
        assert ws.subprotocol == "chat.v1", ws.subprotocol
        seen = json.loads(await ws.recv())
        assert seen["x-wsgate-subject"] == "demo", seen
        assert "bearer." not in json.dumps(seen), "token forwarded upstream"
        msg = {"type": "chat.send", "payload": {"room": "ops", "text": "hi"}, "id": "py-1"}
        await ws.send(json.dumps(msg))
        assert json.loads(await ws.recv()) == msg
        await ws.send(json.dumps({"type": "admin.wipe", "payload": {}, "id": "py-2"}))
        err = json.loads(await ws.recv())
        assert err["type"] == "error" and err["payload"]["code"] == "unknown_type", err
        assert err["payload"]["ref"] == "py-2", err
        await ws.send(b"\x00\x01")
        err = json.loads(await ws.recv())
        assert err["payload"]["code"] == "binary_not_allowed", err
    assert ws.close_code == 1000, ws.close_code

    async with connect(url, additional_headers={"Authorization": "Bearer " + token}) as ws:
        assert json.loads(await ws.recv())["x-wsgate-subject"] == "demo"

    try:
        async with connect(url, origin="https://evil.example", subprotocols=["chat.v1", "bearer." + token]):
            raise AssertionError("foreign origin admitted")
    except InvalidStatus as e:
        assert e.response.status_code == 403, e.response.status_code

    try:
        async with connect(url):
            raise AssertionError("no token admitted")
    except InvalidStatus as e:
        assert e.response.status_code == 401, e.response.status_code
    print("python websockets: 5 checks passed, 0 failed")


asyncio.run(main(sys.argv[1], sys.argv[2]))
