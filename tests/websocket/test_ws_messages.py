"""Messages both ways with the websockets client: echo (text, bytes, large, fragmented), pings,
close codes and reasons in both directions, disconnects, and send-after-close errors."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest
import websockets
from websockets.asyncio.client import connect

import cicada._core as core
from ws_apps import Recorder, echo
from wsraw import Reader, close_payload, frame, handshake, wait_for


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


@pytest.mark.parametrize("compression", ["deflate", None])
def test_echo_text_bytes_large_fragmented(serve, compression):
    st = serve(echo)

    async def go():
        async with connect(f"ws://127.0.0.1:{st.port}/", compression=compression,
                           max_size=None) as ws:
            await ws.send("héllo ✓")
            assert await ws.recv() == "héllo ✓"
            await ws.send(b"\x00\xff\x10")
            assert await ws.recv() == b"\x00\xff\x10"
            await ws.send("")
            assert await ws.recv() == ""
            big = bytes(range(256)) * 4096  # 1 MiB
            await ws.send(big)
            assert await ws.recv() == big
            text = "ß" * 600_000
            await ws.send(text)
            assert await ws.recv() == text
            await ws.send(["frag", "men", "ted ✓"])  # a fragmented message
            assert await ws.recv() == "fragmented ✓"
            await ws.send([b"a" * 70000, b"b" * 5])
            assert await ws.recv() == b"a" * 70000 + b"b" * 5
            for i in range(200):
                await ws.send(str(i))
            for i in range(200):
                assert await ws.recv() == str(i)

    run(go())


def test_client_ping_gets_pong(serve):
    st = serve(echo)

    async def go():
        async with connect(f"ws://127.0.0.1:{st.port}/") as ws:
            waiter = await ws.ping(b"data")
            await asyncio.wait_for(waiter, 5)

    run(go())


def test_server_pings_at_interval(serve):
    st = serve(echo, ws_ping_interval=0.1, ws_ping_timeout=5.0)
    s, status, _, rest = handshake(st.port)
    assert status == 101
    r = Reader(s, rest)
    f = r.read()
    assert f[1] == 0x9  # ping
    s.sendall(frame(0xA, f[2]))
    f2 = r.read()
    assert f2[1] == 0x9  # and another after the interval


def test_ping_timeout_closes_with_1011(serve):
    st = serve(echo, ws_ping_interval=0.05, ws_ping_timeout=0.2)
    s, status, _, rest = handshake(st.port)
    assert status == 101
    code = Reader(s, rest).read_close()  # pings are never answered
    assert code[0] == 1011


def test_client_close_code_and_reason_reach_app(serve):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        app.events.append(await receive())

    app = Recorder(body)
    st = serve(app)

    async def go():
        ws = await connect(f"ws://127.0.0.1:{st.port}/")
        await ws.close(4321, "custom reason ✓")
        assert ws.close_code == 4321  # echoed

    run(go())
    assert wait_for(lambda: app.events)
    assert app.events[0] == {"type": "websocket.disconnect", "code": 4321,
                             "reason": "custom reason ✓"}


@pytest.mark.parametrize("code,reason", [(4000, "custom"), (1000, ""), (3001, "x" * 100), (1011, "err")])
def test_app_close_code_and_reason_reach_client(serve, code, reason):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": code, "reason": reason})
        app.events.append(await receive())

    app = Recorder(body)
    st = serve(app)

    async def go():
        async with connect(f"ws://127.0.0.1:{st.port}/") as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == code
            assert ws.close_reason == reason

    run(go())
    assert wait_for(lambda: app.events)
    assert app.events[0]["type"] == "websocket.disconnect"
    assert app.events[0]["code"] == code  # the client's echo


def test_client_vanishing_gives_1006(serve):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        app.events.append(await receive())
        app.events.append(await receive())

    app = Recorder(body)
    st = serve(app)
    s, status, _, _ = handshake(st.port)
    assert status == 101
    s.sendall(frame(0x1, b"last words"))
    s.close()
    assert wait_for(lambda: len(app.events) == 2)
    assert app.events[0] == {"type": "websocket.receive", "text": "last words"}
    assert app.events[1]["type"] == "websocket.disconnect" and app.events[1]["code"] == 1006


def test_send_after_client_close_raises_client_disconnected(serve):
    done = []

    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        app.events.append(await receive())
        try:
            await send({"type": "websocket.send", "text": "late"})
        except core.ClientDisconnected as exc:
            done.append(exc)

    app = Recorder(body)
    st = serve(app)
    s, status, _, rest = handshake(st.port)
    s.sendall(frame(0x8, close_payload(1000)))
    assert Reader(s, rest).read_close() == (1000, b"")
    assert wait_for(lambda: done)
    assert isinstance(done[0], OSError)


def test_send_after_app_close_raises_runtime_error(serve):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})
        await send({"type": "websocket.send", "text": "after"})

    app = Recorder(body)
    st = serve(app)
    s, status, _, rest = handshake(st.port)
    assert Reader(s, rest).read_close()[0] == 1000
    assert wait_for(lambda: app.errors)
    assert isinstance(app.errors[0], RuntimeError)


def test_bad_send_messages(serve):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        for bad in ({"type": "websocket.send"}, {"type": "websocket.send", "text": b"bytes"},
                    {"type": "websocket.close", "code": 1005}, {"type": "nope"}, {"no": "type"}):
            try:
                await send(bad)
            except RuntimeError as exc:
                app.events.append(str(exc))
        await send({"type": "websocket.send", "text": "still ok"})

    app = Recorder(body)
    st = serve(app)

    async def go():
        async with connect(f"ws://127.0.0.1:{st.port}/") as ws:
            assert await ws.recv() == "still ok"

    run(go())
    assert len(app.events) == 5 and all(app.events)


def test_handler_returning_closes_1000_and_exception_1011(serve):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        if scope["path"] == "/fail":
            raise ValueError("boom")

    st = serve(Recorder(body))
    for path, code in (("/ok", 1000), ("/fail", 1011)):
        s, status, _, rest = handshake(st.port, path)
        assert Reader(s, rest).read_close()[0] == code


def test_queue_backpressure_keeps_order(serve):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.sleep(0.3)  # the client floods meanwhile; reading pauses at the queue limit
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            app.events.append(m["bytes"])

    app = Recorder(body)
    st = serve(app, ws_max_queue=2)

    async def go():
        async with connect(f"ws://127.0.0.1:{st.port}/", compression=None) as ws:
            for i in range(300):
                await ws.send(struct.pack("!I", i) + b"x" * 4000)

    run(go())
    assert wait_for(lambda: len(app.events) == 300)
    assert [struct.unpack("!I", m[:4])[0] for m in app.events] == list(range(300))


def test_concurrent_receive_is_an_error(serve):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        t = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        try:
            await receive()
        except RuntimeError as exc:
            app.events.append(exc)
        await send({"type": "websocket.close"})
        t.cancel()

    app = Recorder(body)
    st = serve(app)
    s, status, _, rest = handshake(st.port)
    assert Reader(s, rest).read_close()[0] == 1000
    assert wait_for(lambda: app.events)


def test_cancelled_receive_loses_no_message(serve):
    """asyncio.wait_for(receive(), t) timing out must not swallow the next message."""
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        try:
            await asyncio.wait_for(receive(), 0.05)
        except asyncio.TimeoutError:
            app.events.append("timeout")
        await send({"type": "websocket.send", "text": "ready"})
        await asyncio.sleep(0.2)  # the message arrives while nobody waits
        app.events.append(await receive())

    app = Recorder(body)
    st = serve(app)

    async def go():
        async with connect(f"ws://127.0.0.1:{st.port}/") as ws:
            assert await ws.recv() == "ready"
            await ws.send("kept")
            await asyncio.sleep(0.5)

    run(go())
    assert wait_for(lambda: len(app.events) == 2)
    assert app.events == ["timeout", {"type": "websocket.receive", "text": "kept"}]


def test_send_waits_while_client_does_not_read(serve):
    """send() backpressure: a client that stops reading holds the app back; nothing is lost."""
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        for i in range(200):
            await send({"type": "websocket.send", "bytes": struct.pack("!I", i) + b"x" * 65532})
            app.events.append(i)

    app = Recorder(body)
    st = serve(app)
    s, status, _, rest = handshake(st.port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    time.sleep(0.5)
    assert len(app.events) < 200  # blocked on the paused transport
    r = Reader(s, rest)
    for i in range(200):
        fin, op, p = r.read()
        assert struct.unpack("!I", p[:4])[0] == i and len(p) == 65536
    assert wait_for(lambda: len(app.events) == 200)
