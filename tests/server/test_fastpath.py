"""The C fast path between cicada's transport and HttpProtocol (loop/loop.h): taken on cicada's
own loop, and not taken (the generic Python-call path serves instead) on any other transport."""

from __future__ import annotations

import socket

import pytest
from apps import echo, streaming
from support.server_thread import ServerThread, read_response

import cicada._core as core

BIG = b"b" * 200_000  # over CC_ASGI_COALESCE_MAX: sent as several parts in one write


def _exercise(st: ServerThread) -> None:
    """Requests that use every write shape: coalesced head+body, a multi-part big body,
    a chunked stream, pipelined requests in one read, a body split across reads."""
    s = st.connect()
    s.sendall(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    assert read_response(s)[2] == b"GET /a "
    s.sendall(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe")
    s.sendall(b"llo")
    assert read_response(s)[2] == b"POST /p hello"
    s.sendall(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert read_response(s)[2] == b"GET /1 "
    assert read_response(s)[2] == b"GET /2 "
    s.close()


def _big(st: ServerThread) -> None:
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, body, _ = read_response(s)
    assert status == 200 and body == b"x" + BIG + b"y"
    s.close()


def fast_counts():
    c = core._loop_counters()
    return c["fast_reads"], c["fast_writes"]


def test_fast_path_taken_on_cicada_loop(error_log):
    reads0, writes0 = fast_counts()
    with ServerThread(echo, loop_kind="cicada", error_logger=error_log) as st:
        _exercise(st)
    with ServerThread(streaming([b"x", BIG, b"y"]), loop_kind="cicada",
                      error_logger=error_log) as st:
        _big(st)
    reads, writes = fast_counts()
    # a read per request burst the client sent (split sends may arrive as one), and a write
    # (at least) per response
    assert reads - reads0 >= 4
    assert writes - writes0 >= 5
    assert not error_log.handler.records  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["asyncio", "uvloop", "cicada-python-transport"])
def test_generic_path_on_other_transports(kind, error_log, monkeypatch):
    if kind == "cicada-python-transport":
        # cicada's loop with asyncio's Python socket transport: not the C one, so no fast path.
        monkeypatch.setenv("CICADA_C_TRANSPORT", "0")
        kind = "cicada"
    before = fast_counts()
    with ServerThread(echo, loop_kind=kind, error_logger=error_log) as st:
        _exercise(st)
    with ServerThread(streaming([b"x", BIG, b"y"]), loop_kind=kind, error_logger=error_log) as st:
        _big(st)
    assert fast_counts() == before
    assert not error_log.handler.records  # type: ignore[attr-defined]


def test_fast_path_reading_pause_and_resume(error_log):
    """A pipelined burst over the read buffer limit pauses reading (in C) and resumes it as the
    requests are answered; every response arrives, in order."""
    with ServerThread(echo, loop_kind="cicada", error_logger=error_log,
                      read_buffer_limit=4096) as st:
        s = st.connect()
        n = 3000
        reqs = b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(n))
        s.sendall(reqs)
        for i in range(n):
            assert read_response(s)[2] == b"GET /%d " % i
        s.close()
    assert not error_log.handler.records  # type: ignore[attr-defined]


def test_fast_path_write_to_reset_peer(error_log):
    """A client that resets while a big response is queued: the fast write path reports it as a
    disconnect, never an app error or a crash, and the server keeps serving."""
    with ServerThread(streaming([BIG] * 20), loop_kind="cicada", error_logger=error_log) as st:
        s = st.connect()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        s.recv(100)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
        s2 = st.connect()
        s2.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_response(s2)[0] == 200
        s2.close()


def _shaped(messages):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        for message in messages:
            await send(message)

    return app


def _start(headers=(), trailers=False):
    return {"type": "http.response.start", "status": 200, "headers": list(headers),
            "trailers": trailers}


def _body(body, more=False):
    return {"type": "http.response.body", "body": body, "more_body": more}


BIG_SHAPES = {
    # the head, the body and the stream's end in one writelines around the uncopied body
    "big only, chunked": ([_start(), _body(BIG)], {}),
    "big only, content-length": ([_start([(b"content-length", b"%d" % len(BIG))]), _body(BIG)], {}),
    "big then end": ([_start(), _body(BIG, True), _body(b"")], {}),
    "small, big, small": ([_start(), _body(b"x", True), _body(BIG, True), _body(b"y")], {}),
    "big with trailers": ([_start(trailers=True), _body(BIG),
                           {"type": "http.response.trailers", "headers": [(b"x-sum", b"7")],
                            "more_trailers": False}], {b"trailer:x-sum": b"7"}),
}


@pytest.mark.parametrize("loop_kind", ["cicada", "asyncio"])
@pytest.mark.parametrize("shape", list(BIG_SHAPES))
def test_big_bodies_in_every_framing(loop_kind, shape, error_log):
    """A body over CC_ASGI_COALESCE_MAX is written between what precedes it (head, chunk-size
    line) and what follows (chunk end, last chunk, trailers) without being copied; each shape
    arrives whole, and the connection stays usable for the next request."""
    messages, extra = BIG_SHAPES[shape]
    with ServerThread(_shaped(messages), loop_kind=loop_kind, error_logger=error_log) as st:
        s = st.connect()
        for _ in range(2):
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            status, headers, body, _ = read_response(s)
            assert status == 200
            assert body == b"".join(m.get("body", b"") for m in messages)
            for key, value in extra.items():
                assert headers[key] == value
        s.close()
    assert not error_log.handler.records  # type: ignore[attr-defined]
