"""What `@app.middleware("http")` promises, checked on BaseHTTPMiddleware and on cicada's
HTTPMiddleware side by side. Apps are called in-process with a fake server (conftest.Exchange),
on asyncio and uvloop, so each message and receive() call can be observed."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import sys

import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from cicada.middleware import HTTPMiddleware

from .conftest import Exchange, call, http_scope, run

ctx = contextvars.ContextVar("ctx", default="unset")


def starlette_app(impl, dispatches, routes):
    return Starlette(routes=routes, middleware=[Middleware(impl, dispatch=d) for d in dispatches])


async def add_header(request, call_next):
    response = await call_next(request)
    response.headers["x-mw"] = "1"
    return response


async def hello(request):
    return JSONResponse({"hello": "world"})


def test_headers_and_status_changed_after_call_next(impl, loop_factory):
    async def dispatch(request, call_next):
        response = await call_next(request)
        assert response.status_code == 201
        response.status_code = 202
        response.headers["x-added"] = "yes"
        del response.headers["x-drop"]
        return response

    async def endpoint(request):
        return PlainTextResponse("hi", status_code=201, headers={"x-drop": "1"})

    app = starlette_app(impl, [dispatch], [Route("/", endpoint)])
    ex = run(loop_factory, lambda: call(app))
    assert ex.status == 202
    assert ex.headers["x-added"] == "yes"
    assert "x-drop" not in ex.headers
    assert ex.body == b"hi"


def test_request_is_a_starlette_request(impl, loop_factory):
    seen = {}

    async def dispatch(request, call_next):
        seen["type"] = isinstance(request, Request)
        seen["url"] = str(request.url)
        seen["hdr"] = request.headers["x-in"]
        seen["method"] = request.method
        seen["json"] = await request.json()
        return await call_next(request)

    async def endpoint(request):
        return JSONResponse(await request.json())

    app = starlette_app(impl, [dispatch], [Route("/p", endpoint, methods=["POST"])])
    scope = http_scope("/p", "POST", headers=[("x-in", "v"), ("host", "example.org")])
    ex = Exchange([b'{"a":', b" 1}"])
    run(loop_factory, lambda: call(app, scope, ex))
    assert seen == {"type": True, "url": "http://example.org/p", "hdr": "v", "method": "POST",
                    "json": {"a": 1}}
    assert ex.body == b'{"a":1}'  # the body read by dispatch was replayed to the endpoint


def test_body_replayed_through_inner_receive_wrapper(impl, loop_factory):
    """An inner pure-ASGI middleware that wraps receive still sees the replayed body."""
    seen = []

    def wrap_receive(app):
        async def inner(scope, receive, send):
            async def counting_receive():
                message = await receive()
                seen.append(message["type"])
                return message

            await app(scope, counting_receive, send)

        return inner

    async def dispatch(request, call_next):
        assert await request.body() == b"abcdef"
        return await call_next(request)

    async def endpoint(request):
        return PlainTextResponse((await request.body()).upper())

    inner = Starlette(routes=[Route("/", endpoint, methods=["POST"])])
    app = impl(wrap_receive(inner), dispatch=dispatch)
    ex = Exchange([b"abc", b"def"])
    run(loop_factory, lambda: call(app, http_scope("/", "POST"), ex))
    assert ex.body == b"ABCDEF"
    assert seen == ["http.request"]


def test_own_response_discards_app_response(impl, loop_factory):
    """The replaced response's app sees http.disconnect and its later sends are dropped."""
    log = []

    async def dispatch(request, call_next):
        await call_next(request)
        return PlainTextResponse("replaced", status_code=418)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        log.append("after-first-body")
        await send({"type": "http.response.body", "body": b"b", "more_body": False})
        log.append((await receive())["type"])

    mw = impl(app, dispatch=dispatch)
    ex = run(loop_factory, lambda: call(mw))
    assert ex.status == 418 and ex.body == b"replaced"
    assert log == ["after-first-body", "http.disconnect"]
    assert len([m for m in ex.sent if m["type"] == "http.response.body"]) == 1


@pytest.mark.parametrize("kind", ["json", "streaming"])
def test_dispatch_returns_its_own_response_types(impl, loop_factory, kind):
    async def dispatch(request, call_next):
        if kind == "json":
            return JSONResponse({"own": True})

        async def gen():
            yield b"x"
            yield b"y"

        return StreamingResponse(gen())

    app = starlette_app(impl, [dispatch], [Route("/", hello)])
    ex = run(loop_factory, lambda: call(app))
    assert ex.body == (b'{"own":true}' if kind == "json" else b"xy")


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
def test_body_is_streamed_lazily_with_backpressure(impl, loop_factory, spec):
    """The endpoint's generator never runs more than a chunk ahead of what the server got."""
    produced = []
    lead = []

    async def gen():
        for i in range(20):
            produced.append(i)
            yield b"%d," % i

    async def endpoint(request):
        return StreamingResponse(gen())

    class Watch(Exchange):
        async def send(self, message):
            if message["type"] == "http.response.body" and message.get("body"):
                lead.append(len(produced) - (sum(1 for m in self.sent if m.get("body")) + 1))
            await super().send(message)

    app = starlette_app(impl, [add_header], [Route("/", endpoint)])
    ex = run(loop_factory, lambda: call(app, http_scope(spec_version=spec), Watch()))
    assert ex.body == b"".join(b"%d," % i for i in range(20))
    assert ex.headers["x-mw"] == "1"
    assert max(lead) <= 2, lead


def test_body_iterator_can_be_read_in_dispatch(impl, loop_factory):
    async def dispatch(request, call_next):
        response = await call_next(request)
        chunks = [chunk async for chunk in response.body_iterator]
        return Response(b"|".join(chunks), status_code=response.status_code,
                        headers={"x-chunks": str(len(chunks))})

    async def endpoint(request):
        async def gen():
            yield b"a"
            yield b""
            yield b"b"

        return StreamingResponse(gen())

    app = starlette_app(impl, [dispatch], [Route("/", endpoint)])
    ex = run(loop_factory, lambda: call(app))
    assert ex.body == b"a|b"
    assert ex.headers["x-chunks"] == "2"


def test_pathsend_and_debug_pass_through(impl, loop_factory):
    async def app(scope, receive, send):
        await send({"type": "http.response.debug", "info": {"template": "t"}})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/etc/hostname"})

    mw = impl(app, dispatch=add_header)
    scope = http_scope(extensions={"http.response.pathsend": {}})
    ex = run(loop_factory, lambda: call(mw, scope))
    types = [m["type"] for m in ex.sent]
    assert types == ["http.response.debug", "http.response.start", "http.response.pathsend"]
    assert ex.sent[0]["info"] == {"template": "t"}
    assert ex.sent[2]["path"] == "/etc/hostname"
    assert ex.headers["x-mw"] == "1"


def test_endpoint_exception_reaches_dispatch(impl, loop_factory):
    caught = []

    async def dispatch(request, call_next):
        try:
            return await call_next(request)
        except ValueError as exc:
            caught.append(exc)
            return PlainTextResponse("handled", status_code=500)

    async def endpoint(request):
        raise ValueError("endpoint failed")

    app = starlette_app(impl, [dispatch], [Route("/", endpoint)])
    ex = run(loop_factory, lambda: call(app))
    assert ex.status == 500 and ex.body == b"handled"
    assert str(caught[0]) == "endpoint failed"


def test_mid_stream_error_propagates(impl, loop_factory):
    async def endpoint(request):
        async def gen():
            yield b"first"
            raise KeyError("mid-stream")

        return StreamingResponse(gen())

    app = starlette_app(impl, [add_header], [Route("/", endpoint)])
    ex = Exchange()
    with pytest.raises(KeyError, match="mid-stream"):
        run(loop_factory, lambda: call(app, exchange=ex))
    assert ex.body.startswith(b"first")


def test_exception_group_stays_a_group(impl, loop_factory):
    async def dispatch(request, call_next):
        try:
            return await call_next(request)
        except ExceptionGroup as group:
            assert all(isinstance(e, ValueError) for e in group.exceptions)
            return PlainTextResponse(f"{type(group).__name__}:{len(group.exceptions)}")

    async def endpoint(request):
        raise ExceptionGroup("many", [ValueError(1), ValueError(2)])

    app = starlette_app(impl, [dispatch], [Route("/", endpoint)])
    ex = run(loop_factory, lambda: call(app))
    assert ex.body == b"ExceptionGroup:2"


def test_exception_cause_and_context_preserved(impl, loop_factory):
    caught = {}

    async def dispatch(request, call_next):
        try:
            return await call_next(request)
        except RuntimeError as exc:
            caught[request.url.path] = exc
            return PlainTextResponse("x")

    async def with_cause(request):
        raise RuntimeError("outer") from KeyError("cause")

    async def with_context(request):
        try:
            raise KeyError("context")
        except KeyError:
            raise RuntimeError("outer")

    app = starlette_app(impl, [dispatch], [Route("/cause", with_cause), Route("/ctx", with_context)])
    run(loop_factory, lambda: call(app, http_scope("/cause")))
    run(loop_factory, lambda: call(app, http_scope("/ctx")))
    assert isinstance(caught["/cause"].__cause__, KeyError)
    ctx_exc = caught["/ctx"]
    if impl is HTTPMiddleware:
        # cicada lets the exception through untouched
        assert isinstance(ctx_exc.__context__, KeyError) and ctx_exc.__cause__ is None
    else:
        # BaseHTTPMiddleware re-raises with `from`, turning the context into the cause
        assert isinstance(ctx_exc.__cause__ or ctx_exc.__context__, KeyError)


def test_no_response_raises(impl, loop_factory):
    async def app(scope, receive, send):
        pass

    mw = impl(app, dispatch=add_header)
    with pytest.raises(RuntimeError, match="No response returned."):
        run(loop_factory, lambda: call(mw))


def test_request_state_shared_across_layers(impl, loop_factory):
    async def outer(request, call_next):
        request.state.trail = ["outer"]
        response = await call_next(request)
        response.headers["x-trail"] = ",".join(request.state.trail)
        return response

    async def inner(request, call_next):
        request.state.trail.append("inner")
        return await call_next(request)

    async def endpoint(request):
        request.state.trail.append("endpoint")
        return PlainTextResponse("ok")

    app = starlette_app(impl, [outer, inner], [Route("/", endpoint)])
    ex = run(loop_factory, lambda: call(app))
    assert ex.headers["x-trail"] == "outer,inner,endpoint"


def test_ten_layers(impl, loop_factory):
    order = []

    def layer(i):
        async def dispatch(request, call_next):
            order.append(f"in{i}")
            response = await call_next(request)
            order.append(f"out{i}")
            response.headers[f"x-layer-{i}"] = str(i)
            return response

        dispatch.__qualname__ = f"layer{i}"
        return dispatch

    app = starlette_app(impl, [layer(i) for i in range(10)], [Route("/", hello)])
    for _ in range(3):
        order.clear()
        ex = run(loop_factory, lambda: call(app))
        assert ex.body == b'{"hello":"world"}'
        assert all(ex.headers[f"x-layer-{i}"] == str(i) for i in range(10))
        assert order == [f"in{i}" for i in range(10)] + [f"out{i}" for i in reversed(range(10))]


def test_background_runs_after_response_is_sent(impl, loop_factory):
    async def endpoint(request):
        async def bg():
            await asyncio.sleep(0)
            ex.events.append("background")

        return PlainTextResponse("ok", background=BackgroundTask(bg))

    async def dispatch(request, call_next):
        response = await call_next(request)
        response.background = BackgroundTask(lambda: ex.events.append("dispatch-background"))
        return response

    ex = Exchange()
    app = starlette_app(impl, [dispatch], [Route("/", endpoint)])
    run(loop_factory, lambda: call(app, exchange=ex))
    # BaseHTTPMiddleware re-chunks the body (an extra empty final message); cicada relays the
    # app's messages as they are. Either way both background tasks run after the last one.
    response_events = [e for e in ex.events if e.startswith("http.")]
    assert ex.events == response_events + ["dispatch-background", "background"]
    assert ex.sent[-1]["more_body"] is False if "more_body" in ex.sent[-1] else True


def test_middleware_never_polls_receive(impl, loop_factory):
    app = starlette_app(impl, [add_header, add_header], [Route("/", hello)])
    ex = run(loop_factory, lambda: call(app))
    assert ex.receive_calls == 0


def test_disconnect_while_dispatch_reads_body(impl, loop_factory):
    seen = []

    async def dispatch(request, call_next):
        try:
            await request.body()
        except ClientDisconnect:
            seen.append("disconnect")
            return PlainTextResponse("gone", status_code=499)
        return await call_next(request)

    ex = Exchange([b"part"])
    ex.inbox[0]["more_body"] = True
    ex.disconnected.set()
    app = starlette_app(impl, [dispatch], [Route("/", hello, methods=["POST"])])
    run(loop_factory, lambda: call(app, http_scope("/", "POST"), ex))
    assert seen == ["disconnect"] and ex.status == 499


def test_app_waiting_for_disconnect_is_released_after_response(impl, loop_factory):
    """A streaming endpoint (spec 2.3: it listens for disconnect) finishes once the response
    went out, and the endpoint's background task still runs."""
    done = []

    async def endpoint(request):
        async def gen():
            yield b"a"
            await asyncio.sleep(0.001)
            yield b"b"

        return StreamingResponse(gen(), background=BackgroundTask(lambda: done.append("bg")))

    app = starlette_app(impl, [add_header], [Route("/", endpoint)])
    ex = run(loop_factory, lambda: call(app))
    assert ex.body == b"ab" and done == ["bg"]


def test_dispatch_error_cancels_the_app(impl, loop_factory):
    log = []

    async def dispatch(request, call_next):
        await call_next(request)
        raise LookupError("dispatch failed")

    async def app(scope, receive, send):
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"x"})
        except BaseException as exc:
            log.append(type(exc).__name__)
            raise
        log.append("finished")

    mw = impl(app, dispatch=dispatch)
    with pytest.raises(LookupError):
        run(loop_factory, lambda: call(mw))
    assert log in (["CancelledError"], ["finished"])
    if impl is HTTPMiddleware:
        assert log == ["CancelledError"]


def test_websocket_and_lifespan_pass_through(impl):
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient

    events = []

    async def ws(websocket):
        await websocket.accept()
        await websocket.send_text("hi " + await websocket.receive_text())
        await websocket.close()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        events.append("startup")
        yield
        events.append("shutdown")

    app = Starlette(routes=[WebSocketRoute("/ws", ws)], lifespan=lifespan,
                    middleware=[Middleware(impl, dispatch=add_header)])
    with TestClient(app) as client:
        with client.websocket_connect("/ws") as conn:
            conn.send_text("there")
            assert conn.receive_text() == "hi there"
    assert events == ["startup", "shutdown"]


def test_contextvars_set_by_endpoint_visible_in_dispatch(impl, loop_factory):
    """cicada runs the app in the caller's task, so dispatch sees what the endpoint set.
    BaseHTTPMiddleware runs it in a child task with a copied context: the value is lost."""

    async def dispatch(request, call_next):
        response = await call_next(request)
        response.headers["x-ctx"] = ctx.get()
        return response

    async def endpoint(request):
        ctx.set("from-endpoint")
        return PlainTextResponse("ok")

    async def main():
        token = ctx.set("unset")
        try:
            return await call(starlette_app(impl, [dispatch], [Route("/", endpoint)]))
        finally:
            ctx.reset(token)

    ex = run(loop_factory, main)
    expected = "from-endpoint" if impl is HTTPMiddleware else "unset"
    assert ex.headers["x-ctx"] == expected


def test_subclass_with_dispatch_method(impl, loop_factory):
    class Tagging(impl):
        def __init__(self, app, tag):
            super().__init__(app)
            self.tag = tag

        async def dispatch(self, request, call_next):
            response = await call_next(request)
            response.headers["x-tag"] = self.tag
            return response

    app = Starlette(routes=[Route("/", hello)], middleware=[Middleware(Tagging, tag="t1")])
    ex = run(loop_factory, lambda: call(app))
    assert ex.headers["x-tag"] == "t1"


def test_early_hints_pass_through(impl, loop_factory):
    async def app(scope, receive, send):
        await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload"]})
        await Response("ok")(scope, receive, send)

    mw = impl(app, dispatch=add_header)
    ex = run(loop_factory, lambda: call(mw, http_scope(extensions={"http.response.early_hint": {}})))
    assert [m["type"] for m in ex.sent][0] == "http.response.early_hint"
    assert ex.body == b"ok"


# ---- cicada-only checks: clear errors, no leaks ---------------------------------------------


def test_non_response_return_names_the_middleware(loop_factory):
    async def returns_dict(request, call_next):
        await call_next(request)
        return {"not": "a response"}

    mw = HTTPMiddleware(hello_app(), dispatch=returns_dict)
    with pytest.raises(TypeError, match=r"returns_dict.*dict.*Response"):
        run(loop_factory, lambda: call(mw))


def test_call_next_twice_names_the_middleware(loop_factory):
    async def twice(request, call_next):
        await call_next(request)
        return await call_next(request)

    mw = HTTPMiddleware(hello_app(), dispatch=twice)
    with pytest.raises(RuntimeError, match=r"twice.*call_next\(\) twice"):
        run(loop_factory, lambda: call(mw))


def test_unexpected_message_is_a_clear_error(loop_factory):
    async def app(scope, receive, send):
        await send({"type": "http.response.body", "body": b"no start"})

    mw = HTTPMiddleware(app, dispatch=add_header)
    with pytest.raises(RuntimeError, match=r"add_header.*before http.response.start"):
        run(loop_factory, lambda: call(mw))


def hello_app():
    return Starlette(routes=[Route("/", hello)])


def _live_drivers():
    # spare objects kept for reuse (bounded, holding nothing) are not live drivers
    from cicada import _core

    _core.mw_clear_spares()
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ in ("MWDriver", "MWStep"))


@pytest.mark.parametrize("scenario", ["ok", "endpoint-error", "dispatch-error", "stream",
                                      "replaced"])
def test_no_driver_left_behind(loop_factory, scenario):
    """Every path (including exceptions flowing through C) frees the driver and its steps."""

    async def endpoint(request):
        if scenario == "endpoint-error":
            raise ValueError("x")
        if scenario == "stream":
            async def gen():
                yield b"a"
                await asyncio.sleep(0)
                yield b"b"
            return StreamingResponse(gen())
        return PlainTextResponse("ok")

    async def dispatch(request, call_next):
        response = await call_next(request)
        if scenario == "dispatch-error":
            raise LookupError("y")
        if scenario == "replaced":
            return PlainTextResponse("other")
        return response

    app = starlette_app(HTTPMiddleware, [dispatch, add_header], [Route("/", endpoint)])

    async def many():
        for _ in range(200):
            try:
                await call(app)
            except (ValueError, LookupError):
                pass

    before = _live_drivers()
    run(loop_factory, many)
    assert _live_drivers() == before
    if hasattr(sys, "gettotalrefcount"):  # debug builds only
        pass


# ---- the app runs in the caller's task: cancel scopes and task groups must still nest ---------


def streaming_endpoint(n=4, delay=0.002):
    async def endpoint(request):
        async def gen():
            for i in range(n):
                await asyncio.sleep(delay)
                yield b"%d;" % i

        return StreamingResponse(gen())

    return endpoint


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
@pytest.mark.parametrize("wrapper", ["fail_after", "task_group", "asyncio_timeout"])
def test_dispatch_scopes_around_call_next_with_streaming(impl, loop_factory, spec, wrapper):
    """StreamingResponse under spec < 2.4 keeps a task group open while it streams from a child
    task; dispatch opening and closing its own scope around call_next must not trip anyio."""
    import anyio

    async def dispatch(request, call_next):
        if wrapper == "fail_after":
            with anyio.fail_after(5):
                response = await call_next(request)
        elif wrapper == "task_group":
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.sleep, 0)
                response = await call_next(request)
        else:
            async with asyncio.timeout(5):
                response = await call_next(request)
        response.headers["x-mw"] = wrapper
        return response

    app = starlette_app(impl, [dispatch, add_header], [Route("/", streaming_endpoint())])
    ex = run(loop_factory, lambda: call(app, http_scope(spec_version=spec)))
    assert ex.body == b"0;1;2;3;" and ex.headers["x-mw"] == wrapper


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
def test_client_disconnect_mid_stream(impl, loop_factory, spec):
    """The client leaves while a (slow) body streams: the app stops, nothing escapes."""
    ex = Exchange()

    async def main():
        async def leave():
            await asyncio.sleep(0.02)
            ex.disconnected.set()

        leaver = asyncio.ensure_future(leave())
        app = starlette_app(impl, [add_header], [Route("/", streaming_endpoint(50, 0.005))])
        await call(app, http_scope(spec_version=spec), ex)
        await leaver

    if spec == "2.4":
        # a 2.4 server signals the disconnect by raising OSError from send
        class Raising(Exchange):
            async def send(self, message):
                if self.disconnected.is_set():
                    raise OSError("client went away")
                await super().send(message)

        ex = Raising()
        from starlette.requests import ClientDisconnect as CD

        with pytest.raises((CD, OSError)):
            run(loop_factory, main)
    else:
        run(loop_factory, main)
    assert 0 < len(ex.body) < len(b"".join(b"%d;" % i for i in range(50)))


def test_outer_timeout_cancels_slow_endpoint(impl, loop_factory):
    import anyio

    async def dispatch(request, call_next):
        try:
            with anyio.fail_after(0.02):
                return await call_next(request)
        except TimeoutError:
            return PlainTextResponse("timeout", status_code=504)

    async def slow(request):
        await asyncio.sleep(5)
        return PlainTextResponse("late")

    app = starlette_app(impl, [dispatch], [Route("/", slow)])
    ex = run(loop_factory, lambda: call(app))
    assert ex.status == 504


@pytest.mark.parametrize("layers", [1, 2, 10])
def test_no_reference_cycles_per_request(loop_factory, layers):
    """A request through stacked layers leaves nothing for the cyclic GC: every object is freed
    by reference counting (the GC's gen-0 passes were a quarter of the cost before)."""

    async def endpoint(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = endpoint
    for _ in range(layers):
        app = HTTPMiddleware(app, dispatch=add_header)

    async def many():
        for _ in range(20):
            await call(app)
        gc.collect()
        gc.disable()
        try:
            for _ in range(50):
                await call(app)
            return gc.collect()
        finally:
            gc.enable()

    assert run(loop_factory, many) == 0


@pytest.mark.parametrize("scenario", ["ok", "endpoint-error", "dispatch-error", "stream",
                                      "replaced", "no-response", "twice", "not-a-response",
                                      "body-read", "mid-stream-error"])
def test_no_memory_growth_on_any_path(loop_factory, scenario):
    """Exceptions flowing through the C driver leak nothing: allocated blocks stay flat."""

    async def endpoint(scope, receive, send):
        if scenario == "endpoint-error":
            raise ValueError("x")
        if scenario == "no-response":
            return
        if scenario == "body-read":
            await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if scenario in ("stream", "mid-stream-error"):
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            await asyncio.sleep(0)
            if scenario == "mid-stream-error":
                raise KeyError("y")
        await send({"type": "http.response.body", "body": b"b"})

    async def dispatch(request, call_next):
        if scenario == "body-read":
            await request.body()
        response = await call_next(request)
        if scenario == "twice":
            await call_next(request)
        if scenario == "dispatch-error":
            raise LookupError("z")
        if scenario == "replaced":
            return PlainTextResponse("other")
        if scenario == "not-a-response":
            return "nope"
        response.headers["x"] = "1"
        return response

    app = HTTPMiddleware(HTTPMiddleware(endpoint, dispatch=dispatch), dispatch=add_header)

    async def many(n):
        for _ in range(n):
            try:
                await call(app, http_scope(method="POST"), Exchange([b"body"]))
            except (ValueError, LookupError, KeyError, RuntimeError, TypeError):
                pass

    run(loop_factory, lambda: many(300))
    gc.collect()
    before = sys.getallocatedblocks()
    run(loop_factory, lambda: many(2000))
    gc.collect()
    assert sys.getallocatedblocks() - before < 1000


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
def test_call_next_awaited_from_another_task(impl, loop_factory, spec):
    """asyncio.wait_for (3.11) and create_task run call_next in a task of their own."""

    async def in_wait_for(request, call_next):
        response = await asyncio.wait_for(call_next(request), 5)
        response.headers["x-wait-for"] = "1"
        return response

    async def in_task(request, call_next):
        return await asyncio.ensure_future(call_next(request))

    app = starlette_app(impl, [in_wait_for, in_task, add_header],
                        [Route("/", streaming_endpoint()), Route("/hello", hello)])
    ex = run(loop_factory, lambda: call(app, http_scope(spec_version=spec)))
    assert ex.body == b"0;1;2;3;" and ex.headers["x-wait-for"] == "1"
    ex = run(loop_factory, lambda: call(app, http_scope("/hello", spec_version=spec)))
    assert ex.body == b'{"hello":"world"}'


def test_wait_for_timeout_and_errors_around_call_next(impl, loop_factory):
    log = []

    async def dispatch(request, call_next):
        try:
            return await asyncio.wait_for(call_next(request), 0.05)
        except asyncio.TimeoutError:
            return PlainTextResponse("timeout", status_code=504)
        except ValueError as exc:
            return PlainTextResponse(str(exc), status_code=500)

    async def slow(request):
        try:
            await asyncio.sleep(0.3)
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        log.append("finished")
        return PlainTextResponse("late")

    async def fails(request):
        await asyncio.sleep(0)
        raise ValueError("failed in endpoint")

    app = starlette_app(impl, [dispatch], [Route("/slow", slow), Route("/fails", fails)])
    ex = run(loop_factory, lambda: call(app, http_scope("/slow")))
    assert ex.status == 504
    # cicada cancels the app when the await on call_next is cancelled (here by the timeout);
    # BaseHTTPMiddleware lets it run on to the end in its task group, its response discarded.
    assert log == (["cancelled"] if impl is HTTPMiddleware else ["finished"])
    ex = run(loop_factory, lambda: call(app, http_scope("/fails")))
    assert ex.status == 500 and ex.body == b"failed in endpoint"


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_forked_child_runs_layers_on_its_own_loop(impl):
    """A child forked from inside a running task (the parent's loop and task still look current
    in its memory) serves through the middleware on a new loop of its own."""
    import os

    async def dispatch(request, call_next):
        response = await call_next(request)
        response.headers["x-task"] = str(id(asyncio.current_task()))
        return response

    async def endpoint(scope, receive, send):
        async def respond():  # from another task: the driver needs a future of the running loop
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        await asyncio.create_task(respond())

    app = impl(endpoint, dispatch=dispatch)

    async def serve_once():
        from .conftest import Exchange

        ex = Exchange()
        await app(http_scope(), ex.receive, ex.send)
        start = ex.sent[0]
        return dict(start["headers"])[b"x-task"] == str(id(asyncio.current_task())).encode()

    async def parent():
        assert await serve_once()
        pid = os.fork()
        if pid == 0:  # child: still "inside" the parent's task step; run a fresh loop
            code = 1
            try:
                with contextlib.redirect_stderr(None):
                    code = 0 if asyncio.run(asyncio.wait_for(serve_once(), 5)) else 3
            except BaseException:
                code = 4
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    assert asyncio.run(parent()) == 0
