"""A Litestar app: `cicada examples.litestar_app:app`.

Typed path and query parameters (400 on bad input), a JSON body validated into a dataclass,
streaming, a background task, a WebSocket echo, lifespan hooks that fill `app.state`, 404 and 405.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from litestar import Litestar, Request, get, post, websocket_listener
from litestar.background_tasks import BackgroundTask
from litestar.response import Response, Stream

EVENTS: list[str] = []


@dataclass
class Item:
    name: str
    price: float
    tags: list[str] = field(default_factory=list)


@get("/", sync_to_thread=False)
def index() -> str:
    return "Hello from Litestar!"


@get("/items/{item_id:int}")
async def read_item(item_id: int, q: str | None = None, limit: int = 10) -> dict:
    return {"item": item_id, "q": q, "limit": limit}


@post("/items")
async def create_item(data: Item) -> Item:
    return Item(name=data.name.title(), price=data.price, tags=sorted(data.tags))


@get("/stream")
async def stream(n: int = 5) -> Stream:
    async def lines() -> AsyncGenerator[str, None]:
        for i in range(n):
            yield f"line {i}\n"

    return Stream(lines(), media_type="text/plain")


@post("/tasks", status_code=202)
async def schedule(name: str) -> Response[dict]:
    return Response({"scheduled": name}, background=BackgroundTask(_record, name))


async def _record(name: str) -> None:
    EVENTS.append(name)


@get("/tasks")
async def events() -> dict:
    return {"events": EVENTS}


@get("/state")
async def state(request: Request) -> dict:
    return {"ready": request.app.state.ready}


@websocket_listener("/ws")
async def ws_echo(data: str) -> str:
    return f"echo: {data}"


def fill_state(app: Litestar) -> None:
    app.state.ready = "yes"


HANDLERS = [index, read_item, create_item, stream, schedule, events, state, ws_echo]

app = Litestar(route_handlers=HANDLERS, on_startup=[fill_state])
