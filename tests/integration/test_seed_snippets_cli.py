"""The user's story end to end: `cicada app:app --loop cicada` where the app module calls async
code from sync code at import time, in each of the three ways shared/seed shows. Under uvicorn
with uvloop each of these fails ("This event loop is already running" / nest_asyncio refusing
uvloop); on cicada's loop they run nested."""

from __future__ import annotations

import textwrap

import httpx
import pytest

from support.seed_snippets import SNIPPETS

APP_TAIL = """

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": RESULT.encode()})
"""


@pytest.mark.parametrize("name", list(SNIPPETS))
def test_snippet_app_serves_under_cicada_loop(name, serve, tmp_path):
    (tmp_path / f"seed_{name}.py").write_text(textwrap.dedent(SNIPPETS[name]) + APP_TAIL)
    p = serve(f"seed_{name}:app", "--loop", "cicada", "--port", "0", "--lifespan", "off",
              "--app-dir", str(tmp_path))
    port = p.wait_port()
    r = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert r.status_code == 200
    assert r.text == "initialised"
    assert p.stop() == 0


LOOP_TAIL = """

import asyncio as _asyncio


def _sync_helper():  # sync code called by the app, calling async code
    return _asyncio.get_event_loop().run_until_complete(init())


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    loop = type(_asyncio.get_running_loop())
    text = f"{RESULT} {_sync_helper()} {loop.__module__}.{loop.__qualname__}"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": text.encode()})
"""


@pytest.mark.parametrize("name", list(SNIPPETS))
def test_snippet_app_serves_under_bare_cicada(name, serve, tmp_path):
    """No --loop: the default (auto) is cicada's loop, so the story works with no flag, at import
    time and from sync code inside a request."""
    (tmp_path / f"bare_{name}.py").write_text(textwrap.dedent(SNIPPETS[name]) + LOOP_TAIL)
    p = serve(f"bare_{name}:app", "--port", "0", "--lifespan", "off", "--app-dir", str(tmp_path))
    port = p.wait_port()
    r = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert r.status_code == 200
    assert r.text == "initialised initialised cicada.loop.Loop"
    assert p.stop() == 0
