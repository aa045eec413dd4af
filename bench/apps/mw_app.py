"""FastAPI hello-JSON app with N identical header-adding middleware layers, for bench/suites/
middleware.py. Env: MW_LAYERS (0..), MW_KIND (base | pure | cicada | accelerate | noop).
`noop` is a pure-ASGI layer that only awaits the next app: the floor any layer costs;
`cicada-pass` an HTTPMiddleware whose dispatch only returns `await call_next(request)`.

    MW_KIND=cicada MW_LAYERS=5 uvicorn bench.apps.mw_app:app
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders


class PureASGIHeader:
    """The hand-written alternative: adds the header by wrapping send."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-mw"] = "1"
            await send(message)

        await self.app(scope, receive, send_with_header)


class PureASGINoop:
    """The floor of any layer: a pure-ASGI class that only awaits the next app (no header)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


async def add_header(request, call_next):
    response = await call_next(request)
    response.headers["x-mw"] = "1"
    return response


async def pass_through(request, call_next):
    return await call_next(request)


def make_app(kind: str, layers: int) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def hello():
        return {"hello": "world"}

    for _ in range(layers):
        if kind in ("base", "accelerate"):
            app.middleware("http")(add_header)
        elif kind == "pure":
            app.add_middleware(PureASGIHeader)
        elif kind == "noop":
            app.add_middleware(PureASGINoop)
        elif kind == "cicada-pass":  # HTTPMiddleware whose dispatch only awaits call_next
            from cicada.middleware import HTTPMiddleware

            app.add_middleware(HTTPMiddleware, dispatch=pass_through)
        elif kind == "cicada":
            from cicada.middleware import HTTPMiddleware

            app.add_middleware(HTTPMiddleware, dispatch=add_header)
        else:
            raise ValueError(f"MW_KIND must be base, pure, cicada, accelerate or noop, not {kind!r}")
    if kind == "accelerate":
        from cicada.middleware import accelerate

        accelerate(app)
    return app


app = make_app(os.environ.get("MW_KIND", "cicada"), int(os.environ.get("MW_LAYERS", "1")))


# In-process driving (bench/suites/middleware.py, bench/mw_profile.py): a fixed GET scope, and
# receive/send that do no work, so only the app and its layers are timed.
SCOPE = {
    "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
    "method": "GET", "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"",
    "root_path": "", "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1),
    "server": ("127.0.0.1", 80),
}
_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def receive():
    return _REQUEST


async def send(message):
    pass
