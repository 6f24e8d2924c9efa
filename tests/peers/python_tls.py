"""wss:// with the PyPI `websockets` client and Python's own TLS (ssl module).

Usage: python_tls.py HOST:PORT TOKEN WORKDIR ADMIN_ADDR ADMIN_TOKEN
WORKDIR holds first.crt/second.crt (both trusted here) and gw.crt/gw.key (what the gateway
serves, starting as `first`). Checks: a TLS 1.3 session with the first certificate, an echo;
TLS 1.1 refused; after the files are replaced by `second` and POST /admin/reload, a new
connection sees the second certificate while the first connection keeps exchanging.
"""
import asyncio
import json
import shutil
import ssl
import sys
import urllib.request
import warnings

from websockets.asyncio.client import connect


def context(workdir: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.load_verify_locations(f"{workdir}/first.crt")
    ctx.load_verify_locations(f"{workdir}/second.crt")
    return ctx


def served_der(ws) -> bytes:
    return ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)


def der_of(path: str) -> bytes:
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


async def main(addr: str, token: str, workdir: str, admin: str, admin_token: str) -> None:
    url = f"wss://localhost:{addr.split(':')[1]}/ws"
    headers = {"Authorization": "Bearer " + token}
    checks = 0
    async with connect(url, ssl=context(workdir), additional_headers=headers) as first:
        tls = first.transport.get_extra_info("ssl_object")
        assert tls.version() in ("TLSv1.3", "TLSv1.2"), tls.version()
        assert served_der(first) == der_of(f"{workdir}/first.crt")
        await first.send("hello over tls")
        assert await first.recv() == "hello over tls"
        checks += 1

        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is offered on purpose
        old = context(workdir)
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT@SECLEVEL=0")
        try:
            async with connect(url, ssl=old, additional_headers=headers):
                raise AssertionError("TLS 1.1 accepted")
        except ssl.SSLError:
            checks += 1

        shutil.copy(f"{workdir}/second.crt", f"{workdir}/gw.crt")
        shutil.copy(f"{workdir}/second.key", f"{workdir}/gw.key")
        req = urllib.request.Request(
            f"http://{admin}/admin/reload", method="POST", headers={"Authorization": "Bearer " + admin_token}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.load(resp)["result"] == "ok"
        async with connect(url, ssl=context(workdir), additional_headers=headers) as second:
            assert served_der(second) == der_of(f"{workdir}/second.crt"), "reload did not swap the certificate"
            await second.send("on the new certificate")
            assert await second.recv() == "on the new certificate"
        checks += 1
        await first.send("still open after the reload")
        assert await first.recv() == "still open after the reload"
        checks += 1
    print(f"python websockets over TLS: {checks} checks passed, 0 failed")


asyncio.run(main(*sys.argv[1:6]))
