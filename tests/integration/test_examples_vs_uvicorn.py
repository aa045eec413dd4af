"""The FastAPI and Starlette examples served by cicada and by uvicorn give the same responses."""

from __future__ import annotations

import time

import httpx
import pytest

FASTAPI_REQUESTS = [
    ("GET", "/", None),
    ("GET", "/items/5?q=abc&limit=3", None),
    ("GET", "/items/notanint", None),  # 422
    ("POST", "/items", {"name": "pen", "price": 2.5, "tags": ["office"]}),
    ("POST", "/items", {"name": "pen"}),  # 422: price missing
    ("POST", "/items", b"{not json"),  # 422: bad JSON
    ("GET", "/stream?n=50", None),
    ("POST", "/tasks?name=first", None),
    ("GET", "/tasks", None),  # the background task ran
    ("GET", "/teapot/kettle", None),  # custom exception handler: 418
    ("GET", "/does-not-exist", None),  # 404
    ("DELETE", "/", None),  # 405
    ("GET", "/state", None),  # lifespan state
]

STARLETTE_REQUESTS = [
    ("GET", "/", None),
    ("GET", "/users/ada?x=1&y=2", None),
    ("POST", "/echo", {"a": [1, 2, 3], "b": "ü"}),
    ("POST", "/echo", b"nope"),
    ("GET", "/stream?n=100", None),
    ("POST", "/tasks?name=bg", None),
    ("GET", "/tasks", None),
    ("GET", "/missing", None),
    ("PUT", "/", None),
    ("GET", "/state", None),
]

COMPARED_HEADERS = ("content-type", "content-length", "allow")


def _collect(port: int, requests) -> list:
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for method, path, body in requests:
            kw = {}
            if isinstance(body, (bytes, bytearray)):
                kw["content"] = body
                kw["headers"] = {"content-type": "application/json"}
            elif body is not None:
                kw["json"] = body
            r = c.request(method, path, **kw)
            if path == "/tasks" and method == "GET":
                # A background task runs after its response went out: wait for it, don't race it.
                deadline = time.monotonic() + 5
                while r.json()["events"] == [] and time.monotonic() < deadline:
                    time.sleep(0.05)
                    r = c.request(method, path, **kw)
            headers = {h: r.headers.get(h) for h in COMPARED_HEADERS}
            if headers["allow"]:  # Starlette builds it from a set: order varies per process
                headers["allow"] = sorted(x.strip() for x in headers["allow"].split(","))
            out.append((method, path, r.status_code, r.content, headers))
    return out


@pytest.mark.parametrize("module, requests", [
    ("fastapi_app", FASTAPI_REQUESTS),
    ("starlette_app", STARLETTE_REQUESTS),
])
def test_same_responses_as_uvicorn(serve, module, requests):
    ours = serve(f"{module}:app", "--port", "0")
    theirs = serve(f"{module}:app", "--port", "0", module="uvicorn")
    got = _collect(ours.wait_port(), requests)
    expected = _collect(theirs.wait_port(), requests)
    for g, e in zip(got, expected):
        assert g == e
    statuses = [g[2] for g in got]
    assert 200 in statuses and 404 in statuses and 405 in statuses
    if module == "fastapi_app":
        assert 422 in statuses and 418 in statuses
        assert got[8][3] == b'{"events":["first"]}'
    assert ours.stop() == 0
