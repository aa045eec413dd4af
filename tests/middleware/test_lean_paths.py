"""Paths the driver takes to spend less per request must not change what an app sees.

Message types are compared by identity first (the last equal str an app sent is remembered), and
a finished driver only its call held is kept alive for the next request (mw/mw_driver.c). These
tests send types that are equal but never the same object, or str subclasses, and keep drivers
(a call_next response's body_iterator) past their request, against BaseHTTPMiddleware too."""

from __future__ import annotations

import gc

import pytest

from cicada.middleware import HTTPMiddleware

from .conftest import call, http_scope, run


class Text(str):
    """A str subclass: equal to the ASGI type string, never identical to it."""


def fresh(s: str) -> str:
    """An equal str that is a new object on every call (not interned, not a literal)."""
    return "".join(list(s))


TYPE_MAKERS = {"fresh": fresh, "subclass": Text, "literal": lambda s: s}


@pytest.mark.parametrize("make", list(TYPE_MAKERS))
def test_equal_but_distinct_type_strings(impl, any_loop, make):
    make = TYPE_MAKERS[make]

    def app_sending(n):
        async def app(scope, receive, send):
            await send({"type": make("http.response.start"), "status": 200 + n,
                        "headers": [(b"x-n", str(n).encode())]})
            await send({"type": make("http.response.body"), "body": b"a", "more_body": True})
            await send({"type": make("http.response.body"), "body": str(n).encode()})

        return app

    async def dispatch(request, call_next):
        response = await call_next(request)
        response.headers["x-mw"] = "1"
        return response

    async def main():
        for n in range(6):
            ex = await call(impl(app_sending(n), dispatch=dispatch), http_scope())
            assert ex.status == 200 + n
            assert ex.headers["x-n"] == str(n) and ex.headers["x-mw"] == "1"
            assert ex.body == b"a" + str(n).encode()
            assert ex.events[-1] == "http.response.body"

    run(any_loop, main)


@pytest.mark.parametrize("make", list(TYPE_MAKERS))
def test_debug_and_early_hints_with_distinct_type_strings(any_loop, make):
    """Types other than the start's are still told apart when the start's type is remembered."""
    make = TYPE_MAKERS[make]

    async def app(scope, receive, send):
        await send({"type": make("http.response.early_hint"), "links": ["</a>; rel=preload"]})
        await send({"type": make("http.response.debug"), "info": {"n": 1}})
        await send({"type": make("http.response.start"), "status": 200, "headers": []})
        await send({"type": make("http.response.body"), "body": b"ok"})

    async def dispatch(request, call_next):
        return await call_next(request)

    async def main():
        for _ in range(4):
            ex = await call(HTTPMiddleware(app, dispatch=dispatch), http_scope())
            assert ex.events == ["http.response.early_hint", "http.response.debug",
                                 "http.response.start", "http.response.body"]
            assert ex.sent[1]["info"] == {"n": 1}
            assert ex.body == b"ok"

    run(any_loop, main)


def test_kept_body_iterators_are_never_reused(impl, any_loop):
    """A response body_iterator dispatch keeps outlives its request: no later request gets it."""
    kept = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    async def dispatch(request, call_next):
        response = await call_next(request)
        kept.append(response.body_iterator)
        return response

    async def main():
        for _ in range(10):
            ex = await call(impl(app, dispatch=dispatch), http_scope())
            assert ex.body == b"x"
        gc.collect()
        for it in kept:  # each one's body is over: it ends at once
            with pytest.raises(StopAsyncIteration):
                await it.__anext__()

    run(any_loop, main)
    assert len({id(it) for it in kept}) == len(kept)
