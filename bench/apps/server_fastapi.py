"""FastAPI app for bench/suites/server.py: `GET /json` returns a small dict, serialised by FastAPI
as every user app would be (async endpoint, so no threadpool hop).

    PYTHONPATH=bench/apps cicada server_fastapi:app --no-access-log
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/json")
async def json_hello() -> dict:
    return {"message": "Hello, World!", "id": 1, "ok": True}
