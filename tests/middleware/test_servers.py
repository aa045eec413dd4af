"""Both middleware implementations under a real server on loopback (uvicorn and hypercorn in a
thread, on asyncio and uvloop; cicada's own server and granian as processes) and under
Starlette's TestClient: requests, streaming, request bodies, background tasks across client
disconnects and concurrent requests. The app is served.py's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from .served import build_app

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


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request):
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return request.param


def check_requests(url, layers):
    """Every layer ran on each response; streaming and a 100 kB request body read in dispatch
    (and replayed to the endpoint) come through."""
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(3):
            r = client.get("/")
            assert r.json() == {"hello": "world"}
            assert r.headers.get_list("x-layer") == ["1"] * layers
        r = client.get("/stream")
        assert r.text == "".join(f"chunk{i}\n" for i in range(5))
        body = b"x" * 100_000 + b"end"
        r = client.post("/echo", content=body)
        assert r.content == body[::-1] and r.headers["x-seen"] == str(len(body))


@pytest.mark.parametrize("layers", [1, 10])
def test_requests_under_uvicorn(impl, loop, layers):
    app, _ = build_app(impl, layers)
    with serve(app, loop) as (url, _):
        check_requests(url, layers)


TESTS = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def serve_process(cmd, impl, layers):
    """`cmd` (with {port}) serving middleware.served:app in a process of its own."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(TESTS), "MW_LAYERS": str(layers),
           "MW_IMPL": "cicada" if impl.__module__.startswith("cicada") else "base"}
    proc = subprocess.Popen([a.format(port=port) for a in cmd], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    out = proc.communicate()[0].decode(errors="replace")
                    pytest.fail(f"{cmd[2]} did not start:\n{out}")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def check_background_after_disconnect(url, port, impl):
    """/bg's background task runs although the client left before the response. Only asserted
    for cicada's middleware: BaseHTTPMiddleware loses it when the server has seen the client go
    before the response is sent (an ASGI 2.4 server's send then raises, and Starlette skips the
    background). The client leaves once /bg's endpoint has started, within its 0.5 s: granian
    drops a request whose client closed before it was dispatched."""
    if impl.__module__.startswith("starlette"):
        return
    deadline = time.monotonic() + 5
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /bg HTTP/1.1\r\nHost: x\r\n\r\n")
        while httpx.get(f"{url}/bg-entered", timeout=5).text != "yes":
            assert time.monotonic() < deadline, "/bg's endpoint did not start"
            time.sleep(0.01)
    while httpx.get(f"{url}/bg-ran", timeout=5).text != "yes":
        assert time.monotonic() < deadline, "background task did not run after the client left"
        time.sleep(0.05)


CICADA = [sys.executable, "-m", "cicada", "middleware.served:app", "--port", "{port}",
          "--log-level", "warning", "--no-access-log", "--loop"]


@pytest.mark.parametrize("loop, layers", [("cicada", 1), ("cicada", 10), ("asyncio", 1),
                                          ("uvloop", 1)])
def test_requests_under_cicada(impl, loop, layers):
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    with serve_process(CICADA + [loop], impl, layers) as (url, port):
        check_requests(url, layers)
        check_background_after_disconnect(url, port, impl)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_requests_under_granian(impl, loop):
    pytest.importorskip("granian")
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    cmd = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
           "--port", "{port}", "--workers", "1", "--loop", loop, "--no-access-log",
           "--log-level", "warning", "middleware.served:app"]
    with serve_process(cmd, impl, 2) as (url, port):
        check_requests(url, 2)
        check_background_after_disconnect(url, port, impl)


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
