"""The opening handshake: scope, accept (subprotocol, extra headers), rejection (403), the denial
response extension, and upgrade requests refused with 400/426 before any app runs."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from websockets.asyncio.client import connect

from ws_apps import Recorder, echo
from wsraw import handshake, wait_for


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_scope(serve):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})

    app = Recorder(body)
    st = serve(app, root_path="/r")

    async def go():
        async with connect(f"ws://127.0.0.1:{st.port}/p%20a/th?x=1&y=2",
                           subprotocols=["one", "two"],
                           additional_headers={"X-Test": "yes"}) as ws:
            with pytest.raises(websockets.ConnectionClosedOK):
                await ws.recv()

    run(go())
    scope = app.scopes[0]
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/r/p a/th"
    assert scope["raw_path"] == b"/r/p%20a/th"
    assert scope["root_path"] == "/r"
    assert scope["query_string"] == b"x=1&y=2"
    assert scope["subprotocols"] == ["one", "two"]
    assert (b"x-test", b"yes") in [tuple(h) for h in scope["headers"]]
    assert scope["client"][0] == "127.0.0.1" and scope["server"] == ("127.0.0.1", st.port)
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert isinstance(scope["state"], dict)
    assert "method" not in scope


def test_scheme_wss_behind_trusted_proxy(serve):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.close"})

    app = Recorder(body)
    st = serve(app, proxy_headers=True, trusted_proxy=lambda host: True)
    s, status, _, _ = handshake(st.port, extra=b"X-Forwarded-Proto: https\r\nX-Forwarded-For: 10.1.2.3\r\n")
    assert status == 403
    assert app.scopes[0]["scheme"] == "wss"
    assert app.scopes[0]["client"][0] == "10.1.2.3"


def test_accept_with_subprotocol_and_headers(serve):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "two",
                    "headers": [(b"x-extra", b"1"), (b"set-cookie", b"a=b")]})
        await send({"type": "websocket.send", "text": "hi"})
        app.events.append(await receive())

    app = Recorder(body)
    st = serve(app)

    async def go():
        async with connect(f"ws://127.0.0.1:{st.port}/", subprotocols=["one", "two"]) as ws:
            assert ws.subprotocol == "two"
            assert ws.response.headers["x-extra"] == "1"
            assert ws.response.headers["set-cookie"] == "a=b"
            assert await ws.recv() == "hi"

    run(go())
    assert wait_for(lambda: app.events)
    assert app.events[0] == {"type": "websocket.disconnect", "code": 1000, "reason": ""}


def test_close_before_accept_is_403(serve):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.close", "code": 4000})
        app.events.append(await receive())

    app = Recorder(body)
    st = serve(app)

    async def go():
        with pytest.raises(websockets.InvalidStatus) as ei:
            async with connect(f"ws://127.0.0.1:{st.port}/"):
                pass
        assert ei.value.response.status_code == 403

    run(go())
    assert wait_for(lambda: app.events)
    assert app.events[0]["type"] == "websocket.disconnect"


def test_denial_response_extension(serve):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"x-why", b"token")]})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry"})

    st = serve(Recorder(body))
    s, status, head, rest = handshake(st.port)
    while len(rest) < 8:
        chunk = s.recv(100)
        if not chunk:
            break
        rest += chunk
    assert status == 401
    assert b"x-why: token" in head and b"content-length: 8" in head
    assert rest == b"no entry"


@pytest.mark.parametrize("bad", ["accept-after-close", "unknown-type", "bad-headers"])
def test_invalid_app_messages_raise_runtime_error(serve, bad):
    async def body(app, scope, receive, send):
        await receive()
        if bad == "unknown-type":
            await send({"type": "websocket.send", "text": "too early"})
        elif bad == "bad-headers":
            await send({"type": "websocket.accept", "headers": [("str", "str")]})
        else:
            await send({"type": "websocket.close"})
            await send({"type": "websocket.accept"})

    app = Recorder(body)
    st = serve(app)
    s, status, _, _ = handshake(st.port)
    assert status in (403, 500)
    assert wait_for(lambda: app.errors)
    assert isinstance(app.errors[0], RuntimeError)
    assert str(app.errors[0])


def test_app_returning_without_handshake_is_500(serve, error_log):
    async def body(app, scope, receive, send):
        await receive()

    st = serve(Recorder(body))
    _, status, _, _ = handshake(st.port)
    assert status == 500
    assert wait_for(lambda: any("without sending handshake" in m for m in error_log.handler.messages()))


def test_app_exception_before_accept_is_500(serve, error_log):
    async def body(app, scope, receive, send):
        raise ValueError("boom")

    st = serve(Recorder(body))
    _, status, _, _ = handshake(st.port)
    assert status == 500
    assert wait_for(lambda: error_log.handler.records)


@pytest.mark.parametrize("extra,status,why", [
    (b"Sec-WebSocket-Version: 8\r\n", 426, b"Sec-WebSocket-Version"),
    (b"Sec-WebSocket-Key: short\r\n", 400, b"Sec-WebSocket-Key"),
])
def test_bad_handshake_headers(serve, extra, status, why):
    import socket

    st = serve(echo)
    s = socket.create_connection(("127.0.0.1", st.port), timeout=5)
    hdrs = {b"Sec-WebSocket-Version": b"13", b"Sec-WebSocket-Key": b"dGhlIHNhbXBsZSBub25jZQ=="}
    name = extra.split(b":")[0]
    hdrs[name] = extra.split(b": ")[1].strip()
    req = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    req += b"".join(k + b": " + v + b"\r\n" for k, v in hdrs.items()) + b"\r\n"
    s.sendall(req)
    data = b""
    while True:
        c = s.recv(4096)
        if not c:
            break
        data += c
    assert data.startswith(b"HTTP/1.1 %d " % status)
    assert why in data
    if status == 426:
        assert b"sec-websocket-version: 13\r\n" in data


def test_missing_key_and_post_are_400(serve):
    import socket

    st = serve(echo)
    for req in (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"):
        s = socket.create_connection(("127.0.0.1", st.port), timeout=5)
        s.sendall(req)
        data = b""
        while True:
            c = s.recv(4096)
            if not c:
                break
            data += c
        assert data.startswith(b"HTTP/1.1 400 "), data


def test_ws_none_refuses_upgrades(serve):
    st = serve(echo, ws="none")
    _, status, _, _ = handshake(st.port)
    assert status == 400


def test_plain_http_still_served(serve):
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        else:
            await echo(scope, receive, send)

    st = serve(app)
    import urllib.request

    assert urllib.request.urlopen(st.url + "/").read() == b"ok"

    async def go():
        async with connect(f"ws://127.0.0.1:{st.port}/") as ws:
            await ws.send("x")
            assert await ws.recv() == "x"

    run(go())


def test_info_log_lines_like_uvicorn(serve, error_log):
    st = serve(echo)

    async def go():
        async with connect(f"ws://127.0.0.1:{st.port}/chat?room=1") as ws:
            await ws.send("x")
            await ws.recv()

    run(go())
    assert wait_for(lambda: "connection closed" in error_log.handler.messages())
    msgs = error_log.handler.messages()
    accepted = [m for m in msgs if m.endswith('"WebSocket /chat?room=1" [accepted]')]
    assert accepted and accepted[0].startswith("('127.0.0.1', ")
    assert "connection open" in msgs
