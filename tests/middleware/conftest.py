"""Shared fixtures: every middleware test runs against Starlette's BaseHTTPMiddleware (the
reference) and cicada's HTTPMiddleware, and in-process tests on asyncio and uvloop."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("starlette")

from starlette.middleware.base import BaseHTTPMiddleware  # noqa: E402

from cicada.middleware import HTTPMiddleware  # noqa: E402

IMPLS = {"base": BaseHTTPMiddleware, "cicada": HTTPMiddleware}


@pytest.fixture(params=list(IMPLS))
def impl(request):
    """The middleware class under test."""
    return IMPLS[request.param]


@pytest.fixture(params=["asyncio", "uvloop", "cicada"])
def any_loop(request):
    """A loop factory for tests that also run on cicada's own loop."""
    if request.param == "uvloop":
        return pytest.importorskip("uvloop").new_event_loop
    if request.param == "cicada":
        import cicada.loop

        return cicada.loop.new_event_loop
    return asyncio.new_event_loop


def close_loop(loop):
    """Cancel the tasks an app or dispatch left behind, let them finish, close the loop."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_factory(request):
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def http_scope(path="/", method="GET", headers=(), spec_version="2.3", extensions=None):
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "extensions": extensions or {},
    }


class Exchange:
    """A fake server side for one request: feeds body chunks, records what the app sends."""

    def __init__(self, body_chunks=(b"",), disconnect_after_response=True):
        self.inbox = [
            {"type": "http.request", "body": c, "more_body": i < len(body_chunks) - 1}
            for i, c in enumerate(body_chunks)
        ]
        self.sent: list[dict] = []
        self.receive_calls = 0
        self.events: list[str] = []
        self.response_done = asyncio.Event()
        self.disconnected = asyncio.Event()

    async def receive(self):
        self.receive_calls += 1
        if self.inbox:
            return self.inbox.pop(0)
        # Like real servers: block until the response is complete or the client leaves.
        waiters = [asyncio.ensure_future(self.response_done.wait()),
                   asyncio.ensure_future(self.disconnected.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        return {"type": "http.disconnect"}

    async def send(self, message):
        self.sent.append(message)
        self.events.append(message["type"])
        if message["type"] == "http.response.pathsend" or (
            message["type"] == "http.response.body" and not message.get("more_body", False)
        ):
            self.response_done.set()

    @property
    def status(self):
        return next(m["status"] for m in self.sent if m["type"] == "http.response.start")

    @property
    def headers(self):
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return {k.decode(): v.decode() for k, v in start["headers"]}

    @property
    def body(self):
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def run(loop_factory, coro_fn):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro_fn())


async def call(app, scope=None, exchange=None):
    exchange = exchange or Exchange()
    await app(scope or http_scope(), exchange.receive, exchange.send)
    return exchange
