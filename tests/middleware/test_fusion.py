"""Dispatch fusion: cicada resumes dispatch from inside the app's `send(start)` (MWFuse in
mw/mw_call.c) instead of suspending the app through all its frames and resuming it after.

Every test runs on BaseHTTPMiddleware too: what the server, the app and dispatch observe must be
the same. The paths off the fast one are exercised here: dispatch awaiting after call_next,
raising, replacing the response, reading its body, setting a background task; the server's send
failing on the start; cancellation while dispatch waits; an app sending its start while it
handles an exception; 10 stacked layers; asyncio, uvloop and cicada's own loop.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
from starlette.background import BackgroundTask
from starlette.responses import PlainTextResponse, StreamingResponse

from .conftest import Exchange, call, http_scope, run


def plain_app(log, body=b"hello"):
    async def app(scope, receive, send):
        log.append("app:start")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        log.append("app:after-start")
        await send({"type": "http.response.body", "body": body})
        log.append("app:after-body")

    return app


def stack(impl, app, dispatches):
    for d in reversed(dispatches):
        app = impl(app, dispatch=d)
    return app


def fused_below(app_code):
    """True when the calling dispatch runs inside the app's send (a frame of `app_code` is
    among its callers): cicada's fused path. BaseHTTPMiddleware never does this."""
    f = sys._getframe(1)
    while f is not None:
        if f.f_code is app_code:
            return True
        f = f.f_back
    return False


@pytest.mark.parametrize("layers", [1, 2, 10])
def test_untouched_response_is_fused(impl, any_loop, layers):
    log, where = [], []
    app = plain_app(log)

    def tag(i):
        async def dispatch(request, call_next):
            response = await call_next(request)
            where.append(fused_below(app.__code__))
            response.headers[f"x-{i}"] = str(i)
            log.append(f"d{i}:out")
            return response

        return dispatch

    mw = stack(impl, app, [tag(i) for i in range(layers)])
    ex = run(any_loop, lambda: call(mw))
    assert ex.status == 200 and ex.body == b"hello"
    assert all(ex.headers[f"x-{i}"] == str(i) for i in range(layers))
    dispatch_outs = [f"d{i}:out" for i in reversed(range(layers))]  # innermost first
    if impl.__name__ == "HTTPMiddleware":
        # dispatch goes on before the app's send(start) returns (under BaseHTTPMiddleware the
        # app runs in another task: the order of the two tasks' steps is the scheduler's)
        assert log == ["app:start"] + dispatch_outs + ["app:after-start", "app:after-body"]
    else:
        assert sorted(log) == sorted(["app:start", "app:after-start", "app:after-body"]
                                     + dispatch_outs)
    # (a stack of cicada layers keeps passing the start by hand-over in C: fusion would cost
    # each layer more than it saves there)
    assert where == [impl.__name__ == "HTTPMiddleware" and layers == 1] * layers


@pytest.mark.parametrize("layers", [1, 3])
def test_dispatch_awaits_after_call_next(impl, any_loop, layers):
    """Fused dispatch awaiting real futures: they go through the app's frames to the task."""
    log = []

    def slow(i):
        async def dispatch(request, call_next):
            response = await call_next(request)
            await asyncio.sleep(0)
            await asyncio.sleep(0.001)
            response.headers[f"x-{i}"] = "slow"
            return response

        return dispatch

    mw = stack(impl, plain_app(log), [slow(i) for i in range(layers)])
    ex = run(any_loop, lambda: call(mw))
    assert ex.body == b"hello"
    assert all(ex.headers[f"x-{i}"] == "slow" for i in range(layers))
    assert log == ["app:start", "app:after-start", "app:after-body"]


@pytest.mark.parametrize("layers", [1, 3])
def test_dispatch_raising_after_call_next(impl, any_loop, layers):
    """The app, waiting in its send(start), is cancelled; the error comes out; nothing sent."""
    log = []

    async def app(scope, receive, send):
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            log.append("app:after-start")
            await send({"type": "http.response.body", "body": b"x"})
        except BaseException as e:
            log.append(type(e).__name__)
            raise

    async def failing(request, call_next):
        await call_next(request)
        raise KeyError("after call_next")

    async def passing(request, call_next):
        return await call_next(request)

    mw = stack(impl, app, [passing] * (layers - 1) + [failing])
    ex = Exchange()
    with pytest.raises(KeyError, match="after call_next") as info:
        run(any_loop, lambda: call(mw, exchange=ex))
    assert ex.sent == []
    if impl.__name__ == "HTTPMiddleware":  # (the other's app task may run on meanwhile)
        assert log == ["CancelledError"]
        # (BaseHTTPMiddleware re-raises it from its task group's ExceptionGroup)
        assert info.value.__context__ is None and info.value.__cause__ is None


def test_dispatch_error_while_the_app_handles_one(impl, any_loop):
    """An app sending its start from an except block (as Starlette's exception handlers do):
    dispatch must not see that exception as the one being handled."""
    seen = []

    async def app(scope, receive, send):
        try:
            raise LookupError("handled by the app")
        except LookupError:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"nope"})

    async def dispatch(request, call_next):
        response = await call_next(request)
        seen.append(sys.exc_info()[1])
        try:
            raise ValueError("in dispatch")
        except ValueError as e:
            seen.append(e.__context__)
        response.headers["x-seen"] = "1"
        return response

    ex = run(any_loop, lambda: call(impl(app, dispatch=dispatch)))
    assert ex.status == 404 and ex.body == b"nope" and ex.headers["x-seen"] == "1"
    assert seen == [None, None]


@pytest.mark.parametrize("layers", [1, 3])
def test_response_replaced_after_fused_start(impl, any_loop, layers):
    """The replaced response goes out; the app's send(start) returns, its later sends are
    dropped and receive() reports a disconnect."""
    log = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        log.append("after-start")
        await send({"type": "http.response.body", "body": b"dropped"})
        log.append((await receive())["type"])

    async def replace(request, call_next):
        await call_next(request)
        return PlainTextResponse("replaced", status_code=418)

    async def passing(request, call_next):
        response = await call_next(request)
        response.headers["x-outer"] = "1"
        return response

    mw = stack(impl, app, [passing] * (layers - 1) + [replace])
    ex = run(any_loop, lambda: call(mw))
    assert ex.status == 418 and ex.body == b"replaced"
    assert ("x-outer" in ex.headers) == (layers > 1)
    assert log == ["after-start", "http.disconnect"]


@pytest.mark.parametrize("shape", ["alone", "under a cicada layer", "under a foreign layer"])
def test_dispatch_reads_the_body_after_call_next(impl, any_loop, shape):
    """Reading body_iterator needs the app stepped: fused dispatch hands over to the call."""
    log = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for c in (b"a", b"b", b"c"):
            await send({"type": "http.response.body", "body": c, "more_body": True})
            log.append(c.decode())
        await send({"type": "http.response.body", "body": b""})
        log.append("app:end")

    async def buffering(request, call_next):
        response = await call_next(request)
        body = b"".join([chunk async for chunk in response.body_iterator])
        return PlainTextResponse(body.upper(), headers={"x-len": str(len(body))})

    async def outer(request, call_next):
        response = await call_next(request)
        response.headers["x-outer"] = "1"
        return response

    if shape == "alone":
        mw = impl(app, dispatch=buffering)
    elif shape == "under a cicada layer":
        mw = stack(impl, app, [outer, buffering])
    else:
        mw = impl(Foreign(impl(app, dispatch=buffering), []), dispatch=outer)
    ex = run(any_loop, lambda: call(mw))
    assert ex.body == b"ABC" and ex.headers["x-len"] == "3"
    assert ex.headers.get("x-outer") == (None if shape == "alone" else "1")
    assert log == ["a", "b", "c", "app:end"]


@pytest.mark.parametrize("layers", [1, 2])
def test_background_set_by_dispatch_runs_after_the_body(impl, any_loop, layers):
    log = []

    async def dispatch(request, call_next):
        response = await call_next(request)
        response.background = BackgroundTask(log.append, "background")
        return response

    class Recording(Exchange):
        async def send(self, message):
            log.append(message["type"])
            await super().send(message)

    ex = Recording()
    mw = stack(impl, plain_app(log), [dispatch] * layers)
    run(any_loop, lambda: call(mw, exchange=ex))
    assert ex.body == b"hello"
    assert log[0] == "app:start" and "http.response.start" in log
    assert log.count("background") == layers
    assert log.index("background") > log.index("http.response.body")


@pytest.mark.parametrize("layers", [1, 3])
def test_server_send_failing_on_the_start(impl, any_loop, layers):
    log = []

    class Failing(Exchange):
        async def send(self, message):
            raise OSError("client gone before the start")

    async def app(scope, receive, send):
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            log.append("after-start")
        except BaseException as e:
            log.append(type(e).__name__)
            raise

    async def passing(request, call_next):
        return await call_next(request)

    mw = stack(impl, app, [passing] * layers)
    with pytest.raises(OSError, match="client gone"):
        run(any_loop, lambda: call(mw, exchange=Failing()))
    if impl.__name__ == "HTTPMiddleware":  # (the other's app task may run on meanwhile)
        assert log == ["CancelledError"]


def test_cancelled_while_fused_dispatch_waits(impl, any_loop):
    """The request's task is cancelled while dispatch, after call_next, awaits a future: dispatch
    sees CancelledError, the app is cancelled in its send, the task ends cancelled."""
    log = []
    waiting = asyncio.Event()

    async def app(scope, receive, send):
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"x"})
        except BaseException as e:
            log.append(f"app:{type(e).__name__}")
            raise

    async def dispatch(request, call_next):
        response = await call_next(request)
        waiting.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            log.append("dispatch:cancelled")
            raise
        return response

    async def main():
        ex = Exchange()
        task = asyncio.ensure_future(call(impl(app, dispatch=dispatch), exchange=ex))
        await waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return ex

    ex = run(any_loop, main)
    assert ex.sent == []
    assert log == ["dispatch:cancelled", "app:CancelledError"]


@pytest.mark.parametrize("layers", [1, 10])
def test_streaming_response_under_fused_layers(impl, any_loop, layers):
    """StreamingResponse sends from a task group of its own: no fusion there, same result."""

    async def gen():
        for c in (b"1", b"2", b"3"):
            yield c
            await asyncio.sleep(0)

    async def app(scope, receive, send):
        await StreamingResponse(gen())(scope, receive, send)

    async def tag(request, call_next):
        response = await call_next(request)
        response.headers["x-tag"] = "t"
        return response

    mw = stack(impl, app, [tag] * layers)
    ex = run(any_loop, lambda: call(mw, scope=http_scope(spec_version="2.3")))
    assert ex.body == b"123" and ex.headers["x-tag"] == "t"


def test_app_raising_before_its_start_reaches_dispatch(impl, any_loop):
    async def app(scope, receive, send):
        raise ExceptionGroup("eg", [ValueError("inner")])

    caught = []

    async def dispatch(request, call_next):
        try:
            return await call_next(request)
        except ExceptionGroup as e:
            caught.append(e)
            return PlainTextResponse("handled", status_code=500)

    ex = run(any_loop, lambda: call(stack(impl, app, [dispatch] * 3)))
    assert ex.status == 500 and ex.body == b"handled"
    assert len(caught) == 1 and isinstance(caught[0].exceptions[0], ValueError)


def test_fused_layers_keep_contextvars_and_task(impl, any_loop):
    import contextvars

    var = contextvars.ContextVar("var", default="unset")
    seen = []

    async def app(scope, receive, send):
        var.set("app")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def dispatch(request, call_next):
        task = asyncio.current_task()
        response = await call_next(request)
        seen.append((asyncio.current_task() is task, var.get()))
        return response

    run(any_loop, lambda: call(stack(impl, app, [dispatch, dispatch])))
    # BaseHTTPMiddleware runs the app in another task: its contextvars stay there
    expected = "app" if impl.__name__ == "HTTPMiddleware" else "unset"
    assert seen == [(True, expected)] * 2


def test_many_requests_leave_no_garbage(any_loop):
    """Fused objects hold the call, the call holds the app: nothing may be left for the GC."""
    import gc

    from cicada.middleware import HTTPMiddleware

    log = []

    async def tag(request, call_next):
        response = await call_next(request)
        response.headers["x"] = "1"
        return response

    mw = stack(HTTPMiddleware, plain_app(log), [tag] * 3)

    async def many():
        for _ in range(200):
            await call(mw)

    gc.collect()
    gc.disable()
    try:
        run(any_loop, many)
        found = gc.collect()
    finally:
        gc.enable()
    assert found < 50, found


class Foreign:
    """A pure ASGI layer (Python frames, its own send wrapper) between cicada layers."""

    def __init__(self, app, log):
        self.app, self.log = app, log

    async def __call__(self, scope, receive, send):
        async def wrapped(message):
            self.log.append(f"foreign:{message['type']}")
            await send(message)

        await self.app(scope, receive, wrapped)


@pytest.mark.parametrize("outer_does", ["pass", "await", "raise", "replace"])
def test_fused_layers_on_both_sides_of_a_foreign_layer(impl, any_loop, outer_does):
    """Each cicada layer with foreign code on both sides fuses: the inner one's start goes up
    through the foreign send into the outer one's fused send."""
    log, where = [], []
    app = plain_app(log)

    async def inner(request, call_next):
        response = await call_next(request)
        where.append(fused_below(app.__code__))
        response.headers["x-inner"] = "1"
        return response

    async def outer(request, call_next):
        response = await call_next(request)
        where.append(fused_below(app.__code__))
        if outer_does == "await":
            await asyncio.sleep(0)
        elif outer_does == "raise":
            raise RuntimeError("outer failed")
        elif outer_does == "replace":
            return PlainTextResponse("outer's own", status_code=203)
        response.headers["x-outer"] = "1"
        return response

    mw = impl(Foreign(impl(app, dispatch=inner), log), dispatch=outer)
    ex = Exchange()
    if outer_does == "raise":
        with pytest.raises(RuntimeError, match="outer failed"):
            run(any_loop, lambda: call(mw, exchange=ex))
        assert ex.sent == []
    else:
        run(any_loop, lambda: call(mw, exchange=ex))
    assert where == [impl.__name__ == "HTTPMiddleware"] * 2
    if outer_does == "replace":
        assert ex.status == 203 and ex.body == b"outer's own" and "x-inner" not in ex.headers
    elif outer_does != "raise":
        assert ex.body == b"hello" and ex.headers["x-inner"] == ex.headers["x-outer"] == "1"
        expected = ["app:start", "foreign:http.response.start", "app:after-start",
                    "foreign:http.response.body", "app:after-body"]
        # (under BaseHTTPMiddleware the app runs in a task of its own, ordered by the scheduler,
        # and its response ends with an empty body message of its own)
        assert log == expected if impl.__name__ == "HTTPMiddleware" else set(log) == set(expected)


def test_app_inside_an_anyio_cancel_scope_of_its_own(impl, any_loop):
    """An app sending its start inside an anyio cancel scope: dispatch must not run inside that
    scope (cicada then keeps the hand-over), and a cancel of the scope after the response still
    only reaches the app."""
    anyio = pytest.importorskip("anyio")
    log = []

    async def app(scope, receive, send):
        with anyio.CancelScope() as cs:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"scoped"})
            cs.cancel()
            await anyio.sleep(0)
            log.append("not reached")
        log.append(f"app:cancelled={cs.cancelled_caught}")

    where = []

    async def dispatch(request, call_next):
        response = await call_next(request)
        where.append(fused_below(app.__code__))
        await anyio.sleep(0)  # would be cancelled if it ran inside the app's scope
        log.append("dispatch:after")
        response.headers["x-d"] = "1"
        return response

    ex = run(any_loop, lambda: call(impl(app, dispatch=dispatch)))
    assert ex.body == b"scoped" and ex.headers["x-d"] == "1"
    assert sorted(log) == ["app:cancelled=True", "dispatch:after"]
    assert where == [False]  # the scope is the app's: no fusion
