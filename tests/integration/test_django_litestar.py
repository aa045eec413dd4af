"""Django and Litestar apps served unchanged: what comparing responses with uvicorn
(test_examples_vs_uvicorn.py) does not show. Django's sync views run in worker threads and call
back into the server's loop; it cancels a view when the client leaves; it has no lifespan.
Litestar has its own lifespan hooks and WebSocket listeners."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

LOOPS = ["cicada", "uvloop", "asyncio"]


def _get_json(port: int, path: str):
    r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_django_without_lifespan_says_so_once_and_serves(serve):
    pytest.importorskip("django")
    p = serve("djangoapp:app", "--port", "0")
    port = p.wait_port()
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text == "Hello from Django!"
    assert p.count(r"ASGI 'lifespan' protocol appears unsupported\.") == 1
    assert p.stop() == 0
    assert "Traceback" not in p.output and "ERROR" not in p.output, p.output


@pytest.mark.parametrize("loop", LOOPS)
def test_django_sync_views_call_the_loop_concurrently(serve, loop):
    """32 requests at once to a sync view: each runs in a worker thread and hands a coroutine to
    the server's loop (asgiref's async_to_sync), which must run them all while it serves."""
    pytest.importorskip("django")
    p = serve("djangoapp:app", "--port", "0", "--loop", loop)
    port = p.wait_port()

    async def fetch_all():
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as c:
            return await asyncio.gather(*(c.get("/bridge", params={"name": f"n{i}"})
                                          for i in range(32)))

    responses = asyncio.run(fetch_all())
    assert [r.json() for r in responses] == [{"upper": f"N{i}"} for i in range(32)]
    assert p.stop() == 0
    assert "Traceback" not in p.output, p.output


@pytest.mark.parametrize("server, loop", [("cicada", loop) for loop in LOOPS] + [("uvicorn", "uvloop")])
def test_django_cancels_a_view_whose_client_left(serve, server, loop):
    """Django listens for http.disconnect while a view runs and cancels the view when it comes;
    the server must deliver it as soon as the client closes (uvicorn is the reference)."""
    pytest.importorskip("django")
    p = serve("djangoapp:app", "--port", "0", "--loop", loop, module=server)
    port = p.wait_port()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while not (events := _get_json(port, "/events")["events"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert events == ["cancelled"]
    assert _get_json(port, "/items/3") == {"item": 3, "q": None}
    # uvicorn re-raises the SIGTERM it handled once it has shut down: only cicada exits 0
    assert p.stop() == (0 if server == "cicada" else -15)


@pytest.mark.parametrize("loop", LOOPS)
def test_litestar_websocket_state_and_lifespan_shutdown(serve, loop, tmp_path):
    pytest.importorskip("litestar")
    websockets = pytest.importorskip("websockets")
    flag = tmp_path / "shutdown"
    p = serve("litestarapp:app", "--port", "0", "--loop", loop,
              env={"LITESTAR_SHUTDOWN_FILE": str(flag)})
    port = p.wait_port()

    async def chat():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            got = []
            for text in ("hi", "ünïcödé", "x" * 70_000):
                await ws.send(text)
                got.append(await ws.recv())
            return got

    assert asyncio.run(chat()) == ["echo: hi", "echo: ünïcödé", "echo: " + "x" * 70_000]
    assert _get_json(port, "/state") == {"ready": "yes"}
    assert not flag.exists()
    assert p.stop() == 0
    assert flag.read_text() == "shutdown ran"
    assert "Traceback" not in p.output, p.output


def test_accelerate_flag_serves_a_django_app_unchanged_and_says_why(serve):
    pytest.importorskip("django")
    p = serve("djangoapp:app", "--port", "0", "--accelerate")
    port = p.wait_port()
    assert json.loads(httpx.get(f"http://127.0.0.1:{port}/items/1", timeout=10).text)["item"] == 1
    p.wait_for(r"WARNING.*--accelerate: accelerate\(\) needs a Starlette or FastAPI app, got "
               r"ASGIHandler; middleware runs unchanged")
    assert p.stop() == 0
