"""Messages both ways with the websockets client: echo (text, bytes, large, fragmented), pings,
close codes and reasons in both directions, disconnects, and send-after-close errors."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Mapping

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


# -- found by test_ws_app_messages_diff.py ---------------------------------------------------


class _Boom(Exception):
    pass


def _session(st, path="/", extra=b""):
    """A raw upgrade: (status, head lowercased, the rest until the server closed)."""
    s, status, head, rest = handshake(st.port, path, extra=extra)
    s.settimeout(5)
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        rest += chunk
    s.close()
    return status, head.lower(), rest


def _one_send(message_for):
    """An app that makes the send message_for(path) returns (after accept for /open/...)."""
    async def body(app, scope, receive, send):
        await receive()
        if scope["path"].startswith("/open"):
            await send({"type": "websocket.accept"})
        await send(message_for(scope["path"]))
    return Recorder(body)


class _AcceptMapping(Mapping):
    """{"type": "websocket.accept"} as a Mapping that is not a dict."""

    def __getitem__(self, k):
        if k != "type":
            raise KeyError(k)
        return "websocket.accept"

    def __iter__(self):
        return iter(["type"])

    def __len__(self):
        return 1


@pytest.mark.parametrize("message", [["websocket.accept"], "websocket.accept", None,
                                     _AcceptMapping()], ids=["list", "str", "none", "mapping"])
def test_a_message_that_is_not_a_dict_is_a_runtime_error(serve, message):
    """Was: a list or str message raised the TypeError of indexing it; a Mapping was taken."""
    app = _one_send(lambda path: message)
    st = serve(app)
    assert _session(st)[0] == 500
    assert wait_for(lambda: app.errors)
    assert isinstance(app.errors[0], RuntimeError) and "must be a dict" in str(app.errors[0])


def test_raising_header_iterator_reaches_the_app_unchanged(serve):
    """Was: the app's own exception from its headers iterable became a RuntimeError saying the
    headers were not iterable."""
    def headers():
        yield (b"x-a", b"1")
        raise _Boom()

    app = _one_send(lambda path: {"type": "websocket.accept", "headers": headers()})
    st = serve(app)
    assert _session(st)[0] == 500
    assert wait_for(lambda: app.errors)
    assert isinstance(app.errors[0], _Boom)


def test_denial_headers_from_a_generator_and_mutated_after_start(serve):
    """Was: a generator of denial headers was used up by the check at start and the response had
    none; a header list the app changed after start was read again at the end, and an invalid
    pair then failed the body send with the connection left open (the client waited forever)."""
    async def body(app, scope, receive, send):
        await receive()
        gen = scope["path"] == "/gen"
        hs = [[b"x-a", b"1"]]
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": (h for h in hs) if gen else hs})
        hs[0][1] = b"bad\r\nvalue"
        hs.append(("str", "pair"))
        await send({"type": "websocket.http.response.body", "body": b"no"})

    st = serve(Recorder(body))
    for path in ("/gen", "/list"):
        status, head, rest = _session(st, path)
        assert status == 401 and b"\r\nx-a: 1\r\n" in head and rest == b"no"


@pytest.mark.parametrize("status", [100, 101, 199, 600, 999])
def test_denial_status_outside_200_599_is_a_runtime_error(serve, status):
    """Was: any status 100-999 was sent: a 1xx is interim (a client waits on for the response),
    600+ is no HTTP status (RFC 9110 §15)."""
    app = _one_send(lambda path: {"type": "websocket.http.response.start", "status": status})
    st = serve(app)
    assert _session(st)[0] == 500
    assert wait_for(lambda: app.errors)
    assert isinstance(app.errors[0], RuntimeError) and "status" in str(app.errors[0])


@pytest.mark.parametrize("sub", ["other", ""])
def test_subprotocol_the_client_did_not_offer_is_a_runtime_error(serve, sub):
    """Was: sent as it was; RFC 6455 §4.2.2: it must be one the client offered (the client fails
    the connection otherwise)."""
    app = _one_send(lambda path: {"type": "websocket.accept", "subprotocol": sub})
    st = serve(app)
    assert _session(st, extra=b"Sec-WebSocket-Protocol: chat, superchat\r\n")[0] == 500
    assert wait_for(lambda: app.errors)
    assert isinstance(app.errors[0], RuntimeError) and "not offered" in str(app.errors[0])


@pytest.mark.parametrize("name", [b"Sec-WebSocket-Accept", b"sec-websocket-protocol",
                                  b"Sec-WebSocket-Extensions", b"upgrade", b"Connection",
                                  b"content-length", b"transfer-encoding"])
def test_handshake_headers_from_the_app_are_a_runtime_error(serve, name):
    """Was: sent after the server's own (a second Sec-WebSocket-Accept, a Sec-WebSocket-Protocol
    the ASGI spec forbids in headers, a Content-Length on a 101...): a handshake a client fails."""
    app = _one_send(lambda path: {"type": "websocket.accept", "headers": [(name, b"1")]})
    st = serve(app)
    assert _session(st)[0] == 500
    assert wait_for(lambda: app.errors)
    assert isinstance(app.errors[0], RuntimeError) and "server's" in str(app.errors[0])


def test_the_apps_server_header_replaces_ours(serve):
    """Was: the 101 and a denial response carried the app's Server and ours; the denial had no
    Date (RFC 9110 §6.6.1)."""
    async def body(app, scope, receive, send):
        await receive()
        hs = [(b"server", b"mine")]
        if scope["path"] == "/accept":
            await send({"type": "websocket.accept", "headers": hs})
        else:
            await send({"type": "websocket.http.response.start", "status": 403, "headers": hs})
            await send({"type": "websocket.http.response.body", "body": b""})

    st = serve(Recorder(body))
    for path in ("/accept", "/deny"):
        if path == "/accept":
            s, status, head, _ = handshake(st.port, path)
            s.close()
            head = head.lower()
        else:
            status, head, _ = _session(st, path)
        assert head.count(b"\r\nserver:") == 1 and b"\r\nserver: mine" in head
        assert head.count(b"\r\ndate:") == (path == "/deny")


@pytest.mark.parametrize("code,ok", [(1016, False), (2000, False), (2999, False), (1004, False),
                                     (1012, True), (1014, True), (1003, True), (3000, True)])
def test_app_close_codes_are_those_a_peer_accepts(serve, code, ok):
    """Was: any code 1000-4999 but 1004-1006/1015 was sent, 1016-2999 included, which RFC 6455
    §7.4.2 reserves and on which a client (cicada's own parser too) fails the connection."""
    app = _one_send(lambda path: {"type": "websocket.close", "code": code})
    st = serve(app)
    s, status, _, rest = handshake(st.port, "/open")
    got = Reader(s, rest).read_close()
    if ok:
        assert got[0] == code and not app.errors
    else:
        assert got[0] == 1011  # the app's RuntimeError ends it
        assert wait_for(lambda: app.errors) and isinstance(app.errors[0], RuntimeError)


def test_denial_left_unfinished_is_a_500(serve, error_log):
    """Was: the connection was closed without a response when the app failed (or returned) in the
    middle of a denial response, though nothing of it had been written."""
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401})
        await send({"type": "websocket.http.response.body", "body": b"half", "more_body": True})
        if scope["path"] == "/raise":
            raise _Boom()

    st = serve(Recorder(body))
    for path in ("/raise", "/return"):
        status, head, rest = _session(st, path)
        assert status == 500 and rest == b"Internal Server Error"


def test_denial_content_length_must_match_its_body(serve):
    """Was: the app's Content-Length was sent whatever the body's length: the client read a
    body cut short, or waited for bytes that never came."""
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-length", b"3")]})
        try:
            await send({"type": "websocket.http.response.body", "body": b"toolong"})
        except RuntimeError as exc:
            app.events.append(exc)
        await send({"type": "websocket.http.response.body", "body": b"abc"})

    app = Recorder(body)
    st = serve(app)
    status, head, rest = _session(st)
    assert status == 401 and rest == b"abc" and head.count(b"content-length") == 1
    assert len(app.events) == 1 and "content-length" in str(app.events[0])


def test_denial_body_whose_more_body_raises_leaves_nothing_behind(serve):
    """Was: the chunk was kept though its send raised (its more_body's truth raised): sent again,
    it went out twice."""
    class Raises:
        def __bool__(self):
            raise _Boom()

    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401})
        try:
            await send({"type": "websocket.http.response.body", "body": b"x",
                        "more_body": Raises()})
        except _Boom:
            pass
        await send({"type": "websocket.http.response.body", "body": b"x"})

    st = serve(Recorder(body))
    status, head, rest = _session(st)
    assert status == 401 and rest == b"x"
