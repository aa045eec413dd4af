"""After startup the server freezes the startup heap (gc.freeze), so full collections under load
no longer rescan the app's import-time objects (that was FastAPI's p99 under cicada)."""

from __future__ import annotations

import httpx

APP = """
import gc

STARTUP_OBJECTS = [[i] for i in range(1000)]  # tracked objects the app builds at import


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = str(gc.get_freeze_count()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


def test_startup_heap_is_frozen(serve, tmp_path):
    (tmp_path / "freeze_app.py").write_text(APP)
    p = serve("freeze_app:app", "--port", "0", "--lifespan", "off", "--app-dir", str(tmp_path))
    port = p.wait_port()
    r = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert r.status_code == 200
    assert int(r.text) >= 1000
    assert p.stop() == 0
