"""Real frameworks on HttpServer: FastAPI/Starlette apps run unchanged (JSON, forms, streaming,
FileResponse through pathsend, background tasks, disconnect checks)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402


def make_app(tmp_path, done):
    app = FastAPI()
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 1000)

    @app.get("/items/{item_id}")
    async def item(item_id: int, q: str | None = None):
        return {"item_id": item_id, "q": q}

    @app.post("/echo")
    async def echo(request: Request):
        body = await request.body()
        return {"len": len(body), "ct": request.headers.get("content-type")}

    @app.get("/stream")
    async def stream():
        async def gen():
            for i in range(5):
                yield f"part{i};".encode()
                await asyncio.sleep(0)

        return StreamingResponse(gen(), media_type="text/plain")

    @app.get("/file")
    async def file():
        return FileResponse(blob)

    @app.get("/bg")
    async def bg():
        return PlainTextResponse("ok", background=BackgroundTask(lambda: done.append("bg")))

    @app.get("/disc")
    async def disc(request: Request):
        return {"disconnected": await request.is_disconnected()}

    @app.get("/boom")
    async def boom():
        raise RuntimeError("app bug")

    return app, blob


def test_fastapi_app_unchanged(serve, tmp_path):
    done = []
    app, blob = make_app(tmp_path, done)
    st = serve(app)
    with httpx.Client(base_url=st.url) as c:
        assert c.get("/items/3", params={"q": "x y"}).json() == {"item_id": 3, "q": "x y"}
        r = c.post("/echo", content=b"a" * 100000, headers={"content-type": "application/x"})
        assert r.json() == {"len": 100000, "ct": "application/x"}
        r = c.post("/echo", data={"k": "v"})
        assert r.json()["ct"] == "application/x-www-form-urlencoded"
        r = c.get("/stream")
        assert r.text == "part0;part1;part2;part3;part4;"
        r = c.get("/file")
        assert r.content == blob.read_bytes()
        assert r.headers["content-length"] == str(blob.stat().st_size)
        assert c.get("/bg").text == "ok"
        assert c.get("/disc").json() == {"disconnected": False}
        assert c.get("/boom").status_code == 500
        assert c.get("/missing").status_code == 404
        assert c.head("/file").status_code in (200, 405)
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done == ["bg"]


def test_starlette_streaming_disconnect(serve, error_log):
    from starlette.applications import Starlette
    from starlette.routing import Route

    finished = []

    async def endless(request):
        async def gen():
            try:
                while True:
                    yield b"x" * 1024
                    await asyncio.sleep(0.001)
            finally:
                finished.append(True)

        return StreamingResponse(gen())

    app = Starlette(routes=[Route("/", endless)])
    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    s.recv(4096)
    s.close()
    deadline = time.monotonic() + 5
    while not finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert finished  # the generator was stopped when the client left
    deadline = time.monotonic() + 5
    while st.server.active_requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert st.server.active_requests == 0
    # a client leaving is not an application error: no traceback in the log
    assert not any("Exception in ASGI application" in m for m in error_log.handler.messages())


def test_task_context_sync_endpoints_and_contextvars(serve):
    import contextvars

    var = contextvars.ContextVar("var", default="unset")
    app = FastAPI()

    @app.middleware("http")
    async def set_var(request, call_next):
        var.set(request.url.path)
        return await call_next(request)

    @app.get("/sync/{n}")
    def sync_endpoint(n: int):  # runs in anyio's thread pool
        return {"n": n, "var": var.get()}

    @app.get("/task")
    async def task_info():
        t = asyncio.current_task()
        return {"task": t is not None, "var": var.get()}

    st = serve(app)
    with httpx.Client(base_url=st.url) as c:
        assert c.get("/sync/7").json() == {"n": 7, "var": "/sync/7"}
        assert c.get("/task").json() == {"task": True, "var": "/task"}
        # contexts don't leak between requests on one connection
        assert c.get("/sync/8").json() == {"n": 8, "var": "/sync/8"}
