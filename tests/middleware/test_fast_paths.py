"""The per-layer fast paths of cicada's HTTPMiddleware (docs/middleware.md, "Object identities"):
stacked layers entered directly, messages handed to the driver, the start message forwarded when
untouched, slots on request/response/middleware. Each is checked against the behaviour it must
keep, on asyncio and uvloop."""

from __future__ import annotations

import pytest
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import PlainTextResponse

from cicada.middleware import HTTPMiddleware, accelerate

from .conftest import Exchange, call, http_scope, run


async def endpoint(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")], "trailers": False})
    await send({"type": "http.response.body", "body": b"hi"})


def stack(app, dispatches):
    for fn in dispatches:
        app = HTTPMiddleware(app, dispatch=fn)
    return app


async def passthrough(request, call_next):
    return await call_next(request)


def test_untouched_start_is_the_apps_own(loop_factory):
    sent = []

    async def app(scope, receive, send):
        msg = {"type": "http.response.start", "status": 201, "headers": [], "trailers": False}
        sent.append(msg)
        await send(msg)
        await send({"type": "http.response.body", "body": b"x"})

    ex = run(loop_factory, lambda: call(stack(app, [passthrough] * 3)))
    start = ex.sent[0]
    assert start is sent[0] and start["trailers"] is False and ex.body == b"x"


def test_changed_status_and_headers_reach_the_server_through_layers(loop_factory):
    async def set_status(request, call_next):
        response = await call_next(request)
        response.status_code = 418
        return response

    async def add_header(request, call_next):
        response = await call_next(request)
        response.headers["x-outer"] = "1"
        return response

    async def replace_headers(request, call_next):
        response = await call_next(request)
        response.raw_headers = [(b"x-only", b"1")]
        return response

    ex = run(loop_factory, lambda: call(stack(endpoint, [set_status, add_header])))
    assert ex.status == 418 and ex.headers["x-outer"] == "1" and ex.body == b"hi"
    ex = run(loop_factory, lambda: call(stack(endpoint, [replace_headers, add_header])))
    assert ex.status == 200 and ex.headers == {"x-only": "1", "x-outer": "1"}


def test_request_and_response_attributes(loop_factory):
    seen = {}

    async def dispatch(request, call_next):
        seen["req"] = (request.scope["path"], request._stream_consumed, request._form,
                       request.method, type(request).__name__)
        response = await call_next(request)
        seen["resp"] = (response.status_code, response.background, response.media_type,
                        response.headers is response.headers)
        response.custom = "allowed"  # instances keep a __dict__ besides the slots
        return response

    ex = run(loop_factory, lambda: call(stack(endpoint, [dispatch])))
    assert seen["req"] == ("/", False, None, "GET", "Request")
    assert seen["resp"] == (200, None, None, True)
    assert ex.body == b"hi"


def test_deleted_slot_is_a_clear_error(loop_factory):
    async def dispatch(request, call_next):
        response = await call_next(request)
        del response.status_code
        return response

    with pytest.raises(AttributeError, match="status_code"):
        run(loop_factory, lambda: call(stack(endpoint, [dispatch])))


def test_call_next_kept_after_the_request_fails_clearly(loop_factory):
    kept = []

    async def dispatch(request, call_next):
        kept.append(call_next)
        return await call_next(request)

    async def later():
        await call(stack(endpoint, [dispatch]))
        with pytest.raises(RuntimeError, match="after the request was over"):
            kept[0](None)

    run(loop_factory, later)


def test_receive_and_send_of_the_inner_app(loop_factory):
    async def app(scope, receive, send):
        msg = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": msg["body"]})

    async def reads_body(request, call_next):
        assert await request.body() == b"abc"
        return await call_next(request)

    ex = run(loop_factory, lambda: call(stack(app, [passthrough, reads_body]),
                                        exchange=Exchange(body_chunks=(b"a", b"bc"))))
    assert ex.body == b"abc"


def test_subclass_overriding_call_is_not_entered_directly(loop_factory):
    calls = []

    class Counting(HTTPMiddleware):
        async def __call__(self, scope, receive, send):
            calls.append(scope["path"])
            await super().__call__(scope, receive, send)

    inner = Counting(endpoint, dispatch=passthrough)
    ex = run(loop_factory, lambda: call(HTTPMiddleware(inner, dispatch=passthrough)))
    assert calls == ["/"] and ex.body == b"hi"


def test_accelerate_leaves_a_subclass_with_clashing_slots_alone():
    from starlette.applications import Starlette
    from starlette.routing import Route

    class Slotted(BaseHTTPMiddleware):
        __slots__ = ("extra",)

        async def dispatch(self, request, call_next):
            response = await call_next(request)
            response.headers["x-slotted"] = "1"
            return response

    app = Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"))])
    app.add_middleware(Slotted)
    accelerate(app)
    assert app.user_middleware[0].cls is Slotted
    from starlette.testclient import TestClient

    with TestClient(app) as client:
        r = client.get("/")
    assert r.text == "ok" and r.headers["x-slotted"] == "1"


def test_scope_type_other_than_http_passes_through(loop_factory):
    got = []

    async def app(scope, receive, send):
        got.append(scope["type"])

    run(loop_factory, lambda: stack(app, [passthrough] * 2)(
        {"type": "lifespan"}, None, None))
    assert got == ["lifespan"]
    assert http_scope()["type"] == "http"


def test_objects_built_without_init_take_new_attributes(impl, loop_factory):
    """Request, call_next response and its headers are allocated without __init__ (no inline
    attribute values): attributes a dispatch sets on them still work, per instance."""
    seen, entered = [], []

    async def dispatch(request, call_next):
        request.mine = len(entered)
        entered.append(1)
        response = await call_next(request)
        headers = response.headers
        headers.note = "n"
        response.extra = request.mine
        seen.append((request.mine, response.extra, headers.note, vars(request)["mine"],
                     "mine" in vars(request), request.state is request.state))
        return response

    async def twice():
        await call(impl(impl(endpoint, dispatch=dispatch), dispatch=dispatch))

    run(loop_factory, twice)
    assert seen == [(1, 1, "n", 1, True, True), (0, 0, "n", 0, True, True)]


def test_response_headers_is_read_only(impl, loop_factory):
    errors = []

    async def dispatch(request, call_next):
        response = await call_next(request)
        for op in (lambda: setattr(response, "headers", {}), lambda: delattr(response, "headers")):
            try:
                op()
            except AttributeError as e:
                errors.append(str(e))
        response.headers["x-after"] = "1"
        return response

    ex = run(loop_factory, lambda: call(impl(endpoint, dispatch=dispatch)))
    assert len(errors) == 2 and "headers" in errors[0] and "headers" in errors[1]
    assert ex.headers["x-after"] == "1" and ex.body == b"hi"


def test_header_setter_reuses_nothing_it_should_not(impl, loop_factory):
    """The C setter caches the last (key, value) tuple: other keys/values, non-ASCII keys and
    equal-but-distinct strings all still give MutableHeaders' result."""
    key = "".join(["X-", "Same"])  # not interned: a distinct but equal string each call below

    async def dispatch(request, call_next):
        response = await call_next(request)
        h = response.headers
        h["x-a"] = "1"
        h["x-a"] = "1"
        h["x-a"] = "2"
        h["".join(["x-", "a"])] = "3"
        h[key] = "v"
        h[key.lower()] = "w"
        h["x-é"] = "é"
        return response

    for _ in range(2):
        ex = run(loop_factory, lambda: call(impl(endpoint, dispatch=dispatch)))
        start = ex.sent[0]
        names = [k for k, _ in start["headers"]]
        assert names.count(b"x-a") == 1 and names.count(b"x-same") == 1
        got = dict(start["headers"])
        assert got[b"x-a"] == b"3" and got[b"x-same"] == b"w"
        assert (b"x-\xe9", b"\xe9") in start["headers"]


def test_app_called_from_a_new_loop_run_inside_a_task(impl):
    """The seed's second snippet inside a request: sync code in a task of loop A runs a new loop B
    (cicada's loops nest). An app with middleware called on B must work on B, although A's task is
    still current on A and A served the previous request (3.11's cached loop must not be taken)."""
    import cicada.loop

    app = impl(impl(endpoint, dispatch=passthrough), dispatch=passthrough)

    def sync_code():
        inner = cicada.loop.new_event_loop()
        try:
            return inner.run_until_complete(call(app)).body
        finally:
            inner.close()

    async def outer():
        first = await call(app)  # on A: A becomes the loop this thread ran last
        return first.body, sync_code()

    assert run(cicada.loop.new_event_loop, outer) == (b"hi", b"hi")
