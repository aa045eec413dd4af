"""Two FastAPI hello apps in one server process, for paired measurements (bench/suites/
middleware.py): requests to /a reach the app with no middleware, requests to /b the app with
MW_LAYERS layers of MW_KIND (see mw_app.py). Both then see path "/". Alternating wrk bursts between
the two paths compare them inside one process, so what differs between processes (memory layout,
hash seeds, the machine's load at the time) hits both sides alike.

    MW_KIND=cicada MW_LAYERS=1 cicada bench.apps.mw_pair:app
"""

from __future__ import annotations

import os

from bench.apps.mw_app import make_app

_plain = make_app("pure", 0)
_layered = make_app(os.environ.get("MW_KIND", "cicada"), int(os.environ.get("MW_LAYERS", "1")))


async def app(scope, receive, send):
    if scope["type"] == "lifespan":  # neither app has startup or shutdown work
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]  # startup | shutdown
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    target = _layered if scope["path"] == "/b" else _plain
    scope["path"] = "/"
    scope["raw_path"] = b"/"
    await target(scope, receive, send)
