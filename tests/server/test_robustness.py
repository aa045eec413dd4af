"""Random and hostile client bytes over real sockets: the server always answers with a valid
status line or closes, never crashes or hangs, and keeps serving other clients."""

from __future__ import annotations

import random
import socket

from apps import echo
from support.server_thread import read_response

PIECES = [
    b"GET / HTTP/1.1\r\n", b"POST /x HTTP/1.1\r\n", b"HEAD / HTTP/1.0\r\n", b"GET /%ZZ?\x00 HTTP/1.1\r\n",
    b"Host: a\r\n", b"Content-Length: 5\r\n", b"Content-Length: -1\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n", b"Expect: 100-continue\r\n", b"Connection: close\r\n",
    b"Connection: upgrade\r\nUpgrade: websocket\r\n", b"X: \xff\xfe\r\n", b" folded\r\n", b"\r\n",
    b"5\r\nhello\r\n", b"0\r\n\r\n", b"zz\r\n", b"\n", b"\r", b"hello", b"A" * 9000, b"\x00\x01\x02",
]


def _random_stream(rng: random.Random) -> bytes:
    return b"".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12)))


def _talk(st, data: bytes, rng: random.Random) -> bytes:
    s = st.connect(timeout=3)
    try:
        i = 0
        try:
            while i < len(data):
                n = rng.randint(1, 64)
                s.sendall(data[i:i + n])
                i += n
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and shut its side: read what it said
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def test_random_streams(serve):
    st = serve(echo, timeout_request_head=1.0)
    rng = random.Random(1234)
    for _ in range(150):
        out = _talk(st, _random_stream(rng), rng)
        if out:
            assert out.startswith(b"HTTP/1."), out[:80]
    # still healthy
    s = st.connect()
    s.sendall(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
    assert read_response(s)[2] == b"GET /ok "


def test_error_response_survives_a_client_still_sending(serve):
    """A 400 sent while the client is still uploading must reach it (lingering close), not be
    lost to a connection reset."""
    st = serve(echo)
    for _ in range(5):
        s = st.connect(timeout=5)
        s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\nContent-Length: 1000000\r\n\r\n")
        s.sendall(b"x" * 200000)  # unread by the server when it answers
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        assert out.startswith(b"HTTP/1.1 400 ")
        s.close()


def test_early_response_to_upload_is_delivered(serve):
    """The app answers 413 without reading a large body: the client gets the answer."""
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b"too large"})

    st = serve(app)
    s = st.connect(timeout=5)
    s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 50000000\r\n\r\n")
    s.setblocking(False)
    import time
    deadline = time.monotonic() + 1.0
    out = b""
    while time.monotonic() < deadline:
        try:
            s.send(b"y" * 65536)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            pass
        try:
            out += s.recv(65536)
        except BlockingIOError:
            pass
        if b"too large" in out:
            break
        time.sleep(0.001)
    assert out.startswith(b"HTTP/1.1 413 ") and out.endswith(b"too large")
