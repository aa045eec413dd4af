"""Small raw ASGI apps shared by the server tests."""

from __future__ import annotations

import asyncio


async def read_body(receive) -> bytes:
    body = b""
    while True:
        m = await receive()
        if m["type"] == "http.disconnect":
            raise ConnectionError("disconnected")
        body += m.get("body", b"")
        if not m.get("more_body"):
            return body


async def echo(scope, receive, send):
    """Echo method, path and body."""
    body = await read_body(receive)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body",
                "body": scope["method"].encode() + b" " + scope["path"].encode() + b" " + body})


async def hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def streaming(parts: list[bytes], delay: float = 0.0):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for p in parts:
            await send({"type": "http.response.body", "body": p, "more_body": True})
            if delay:
                await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app
