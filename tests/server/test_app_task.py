"""The task an HTTP app runs in: the app's coroutine is stepped through cycle.c's _AppRun, which
ends the request when the coroutine ends (no done callback). These check that it still behaves
as a plain coroutine in an asyncio task would: names, introspection, exceptions, cancellation."""

from __future__ import annotations

import asyncio
import collections.abc

from apps import hello
from support.server_thread import read_response, recv_until_closed, wait_for



def get(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")


def test_app_task_is_named_and_shows_the_app_coroutine(serve):
    seen = {}

    async def app(scope, receive, send):
        task = asyncio.current_task()
        seen["name"] = task.get_name()
        seen["code"] = task.get_coro().cr_code
        seen["repr"] = repr(task)
        await hello(scope, receive, send)

    st = serve(app)
    s = st.connect()
    get(s)
    status, _, body, _ = read_response(s)
    assert status == 200 and body == b"hello"
    assert seen["name"] == "cicada.http"
    assert seen["code"] is app.__code__
    assert "cicada.http" in seen["repr"]


def test_app_exception_is_logged_once_and_the_task_ends_cleanly(serve, error_log):
    tasks = []

    async def app(scope, receive, send):
        tasks.append(asyncio.current_task())
        raise ValueError("boom")

    st = serve(app)
    s = st.connect()
    get(s)
    assert recv_until_closed(s).startswith(b"HTTP/1.1 500 ")
    assert wait_for(lambda: tasks and tasks[0].done())
    # Logged by the server; nothing left on the task for asyncio to report as never retrieved.
    assert tasks[0].exception() is None and not tasks[0].cancelled()
    recs = [r for r in error_log.handler.records if r.exc_info]
    assert len(recs) == 1 and recs[0].exc_info[0] is ValueError


def test_cancelled_app_task_is_cancelled_and_answered(serve, error_log):
    tasks = []

    async def app(scope, receive, send):
        if tasks:  # the second request is answered normally
            return await hello(scope, receive, send)
        tasks.append(asyncio.current_task())
        tasks[0].cancel()
        await asyncio.sleep(10)

    st = serve(app)
    s = st.connect()
    get(s)
    assert recv_until_closed(s).startswith(b"HTTP/1.1 500 ")
    assert wait_for(lambda: tasks and tasks[0].done())
    assert tasks[0].cancelled()
    s2 = st.connect()  # the server carries on
    s2.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert recv_until_closed(s2).endswith(b"hello")


def test_app_that_catches_cancellation_can_still_answer(serve, error_log):
    tasks = []

    async def app(scope, receive, send):
        tasks.append(asyncio.current_task())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"6")]})
        tasks[-1].cancel()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await send({"type": "http.response.body", "body": b"caught"})
        return None

    st = serve(app)
    s = st.connect()
    for _ in range(2):  # keep-alive: the cycle ended through the throw() path
        get(s)
        status, _, body, _ = read_response(s)
        assert status == 200 and body == b"caught"
    assert wait_for(lambda: all(t.done() for t in tasks))
    assert not any(t.cancelled() for t in tasks)
    assert not [r for r in error_log.handler.records if r.levelname == "ERROR"]


def test_app_waiting_on_the_loop_then_answering(serve):
    async def app(scope, receive, send):
        await asyncio.sleep(0.01)  # a real suspension: the task steps the coroutine again
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, b"later")
        body = await fut
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    st = serve(app)
    s = st.connect()
    for _ in range(3):
        get(s)
        status, _, body, _ = read_response(s)
        assert status == 200 and body == b"later"


def test_app_returning_a_coroutine_that_is_not_native(serve, error_log):
    """Any collections.abc.Coroutine create_task() accepts still works (with a done callback)."""

    class Wrapped(collections.abc.Coroutine):
        def __init__(self, coro):
            self.coro = coro

        def send(self, value):
            return self.coro.send(value)

        def throw(self, *exc):
            return self.coro.throw(*exc)

        def close(self):
            self.coro.close()

        def __await__(self):
            return self.coro.__await__()

    def app(scope, receive, send):
        return Wrapped(hello(scope, receive, send))

    async def boom(scope, receive, send):
        raise ValueError("boom")

    st = serve(app)
    s = st.connect()
    get(s)
    status, _, body, _ = read_response(s)
    assert status == 200 and body == b"hello"
    st2 = serve(lambda *a: Wrapped(boom(*a)))
    s2 = st2.connect()
    get(s2)
    assert recv_until_closed(s2).startswith(b"HTTP/1.1 500 ")
    assert wait_for(lambda: error_log.handler.records)


def test_keep_alive_requests_get_their_own_headers_and_path(serve):
    """build_scope reuses the previous request's header tuples and path objects when they repeat:
    what the app sees must still be exactly each request's, whatever it did to the last scope."""
    scopes = []

    async def app(scope, receive, send):
        scopes.append((scope["path"], scope["raw_path"], list(scope["headers"])))
        scope["headers"].append((b"x-added", b"by-app"))  # apps may mutate their scope
        scope["headers"][0] = (b"host", b"mutated")
        await hello(scope, receive, send)

    st = serve(app)
    s = st.connect()
    reqs = [
        (b"/a", [(b"host", b"h"), (b"x-one", b"1"), (b"x-two", b"2")]),
        (b"/a", [(b"host", b"h"), (b"x-one", b"1"), (b"x-two", b"2")]),
        (b"/a", [(b"host", b"h"), (b"x-one", b"11"), (b"x-two", b"2")]),
        (b"/b%20c", [(b"host", b"h"), (b"x-two", b"2")]),
        (b"/b%20c", [(b"host", b"h")] + [(b"x-%d" % i, b"v") for i in range(40)]),
        (b"/b%20c", [(b"host", b"h")] + [(b"x-%d" % i, b"w") for i in range(40)]),
        (b"/a", [(b"host", b"h2"), (b"x-one", b"1")]),
    ]
    for path, headers in reqs:
        head = b"GET " + path + b" HTTP/1.1\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
        s.sendall(head + b"\r\n")
        assert read_response(s)[0] == 200
    assert len(scopes) == len(reqs)
    for (path, headers), (spath, sraw, sheaders) in zip(reqs, scopes):
        assert sraw == path.split(b"?")[0]
        assert spath == path.decode().replace("%20", " ")
        assert sheaders == headers
        assert all(type(t) is tuple and len(t) == 2 for t in sheaders)


def test_receive_and_send_kept_by_the_app_stay_bound_to_their_request(serve):
    """The connection reuses a finished request's cycle only when nothing else refers to it: an
    app that keeps its receive/send (or a weak reference to them) still holds the old request."""
    import weakref

    kept = {}
    results = []

    async def app(scope, receive, send):
        n = scope["path"]
        if n == "/keep":
            kept["send"], kept["receive"] = send, receive
            kept["weak"] = weakref.ref(send)
        elif n == "/weak":
            kept["weak"] = weakref.ref(send)
        elif n == "/use":
            for name in ("send",):
                try:
                    await kept[name]({"type": "http.response.start", "status": 500, "headers": []})
                except RuntimeError as exc:
                    results.append(str(exc))
            msg = await kept["receive"]()
            results.append(msg["type"])
            w = kept["weak"]()
            results.append(w is None or w is not send)
        await hello(scope, receive, send)

    st = serve(app)
    s = st.connect()
    for path in (b"/keep", b"/plain", b"/weak", b"/plain", b"/use", b"/plain"):
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        status, _, body, _ = read_response(s)
        assert status == 200 and body == b"hello"
    assert len(results) == 3
    assert "after response already completed" in results[0]
    assert results[1] == "http.disconnect"
    assert results[2] is True
