"""`@app.middleware("http")` semantics without BaseHTTPMiddleware's per-request tasks and streams.

`HTTPMiddleware` is a drop-in for Starlette's `BaseHTTPMiddleware`; `accelerate(app)` swaps it in
for every such layer already declared on a Starlette/FastAPI app. The downstream app is driven in
the caller's task by cicada._core's middleware driver; see docs/middleware.md for the semantics.
This module needs starlette; the rest of cicada does not import it.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import types

from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response

from cicada import _core

__all__ = ["HTTPMiddleware", "accelerate"]


class _Request(Request):
    """The `request` dispatch gets: a Starlette `Request` built by the C driver without `__init__`.

    The driver sets the attributes `__init__` would set straight into these slots.
    """

    __slots__ = ("scope", "_receive", "_send", "_stream_consumed", "_is_disconnected", "_form")


_Request.__name__ = _Request.__qualname__ = "Request"


class _Headers(MutableHeaders):
    """`response.headers` of a call_next response: a MutableHeaders whose `__setitem__` is C.

    mw_setup replaces `__setitem__` (same semantics as MutableHeaders'; it falls back to that
    one for anything but str keys and values over a list of 2-tuples). `_list` is a slot: the C
    side builds the instance without `__init__` and reads the list by offset.
    """

    __slots__ = ("_list",)


_Headers.__name__ = _Headers.__qualname__ = "MutableHeaders"


class _CallNextResponse(Response):
    """What `call_next` returns: status and headers of the app's response, body pulled lazily.

    Built by the C driver without running `__init__`; it sets status_code, raw_headers,
    body_iterator, background and info straight into these slots, like Starlette's streaming
    response. `headers` is made on first use (mw_call.c) and kept in `_cicada_headers`.
    """

    __slots__ = ("status_code", "raw_headers", "body_iterator", "background", "info",
                 "_cicada_headers")
    media_type = None

    async def __call__(self, scope, receive, send):
        await _send_response(self, send)


async def _send_response(response, send):
    """Sends a call_next response: the app's own body messages are relayed as they come."""
    if response.info is not None:
        await send({"type": "http.response.debug", "info": response.info})
    await send(
        {"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers}
    )
    driver = _core.mw_relay_driver(response)
    if driver is not None:
        while True:
            message = await driver.next_message()
            if message is None:  # the app returned without finishing its body
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                break
            await send(message)
            if message["type"] != "http.response.body" or not message.get("more_body", False):
                break
    else:
        more = True
        async for chunk in response.body_iterator:
            if isinstance(chunk, dict):  # pathsend
                more = False
                await send(chunk)
                continue
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if more:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    if response.background is not None:
        await response.background()


class HTTPMiddleware(BaseHTTPMiddleware):
    """`BaseHTTPMiddleware` with the downstream app run in the caller's task.

    Construct it like BaseHTTPMiddleware (`app, dispatch=fn`) or subclass it with a `dispatch`
    method. Request objects are Starlette `Request`s; `call_next` returns a Starlette `Response`.
    """

    # BaseHTTPMiddleware.__init__ sets these two; as slots the C side reads them by offset.
    __slots__ = ("app", "dispatch_func")

    # __call__ is installed by _core.mw_setup below: a C method that awaits dispatch, sends the
    # response and lets the app finish, all in the caller's task (mw/mw_call.c). Off asyncio
    # (e.g. trio) it falls back to BaseHTTPMiddleware.__call__.


def _restart_anyio_cancellation(scope) -> None:
    """Restarts anyio's delivery of a cancellation pending on `scope` or one of its parents.

    The app runs in dispatch's task, and the task is only in the app's cancel scopes while the
    app runs (mw/mw_driver.c swaps the views). anyio delivers a cancellation to the tasks in the
    scope's task set and gives up when it finds none, so one issued while dispatch ran (a child
    task of the app's task group failing while dispatch sent a chunk) would be lost, and the app
    would wait forever. anyio restarts delivery the same way when a scope exits. Private anyio
    API, looked up defensively: where it differs, the cancellation stays as late as before.
    """
    while scope is not None:
        if getattr(scope, "_cancel_called", False):
            deliver = getattr(scope, "_deliver_cancellation", None)
            if deliver is not None and getattr(scope, "_cancel_handle", None) is None:
                code = getattr(deliver, "__code__", None)
                if code is not None and code.co_argcount > 1:
                    deliver(scope)  # anyio 4: the origin scope
                else:
                    deliver()  # anyio 3
            return
        if getattr(scope, "_shield", False):
            return
        scope = getattr(scope, "_parent_scope", None)


_core.mw_setup(
    _Request,
    _CallNextResponse,
    Response,
    HTTPMiddleware,
    BaseHTTPMiddleware.__call__,
    asyncio.current_task,
    asyncio._get_running_loop,
    asyncio.CancelledError,
    _Headers,
    asyncio.ensure_future,
    # asyncio.current_task is Python code on 3.11 reading this dict: the C side reads it directly
    asyncio.tasks._current_tasks if isinstance(asyncio.current_task, types.FunctionType) else None,
    _restart_anyio_cancellation,
)


def _mark_call_as_coroutine_function():
    """Makes `HTTPMiddleware.__call__` (a C descriptor) pass for a coroutine function.

    Servers and TestClient tell an ASGI3 app from an ASGI2 one by `iscoroutinefunction(
    app.__call__)`; without this a bare middleware instance served as the app was driven as
    ASGI2 (`app(scope)` -> TypeError). The bound `__call__` is a method object, which reads
    unknown attributes from its function, here the MWEntry, so the markers go on its type:
    inspect's (3.12+, taken from `markcoroutinefunction`) and asyncio's (what its
    `iscoroutinefunction` checks before 3.14; private, so looked up defensively).
    """
    entry_type = type(HTTPMiddleware.__dict__["__call__"])
    mark = getattr(inspect, "markcoroutinefunction", None)
    if mark is not None:
        marked = mark(lambda: None)
        entry_type._is_coroutine_marker = marked._is_coroutine_marker
    asyncio_marker = getattr(asyncio.coroutines, "_is_coroutine", None)
    if asyncio_marker is not None:
        entry_type._is_coroutine = asyncio_marker


_mark_call_as_coroutine_function()

# the C side remembers the running loop of the last request (3.11, see cc_mw_current_context);
# a forked child must not take its parent's loop for a running one
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_core.mw_forget_loop)


def _accelerated_subclass(cls: type) -> type:
    """A subclass of a user's BaseHTTPMiddleware subclass that runs on cicada's driver."""
    cached = cls.__dict__.get("_cicada_accelerated")
    if cached is not None:
        return cached
    try:
        new = type(cls.__name__, (HTTPMiddleware, cls), {"__module__": cls.__module__,
                                                         "__qualname__": cls.__qualname__})
    except TypeError:  # its own __slots__ clash with HTTPMiddleware's: leave it as it is
        return None
    cls._cicada_accelerated = new
    return new


def _accelerate_entry(entry):
    cls, args, kwargs = entry
    if not isinstance(cls, type) or not issubclass(cls, BaseHTTPMiddleware):
        return entry
    if issubclass(cls, HTTPMiddleware):
        return entry
    if cls.__call__ is not BaseHTTPMiddleware.__call__:
        return entry  # the user replaced __call__ itself: leave it alone
    if cls is BaseHTTPMiddleware:
        return Middleware(HTTPMiddleware, *args, **kwargs)
    new = _accelerated_subclass(cls)
    return entry if new is None else Middleware(new, *args, **kwargs)


def accelerate(app):
    """Run every `@app.middleware("http")` / BaseHTTPMiddleware layer of `app` on cicada.

    Call it once before the app serves its first request (or lifespan event). Calling it
    again is harmless. Returns the app.
    """
    if not hasattr(app, "user_middleware"):
        raise TypeError(f"accelerate() needs a Starlette or FastAPI app, got {type(app).__qualname__}")
    if getattr(app, "middleware_stack", None) is not None:
        raise RuntimeError(
            "accelerate() must be called before the app starts: its middleware stack is already "
            "built (call it right after the last add_middleware / @app.middleware)"
        )
    app.user_middleware[:] = [_accelerate_entry(m) for m in app.user_middleware]
    return app


def accelerate_tree(app) -> int:
    """`accelerate(app)` and every Starlette app mounted below it, for the server's --accelerate.

    Returns how many layers run on cicada's middleware afterwards.
    """
    if not hasattr(app, "user_middleware"):
        raise TypeError(f"accelerate() needs a Starlette or FastAPI app, got {type(app).__qualname__}")
    seen: set[int] = set()

    def walk(node) -> int:
        if id(node) in seen:
            return 0
        seen.add(id(node))
        count = 0
        if hasattr(node, "user_middleware"):
            accelerate(node)
            count = sum(1 for m in node.user_middleware if _runs_on_cicada(m))
        router = getattr(node, "router", node)
        for route in getattr(router, "routes", None) or ():
            sub = getattr(route, "app", None)
            if sub is not None and (hasattr(sub, "user_middleware") or hasattr(sub, "routes")):
                count += walk(sub)
        return count

    return walk(app)


def _runs_on_cicada(entry) -> bool:
    cls = next(iter(entry))
    return isinstance(cls, type) and issubclass(cls, HTTPMiddleware)
