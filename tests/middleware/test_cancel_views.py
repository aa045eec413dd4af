"""anyio cancellations while the app and dispatch share one task.

Under spec < 2.4, StreamingResponse keeps a task group open in the caller's task while a child
task sends the body. cicada runs the app in dispatch's task, so the task is in the app's cancel
scopes only while the app runs, and in dispatch's while dispatch runs. anyio delivers a
cancellation only to the tasks in the cancelled scope's task set: one issued while the task was
on the other side must still arrive. It used to be lost, and the request hung (found with
Starlette's TestClient, whose `send` waits for the client to read each chunk).

Each case also runs on BaseHTTPMiddleware, the reference; a hang fails through `wait_for`.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from .conftest import Exchange, http_scope, run

HANG = 3.0


class SlowClient(Exchange):
    """A client that takes a while to read each body chunk, as TestClient's memory stream does:
    the layer's `send` suspends in dispatch's side of the task."""

    async def send(self, message):
        await super().send(message)
        if message["type"] == "http.response.body":
            await asyncio.sleep(0.01)


def app_with(impl, endpoint, layers=1, dispatch=None):
    async def add_header(request, call_next):
        response = await call_next(request)
        response.headers["x-mw"] = "1"
        return response

    stack = [Middleware(impl, dispatch=add_header) for _ in range(layers)]
    if dispatch is not None:
        stack.insert(0, Middleware(impl, dispatch=dispatch))
    return Starlette(routes=[Route("/", endpoint)], middleware=stack)


def faulty_stream(kind):
    """A streaming endpoint whose body fails after its first chunk."""

    def sync_gen():
        yield b"Ok"
        raise ValueError("Faulty Stream")

    async def async_gen():
        yield b"Ok"
        raise ValueError("Faulty Stream")

    def endpoint(request):
        return StreamingResponse(sync_gen() if kind == "sync" else async_gen())

    return endpoint


def leaves(exc):
    """The exceptions inside `exc`, through any exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in leaves(e)]
    return [exc]


async def within(coro):
    """Awaits `coro`, failing if it has not ended after HANG seconds (wait_for would not do:
    its own cancellation may well unblock the request and let its error out)."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait([task], timeout=HANG)
    if not done:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        pytest.fail("the request hung")
    return task.result()


def serve(loop_factory, app, ex, spec="2.3"):
    """One request to `app` with the fake server `ex`, failing if it hangs."""

    async def main():
        await within(app(http_scope(spec_version=spec), ex.receive, ex.send))

    run(loop_factory, main)


def assert_body_error(exc):
    assert any("Faulty Stream" in str(e) for e in leaves(exc)), exc


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("layers", [1, 3])
def test_body_failing_while_dispatch_sends_a_chunk(impl, loop_factory, kind, layers):
    """The child task fails while the layer's `send` of the first chunk is suspended: the task
    group's cancellation must still reach the app's task, so that the error comes out."""
    app = app_with(impl, faulty_stream(kind), layers)
    ex = SlowClient()

    with pytest.raises(Exception) as info:
        serve(loop_factory, app, ex)
    assert_body_error(info.value)
    assert ex.body == b"Ok"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_body_failing_while_dispatch_awaits_after_call_next(impl, loop_factory, kind):
    """The child task fails while dispatch itself sleeps between call_next and returning."""

    async def slow_dispatch(request, call_next):
        response = await call_next(request)
        await asyncio.sleep(0.02)
        return response

    app = app_with(impl, faulty_stream(kind), 1, dispatch=slow_dispatch)
    ex = Exchange()

    with pytest.raises(Exception) as info:
        serve(loop_factory, app, ex)
    assert_body_error(info.value)


def test_many_requests_with_a_failing_body(impl, loop_factory):
    """The original report's shape: many requests, the failure landing at varying moments."""
    app = app_with(impl, faulty_stream("sync"))

    async def one():
        ex = SlowClient()
        try:
            await within(app(http_scope(spec_version="2.3"), ex.receive, ex.send))
        except Exception as e:  # noqa: BLE001 - the body's error, checked below
            assert_body_error(e)
        else:
            pytest.fail("the body's error was lost")

    async def main():
        for _ in range(20):
            await one()

    run(loop_factory, main)


@pytest.mark.parametrize("layers", [0, 3])
def test_dispatch_timeout_while_the_app_waits(impl, loop_factory, layers):
    """Dispatch reads the body inside its own anyio timeout while the app (a task group in the
    caller's task) waits for its next chunk: the timeout must reach dispatch, not wait for the
    app."""
    import anyio

    async def slow_gen():
        yield b"first"
        await asyncio.sleep(30)
        yield b"never"

    async def endpoint(request):
        return StreamingResponse(slow_gen())

    async def dispatch(request, call_next):
        response = await call_next(request)
        chunks = []
        with anyio.move_on_after(0.05):
            async for chunk in response.body_iterator:
                chunks.append(chunk)
        return PlainTextResponse(b"".join(chunks) + b"+timeout")

    app = app_with(impl, endpoint, layers, dispatch=dispatch)
    ex = Exchange()

    serve(loop_factory, app, ex)
    assert ex.body == b"first+timeout"


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
@pytest.mark.parametrize("layers", [0, 1, 3])
@pytest.mark.parametrize("wrapper", ["move_on_after", "cancel_scope", "task_group"])
def test_dispatch_scope_opened_after_call_next_around_the_body(
    impl, loop_factory, spec, layers, wrapper
):
    """Dispatch enters an anyio scope only after call_next and reads the body inside it. The
    scope is dispatch's own, not one the app left open: leaving it must not trip anyio ("exit a
    cancel scope that isn't the current task's current cancel scope", raised before)."""
    import anyio

    async def gen():
        for chunk in (b"a", b"b", b"c"):
            yield chunk

    async def endpoint(request):
        return StreamingResponse(gen())

    async def read_all(response):
        return b"".join([chunk async for chunk in response.body_iterator])

    async def dispatch(request, call_next):
        response = await call_next(request)
        if wrapper == "move_on_after":
            with anyio.move_on_after(5):
                body = await read_all(response)
        elif wrapper == "cancel_scope":
            with anyio.CancelScope():
                body = await read_all(response)
        else:
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.sleep, 0)
                body = await read_all(response)
        return PlainTextResponse(body + b"+" + wrapper.encode())

    app = app_with(impl, endpoint, layers, dispatch=dispatch)
    ex = Exchange()

    serve(loop_factory, app, ex, spec)
    assert ex.body == b"abc+" + wrapper.encode()
