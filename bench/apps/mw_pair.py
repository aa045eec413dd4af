"""Two FastAPI hello apps in one server process, for the interleaved measurement of
bench/suites/middleware.py: requests to /a reach the app with no middleware, requests to /b the
app with MW_LAYERS layers of MW_KIND (see mw_app.py). Both then see path "/" and no query string.

wrk (bench/apps/alternate.lua) numbers its requests (`?n=N`) and switches between /a and /b every
few hundred requests. The server is saturated, so the time between two arrivals here is what one
request costs the server. Each numbered arrival is recorded (its number and perf_counter_ns(), the
same small cost on both paths), and GET /trace returns the records (then forgets them): N as
int64s, then the times. Both paths share everything that differs between processes (memory
layout, hash seeds, the machine's load at the time).

    MW_KIND=cicada MW_LAYERS=1 cicada bench.apps.mw_pair:app
"""

from __future__ import annotations

import os
from array import array
from time import perf_counter_ns

from bench.apps.mw_app import make_app

_plain = make_app("pure", 0)
_layered = make_app(os.environ.get("MW_KIND", "cicada"), int(os.environ.get("MW_LAYERS", "1")))
_numbers = array("q")
_times = array("q")


async def _send_trace(send) -> None:
    body = _numbers.tobytes() + _times.tobytes()
    del _numbers[:], _times[:]
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":  # neither app has startup or shutdown work
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]  # startup | shutdown
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    query = scope["query_string"]
    if query.startswith(b"n="):
        _times.append(perf_counter_ns())
        _numbers.append(int(query[2:]))
    path = scope["path"]
    if path == "/trace":
        await _send_trace(send)
        return
    target = _layered if path == "/b" else _plain
    scope["path"] = "/"
    scope["raw_path"] = b"/"
    scope["query_string"] = b""
    await target(scope, receive, send)
