"""Both middleware implementations under a real server on loopback (uvicorn in a thread, on
asyncio and uvloop) and under Starlette's TestClient: requests, streaming, request bodies,
background tasks across client disconnects and concurrent requests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

uvicorn = pytest.importorskip("uvicorn")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app, loop):
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop=loop, lifespan="off",
                            log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        thread.join(10)


def build_app(impl, layers=1):
    state = {"bg": threading.Event(), "release": None}

    async def add_header(request, call_next):
        response = await call_next(request)
        response.headers.append("x-layer", "1")
        return response

    async def hello(request):
        return JSONResponse({"hello": "world"})

    async def echo(request: Request):
        return PlainTextResponse((await request.body())[::-1])

    async def stream(request):
        async def gen():
            for i in range(5):
                await asyncio.sleep(0.001)
                yield b"chunk%d\n" % i

        return StreamingResponse(gen(), media_type="text/plain")

    async def slow_then_bg(request):
        await asyncio.sleep(0.2)
        return PlainTextResponse("done", background=BackgroundTask(state["bg"].set))

    async def waits_for_fast(request):
        state["release"] = asyncio.Event()

        async def bg():
            await asyncio.wait_for(state["release"].wait(), 10)
            state["bg"].set()

        return PlainTextResponse("slow", background=BackgroundTask(bg))

    async def fast(request):
        state["release"].set()
        return PlainTextResponse("fast")

    async def reads_body(request, call_next):
        if request.method == "POST":
            request.state.seen = len(await request.body())
        response = await call_next(request)
        if request.method == "POST":
            response.headers["x-seen"] = str(request.state.seen)
        return response

    middleware = [Middleware(impl, dispatch=add_header) for _ in range(layers)]
    middleware.append(Middleware(impl, dispatch=reads_body))
    app = Starlette(routes=[
        Route("/", hello), Route("/echo", echo, methods=["POST"]), Route("/stream", stream),
        Route("/bg", slow_then_bg), Route("/slow", waits_for_fast), Route("/fast", fast),
    ], middleware=middleware)
    return app, state


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request):
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return request.param


@pytest.mark.parametrize("layers", [1, 10])
def test_requests_under_uvicorn(impl, loop, layers):
    app, _ = build_app(impl, layers)
    with serve(app, loop) as (url, _), httpx.Client(base_url=url) as client:
        for _ in range(3):
            r = client.get("/")
            assert r.json() == {"hello": "world"}
            assert r.headers.get_list("x-layer") == ["1"] * layers
        r = client.get("/stream")
        assert r.text == "".join(f"chunk{i}\n" for i in range(5))
        body = b"x" * 100_000 + b"end"
        r = client.post("/echo", content=body)
        assert r.content == body[::-1] and r.headers["x-seen"] == str(len(body))


def test_background_survives_client_disconnect(impl, loop):
    app, state = build_app(impl)
    with serve(app, loop) as (_, port):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /bg HTTP/1.1\r\nHost: x\r\n\r\n")
        assert state["bg"].wait(5), "background task did not run after the client left"


def test_background_does_not_delay_other_requests(impl, loop):
    app, state = build_app(impl)
    with serve(app, loop) as (url, _):
        with httpx.Client(base_url=url, timeout=5) as c1, httpx.Client(base_url=url, timeout=5) as c2:
            # /slow's background waits until /fast ran: both responses must arrive meanwhile
            assert c1.get("/slow").text == "slow"
            assert c2.get("/fast").text == "fast"
        assert state["bg"].wait(5)


def test_testclient_fastapi_app(impl):
    fastapi = pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    app = fastapi.FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int):
        return {"id": item_id}

    @app.post("/items")
    async def create(payload: dict):
        return payload

    async def dispatch(request, call_next):
        response = await call_next(request)
        response.headers["x-path"] = request.url.path
        return response

    app.add_middleware(impl, dispatch=dispatch)
    with TestClient(app) as client:
        r = client.get("/items/3")
        assert r.json() == {"id": 3} and r.headers["x-path"] == "/items/3"
        r = client.post("/items", json={"a": 1})
        assert r.json() == {"a": 1}
        assert client.get("/items/x").status_code == 422


def test_testclient_trio_backend_falls_back(impl):
    pytest.importorskip("trio")
    from starlette.testclient import TestClient

    async def dispatch(request, call_next):
        response = await call_next(request)
        response.headers["x"] = "1"
        return response

    app = Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"))],
                    middleware=[Middleware(impl, dispatch=dispatch)])
    with TestClient(app, backend="trio") as client:
        assert client.get("/").headers["x"] == "1"


def test_requests_under_hypercorn(impl):
    hypercorn = pytest.importorskip("hypercorn")
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    app, _ = build_app(impl, 2)
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    stop = threading.Event()
    loop = asyncio.new_event_loop()

    async def trigger():
        while not stop.is_set():
            await asyncio.sleep(0.02)

    thread = threading.Thread(
        target=lambda: loop.run_until_complete(hypercorn_serve(app, config, shutdown_trigger=trigger)),
        daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "hypercorn did not start"
                time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            r = client.get("/")
            assert r.json() == {"hello": "world"} and r.headers.get_list("x-layer") == ["1", "1"]
            assert client.get("/stream").text == "".join(f"chunk{i}\n" for i in range(5))
            assert client.post("/echo", content=b"abc").content == b"cba"
    finally:
        stop.set()
        thread.join(10)
        assert hypercorn is not None
