"""Raw ASGI app every server in bench/suites/server.py and server_memory.py runs: GET answers a
13-byte text/plain "Hello, World!"; POST reads the whole request body and echoes it back.

    PYTHONPATH=bench/apps cicada server_raw:app --no-access-log
"""

from __future__ import annotations

BODY = b"Hello, World!"
PLAIN_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
}
PLAIN_BODY = {"type": "http.response.body", "body": BODY}


async def _lifespan(receive, send):
    while True:
        m = await receive()
        if m["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif m["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _echo(receive, send):
    chunks = []
    while True:
        m = await receive()
        if m["type"] != "http.request":  # http.disconnect: nobody left to answer
            return
        chunks.append(m.get("body", b""))
        if not m.get("more_body", False):
            break
    body = b"".join(chunks)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        return
    if scope["method"] == "POST":
        await _echo(receive, send)
        return
    # Fresh dicts per request: servers may keep or mutate what they are sent.
    await send(dict(PLAIN_START))
    await send(dict(PLAIN_BODY))
