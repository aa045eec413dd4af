"""FastAPI apps for the --accelerate tests: which middleware runs each layer shows in a header.

The endpoint sets a contextvar; dispatch reads it after call_next. Starlette's
BaseHTTPMiddleware runs the endpoint in another task, so dispatch sees the default ("unset");
cicada's middleware runs it in the caller's task, so dispatch sees the endpoint's value.
"""

from __future__ import annotations

import contextvars

from fastapi import FastAPI
from starlette.middleware.base import BaseHTTPMiddleware

seen = contextvars.ContextVar("seen", default="unset")


async def report(request, call_next):
    response = await call_next(request)
    response.headers["x-seen"] = seen.get()
    return response


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def hello():
        seen.set("endpoint")
        return {"hello": "world"}

    app.middleware("http")(report)
    return app


app = _app()
sub = _app()
app.mount("/sub", sub)


class Wrapped:
    """Not a Starlette app: --accelerate has nothing to swap and says so."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        await self.inner(scope, receive, send)


wrapped = Wrapped(_app())

started = _app()
started.middleware_stack = started.build_middleware_stack()  # as if it had already served

__all__ = ["BaseHTTPMiddleware", "app", "started", "wrapped"]
