"""The FastAPI, Starlette, Django and Litestar examples served by cicada and by uvicorn give the
same responses."""

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

DJANGO_REQUESTS = [
    ("GET", "/", None),
    ("GET", "/items/7?q=abc", None),  # async view
    ("GET", "/items/seven", None),  # 404: the converter does not match
    ("GET", "/bridge?name=ada", None),  # sync view -> async_to_sync -> the server's loop
    ("POST", "/echo", {"a": [1, 2, 3], "b": "ü"}),
    ("POST", "/echo", b"{not json"),  # 400
    ("POST", "/upload", ("multipart", {"title": "notes"}, {"doc": ("a.txt", b"hello, upload")})),
    ("GET", "/stream?n=100", None),  # StreamingHttpResponse over an async generator
    ("GET", "/missing", None),
    ("PUT", "/echo", None),  # 405
]

LITESTAR_REQUESTS = [
    ("GET", "/", None),
    ("GET", "/items/5?q=abc&limit=3", None),
    ("GET", "/items/5?limit=many", None),  # 400: limit is an int
    ("POST", "/items", {"name": "pen", "price": 2.5, "tags": ["office", "blue"]}),
    ("POST", "/items", {"name": "pen"}),  # 400: price missing
    ("POST", "/items", b"{not json"),  # 400
    ("GET", "/stream?n=50", None),
    ("POST", "/tasks?name=first", None),
    ("GET", "/tasks", None),
    ("GET", "/missing", None),
    ("DELETE", "/", None),  # 405
    ("GET", "/state", None),  # set by on_startup: lifespan ran
]

COMPARED_HEADERS = ("content-type", "content-length", "allow")


def _collect(port: int, requests) -> list:
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for method, path, body in requests:
            kw = {}
            if isinstance(body, tuple):  # ("multipart", fields, files)
                kw["data"], kw["files"] = body[1], body[2]
            elif isinstance(body, (bytes, bytearray)):
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
    ("django_app", DJANGO_REQUESTS),
    ("litestar_app", LITESTAR_REQUESTS),
])
def test_same_responses_as_uvicorn(serve, module, requests):
    pytest.importorskip(module.split("_")[0])
    ours = serve(f"{module}:app", "--port", "0")
    theirs = serve(f"{module}:app", "--port", "0", module="uvicorn")
    got = _collect(ours.wait_port(), requests)
    expected = _collect(theirs.wait_port(), requests)
    for g, e in zip(got, expected):
        assert g == e
    assert len(got) == len(expected) == len(requests)
    statuses = [g[2] for g in got]
    assert 200 in statuses and 404 in statuses and 405 in statuses
    if module == "fastapi_app":
        assert 422 in statuses and 418 in statuses
        assert got[8][3] == b'{"events":["first"]}'
    if module in ("django_app", "litestar_app"):
        assert 400 in statuses
    if module == "litestar_app":
        assert got[8][3] == b'{"events":["first"]}' and got[11][3] == b'{"ready":"yes"}'
    assert ours.stop() == 0
