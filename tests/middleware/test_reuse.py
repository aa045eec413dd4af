"""Reused request, response and headers objects must never carry state from one request to the next.

cicada keeps the Request, the call_next response and its `headers` object of a finished request
for the next one when nothing else holds them (mw/: cc_mw_pool_keep). Every test runs a series of
requests through the same app, on asyncio, uvloop and cicada's loop, against BaseHTTPMiddleware
too: attributes set on the request or the response, `request.state`, headers, a body read,
requests that raised or were cancelled, and objects the app kept or holds weak references to."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from starlette.responses import PlainTextResponse

from cicada.middleware import HTTPMiddleware

from .conftest import Exchange, call, http_scope, run


def stack(impl, app, dispatches):
    for d in reversed(dispatches):
        app = impl(app, dispatch=d)
    return app


def checking_dispatch(name, seen):
    """Checks that what the previous request left on its objects is gone, then leaves some.
    Names are per layer: request.state is shared by the layers of a stack, and so (in cicada)
    is the response object a cicada layer hands up untouched, and headers go up the stack."""
    attr = f"left_{name}"

    async def dispatch(request, call_next):
        n = request.headers["x-n"]
        assert not hasattr(request, "left_over"), (name, n)
        assert not hasattr(request.state, attr), (name, n)
        assert request.url.path == f"/r{n}"  # the url cache (_url) is per request
        assert request.query_params.get("n") == n
        request.left_over = n
        setattr(request.state, attr, n)
        response = await call_next(request)
        assert f"x-left-{name}" not in response.headers, (name, n)
        assert not hasattr(response, attr), (name, n)
        assert response.headers["x-app"] == n
        setattr(response, attr, n)
        response.headers[f"x-{name}"] = n
        response.headers[f"x-left-{name}"] = n
        seen.append((name, n, id(request), id(response)))
        return response

    return dispatch


def app_echoing_n():
    async def app(scope, receive, send):
        n = dict(scope["headers"])[b"x-n"]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", n)]})
        await send({"type": "http.response.body", "body": n})

    return app


def scope_n(n):
    scope = http_scope(f"/r{n}", headers=[("x-n", str(n))])
    scope["query_string"] = f"n={n}".encode()
    return scope


@pytest.mark.parametrize("layers", [1, 2, 10])
def test_nothing_carries_over_between_requests(impl, any_loop, layers):
    seen = []
    app = stack(impl, app_echoing_n(), [checking_dispatch(f"l{i}", seen) for i in range(layers)])

    async def main():
        for n in range(30):
            ex = await call(app, scope_n(n))
            assert ex.status == 200 and ex.body == str(n).encode()
            assert ex.headers["x-left-l0"] == str(n)
            assert all(ex.headers[f"x-l{i}"] == str(n) for i in range(layers))

    run(any_loop, main)
    assert len(seen) == 30 * layers
    if impl is HTTPMiddleware:
        # the objects are reused: the test exercised the pools
        assert len({s[2] for s in seen}) < len(seen)


def test_kept_objects_are_never_reused(any_loop):
    """A request or response the app still holds is left alone, with all its attributes."""
    kept = []

    async def dispatch(request, call_next):
        response = await call_next(request)
        response.headers["x-n"] = request.headers["x-n"]
        kept.append((request, response, response.headers))
        return response

    app = HTTPMiddleware(app_echoing_n(), dispatch=dispatch)

    async def main():
        for n in range(20):
            await call(app, scope_n(n))

    run(any_loop, main)
    assert len({id(r) for r, _, _ in kept}) == 20
    for n, (request, response, headers) in enumerate(kept):
        assert request.scope["path"] == f"/r{n}" and request.headers["x-n"] == str(n)
        assert response.status_code == 200 and response.headers is headers
        assert headers["x-n"] == str(n) and headers["x-app"] == str(n)


def test_weakly_referenced_request_dies_with_its_request(impl, any_loop):
    refs = []

    async def dispatch(request, call_next):
        refs.append(weakref.ref(request))
        return await call_next(request)

    app = impl(app_echoing_n(), dispatch=dispatch)

    async def main():
        for n in range(5):
            await call(app, scope_n(n))
            gc.collect()
            assert refs[-1]() is None

    run(any_loop, main)


def test_body_read_is_not_replayed_to_the_next_request(impl, any_loop):
    bodies = []

    async def dispatch(request, call_next):
        if request.headers["x-n"] == "0":
            assert await request.body() == b"first"
        return await call_next(request)

    async def app(scope, receive, send):
        msg = await receive()
        bodies.append(msg.get("body", b""))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = impl(app, dispatch=dispatch)

    async def main():
        await call(mw, scope_n(0), Exchange(body_chunks=(b"first",)))
        await call(mw, scope_n(1), Exchange(body_chunks=(b"second",)))

    run(any_loop, main)
    assert bodies == [b"first", b"second"]


def test_after_errors_and_cancellations(impl, any_loop):
    """Requests that raised (in dispatch or the app) or were cancelled leave nothing behind."""

    def layer(name):
        async def dispatch(request, call_next):
            n = int(request.headers["x-n"])
            assert not hasattr(request, "mark") and not hasattr(request.state, name)
            request.mark = n
            setattr(request.state, name, n)
            if n % 4 == 1:
                raise ValueError(f"dispatch {n}")
            response = await call_next(request)
            assert f"x-{name}" not in response.headers
            response.headers[f"x-{name}"] = str(n)
            return response

        return dispatch

    async def app(scope, receive, send):
        n = int(dict(scope["headers"])[b"x-n"])
        if n % 4 == 2:
            raise KeyError(f"app {n}")
        if n % 4 == 3:
            await asyncio.sleep(3600)  # cancelled by the test
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(n).encode()})

    mw = stack(impl, app, [layer(f"m{i}") for i in range(3)])

    async def main():
        for n in range(24):
            if n % 4 == 3:
                task = asyncio.ensure_future(call(mw, scope_n(n)))
                await asyncio.sleep(0.001)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                continue
            if n % 4 in (1, 2):
                with pytest.raises((ValueError, KeyError)):
                    await call(mw, scope_n(n))
                continue
            ex = await call(mw, scope_n(n))
            assert ex.body == str(n).encode() and ex.headers["x-m0"] == str(n)

    run(any_loop, main)


def test_dispatch_own_response_and_replaced_headers(impl, any_loop):
    """A response of dispatch's own, and a call_next response whose headers were edited, do not
    leak into later call_next responses (of this layer or of the layer above)."""

    def expected(n):
        if n % 3 == 0:
            return {"x-own": "1", "content-length": "3", "content-type": "text/plain; charset=utf-8"}
        if n % 3 == 1:
            return {"x-extra": str(n)}
        return {"x-app": str(n)}

    async def inner(request, call_next):
        n = int(request.headers["x-n"])
        response = await call_next(request)
        assert dict(response.headers) == {"x-app": str(n)}
        if n % 3 == 0:
            return PlainTextResponse("own", headers={"x-own": "1"})
        if n % 3 == 1:
            response.headers["x-extra"] = str(n)
            del response.headers["x-app"]
        return response

    async def outer(request, call_next):
        n = int(request.headers["x-n"])
        response = await call_next(request)
        assert dict(response.headers) == expected(n)
        return response

    mw = stack(impl, app_echoing_n(), [outer, inner])

    async def main():
        for n in range(12):
            ex = await call(mw, scope_n(n))
            assert ex.headers == expected(n)
            assert ex.body == (b"own" if n % 3 == 0 else str(n).encode())

    run(any_loop, main)


@pytest.mark.parametrize("layers", [1, 3])
def test_start_without_headers_key_gets_the_headers_set_in_dispatch(impl, any_loop, layers):
    """The app's start message without a "headers" key: headers set in dispatch go up in a new
    message (the app's own is only forwarded when it carries the response's status and list)."""

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 201})
        await send({"type": "http.response.body", "body": b"x"})

    def layer(i):
        async def dispatch(request, call_next):
            response = await call_next(request)
            response.headers[f"x-l{i}"] = str(i)
            return response

        return dispatch

    mw = stack(impl, app, [layer(i) for i in range(layers)])

    async def main():
        for _ in range(3):
            ex = await call(mw)
            assert ex.status == 201 and ex.body == b"x"
            assert ex.headers == {f"x-l{i}": str(i) for i in range(layers)}

    run(any_loop, main)


def test_status_replaced_after_call_next_goes_up(impl, any_loop):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"a", b"1")],
                    "trailers": False})
        await send({"type": "http.response.body", "body": b"x"})

    async def inner(request, call_next):
        response = await call_next(request)
        response.status_code = 202
        return response

    async def outer(request, call_next):
        response = await call_next(request)
        assert response.status_code == 202
        response.raw_headers = [(b"b", b"2")]
        return response

    mw = stack(impl, app, [outer, inner])

    async def main():
        for _ in range(3):
            ex = await call(mw)
            assert ex.status == 202 and ex.headers == {"b": "2"}

    run(any_loop, main)


def test_more_concurrent_requests_than_the_pools_keep(impl, any_loop):
    """150 requests in flight at once (the pools keep 64 objects of each kind): the extra ones are
    freed, and a second wave gets reused and fresh objects alike, each its own."""

    async def dispatch(request, call_next):
        n = request.headers["x-n"]
        assert not hasattr(request, "mine")
        request.mine = n
        await asyncio.sleep(0.001)
        response = await call_next(request)
        assert request.mine == n and request.headers["x-n"] == n
        response.headers["x-seen"] = n
        return response

    async def app(scope, receive, send):
        n = dict(scope["headers"])[b"x-n"]
        await asyncio.sleep(0.001)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", n)]})
        await send({"type": "http.response.body", "body": n})

    mw = stack(impl, app, [dispatch] * 2)

    async def main():
        for wave in range(2):
            ns = range(wave * 150, wave * 150 + 150)
            exchanges = await asyncio.gather(*(call(mw, scope_n(n)) for n in ns))
            for n, ex in zip(ns, exchanges):
                assert ex.body == str(n).encode()
                assert ex.headers == {"x-app": str(n), "x-seen": str(n)}

    run(any_loop, main)


def test_kept_calls_and_awaitables_stay_finished(any_loop):
    """The layer's own per-request objects (its call, which is also `call_next`, the fused start
    send and the relayed body send) are kept for reuse once done (mw/: spare_call, spare_fuse,
    spare_step), but never while anything else holds them: one kept by the app or dispatch stays
    finished however many requests reuse the others."""
    kept_next, kept_sends = [], []

    async def app(scope, receive, send):
        n = dict(scope["headers"])[b"x-n"]
        start = send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", n)]})
        await start
        body = send({"type": "http.response.body", "body": n})
        await body
        if int(n) % 3 == 0:
            kept_sends.append((start, body))

    async def dispatch(request, call_next):
        if int(request.headers["x-n"]) % 4 == 0:
            kept_next.append(call_next)
        response = await call_next(request)
        response.headers["x-n"] = request.headers["x-n"]
        return response

    mw = HTTPMiddleware(app, dispatch=dispatch)

    async def main():
        for n in range(24):
            ex = await call(mw, scope_n(n))
            assert ex.status == 200 and ex.body == str(n).encode()
            assert ex.headers["x-n"] == str(n) and ex.headers["x-app"] == str(n)

    run(any_loop, main)
    assert len(kept_next) == 6 and len(kept_sends) == 8
    assert len({id(c) for c in kept_next}) == 6
    for call_next in kept_next:
        with pytest.raises(RuntimeError, match="after the request was over"):
            call_next(None)
    for start, body in kept_sends:
        for aw in (start, body):
            with pytest.raises(RuntimeError, match="cannot reuse an already awaited"):
                aw.send(None)
