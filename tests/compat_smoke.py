"""Smoke test for `make compat`: the extension imports and its main parts work on this CPython.
Runs without pytest or third-party packages, so a fresh venv of any version can run it."""

import asyncio
import sys

import cicada._core as core
import cicada.loop

req = core.parse_request(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n")
assert req.method == b"GET" and req.target == b"/a?b=1", req


async def main():
    await asyncio.sleep(0)
    return cicada.run_sync(asyncio.sleep(0, "nested"))


assert cicada.loop.run(main()) == "nested"
print(f"compat ok on {sys.version.split()[0]}")
