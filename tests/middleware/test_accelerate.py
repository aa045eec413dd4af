"""accelerate(app): existing `@app.middleware("http")` / BaseHTTPMiddleware layers of a FastAPI
or Starlette app run on cicada's HTTPMiddleware, with no other change to the user's code."""

from __future__ import annotations

import contextvars

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from cicada.middleware import HTTPMiddleware, accelerate

fastapi = pytest.importorskip("fastapi")

seen = contextvars.ContextVar("seen", default="unset")


def build_fastapi():
    app = fastapi.FastAPI()

    @app.get("/")
    async def root():
        seen.set("endpoint")
        return {"ok": True}

    @app.middleware("http")
    async def decorated(request, call_next):
        response = await call_next(request)
        response.headers["x-decorated"] = seen.get()
        return response

    async def added(request, call_next):
        response = await call_next(request)
        response.headers["x-added"] = "1"
        return response

    class Sub(BaseHTTPMiddleware):
        def __init__(self, app, label):
            super().__init__(app)
            self.label = label

        async def dispatch(self, request, call_next):
            response = await call_next(request)
            response.headers["x-sub"] = self.label
            return response

    class OwnCall(BaseHTTPMiddleware):
        async def __call__(self, scope, receive, send):  # replaces __call__: left alone
            await self.app(scope, receive, send)

    app.add_middleware(BaseHTTPMiddleware, dispatch=added)
    app.add_middleware(Sub, label="L")
    app.add_middleware(OwnCall)
    return app


def test_fastapi_layers_are_rewritten():
    app = build_fastapi()
    before = [m.cls for m in app.user_middleware]
    assert accelerate(app) is app
    after = [m.cls for m in app.user_middleware]
    assert after[0] is before[0]  # OwnCall keeps its own __call__
    for cls in after[1:]:
        assert issubclass(cls, HTTPMiddleware)
    assert issubclass(after[1], before[1]) and after[1].__name__ == "Sub"
    with TestClient(app) as client:
        r = client.get("/")
    assert r.json() == {"ok": True}
    assert r.headers["x-added"] == "1" and r.headers["x-sub"] == "L"
    # cicada's driver runs the endpoint in dispatch's task: its contextvar is visible
    assert r.headers["x-decorated"] == "endpoint"


def test_without_accelerate_base_semantics_stay():
    with TestClient(build_fastapi()) as client:
        r = client.get("/")
    assert r.headers["x-decorated"] == "unset"


def test_idempotent():
    app = build_fastapi()
    accelerate(app)
    first = [(m.cls, m.args, m.kwargs) for m in app.user_middleware]
    accelerate(app)
    assert [(m.cls, m.args, m.kwargs) for m in app.user_middleware] == first


def test_already_built_stack_is_a_clear_error():
    app = build_fastapi()
    with TestClient(app) as client:
        client.get("/")
        with pytest.raises(RuntimeError, match="before the app starts"):
            accelerate(app)


def test_starlette_app_and_non_apps():
    async def dispatch(request, call_next):
        response = await call_next(request)
        response.headers["x"] = "y"
        return response

    app = Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"))],
                    middleware=[Middleware(BaseHTTPMiddleware, dispatch=dispatch)])
    accelerate(app)
    assert app.user_middleware[0].cls is HTTPMiddleware
    with TestClient(app) as client:
        assert client.get("/").headers["x"] == "y"
    with pytest.raises(TypeError, match="Starlette or FastAPI"):
        accelerate(object())
