"""Graceful shutdown closes open WebSockets with 1001 after in-flight messages, and the server
waits for them; the ws options travel from the CLI / CICADA_* environment to the C server."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import connect

from ws_apps import Recorder
from wsraw import Reader, frame, handshake, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from cicada_proc import CicadaProcess  # noqa: E402

HERE = Path(__file__).resolve().parent


def test_shutdown_sends_1001_after_in_flight_messages(serve):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        app.events.append("accepted")
        m = await receive()
        app.events.append(m)
        for i in range(5):
            await send({"type": "websocket.send", "bytes": bytes([i]) * 100_000})
        app.events.append(await receive())

    app = Recorder(body)
    st = serve(app)
    s, status, _, rest = handshake(st.port)
    r = Reader(s, rest)
    assert wait_for(lambda: app.events)
    s.sendall(frame(0x1, b"go"))
    assert wait_for(lambda: len(app.events) == 2)
    st.call(lambda: st.server.shutdown())
    for i in range(5):
        assert r.read()[2] == bytes([i]) * 100_000
    assert r.read_close() == (1001, b"")
    s.sendall(frame(0x8, b"\x03\xe9"))  # echo 1001
    assert r.at_eof()
    assert wait_for(lambda: len(app.events) == 3)
    assert app.events[2]["type"] == "websocket.disconnect" and app.events[2]["code"] == 1001
    assert wait_for(lambda: st.server.connection_count == 0 and st.server.active_requests == 0)


def _cli(*args, env=None):
    p = CicadaProcess(["ws_cli_app:app", "--port", "0", *args],
                      env={"PYTHONPATH": str(HERE), **(env or {})})
    return p


def test_cli_sigterm_closes_websockets_1001():
    p = _cli()
    try:
        port = p.wait_port()

        async def go():
            async with connect(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send("hello")
                assert await ws.recv() == "hello"
                await ws.send("hold")
                p.signal(signal.SIGTERM)
                got = [await ws.recv() for _ in range(3)]
                assert got == [f"in-flight {i}" for i in range(3)]
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 1001

        asyncio.run(asyncio.wait_for(go(), 20))
        assert p.wait(20) == 0
    finally:
        p.kill()


def test_cli_ws_options_reach_the_server():
    p = _cli("--ws-max-size", "100", "--ws-ping-interval", "0.1", env={"CICADA_WS_PER_MESSAGE_DEFLATE": "false"})
    try:
        port = p.wait_port()
        s, status, head, rest = handshake(port, extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
        assert status == 101 and b"sec-websocket-extensions" not in head.lower()
        r = Reader(s, rest)
        assert r.read()[1] == 0x9  # pinged after 0.1 s
        s.sendall(frame(0x2, b"x" * 101))
        assert r.read_close()[0] == 1009
    finally:
        p.kill()


def test_cli_ws_none_refuses():
    p = _cli("--ws", "none")
    try:
        port = p.wait_port()
        _, status, _, _ = handshake(port)
        assert status == 400
    finally:
        p.kill()
