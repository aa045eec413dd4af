"""Hostile apps and dispatch functions under HTTPMiddleware (and the fused start, MWFuse), compared
with Starlette's BaseHTTPMiddleware: every pair of an app behaviour (raising at each point,
cancelling itself, sending in the wrong order, from another task, after completion, never
sending, polling receive after the disconnect, ...) and a dispatch behaviour (raising, cancelling,
reading the body twice, keeping the response past the request, returning the wrong type, ...)
runs on both implementations and on asyncio's and cicada's loops. What the server sees (message
types, status, body) and how the request ends (returned, or which exception) must be the same,
apart from the differences docs/middleware.md lists; nothing may hang, and no driver object
outlives the requests.
"""

from __future__ import annotations

import asyncio
import gc

import pytest
from starlette.responses import PlainTextResponse, Response

import cicada.loop

from .conftest import Exchange, close_loop, http_scope

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

LOOP_FACTORIES = {"asyncio": asyncio.new_event_loop, "cicada": cicada.loop.new_event_loop}
HANG = 0.5  # seconds after which a request counts as hung (they take milliseconds)


class Boom(Exception):
    pass


START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/plain")]}


def body(data: bytes, more: bool = False):
    return {"type": "http.response.body", "body": data, "more_body": more}


# ---- app behaviours -------------------------------------------------------------------------


async def app_ok(scope, receive, send):
    await send(START)
    await send(body(b"hello"))


async def app_raises_first(scope, receive, send):
    raise Boom("before start")


async def app_raises_after_start(scope, receive, send):
    await send(START)
    raise Boom("after start")


async def app_raises_mid_body(scope, receive, send):
    await send(START)
    await send(body(b"part", True))
    raise Boom("mid body")


async def app_never_sends(scope, receive, send):
    return None


async def app_body_before_start(scope, receive, send):
    await send(body(b"x"))


async def app_start_twice(scope, receive, send):
    await send(START)
    await send(START)
    await send(body(b"x"))


async def app_sends_after_the_end(scope, receive, send):
    await send(START)
    await send(body(b"done"))
    await send(body(b"extra"))
    await send(START)


async def app_sends_from_another_task(scope, receive, send):
    await asyncio.ensure_future(send(START))
    await asyncio.ensure_future(send(body(b"a", True)))
    await asyncio.ensure_future(send(body(b"b")))


async def app_polls_receive_after_disconnect(scope, receive, send):
    await send(START)
    await send(body(b"ok"))
    for _ in range(5):  # every call after the response must say http.disconnect at once
        msg = await asyncio.wait_for(receive(), 1)
        assert msg["type"] == "http.disconnect", msg


async def app_cancels_itself_first(scope, receive, send):
    raise asyncio.CancelledError()


async def app_cancels_itself_mid_body(scope, receive, send):
    await send(START)
    await send(body(b"part", True))
    raise asyncio.CancelledError()


async def app_unknown_message(scope, receive, send):
    await send({"type": "http.response.bogus"})


async def app_returns_mid_body(scope, receive, send):
    await send(START)
    await send(body(b"part", True))


async def app_message_not_a_dict(scope, receive, send):
    await send(["not", "a", "dict"])


async def app_swallows_cancel_after_start(scope, receive, send):
    await send(START)
    try:
        await send(body(b"x", True))
        await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        pass  # and carries on sending
    await send(body(b"y"))


async def app_leaves_a_send_in_a_task(scope, receive, send):
    await send(START)
    asyncio.ensure_future(send(body(b"late")))  # not awaited: the app returns first


APPS = {f.__name__[4:]: f for f in [
    app_ok, app_raises_first, app_raises_after_start, app_raises_mid_body, app_never_sends,
    app_body_before_start, app_start_twice, app_sends_after_the_end, app_sends_from_another_task,
    app_polls_receive_after_disconnect, app_cancels_itself_first, app_cancels_itself_mid_body,
    app_unknown_message, app_returns_mid_body, app_message_not_a_dict,
    app_swallows_cancel_after_start, app_leaves_a_send_in_a_task,
]}


# ---- dispatch behaviours --------------------------------------------------------------------

KEPT = []  # responses kept past their request


async def d_plain(request, call_next):
    return await call_next(request)


async def d_raises_first(request, call_next):
    raise Boom("dispatch before call_next")


async def d_raises_after(request, call_next):
    await call_next(request)
    raise Boom("dispatch after call_next")


async def d_reads_body_then_own(request, call_next):
    response = await call_next(request)
    chunks = [c async for c in response.body_iterator]
    return Response(b"".join(chunks), status_code=201)


async def d_reads_body_twice(request, call_next):
    response = await call_next(request)
    first = [c async for c in response.body_iterator]
    second = [c async for c in response.body_iterator]
    return Response(b"".join(first) + b"|" + b"".join(second))


async def d_keeps_response(request, call_next):
    response = await call_next(request)
    KEPT.append(response)
    return PlainTextResponse("mine")


async def d_call_next_twice(request, call_next):
    await call_next(request)
    return await call_next(request)


async def d_returns_junk(request, call_next):
    await call_next(request)
    return "not a response"


async def d_cancels_own_task(request, call_next):
    response = await call_next(request)
    asyncio.current_task().cancel()
    await asyncio.sleep(0)
    return response


async def d_call_next_in_a_task(request, call_next):
    return await asyncio.ensure_future(call_next(request))


async def d_awaits_then_returns(request, call_next):
    response = await call_next(request)
    await asyncio.sleep(0.001)
    response.headers["x-d"] = "1"
    return response


async def d_catches_everything(request, call_next):
    try:
        return await call_next(request)
    except Exception as e:  # noqa: BLE001 - hostile on purpose
        name = "clear error" if type(e).__name__ in CLEAR_ERRORS else type(e).__name__
        return PlainTextResponse(f"caught {name}", status_code=500)


async def d_reads_half_the_body(request, call_next):
    response = await call_next(request)
    it = response.body_iterator.__aiter__()
    try:
        first = await it.__anext__()
    except StopAsyncIteration:
        first = b""
    return Response(first, status_code=202)


async def d_never_calls_next(request, call_next):
    return PlainTextResponse("short-circuit")


async def d_eats_a_chunk_then_returns_it(request, call_next):
    response = await call_next(request)
    it = response.body_iterator.__aiter__()
    try:
        await it.__anext__()  # the first chunk is gone; the rest streams as usual
    except StopAsyncIteration:
        pass
    return response


async def d_body_read_by_another_task(request, call_next):
    response = await call_next(request)

    async def consume():
        return b"".join([c async for c in response.body_iterator])

    data = await asyncio.ensure_future(consume())
    return Response(data, status_code=203)


async def d_request_body_after_call_next(request, call_next):
    response = await call_next(request)
    extra = await request.body()  # replayed, or the app already took it
    response.headers["x-len"] = str(len(extra))
    return response


DISPATCHES = {f.__name__[2:]: f for f in [
    d_plain, d_raises_first, d_raises_after, d_reads_body_then_own, d_reads_body_twice,
    d_keeps_response, d_call_next_twice, d_returns_junk, d_cancels_own_task,
    d_call_next_in_a_task, d_awaits_then_returns, d_catches_everything, d_reads_half_the_body,
    d_never_calls_next, d_eats_a_chunk_then_returns_it, d_body_read_by_another_task,
    d_request_body_after_call_next,
]}


def outcome(impl_name: str, loop_name: str, app_name: str, dispatch_name: str, mode: str):
    """What the server saw and how the request ended, for one implementation. mode "direct":
    the middleware runs in the task that called it; "in_a_task": its call is awaited from
    another task (what asyncio.wait_for() does on 3.11, and timeout middlewares on any)."""
    from starlette.middleware.base import BaseHTTPMiddleware

    from cicada.middleware import HTTPMiddleware

    impl = HTTPMiddleware if impl_name == "cicada" else BaseHTTPMiddleware
    mw = impl(APPS[app_name], dispatch=DISPATCHES[dispatch_name])
    loop = LOOP_FACTORIES[loop_name]()

    async def request(ex):
        try:
            call = mw(http_scope(), ex.receive, ex.send)
            await (asyncio.ensure_future(call) if mode == "in_a_task" else call)
            return "returned"
        except BaseException as e:  # noqa: BLE001 - the point is to record it
            end = type(e).__name__
            if isinstance(e, BaseExceptionGroup):
                end += "[" + ",".join(sorted(type(x).__name__ for x in e.exceptions)) + "]"
            return end

    async def main():
        ex = Exchange()
        t = asyncio.ensure_future(request(ex))
        done, _ = await asyncio.wait([t], timeout=HANG)
        if done:
            end = t.result()
        else:
            end = "HUNG"
            t.cancel()
            await asyncio.wait([t], timeout=HANG)
        # the app's leftovers (tasks, background) get time to finish
        for _ in range(5):
            await asyncio.sleep(0.001)
        kept = []
        while KEPT:  # iterate a response kept past its request: an error or an end, no hang
            r = KEPT.pop()
            try:
                await asyncio.wait_for(_drain(r), HANG)
                kept.append("ended")
            except asyncio.TimeoutError:
                kept.append("HUNG")
            except Exception:  # noqa: BLE001
                kept.append("raised")
        final = next((i for i, m in enumerate(ex.sent) if m["type"] == "http.response.body"
                      and not m.get("more_body", False)), None)
        # (body messages are compared by their bytes and whether the body was finished: cicada
        # relays the app's own messages, without BaseHTTPMiddleware's extra empty final one)
        return {
            "end": end,
            "starts": sum(m["type"] == "http.response.start" for m in ex.sent),
            "finished": final is not None,
            "after_final": 0 if final is None else len(ex.sent) - final - 1,
            "others": [m["type"] for m in ex.sent
                       if m["type"] not in ("http.response.start", "http.response.body")],
            "kept": kept,
            "status": next((m["status"] for m in ex.sent if m["type"] == "http.response.start"),
                           None),
            "body": ex.body,
        }

    try:
        return loop.run_until_complete(loop.create_task(main()))
    finally:
        close_loop(loop)
        KEPT.clear()


async def _drain(response):
    async for _ in response.body_iterator:
        pass


def _live_drivers():
    # spare objects kept for reuse (bounded, holding nothing) are not live drivers
    from cicada import _core

    _core.mw_clear_spares()
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ in ("MWDriver", "MWStep", "MWFuse"))


# Clear errors both ways: cicada names the dispatch function in a RuntimeError where
# BaseHTTPMiddleware fails an assert (docs/middleware.md "Bad input").
CLEAR_ERRORS = {"RuntimeError", "AssertionError"}


def normalized(o):
    o = dict(o)
    if o["end"] in CLEAR_ERRORS:
        o["end"] = "clear error"
    return o


# Differences docs/middleware.md describes, as the keys not compared for such a pair.
def documented_differences(app_name: str, dispatch_name: str) -> set[str]:
    keys = set()
    if app_name.startswith("cancels_itself"):
        # the app's own CancelledError reaches dispatch and the caller as raised ("exceptions
        # are not rewrapped"); BaseHTTPMiddleware's task group turns it into "No response
        # returned." or a truncated response
        keys |= {"end", "starts", "status", "finished", "body"}
    if app_name in ("raises_after_start", "raises_mid_body", "cancels_itself_mid_body"):
        # an error while the body streams propagates without a final empty body; dispatch
        # reading the body gets it there and then
        keys |= {"starts", "status", "finished", "body"}
    if dispatch_name == "keeps_response":
        keys.add("kept")  # iterating it later ends (cicada) or raises ClosedResourceError
    if app_name == "leaves_a_send_in_a_task":
        keys.add("body")  # cicada takes the app's late send; BaseHTTPMiddleware drops it
    if (app_name, dispatch_name) == ("message_not_a_dict", "catches_everything"):
        keys.add("end")  # BaseHTTPMiddleware re-raises the app's TypeError dispatch handled
    if (app_name, dispatch_name) == ("raises_after_start", "call_next_twice"):
        keys.add("end")  # call_next's second call (cicada) or the app's error (Starlette)
    if (app_name, dispatch_name) == ("start_twice", "call_next_twice"):
        keys |= {"starts", "status"}  # both fail with a clear error, at different points
    return keys


def _cases():
    for app_name in APPS:
        for dispatch_name in DISPATCHES:
            for loop_name, mode in (("asyncio", "direct"), ("asyncio", "in_a_task"),
                                    ("cicada", "direct")):
                yield pytest.param(app_name, dispatch_name, loop_name, mode,
                                   id=f"{app_name}-{dispatch_name}-{loop_name}-{mode}")


@pytest.mark.parametrize("app_name, dispatch_name, loop_name, mode", list(_cases()))
def test_hostile_pair(app_name, dispatch_name, loop_name, mode):
    got = outcome("cicada", loop_name, app_name, dispatch_name, mode)
    assert got["end"] != "HUNG" and "HUNG" not in got["kept"], got
    assert got["end"] != "SystemError", got
    assert got["starts"] <= 1 and got["after_final"] == 0, got
    ref = outcome("base", loop_name, app_name, dispatch_name, mode)
    skip = documented_differences(app_name, dispatch_name)
    got, ref = normalized(got), normalized(ref)
    for k in skip:
        got.pop(k), ref.pop(k)
    assert got == ref


def test_no_driver_outlives_hostile_requests():
    """Every pair frees its driver objects."""
    before = _live_drivers()
    for app_name in APPS:
        for dispatch_name in DISPATCHES:
            outcome("cicada", "asyncio", app_name, dispatch_name, "direct")
            outcome("cicada", "asyncio", app_name, dispatch_name, "in_a_task")
    assert _live_drivers() == before


# ---- the bugs this file found (cross-task use of the driver), one minimal case each ---------


def _run_one(app, dispatch, in_a_task=False):
    from cicada.middleware import HTTPMiddleware

    mw = HTTPMiddleware(app, dispatch=dispatch)

    async def request(ex):
        # (the call is made in the task that awaits it, or awaited from a task of its own)
        call = mw(http_scope(), ex.receive, ex.send)
        await (asyncio.ensure_future(call) if in_a_task else call)

    async def main():
        ex = Exchange()
        await asyncio.wait_for(request(ex), HANG)
        return ex

    return asyncio.run(main())


def test_bad_message_through_a_call_awaited_in_another_task_is_a_clear_error():
    with pytest.raises(RuntimeError, match="before http.response.start"):
        _run_one(app_body_before_start, d_plain, in_a_task=True)


def test_dispatch_handling_that_error_from_another_task_does_not_hang():
    ex = _run_one(app_unknown_message, d_catches_everything, in_a_task=True)
    assert ex.status == 500 and ex.body == b"caught clear error"


def test_send_start_in_another_task_then_dispatch_raises():
    with pytest.raises(Boom):
        _run_one(app_sends_from_another_task, d_raises_after)


def test_dispatch_reading_the_body_in_another_task():
    ex = _run_one(app_ok, d_body_read_by_another_task)
    assert ex.status == 203 and ex.body == b"hello"


def test_send_start_in_another_task_then_dispatch_reads_the_body():
    ex = _run_one(app_sends_from_another_task, d_reads_body_then_own)
    assert ex.status == 201 and ex.body == b"ab"


# ---- the request cancelled from outside at every point --------------------------------------


def _cancel_after(impl_name, loop_name, dispatch_name, steps):
    from starlette.middleware.base import BaseHTTPMiddleware

    from cicada.middleware import HTTPMiddleware

    impl = HTTPMiddleware if impl_name == "cicada" else BaseHTTPMiddleware
    app_log = []

    async def app(scope, receive, send):
        try:
            await send(START)
            for i in range(4):
                await asyncio.sleep(0)
                await send(body(b"%d" % i, True))
            await send(body(b""))
            app_log.append("completed")
        except BaseException as e:  # noqa: BLE001
            app_log.append(type(e).__name__)
            raise
        finally:
            app_log.append("cleaned up")

    mw = impl(app, dispatch=DISPATCHES[dispatch_name])
    loop = LOOP_FACTORIES[loop_name]()

    async def main():
        ex = Exchange()
        t = asyncio.ensure_future(mw(http_scope(), ex.receive, ex.send))
        for _ in range(steps):
            await asyncio.sleep(0)
        t.cancel()
        done, _ = await asyncio.wait([t], timeout=HANG)
        assert done, "the cancelled request hangs"
        for _ in range(10):  # the app's own leftovers, if any
            await asyncio.sleep(0)
        return t

    try:
        t = loop.run_until_complete(main())
        end = "cancelled" if t.cancelled() else repr(t.exception())
    finally:
        loop.close()
    return end, app_log


@pytest.mark.parametrize("dispatch_name", ["plain", "awaits_then_returns", "reads_body_then_own",
                                           "call_next_in_a_task"])
@pytest.mark.parametrize("loop_name", list(LOOP_FACTORIES))
def test_request_cancelled_at_every_point(dispatch_name, loop_name):
    before = _live_drivers()
    for steps in range(14):
        end, app_log = _cancel_after("cicada", loop_name, dispatch_name, steps)
        # cancelled, or finished before the cancel came; an app that started ran its cleanup
        assert end in ("cancelled", "None"), (steps, end)
        if app_log or steps > 2:
            assert app_log[-1] == "cleaned up", (steps, app_log)
            assert app_log[0] in ("completed", "CancelledError"), (steps, app_log)
    assert _live_drivers() == before


async def d_reads_body_under_wait_for(request, call_next):
    response = await call_next(request)

    async def consume():
        return b"".join([c async for c in response.body_iterator])

    # wait_for runs consume() in a task of its own on 3.11
    return Response(await asyncio.wait_for(consume(), HANG), status_code=203)


def test_dispatch_reading_the_body_under_wait_for():
    from cicada.middleware import HTTPMiddleware

    mw = HTTPMiddleware(app_ok, dispatch=d_reads_body_under_wait_for)
    loop = asyncio.new_event_loop()
    ex = Exchange()

    async def request():
        await mw(http_scope(), ex.receive, ex.send)

    loop.call_later(3 * HANG, loop.stop)  # a watchdog: the loop stops even if the request hangs
    try:
        loop.run_until_complete(request())  # RuntimeError if the watchdog stopped it
        assert ex.status == 203 and ex.body == b"hello"
    finally:
        loop.close()
