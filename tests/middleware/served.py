"""The app of test_servers.py: Starlette with `layers` header-adding layers and one that reads
POST bodies, routes for streaming, request bodies and background tasks. A server started as a
process (granian, cicada) imports `tests.middleware.served:app`, whose stack MW_IMPL (base |
cicada) and MW_LAYERS choose."""

from __future__ import annotations

import asyncio
import os
import threading

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from cicada.middleware import HTTPMiddleware


def build_app(impl, layers=1):
    state = {"bg": threading.Event(), "entered": threading.Event(), "release": None}

    async def add_header(request, call_next):
        response = await call_next(request)
        response.headers.append("x-layer", "1")
        return response

    async def hello(request):
        return JSONResponse({"hello": "world"})

    async def echo(request: Request):
        return PlainTextResponse((await request.body())[::-1])

    async def stream(request):
        async def gen():
            for i in range(5):
                await asyncio.sleep(0.001)
                yield b"chunk%d\n" % i

        return StreamingResponse(gen(), media_type="text/plain")

    async def slow_then_bg(request):
        state["entered"].set()
        await asyncio.sleep(0.5)  # the client leaves meanwhile
        return PlainTextResponse("done", background=BackgroundTask(state["bg"].set))

    async def waits_for_fast(request):
        state["release"] = asyncio.Event()

        async def bg():
            await asyncio.wait_for(state["release"].wait(), 10)
            state["bg"].set()

        return PlainTextResponse("slow", background=BackgroundTask(bg))

    async def fast(request):
        state["release"].set()
        return PlainTextResponse("fast")

    async def bg_ran(request):  # for servers in another process: did /bg's task run?
        return PlainTextResponse("yes" if state["bg"].is_set() else "no")

    async def bg_entered(request):  # ... and has /bg's endpoint started?
        return PlainTextResponse("yes" if state["entered"].is_set() else "no")

    async def reads_body(request, call_next):
        if request.method == "POST":
            request.state.seen = len(await request.body())
        response = await call_next(request)
        if request.method == "POST":
            response.headers["x-seen"] = str(request.state.seen)
        return response

    middleware = [Middleware(impl, dispatch=add_header) for _ in range(layers)]
    middleware.append(Middleware(impl, dispatch=reads_body))
    app = Starlette(routes=[
        Route("/", hello), Route("/echo", echo, methods=["POST"]), Route("/stream", stream),
        Route("/bg", slow_then_bg), Route("/bg-ran", bg_ran),
        Route("/bg-entered", bg_entered), Route("/slow", waits_for_fast),
        Route("/fast", fast),
    ], middleware=middleware)
    return app, state


def __getattr__(name):
    if name != "app":
        raise AttributeError(name)
    impl = {"base": BaseHTTPMiddleware, "cicada": HTTPMiddleware}[os.environ["MW_IMPL"]]
    return build_app(impl, int(os.environ.get("MW_LAYERS", "1")))[0]
