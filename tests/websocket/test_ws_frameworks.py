"""A FastAPI WebSocket endpoint under cicada gives the same transcript as under uvicorn
(websockets implementation): accept with subprotocol, text/bytes/JSON, custom close code, the
disconnect the endpoint sees, and a denied (403) connection."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import websockets
from websockets.asyncio.client import connect

fastapi = pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from fastapi import FastAPI, WebSocket, WebSocketDisconnect  # noqa: E402


def make_app(seen: list):
    app = FastAPI()

    @app.websocket("/ws/{name}")
    async def ws_endpoint(websocket: WebSocket, name: str, q: str = "none"):
        await websocket.accept(subprotocol="proto2", headers=[(b"x-app", b"fastapi")])
        await websocket.send_text(f"hello {name} {q}")
        try:
            while True:
                msg = await websocket.receive()
                if msg["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(msg["code"], msg.get("reason"))
                if msg.get("text") == "json":
                    await websocket.send_json({"n": 1, "s": "ü"})
                elif msg.get("text") == "close":
                    await websocket.close(code=4001, reason="bye now")
                    return
                elif msg.get("bytes") is not None:
                    await websocket.send_bytes(msg["bytes"][::-1])
                else:
                    await websocket.send_text(msg["text"].upper())
        except WebSocketDisconnect as exc:
            seen.append(("disconnect", exc.code))

    @app.websocket("/deny")
    async def deny(websocket: WebSocket):
        await websocket.close()

    return app


async def transcript(port: int) -> list:
    out = []
    async with connect(f"ws://127.0.0.1:{port}/ws/bob?q=7", subprotocols=["proto1", "proto2"]) as ws:
        out.append(("sub", ws.subprotocol, ws.response.headers.get("x-app")))
        out.append(await ws.recv())
        for m in ("abc", b"\x01\x02\x03", "json"):
            await ws.send(m)
            out.append(await ws.recv())
        await ws.send("close")
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        out.append(("closed", ws.close_code, ws.close_reason))
    async with connect(f"ws://127.0.0.1:{port}/ws/amy", subprotocols=["proto2"]) as ws:
        out.append(await ws.recv())
        await ws.close(4100, "client leaves")
    try:
        async with connect(f"ws://127.0.0.1:{port}/deny"):
            pass
    except websockets.InvalidStatus as exc:
        out.append(("denied", exc.response.status_code))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_uvicorn(app):
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, ws="websockets", lifespan="off",
                            log_level="warning")
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    end = time.monotonic() + 10
    while not server.started and time.monotonic() < end:
        time.sleep(0.02)
    return server, t, port


def test_fastapi_websocket_same_as_uvicorn(serve):
    seen_c, seen_u = [], []
    st = serve(make_app(seen_c))
    got_c = asyncio.run(asyncio.wait_for(transcript(st.port), 20))
    server, t, port = run_uvicorn(make_app(seen_u))
    try:
        got_u = asyncio.run(asyncio.wait_for(transcript(port), 20))
    finally:
        server.should_exit = True
        t.join(10)
    assert got_c == got_u
    assert got_c[0] == ("sub", "proto2", "fastapi")
    assert ("closed", 4001, "bye now") in got_c
    end = time.monotonic() + 5
    while (len(seen_c) < 1 or len(seen_u) < 1) and time.monotonic() < end:
        time.sleep(0.01)
    assert seen_c == seen_u == [("disconnect", 4100)]
