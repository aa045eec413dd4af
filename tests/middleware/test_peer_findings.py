"""Regressions found by running Starlette's and FastAPI's own test suites against cicada's
middleware (scripts/peer_tests.sh, docs/middleware.md). Each case is our own, checked against
BaseHTTPMiddleware too, in-process on asyncio, uvloop and cicada's loop."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.testclient import TestClient

from cicada.importer import detect_interface
from cicada.middleware import HTTPMiddleware

from .conftest import Exchange, http_scope, run


async def passthrough(request, call_next):
    return await call_next(request)


# ---- a bare layer served as the app is an ASGI3 app ----------------------------------------------


def test_bare_layer_detected_as_asgi3(impl):
    """Servers and TestClient pick ASGI2 or ASGI3 by `iscoroutinefunction(app.__call__)`: a layer
    used as the outermost app (`app = Layer(inner)`) was driven as ASGI2, `app(scope)` failing."""
    layer = impl(PlainTextResponse("inner"), dispatch=passthrough)
    if sys.version_info < (3, 14):
        assert asyncio.iscoroutinefunction(layer.__call__)
    if sys.version_info >= (3, 12):
        assert inspect.iscoroutinefunction(layer.__call__)
    assert detect_interface(layer) == "asgi3"
    response = TestClient(layer).get("/")  # no lifespan: the inner app is a bare Response
    assert (response.status_code, response.text) == (200, "inner")


def test_bare_layer_detected_as_asgi3_by_uvicorn(impl):
    config_mod = pytest.importorskip("uvicorn.config")
    layer = impl(PlainTextResponse("inner"), dispatch=passthrough)
    config = config_mod.Config(app=layer, log_config=None)
    config.load()
    assert config.interface == "asgi3"


# ---- a response dispatch discards while the app keeps sending ------------------------------------


@pytest.mark.parametrize("close", [True, False], ids=["aclose", "no-aclose"])
def test_discarded_body_app_loops_on_send(impl, any_loop, close):
    """Dispatch reads one chunk (then closes body_iterator, which must exist and end the body),
    and returns its own response. The app sends forever until a task of its own sees
    http.disconnect: its dropped sends must let that task run (BaseHTTPMiddleware's are a
    checkpoint); cicada's returned at once, so the app spun without the loop ever running."""
    events = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

        async def watch():
            while (await receive())["type"] != "http.disconnect":
                pass

        watcher = asyncio.ensure_future(watch())
        sends = 0
        try:
            while not watcher.done():
                await send({"type": "http.response.body", "body": b"chunk", "more_body": True})
                sends += 1
                assert sends < 10_000, "the app's sends never let its receive() task run"
        finally:
            watcher.cancel()
        events.append("app saw disconnect")

    async def dispatch(request, call_next):
        response = await call_next(request)
        iterator = response.body_iterator
        events.append(await iterator.__anext__())
        if close:
            await iterator.aclose()
            with pytest.raises(StopAsyncIteration):
                await iterator.__anext__()
        return PlainTextResponse("Custom")

    layer = impl(app, dispatch=dispatch)

    async def main():
        exchange = Exchange()
        await asyncio.wait_for(layer(http_scope(), exchange.receive, exchange.send), 10)
        await asyncio.sleep(0)
        return exchange

    exchange = run(any_loop, main)
    assert exchange.body == b"Custom"
    assert events == [b"chunk", "app saw disconnect"]


# ---- what the app receives is what dispatch's Request knows ---------------------------------------
# The app's receive() went straight to the server's: dispatch's Request never saw the messages,
# so after call_next it waited on a body the app had read (a real server blocks there until the
# client leaves) and did not know the client had left.


class OneShotReceive:
    """The server side: delivers `messages` once each, then fails instead of blocking (a real
    server would block there until the client leaves, so the request would hang)."""

    def __init__(self, *messages):
        self.messages = list(messages)

    async def __call__(self):
        if not self.messages:
            raise AssertionError("receive() called again: a real server would block here")
        return self.messages.pop(0)


async def _send(message):
    pass


def serve(loop_factory, layer, scope, receive, send=_send):
    """One request through `layer`, called inside the running loop (called before it, a layer
    has no loop to run on and cicada's falls back to BaseHTTPMiddleware's code)."""

    async def main():
        await layer(scope, receive, send)

    run(loop_factory, main)


@pytest.mark.parametrize("read", ["stream", "body"])
def test_stream_consumed_after_app_read_body(impl, any_loop, read):
    seen = []

    async def app(scope, receive, send):
        message = await receive()
        seen.append(message["body"])
        await PlainTextResponse("ok")(scope, receive, send)

    async def dispatch(req, call_next):
        response = await call_next(req)
        with pytest.raises(RuntimeError, match="Stream consumed"):
            if read == "stream":
                async for _ in req.stream():
                    pass
            else:
                await req.body()
        return response

    layer = impl(app, dispatch=dispatch)
    receive = OneShotReceive({"type": "http.request", "body": b"data", "more_body": False})
    serve(any_loop, layer, http_scope(method="POST"), receive)
    assert seen == [b"data"]


def test_disconnect_seen_by_app_marks_request(impl, any_loop):
    results = []

    async def app(scope, receive, send):
        assert (await receive())["type"] == "http.disconnect"
        await Response()(scope, receive, send)

    async def dispatch(req, call_next):
        response = await call_next(req)
        results.append(await req.is_disconnected())
        return response

    layer = impl(app, dispatch=dispatch)
    receive = OneShotReceive({"type": "http.disconnect"})
    serve(any_loop, layer, http_scope(method="POST"), receive)
    assert results == [True]


def test_app_polls_disconnect_twice(impl, any_loop):
    """A server gives http.disconnect once here; the app asks twice."""
    sent = []

    async def app(scope, receive, send):
        for _ in range(2):
            assert (await receive())["type"] == "http.disconnect"
        await Response(b"late")(scope, receive, send)

    async def send(message):
        sent.append(message["type"])

    layer = impl(app, dispatch=passthrough)
    receive = OneShotReceive({"type": "http.disconnect"})
    serve(any_loop, layer, http_scope(), receive, send)
    assert sent[0] == "http.response.start"


def test_body_partly_read_by_app_rest_read_by_dispatch(impl, any_loop):
    """Only the end of the body marks it consumed: what the app left is dispatch's to read."""
    seen = []

    async def app(scope, receive, send):
        seen.append((await receive())["body"])
        await PlainTextResponse("ok")(scope, receive, send)

    async def dispatch(req, call_next):
        response = await call_next(req)
        seen.append(await req.body())
        return response

    layer = impl(app, dispatch=dispatch)
    receive = OneShotReceive(
        {"type": "http.request", "body": b"first", "more_body": True},
        {"type": "http.request", "body": b"rest", "more_body": False},
    )
    serve(any_loop, layer, http_scope(method="POST"), receive)
    assert seen == [b"first", b"rest"]


@pytest.mark.parametrize("spec", ["2.3", "2.4"])  # 2.3: Starlette streams from a task group
def test_closed_body_iterator_returned_sends_no_more_body(impl, any_loop, spec):
    """Dispatch reads a chunk, closes body_iterator and still returns that response: the rest
    of the app's body is not sent (BaseHTTPMiddleware's closed generator yields nothing)."""

    async def chunks():
        for chunk in (b"a", b"b", b"c"):
            yield chunk

    async def app(scope, receive, send):
        await StreamingResponse(chunks())(scope, receive, send)

    async def dispatch(req, call_next):
        response = await call_next(req)
        assert await response.body_iterator.__anext__() == b"a"
        await response.body_iterator.aclose()
        return response

    layer = impl(app, dispatch=dispatch)

    async def main():
        exchange = Exchange()
        await layer(http_scope(spec_version=spec), exchange.receive, exchange.send)
        return exchange

    exchange = run(any_loop, main)
    assert (exchange.status, exchange.body) == (200, b"")


# ---- what the app receives, noted in every layer's Request on the way down -----------------


class BlockingReceive(OneShotReceive):
    """OneShotReceive whose receive() then waits forever (a client that sends nothing more)."""

    async def __call__(self):
        if self.messages:
            return self.messages.pop(0)
        await asyncio.Event().wait()


@pytest.mark.parametrize("replayed", [False, True])
def test_stream_consumed_in_every_layer(impl, any_loop, replayed):
    """Two layers: the app's read reaches the inner layer through the outer one's receive (or the
    outer layer's replay of a body its dispatch read first); both Requests note it."""
    seen = []

    async def app(scope, receive, send):
        seen.append((await receive())["body"])
        await PlainTextResponse("ok")(scope, receive, send)

    def dispatch_for(name, read_first):
        async def dispatch(req, call_next):
            if read_first:
                seen.append(await req.body())
            response = await call_next(req)
            if not read_first:
                with pytest.raises(RuntimeError, match="Stream consumed"):
                    await req.body()
            seen.append(name)
            return response

        return dispatch

    inner = impl(app, dispatch=dispatch_for("inner", False))
    outer = impl(inner, dispatch=dispatch_for("outer", replayed))
    receive = OneShotReceive({"type": "http.request", "body": b"data", "more_body": False})
    serve(any_loop, outer, http_scope(method="POST"), receive)
    assert seen == ([b"data"] if replayed else []) + [b"data", "inner", "outer"]


def test_disconnect_seen_through_two_layers(impl, any_loop):
    results = []

    async def app(scope, receive, send):
        assert (await receive())["type"] == "http.disconnect"
        await Response()(scope, receive, send)

    def dispatch_for(name):
        async def dispatch(req, call_next):
            response = await call_next(req)
            results.append((name, await req.is_disconnected()))
            return response

        return dispatch

    outer = impl(impl(app, dispatch=dispatch_for("inner")), dispatch=dispatch_for("outer"))
    receive = OneShotReceive({"type": "http.disconnect"})
    serve(any_loop, outer, http_scope(method="POST"), receive)
    assert results == [("inner", True), ("outer", True)]


@pytest.mark.parametrize("layers", [1, 3])
def test_timeout_while_the_app_waits_in_receive(impl, any_loop, layers):
    """Dispatch's timeout ends a call_next whose app waits for more body: under cicada the
    cancellation goes through each layer's receive into the server's; dispatch gets its
    TimeoutError and its own response goes out."""
    import anyio

    ended = []

    async def app(scope, receive, send):
        # cicada's app is cancelled where it waits; BaseHTTPMiddleware's, in a task of its own,
        # is left waiting until the layer's response is sent, then receives http.disconnect
        try:
            while (await receive()).get("more_body"):
                pass
            await Response(b"read")(scope, receive, send)
        finally:
            ended.append(True)

    async def dispatch(req, call_next):
        try:
            with anyio.fail_after(0.05):
                return await call_next(req)
        except TimeoutError:
            return PlainTextResponse("slow client", status_code=408)

    layer = app
    for _ in range(layers):
        layer = impl(layer, dispatch=dispatch if layer is app else passthrough)
    receive = BlockingReceive({"type": "http.request", "body": b"part", "more_body": True})
    sent = []

    async def send(message):
        sent.append(message)

    serve(any_loop, layer, http_scope(method="POST"), receive, send)
    assert ended == [True]
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [408]


@pytest.mark.parametrize("layers", [1, 3])
def test_app_closed_while_waiting_in_receive(any_loop, layers):
    """The request's coroutine is closed (as when its task is dropped) while the app waits in
    receive(): the server's receive awaitable is closed too, through every layer. (cicada only:
    BaseHTTPMiddleware's app waits in a task of its own, which closing does not reach.)"""
    closed = []

    class Receive:
        async def __call__(self):
            try:
                await asyncio.Event().wait()
            finally:
                closed.append(True)

    async def app(scope, receive, send):
        await receive()

    layer = app
    for _ in range(layers):
        layer = HTTPMiddleware(layer, dispatch=passthrough)

    async def main():
        coro = layer(http_scope(method="POST"), Receive(), _send)
        coro.send(None)  # runs to the server's receive, in this one coroutine
        assert not closed
        coro.close()

    run(any_loop, main)
    assert closed == [True]
