"""The middleware driven from more than one task: the layer's call awaited in a task of its own
(what asyncio.wait_for does on 3.11, and timeout middlewares), dispatch awaiting call_next in
another task, the app sending from other tasks (`await asyncio.ensure_future(send(msg))`), and
dispatch reading call_next's body from another task (a task it awaits, gather, wait_for).

cicada runs the app in dispatch's task and may resume dispatch inside the app's send (fusion);
none of that may leak into another task. Every case runs on BaseHTTPMiddleware too, on asyncio,
uvloop and cicada's loop: same status, body and outcome, no hang, no driver object left behind.
"""

from __future__ import annotations

import asyncio
import gc

import pytest
from starlette.responses import PlainTextResponse, Response

from .conftest import Exchange, close_loop, http_scope

HANG = 2.0  # seconds after which a request counts as hung

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}


def body(data: bytes, more: bool = False):
    return {"type": "http.response.body", "body": data, "more_body": more}


class Boom(Exception):
    pass



def _live_drivers():
    # spare objects kept for reuse (bounded, holding nothing) are not live drivers
    from cicada import _core

    _core.mw_clear_spares()
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ in ("MWDriver", "MWStep", "MWFuse"))


def run_request(loop_factory, app, *, in_a_task=False):
    """Runs one request through `app`; returns (exchange, how it ended). The call is made and
    awaited in one task, or (in_a_task) awaited from a task of its own. A request still running
    after HANG seconds ends as "HUNG"."""

    async def request(ex):
        call = app(http_scope(), ex.receive, ex.send)
        await (asyncio.ensure_future(call) if in_a_task else call)

    async def main():
        ex = Exchange()
        t = asyncio.ensure_future(request(ex))
        done, _ = await asyncio.wait([t], timeout=HANG)
        if not done:
            t.cancel()
            await asyncio.wait([t], timeout=HANG)
            return ex, "HUNG"
        for _ in range(5):  # the app's leftover tasks finish
            await asyncio.sleep(0)
        exc = t.exception()
        return ex, "returned" if exc is None else exc

    loop = loop_factory()
    try:
        return loop.run_until_complete(main())
    finally:
        close_loop(loop)


def stack(impl, app, dispatch, layers):
    for _ in range(layers - 1):
        app = impl(app, dispatch=d_plain)
    return impl(app, dispatch=dispatch)


async def d_plain(request, call_next):
    return await call_next(request)


# ---- A: a bad message from the app while the call runs in another task -------------------------


async def app_body_before_start(scope, receive, send):
    await send(body(b"x"))


async def app_unknown_message(scope, receive, send):
    await send({"type": "http.response.bogus"})


async def app_start_twice(scope, receive, send):
    await send(START)
    await send(START)
    await send(body(b"x"))


async def d_reads_body(request, call_next):
    response = await call_next(request)
    chunks = [c async for c in response.body_iterator]
    return Response(b"".join(chunks), status_code=201)


async def d_catches(request, call_next):
    try:
        return await call_next(request)
    except (RuntimeError, AssertionError) as e:
        return PlainTextResponse(f"caught {type(e).__name__}", status_code=500)


async def d_call_next_in_a_task(request, call_next):
    return await asyncio.ensure_future(call_next(request))


def _clear_error(impl, end, match):
    """cicada raises a RuntimeError naming the problem; BaseHTTPMiddleware fails an assert."""
    from cicada.middleware import HTTPMiddleware

    if impl is HTTPMiddleware:
        assert isinstance(end, RuntimeError) and match in str(end), repr(end)
        assert "SystemError" not in repr(end)
    else:
        assert isinstance(end, (RuntimeError, AssertionError)), repr(end)


@pytest.mark.parametrize("how", ["call in a task", "call_next in a task"])
@pytest.mark.parametrize("app, match", [(app_body_before_start, "before http.response.start"),
                                        (app_unknown_message, "before http.response.start")])
def test_bad_start_from_a_detached_app_is_a_clear_error(impl, any_loop, how, app, match):
    dispatch = d_call_next_in_a_task if how == "call_next in a task" else d_plain
    ex, end = run_request(any_loop, impl(app, dispatch=dispatch), in_a_task=how == "call in a task")
    assert end != "HUNG"
    _clear_error(impl, end, match)
    assert ex.sent == []


@pytest.mark.parametrize("how", ["call in a task", "call_next in a task"])
def test_bad_body_message_from_a_detached_app_is_a_clear_error(impl, any_loop, how):
    async def app(scope, receive, send):
        await send(START)
        await send({"type": "http.response.bogus"})

    dispatch = d_reads_body
    if how == "call_next in a task":
        async def dispatch(request, call_next):
            response = await asyncio.ensure_future(call_next(request))
            return Response(b"".join([c async for c in response.body_iterator]))

    ex, end = run_request(any_loop, impl(app, dispatch=dispatch), in_a_task=how == "call in a task")
    assert end != "HUNG"
    _clear_error(impl, end, "unexpected message")


def test_start_twice_from_a_detached_app_is_a_clear_error(impl, any_loop):
    ex, end = run_request(any_loop, impl(app_start_twice, dispatch=d_reads_body), in_a_task=True)
    assert end != "HUNG"
    _clear_error(impl, end, "unexpected message")


@pytest.mark.parametrize("app", [app_body_before_start, app_unknown_message])
def test_dispatch_handling_a_detached_apps_error_does_not_hang(impl, any_loop, app):
    ex, end = run_request(any_loop, impl(app, dispatch=d_catches), in_a_task=True)
    assert end == "returned"
    assert ex.status == 500 and ex.body.startswith(b"caught ")


# ---- B: the app sends from another task --------------------------------------------------------


async def app_sends_from_tasks(scope, receive, send):
    await asyncio.ensure_future(send(START))
    await asyncio.ensure_future(send(body(b"a", True)))
    await asyncio.ensure_future(send(body(b"b")))


async def app_start_from_a_task(scope, receive, send):
    await asyncio.ensure_future(send(START))
    await send(body(b"a", True))
    await asyncio.sleep(0)
    await send(body(b"b"))


async def app_gathers_its_start(scope, receive, send):
    await asyncio.gather(send(START))
    await send(body(b"ab"))


async def app_awaits_its_send_later(scope, receive, send):
    pending = send(START)  # awaited after something else, in the same task
    await asyncio.sleep(0)
    await pending
    await send(body(b"ab"))


async def d_raises_after(request, call_next):
    await call_next(request)
    raise Boom("dispatch after call_next")


async def d_header(request, call_next):
    response = await call_next(request)
    response.headers["x-d"] = "1"
    return response


async def d_awaits_then_returns(request, call_next):
    response = await call_next(request)
    await asyncio.sleep(0.001)
    return response


SENDERS = [app_sends_from_tasks, app_start_from_a_task, app_gathers_its_start,
           app_awaits_its_send_later]


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("app", SENDERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dispatch, status", [(d_plain, 200), (d_reads_body, 201), (d_header, 200),
                                              (d_awaits_then_returns, 200)],
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_app_sending_from_another_task(impl, any_loop, app, dispatch, status, layers):
    ex, end = run_request(any_loop, stack(impl, app, dispatch, layers))
    assert end == "returned", end
    assert ex.status == status and ex.body == b"ab"
    assert sum(m["type"] == "http.response.start" for m in ex.sent) == 1
    if dispatch is d_header:
        assert ex.headers["x-d"] == "1"


@pytest.mark.parametrize("app", SENDERS, ids=lambda f: f.__name__)
def test_app_sending_from_another_task_then_dispatch_raises(impl, any_loop, app):
    ex, end = run_request(any_loop, impl(app, dispatch=d_raises_after))
    assert isinstance(end, Boom), end
    assert ex.sent == []


def test_start_sent_from_another_task_is_not_fused(any_loop):
    """dispatch runs in its own task (the one running the app), never in the sender's."""
    from cicada.middleware import HTTPMiddleware

    tasks = []

    async def app(scope, receive, send):
        tasks.append(asyncio.current_task())
        await asyncio.ensure_future(send(START))
        await send(body(b"ab"))

    async def dispatch(request, call_next):
        response = await call_next(request)
        tasks.append(asyncio.current_task())
        return response

    ex, end = run_request(any_loop, HTTPMiddleware(app, dispatch=dispatch))
    assert end == "returned" and ex.body == b"ab"
    assert tasks[0] is tasks[1]


# ---- C: dispatch reads the body from another task ----------------------------------------------


async def app_ok(scope, receive, send):
    await send(START)
    await send(body(b"hello"))


async def app_streams(scope, receive, send):
    await send(START)
    for part in (b"he", b"ll"):
        await send(body(part, True))
        await asyncio.sleep(0.001)
    await send(body(b"o"))


async def d_body_in_a_task(request, call_next):
    response = await call_next(request)

    async def consume():
        return b"".join([c async for c in response.body_iterator])

    return Response(await asyncio.ensure_future(consume()), status_code=203)


async def d_body_under_wait_for(request, call_next):
    response = await call_next(request)

    async def consume():
        return b"".join([c async for c in response.body_iterator])

    return Response(await asyncio.wait_for(consume(), HANG), status_code=203)


async def d_body_in_gather(request, call_next):
    response = await call_next(request)

    async def consume():
        return b"".join([c async for c in response.body_iterator])

    (data,) = await asyncio.gather(consume())
    return Response(data, status_code=203)


async def d_anext_under_wait_for(request, call_next):
    """The real-code pattern: each chunk with a timeout; the rest goes out as the response."""
    response = await call_next(request)
    it = response.body_iterator.__aiter__()
    first = await asyncio.wait_for(it.__anext__(), HANG)
    rest = [c async for c in it]
    return Response(first + b"".join(rest), status_code=203)


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("app", [app_ok, app_streams, app_start_from_a_task],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("dispatch", [d_body_in_a_task, d_body_under_wait_for, d_body_in_gather,
                                      d_anext_under_wait_for], ids=lambda f: f.__name__)
def test_dispatch_reading_the_body_in_another_task(impl, any_loop, app, dispatch, layers):
    ex, end = run_request(any_loop, stack(impl, app, dispatch, layers))
    assert end == "returned", end
    assert ex.status == 203
    assert ex.body == (b"ab" if app is app_start_from_a_task else b"hello")


def test_first_chunk_in_another_task_then_the_rest_streams(impl, any_loop):
    async def dispatch(request, call_next):
        response = await call_next(request)
        it = response.body_iterator.__aiter__()
        first = await asyncio.wait_for(it.__anext__(), HANG)

        async def rest():
            yield first
            async for c in it:
                yield c

        response.body_iterator = rest()
        return response

    ex, end = run_request(any_loop, impl(app_streams, dispatch=dispatch))
    assert end == "returned", end
    assert ex.status == 200 and ex.body == b"hello"


def test_app_error_while_another_task_reads_the_body(impl, any_loop):
    async def app(scope, receive, send):
        await send(START)
        await send(body(b"part", True))
        raise Boom("mid body")

    ex, end = run_request(any_loop, impl(app, dispatch=d_body_in_a_task))
    assert isinstance(end, Boom) or (
        isinstance(end, BaseExceptionGroup) and end.subgroup(Boom) is not None), end


def test_request_cancelled_while_another_task_reads_the_body(impl, any_loop):
    """The outer task is cancelled while the app, stepped by dispatch's helper task, sleeps."""
    log = []

    async def app(scope, receive, send):
        try:
            await send(START)
            await send(body(b"a", True))
            await asyncio.sleep(10)
            await send(body(b"b"))
        finally:
            log.append("app cleaned up")

    async def main():
        ex = Exchange()
        t = asyncio.ensure_future(impl(app, dispatch=d_body_in_a_task)(
            http_scope(), ex.receive, ex.send))
        for _ in range(20):
            await asyncio.sleep(0)
        t.cancel()
        done, _ = await asyncio.wait([t], timeout=HANG)
        assert done, "the cancelled request hangs"
        for _ in range(10):
            await asyncio.sleep(0)
        return t

    loop = any_loop()
    try:
        t = loop.run_until_complete(main())
    finally:
        close_loop(loop)
    assert t.cancelled()
    assert log == ["app cleaned up"]


# ---- nothing left behind -----------------------------------------------------------------------


def test_no_driver_outlives_cross_task_requests(any_loop):
    from cicada.middleware import HTTPMiddleware

    cases = [(app_body_before_start, d_plain, True), (app_unknown_message, d_catches, True),
             (app_body_before_start, d_call_next_in_a_task, False),
             (app_start_twice, d_reads_body, True)]
    cases += [(a, d, False) for a in SENDERS for d in (d_plain, d_reads_body, d_raises_after)]
    cases += [(a, d, False) for a in (app_ok, app_streams)
              for d in (d_body_in_a_task, d_body_under_wait_for, d_anext_under_wait_for)]
    run_request(any_loop, HTTPMiddleware(app_ok, dispatch=d_plain))  # warm-up
    before = _live_drivers()
    for app, dispatch, in_a_task in cases:
        for _ in range(3):
            ex, end = run_request(any_loop, HTTPMiddleware(app, dispatch=dispatch),
                                  in_a_task=in_a_task)
            assert end != "HUNG", (app.__name__, dispatch.__name__)
    assert _live_drivers() <= before


def test_app_dropping_or_throwing_into_its_unawaited_send(impl, any_loop):
    """A send's awaitable closed or thrown into before it ran sent nothing: the next one counts."""

    async def app(scope, receive, send):
        send(START).close()
        with pytest.raises(Boom):
            send(START).throw(Boom())
        await send(START)
        await send(body(b"ab"))

    for dispatch, status in ((d_plain, 200), (d_reads_body, 201)):
        ex, end = run_request(any_loop, impl(app, dispatch=dispatch))
        assert end == "returned", end
        assert ex.status == status and ex.body == b"ab"
        assert sum(m["type"] == "http.response.start" for m in ex.sent) == 1


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_under_a_real_server(impl, loop):
    """uvicorn on loopback: a StreamingResponse (sent from a task group's child task under
    uvicorn's ASGI spec 2.3) whose body dispatch reads chunk by chunk under wait_for, and an
    endpoint whose start is sent from another task."""
    httpx = pytest.importorskip("httpx")
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from .test_servers import serve

    if loop == "uvloop":
        pytest.importorskip("uvloop")

    async def stream(request):
        async def gen():
            for i in range(3):
                await asyncio.sleep(0.001)
                yield b"chunk%d;" % i

        return StreamingResponse(gen(), media_type="text/plain")

    class Raw:  # an ASGI app as a Route endpoint (not a function: Starlette calls it as is)
        async def __call__(self, scope, receive, send):
            await app_sends_from_tasks(scope, receive, send)

    app = Starlette(routes=[Route("/stream", stream), Route("/raw", Raw())],
                    middleware=[Middleware(impl, dispatch=d_anext_under_wait_for)])
    with serve(app, loop) as (base, _):
        with httpx.Client(base_url=base, timeout=5) as client:
            for _ in range(3):
                r = client.get("/stream")
                assert r.status_code == 203 and r.content == b"chunk0;chunk1;chunk2;"
                r = client.get("/raw")
                assert r.status_code == 203 and r.content == b"ab"


# ---- two readers, and a reader outliving the response -------------------------------------------


async def app_streams_slowly(scope, receive, send):
    await send(START)
    for part in (b"a", b"b", b"c"):
        await send(body(part, True))
        await asyncio.sleep(0.01)
    await send(body(b"d"))


async def d_two_readers(request, call_next):
    response = await call_next(request)

    async def consume():
        return b"".join([c async for c in response.body_iterator])

    a, b = await asyncio.gather(consume(), consume())
    return Response(a + b"|" + b)


async def d_reader_in_a_task_and_here(request, call_next):
    response = await call_next(request)

    async def consume():
        return b"".join([c async for c in response.body_iterator])

    t = asyncio.ensure_future(consume())
    await asyncio.sleep(0)
    mine = b"".join([c async for c in response.body_iterator])
    return Response(mine + b"|" + await t)


@pytest.mark.parametrize("in_a_task", [False, True])
@pytest.mark.parametrize("dispatch", [d_two_readers, d_reader_in_a_task_and_here],
                         ids=lambda f: f.__name__)
def test_body_read_by_two_tasks_at_once_is_a_clear_error(impl, any_loop, dispatch, in_a_task):
    from cicada.middleware import HTTPMiddleware

    ex, end = run_request(any_loop, impl(app_streams_slowly, dispatch=dispatch),
                          in_a_task=in_a_task)
    assert end != "HUNG"
    assert isinstance(end, RuntimeError), repr(end)
    if impl is HTTPMiddleware:
        assert "read by two tasks at once" in str(end)
    else:
        assert "already running" in str(end)


def test_a_reader_outliving_the_response_ends(impl, any_loop):
    """dispatch leaves a task reading call_next's body and returns its own response: once the
    request is over, that task's read ends (cicada: end of body; Starlette: an error) or goes
    on to the end, never waits forever."""
    readers = []

    async def dispatch(request, call_next):
        response = await call_next(request)

        async def consume():
            return b"".join([c async for c in response.body_iterator])

        readers.append(asyncio.ensure_future(consume()))
        await asyncio.sleep(0.001)  # the reader is waiting on the app now
        return PlainTextResponse("mine")

    async def main():
        ex = Exchange()
        await impl(app_streams_slowly, dispatch=dispatch)(http_scope(), ex.receive, ex.send)
        done, _ = await asyncio.wait(readers, timeout=HANG)
        return ex, done

    loop = any_loop()
    try:
        ex, done = loop.run_until_complete(main())
        assert ex.body == b"mine"
        assert done == set(readers), "the reader left behind waits forever"
        readers[0].exception()  # retrieved (either outcome is fine)
    finally:
        close_loop(loop)
