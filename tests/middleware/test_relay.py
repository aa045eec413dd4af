"""Relay mode and the C `response.headers[k] = v`, checked against BaseHTTPMiddleware.

Once dispatch hands call_next's response back untouched, cicada forwards the app's body messages
from inside the app's send instead of pulling each one through the layer. These tests stack
layers (cicada only, and with a foreign pure-ASGI layer in the middle), replace the response in
the middle of a stack, fail the server's send mid-stream, and send after the end, on both
implementations: what the server and the app observe must be the same."""

from __future__ import annotations

import asyncio

import pytest
from starlette.background import BackgroundTask
from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse, StreamingResponse

from cicada.middleware import _Headers

from .conftest import Exchange, call, http_scope, run


def tagger(name, log=None):
    async def dispatch(request, call_next):
        if log is not None:
            log.append(f"{name}:in")
        response = await call_next(request)
        response.headers[f"x-{name}"] = name
        response.headers["x-last"] = name
        if log is not None:
            log.append(f"{name}:out")
        return response

    dispatch.__qualname__ = f"tag_{name}"
    return dispatch


def streaming_app(chunks, log):
    """A raw ASGI app streaming `chunks`, then doing some after-response work."""

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for i, c in enumerate(chunks):
            await send({"type": "http.response.body", "body": c,
                        "more_body": i < len(chunks) - 1})
            log.append(f"sent:{c.decode()}")
        log.append("app:after")

    return app


def stack(impl, app, dispatches):
    """dispatches[0] is the outermost layer."""
    for d in reversed(dispatches):
        app = impl(app, dispatch=d)
    return app


class PureTag:
    """A foreign (pure ASGI) layer: wraps send, tags the start and counts body messages."""

    def __init__(self, app, seen):
        self.app, self.seen = app, seen

    async def __call__(self, scope, receive, send):
        async def wrapped(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-pure"] = "1"
            else:
                self.seen.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, wrapped)


@pytest.mark.parametrize("layers", [1, 3, 10])
def test_stacked_layers_stream_every_chunk(impl, loop_factory, layers):
    log = []
    chunks = [b"a", b"b", b"", b"c"]
    app = stack(impl, streaming_app(chunks, log), [tagger(str(i), log) for i in range(layers)])
    ex = run(loop_factory, lambda: call(app))
    assert ex.status == 200 and ex.body == b"abc"
    assert all(ex.headers[f"x-{i}"] == str(i) for i in range(layers))
    assert ex.headers["x-last"] == "0"  # the outermost layer sets it last
    # each chunk reached the server before the app went on (backpressure); the app's own
    # work after the response ran too
    assert [e for e in log if e.startswith(("sent", "app"))] == [
        "sent:a", "sent:b", "sent:", "sent:c", "app:after"]
    bodies = [m for m in ex.sent if m["type"] == "http.response.body"]
    assert bodies[-1].get("more_body", False) is False
    assert ex.events[0] == "http.response.start"


def test_foreign_layer_in_the_middle_of_cicada_layers(impl, loop_factory):
    log, seen = [], []
    chunks = [b"one", b"two", b"three"]
    inner = stack(impl, streaming_app(chunks, log), [tagger("in1"), tagger("in2")])
    app = stack(impl, PureTag(inner, seen), [tagger("out1"), tagger("out2")])
    ex = run(loop_factory, lambda: call(app))
    assert ex.body == b"onetwothree"
    assert {"x-in1", "x-in2", "x-out1", "x-out2", "x-pure"} <= set(ex.headers)
    assert b"".join(seen) == b"onetwothree"
    assert log[-1] == "app:after"


def test_response_replaced_in_the_middle_of_a_stack(impl, loop_factory):
    """The inner app's response is dropped by a middle layer: the outer layers see (and tag)
    the replacement, the inner app's later sends are dropped and it then sees a disconnect."""
    log = []

    async def replace(request, call_next):
        await call_next(request)
        return PlainTextResponse("replaced", status_code=418)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        log.append("after-first")
        await send({"type": "http.response.body", "body": b"b", "more_body": False})
        log.append((await receive())["type"])

    mw = stack(impl, app, [tagger("o1"), tagger("o2"), replace, tagger("i1")])
    ex = run(loop_factory, lambda: call(mw))
    assert ex.status == 418 and ex.body == b"replaced"
    assert ex.headers["x-o1"] == "o1" and ex.headers["x-o2"] == "o2"
    assert "x-i1" not in ex.headers
    assert log == ["after-first", "http.disconnect"]


def test_sends_after_the_last_body_are_dropped(impl, loop_factory):
    log = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        await send({"type": "http.response.body", "body": b"extra"})
        log.append((await receive())["type"])

    mw = stack(impl, app, [tagger("a"), tagger("b")])
    ex = run(loop_factory, lambda: call(mw))
    assert ex.body == b"done"
    assert log == ["http.disconnect"]


@pytest.mark.parametrize("layers", [1, 3])
def test_server_send_failing_mid_stream(impl, loop_factory, layers):
    """The server's send raises while the body streams: the app is cancelled where it stands
    (it sees CancelledError, not the server's error) and the error comes out of the stack."""
    log = []

    class Failing(Exchange):
        async def send(self, message):
            if message["type"] == "http.response.body" and message["body"] == b"2":
                raise OSError("client went away")
            await super().send(message)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for i in range(5):
                await send({"type": "http.response.body", "body": b"%d" % i, "more_body": True})
        except BaseException as e:
            log.append(type(e).__name__)
            raise
        await send({"type": "http.response.body", "body": b""})

    mw = stack(impl, app, [tagger(str(i)) for i in range(layers)])
    ex = Failing()
    with pytest.raises(OSError, match="client went away"):
        run(loop_factory, lambda: call(mw, exchange=ex))
    assert ex.body == b"01"
    assert log == ["CancelledError"]


def test_app_error_mid_stream_propagates(impl, loop_factory):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        raise ValueError("boom mid-stream")

    mw = stack(impl, app, [tagger("a"), tagger("b"), tagger("c")])
    ex = Exchange()
    with pytest.raises(ValueError, match="boom mid-stream"):
        run(loop_factory, lambda: call(mw, exchange=ex))
    assert ex.body == b"x"


def test_app_returning_without_ending_its_body(impl, loop_factory):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})

    mw = stack(impl, app, [tagger("a"), tagger("b")])
    ex = run(loop_factory, lambda: call(mw))
    assert ex.body == b"partial"
    last = [m for m in ex.sent if m["type"] == "http.response.body"][-1]
    assert last.get("more_body", False) is False


def test_background_tasks_run_after_the_body_in_a_stack(impl, loop_factory):
    """The app's background task and one added by a layer both run after the last chunk."""
    order = []

    async def endpoint_app(scope, receive, send):
        async def gen():
            for c in (b"x", b"y"):
                yield c

        async def app_bg():
            order.append("app-bg")

        response = StreamingResponse(gen(), background=BackgroundTask(app_bg))
        await response(scope, receive, send)

    async def layer_bg():
        order.append("layer-bg")

    async def add_background(request, call_next):
        response = await call_next(request)
        response.background = BackgroundTask(layer_bg)
        return response

    class Recording(Exchange):
        async def send(self, message):
            await super().send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                order.append("last-body")

    mw = stack(impl, endpoint_app, [tagger("o"), add_background, tagger("i")])
    ex = Recording()
    run(loop_factory, lambda: call(mw, exchange=ex))
    assert ex.body == b"xy"
    assert order[0] == "last-body"
    assert sorted(order[1:]) == ["app-bg", "layer-bg"]


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
def test_streaming_response_from_a_task_group_through_layers(impl, loop_factory, spec):
    """Starlette streams from a child task under spec 2.3: sends come from another task."""
    async def endpoint_app(scope, receive, send):
        async def gen():
            for i in range(5):
                await asyncio.sleep(0)
                yield b"%d" % i

        await StreamingResponse(gen())(scope, receive, send)

    mw = stack(impl, endpoint_app, [tagger(str(i)) for i in range(4)])
    ex = run(loop_factory, lambda: call(mw, http_scope(spec_version=spec)))
    assert ex.body == b"01234" and ex.headers["x-3"] == "3"


# ---- response.headers[k] = v in C -----------------------------------------------------------

RAW = [(b"content-length", b"17"), (b"x-a", b"1"), (b"X-A", b"2"), (b"x-a", b"3"), (b"x-b", b"4")]


@pytest.mark.parametrize("key,value", [
    ("x-a", "z"), ("X-A", "z"), ("X-B", ""), ("new", "v"), ("Content-Length", "5"),
    ("x-é", "v"), ("k", "é"), ("", ""),
])
def test_headers_setitem_matches_starlette(key, value):
    ours, theirs = _Headers(raw=list(RAW)), MutableHeaders(raw=list(RAW))
    ours[key] = value
    theirs[key] = value
    assert ours.raw == theirs.raw
    assert isinstance(ours, MutableHeaders)


@pytest.mark.parametrize("key,value", [(1, "v"), ("k", 2), ("k", "€"), (b"k", "v")])
def test_headers_setitem_errors_match_starlette(key, value):
    errors = []
    for cls in (_Headers, MutableHeaders):
        h = cls(raw=list(RAW))
        with pytest.raises(Exception) as info:
            h[key] = value
        errors.append((type(info.value), str(info.value)))
        assert h.raw == RAW
    assert errors[0] == errors[1]


def test_headers_setitem_over_odd_lists_falls_back():
    for raw in ([[b"x-a", b"1"]], [(b"x-a", b"1", b"extra")], [("x-a", "str")]):
        for cls in (_Headers, MutableHeaders):
            h = cls(raw=[list(i) if isinstance(i, list) else i for i in raw])
            try:
                h["x-a"] = "2"
                result = ("ok", [tuple(i) for i in h.raw])
            except Exception as e:  # noqa: BLE001 - the same error on both is the point
                result = (type(e), str(e))
            if cls is _Headers:
                ours = result
            else:
                assert ours == result


@pytest.mark.parametrize("layers", [1, 10])
@pytest.mark.parametrize("background", [False, True])
def test_relay_mode_forwards_from_inside_the_apps_send(loop_factory, layers, background):
    """White box (cicada only): in relay mode the server's send runs inside the app's own
    `await send(...)`, i.e. the app was not suspended to pass the message up. A layer that sets
    a background task needs the message back in its own hands, so that stack pulls instead."""
    import sys

    from cicada.middleware import HTTPMiddleware

    inside = []

    class Probe(Exchange):
        async def send(self, message):
            if message["type"] == "http.response.body":
                frame, found = sys._getframe(), False
                while frame is not None:
                    found |= frame.f_code.co_name == "probe_app"
                    frame = frame.f_back
                inside.append(found)
            await super().send(message)

    async def probe_app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    async def nothing():
        pass

    async def add_background(request, call_next):
        response = await call_next(request)
        response.background = BackgroundTask(nothing)
        return response

    dispatches = [tagger(str(i)) for i in range(layers)]
    if background:
        dispatches[0] = add_background
    mw = stack(HTTPMiddleware, probe_app, dispatches)
    ex = run(loop_factory, lambda: call(mw, exchange=Probe()))
    assert ex.body == b"ab"
    assert inside == [not background] * 2


@pytest.mark.parametrize("scenario", ["ok", "send-fails", "after-last", "unfinished", "foreign",
                                      "bad-message"])
def test_relay_mode_leaks_nothing(loop_factory, scenario):
    """Every relay-mode path (cicada only) frees what it made: allocated blocks stay flat."""
    import gc
    import sys

    from cicada.middleware import HTTPMiddleware

    class Failing(Exchange):
        async def send(self, message):
            if scenario == "send-fails" and message.get("body") == b"b":
                raise OSError("gone")
            await super().send(message)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        if scenario == "bad-message":
            await send({"type": "http.response.start", "status": 500, "headers": []})
        if scenario == "unfinished":
            return
        await send({"type": "http.response.body", "body": b"b"})
        if scenario == "after-last":
            await send({"type": "http.response.body", "body": b"c"})
            await receive()

    inner = stack(HTTPMiddleware, app, [tagger("i1"), tagger("i2")])
    if scenario == "foreign":
        inner = PureTag(inner, [])
    mw = stack(HTTPMiddleware, inner, [tagger("o1")])

    async def many(n):
        for _ in range(n):
            try:
                await call(mw, exchange=Failing())
            except (OSError, RuntimeError):
                pass

    run(loop_factory, lambda: many(300))
    gc.collect()
    before = sys.getallocatedblocks()
    run(loop_factory, lambda: many(2000))
    gc.collect()
    assert sys.getallocatedblocks() - before < 1000


def test_unexpected_message_in_relay_mode_is_a_clear_error(impl, loop_factory):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.start", "status": 500, "headers": []})

    mw = stack(impl, app, [tagger("a"), tagger("b")])
    ex = Exchange()
    # Starlette asserts; cicada raises a RuntimeError naming the layer and the message
    with pytest.raises((RuntimeError, AssertionError)) as info:
        run(loop_factory, lambda: call(mw, exchange=ex))
    assert ex.body == b"a"
    if impl.__module__.startswith("cicada"):
        assert "tag_b: unexpected message 'http.response.start'" in str(info.value)


@pytest.mark.parametrize("slow", [False, True])
def test_anyio_scopes_in_stacked_layers(impl, loop_factory, slow):
    """Layers opening anyio scopes around call_next, over an app streaming from a task group:
    inner layers reuse the outer layer's anyio task state (same task), scopes still work."""
    import anyio

    async def with_timeout(request, call_next):
        try:
            with anyio.fail_after(0.2 if slow else 5):
                return await call_next(request)
        except TimeoutError:
            return PlainTextResponse("timeout", status_code=504)

    async def with_scope(request, call_next):
        with anyio.CancelScope():
            response = await call_next(request)
        response.headers["x-scoped"] = "1"
        return response

    async def endpoint_app(scope, receive, send):
        if slow:
            await asyncio.sleep(5)

        async def gen():
            for i in range(3):
                await anyio.sleep(0)
                yield b"%d" % i

        await StreamingResponse(gen())(scope, receive, send)

    mw = stack(impl, endpoint_app, [with_timeout, tagger("m"), with_scope, tagger("i")])
    ex = run(loop_factory, lambda: call(mw, http_scope(spec_version="2.3")))
    if slow:
        assert ex.status == 504 and ex.body == b"timeout"
    else:
        assert ex.body == b"012" and ex.headers["x-scoped"] == "1" and ex.headers["x-m"] == "m"


# ---- stacked cicada layers pass one response object up (cc_mw_offer) --------------------------


def test_outer_layer_sets_background_on_the_inner_response(impl, loop_factory):
    runs = []

    async def bg():
        runs.append("outer-bg")

    async def outer(request, call_next):
        response = await call_next(request)
        assert response.background is None
        response.background = BackgroundTask(bg)
        return response

    app = stack(impl, streaming_app([b"a", b"b"], []), [outer, tagger("i")])
    ex = run(loop_factory, lambda: call(app))
    assert ex.body == b"ab" and ex.headers["x-i"] == "i"
    assert runs == ["outer-bg"]


def test_inner_layer_replacing_the_header_list(impl, loop_factory):
    async def inner(request, call_next):
        response = await call_next(request)
        response.headers["x-before"] = "1"  # the headers object is made (and cached) first
        response.raw_headers = [(b"x-replaced", b"1")] + [
            h for h in response.raw_headers if h[0] != b"x-before"]
        response.status_code = 203
        return response

    async def outer(request, call_next):
        response = await call_next(request)
        assert response.status_code == 203
        assert response.headers["x-replaced"] == "1" and "x-before" not in response.headers
        response.headers["x-outer"] = "1"
        response.status_code = 205
        return response

    app = stack(impl, streaming_app([b"body"], []), [outer, inner])
    ex = run(loop_factory, lambda: call(app))
    assert ex.status == 205 and ex.body == b"body"
    assert ex.headers["x-outer"] == "1" and ex.headers["x-replaced"] == "1"
    assert "x-before" not in ex.headers


def test_outer_layer_reading_the_body_of_inner_layers(impl, loop_factory):
    async def outer(request, call_next):
        response = await call_next(request)
        body = b"".join([chunk async for chunk in response.body_iterator])
        return PlainTextResponse(body.decode().upper(), headers={"x-i": response.headers["x-i"]})

    app = stack(impl, streaming_app([b"a", b"b", b"c"], []), [outer, tagger("i"), tagger("j")])
    ex = run(loop_factory, lambda: call(app))
    assert ex.body == b"ABC" and ex.headers["x-i"] == "i"


def test_stacked_layers_share_one_response_object(loop_factory):
    """White box (cicada only): the outer layer's call_next returns the inner layer's response
    object itself (its body now pulled from the outer layer), not a copy."""
    from cicada.middleware import HTTPMiddleware

    seen = []

    def keep(name):
        async def dispatch(request, call_next):
            response = await call_next(request)
            seen.append((name, response))
            return response

        return dispatch

    app = stack(HTTPMiddleware, streaming_app([b"x"], []), [keep("outer"), keep("inner")])
    ex = run(loop_factory, lambda: call(app))
    assert ex.body == b"x"
    assert [n for n, _ in seen] == ["inner", "outer"] and seen[0][1] is seen[1][1]
