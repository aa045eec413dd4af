"""A FastAPI app exercising the common paths: `cicada examples.fastapi_app:app`.

Path and query parameters, a JSON body with validation (422 on bad input), a streaming
response, a background task, a custom exception handler, and lifespan state.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

EVENTS: list[str] = []


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


class TeapotError(Exception):
    def __init__(self, what: str) -> None:
        self.what = what


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield {"started": True}


app = FastAPI(lifespan=lifespan)


@app.exception_handler(TeapotError)
async def teapot_handler(request: Request, exc: TeapotError) -> JSONResponse:
    return JSONResponse(status_code=418, content={"error": f"I am a teapot, not a {exc.what}"})


@app.get("/")
async def root() -> dict:
    return {"message": "Hello, world!"}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None, limit: int = 10) -> dict:
    return {"item_id": item_id, "q": q, "limit": limit}


@app.post("/items")
async def create_item(item: Item) -> dict:
    return {"name": item.name, "price_with_tax": round(item.price * 1.2, 2), "tags": item.tags}


@app.get("/stream")
async def stream(n: int = 5) -> StreamingResponse:
    async def numbers():
        for i in range(n):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(numbers(), media_type="text/plain")


def record(event: str) -> None:
    EVENTS.append(event)


@app.post("/tasks")
async def start_task(name: str, background: BackgroundTasks) -> dict:
    background.add_task(record, name)
    return {"scheduled": name}


@app.get("/tasks")
async def list_tasks() -> dict:
    return {"events": EVENTS}


@app.get("/teapot/{what}")
async def teapot(what: str) -> dict:
    raise TeapotError(what)


@app.get("/state")
async def state(request: Request) -> dict:
    return {"started": request.state.started}
