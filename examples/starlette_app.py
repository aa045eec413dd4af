"""A Starlette app: `cicada examples.starlette_app:app`. Routes with path params, JSON echo,
streaming, a background task, a 404 handler, and lifespan state."""

from __future__ import annotations

from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

EVENTS: list[str] = []


async def homepage(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello, world!")


async def user(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.path_params["name"], "query": dict(request.query_params)})


async def echo(request: Request) -> JSONResponse:
    try:
        data = await request.json()
    except ValueError:
        return JSONResponse({"error": "invalid JSON"}, status_code=400)
    return JSONResponse({"echo": data, "length": len(await request.body())})


async def stream(request: Request) -> StreamingResponse:
    async def body():
        for i in range(int(request.query_params.get("n", "5"))):
            yield f"line {i}\n"

    return StreamingResponse(body(), media_type="text/plain")


async def task(request: Request) -> JSONResponse:
    name = request.query_params.get("name", "x")
    return JSONResponse({"scheduled": name}, background=BackgroundTask(EVENTS.append, name))


async def events(request: Request) -> JSONResponse:
    return JSONResponse({"events": EVENTS})


async def state(request: Request) -> JSONResponse:
    return JSONResponse({"ready": request.state.ready})


async def not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "nothing here", "path": request.url.path}, status_code=404)


@asynccontextmanager
async def lifespan(app: Starlette):
    yield {"ready": "yes"}


app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/users/{name}", user),
        Route("/echo", echo, methods=["POST"]),
        Route("/stream", stream),
        Route("/tasks", task, methods=["POST"]),
        Route("/tasks", events),
        Route("/state", state),
    ],
    exception_handlers={404: not_found},
    lifespan=lifespan,
)
