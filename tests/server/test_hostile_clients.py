"""Hostile clients at the transport level (test_robustness.py covers hostile bytes): resets in
the middle of large responses and uploads, clients that never read, pipelined requests followed
by a reset, half-closed connections, connect/reset storms. After each, the app must have been
told (its send fails or receive says http.disconnect, its coroutine ends), the server must not
buffer a response the client doesn't read, and the next client must be served normally."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import pytest

from apps import echo as strict_echo
from support.server_thread import read_response, wait_for


async def echo(scope, receive, send):
    """apps.echo, minus its ConnectionError (an app error log line) when the client leaves."""
    try:
        await strict_echo(scope, receive, send)
    except ConnectionError:
        pass


def reset(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def still_serving(st) -> None:
    s = st.connect(timeout=5)
    try:
        s.sendall(b"POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        status, _, body, _ = read_response(s)
        assert (status, body) == (200, b"POST /ok abc")
    finally:
        s.close()


def no_unexpected_errors(error_log) -> None:
    bad = [m for m in error_log.handler.messages() if "Traceback" in m or "Exception in" in m]
    assert not bad, bad


class Tracker:
    """Counts what a hostile-client app went through (from the server thread)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started = self.ended = self.chunks = 0
        self.outcomes = []

    def note(self, what):
        with self.lock:
            self.outcomes.append(what)


def streamer(tracker: Tracker, chunk: bytes, count: int):
    async def app(scope, receive, send):
        if scope["path"] == "/ok" or scope["type"] != "http":
            return await echo(scope, receive, send)
        tracker.started += 1
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(count):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                tracker.chunks += 1
            await send({"type": "http.response.body", "body": b""})
            tracker.note("completed")
        except OSError:
            tracker.note("send failed")
        finally:
            tracker.ended += 1

    return app


def test_reset_in_the_middle_of_a_large_response(serve, error_log):
    tracker = Tracker()
    st = serve(streamer(tracker, b"z" * 65536, 200))
    for _ in range(5):
        s = st.connect(timeout=5)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        got = 0
        while got < 300_000:
            got += len(s.recv(65536))
        reset(s)
    assert wait_for(lambda: tracker.ended == 5), (tracker.ended, tracker.outcomes)
    still_serving(st)
    no_unexpected_errors(error_log)


def test_a_client_that_never_reads_does_not_make_the_server_buffer_everything(serve, error_log):
    tracker = Tracker()
    st = serve(streamer(tracker, b"q" * (1 << 20), 200))  # 200 MiB if nothing pushed back
    s = st.connect(timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
    time.sleep(0.5)
    # flow control stopped the app after a few MiB (kernel buffers + the high-water mark)
    assert tracker.chunks < 40, tracker.chunks
    reset(s)
    assert wait_for(lambda: tracker.ended == 1), tracker.outcomes
    assert tracker.outcomes != ["completed"]
    still_serving(st)
    no_unexpected_errors(error_log)


def test_pipelined_requests_then_a_reset(serve, error_log):
    tracker = Tracker()
    st = serve(streamer(tracker, b"p" * 10000, 5))
    for _ in range(5):
        s = st.connect(timeout=5)
        s.sendall(b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n" * 50)
        time.sleep(0.02)
        reset(s)
    still_serving(st)
    assert wait_for(lambda: tracker.ended == tracker.started), (tracker.started, tracker.ended)
    no_unexpected_errors(error_log)


def test_reset_in_the_middle_of_an_upload(serve, error_log):
    seen = []

    async def app(scope, receive, send):
        if scope["path"] == "/ok":
            return await echo(scope, receive, send)
        total = 0
        while True:
            m = await receive()
            if m["type"] == "http.disconnect":
                seen.append(("disconnect", total))
                return
            total += len(m.get("body", b""))
            if not m.get("more_body"):
                seen.append(("complete", total))
                return

    st = serve(app)
    for _ in range(5):
        s = st.connect(timeout=5)
        s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n")
        s.sendall(b"u" * 300_000)
        time.sleep(0.02)
        reset(s)
    assert wait_for(lambda: len(seen) == 5), seen
    assert all(kind == "disconnect" and total <= 300_000 for kind, total in seen), seen
    still_serving(st)
    no_unexpected_errors(error_log)


def test_connect_and_reset_storm(serve, error_log):
    st = serve(echo)
    partial = [b"", b"GET", b"GET / HTTP/1.1\r\nHo",
               b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nab"]
    for i in range(200):
        s = st.connect(timeout=5)
        if partial[i % 4]:
            s.sendall(partial[i % 4])
        if i % 2:
            reset(s)
        else:
            s.close()
    still_serving(st)
    no_unexpected_errors(error_log)


def test_concurrent_hostile_clients(serve, error_log):
    """All of the above at once from several threads, seeded: interleavings the single-client
    tests can't produce (a reset landing while another connection's response is flushed)."""
    import random

    tracker = Tracker()
    big = streamer(tracker, b"c" * 32768, 40)

    async def app(scope, receive, send):
        if scope["path"] == "/echo" or scope["path"] == "/ok":
            return await echo(scope, receive, send)
        return await big(scope, receive, send)

    st = serve(app)
    failures = []

    def client(seed):
        rng = random.Random(seed)
        try:
            for _ in range(25):
                s = st.connect(timeout=5)
                what = rng.randrange(5)
                try:
                    if what == 0:  # a full exchange
                        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
                        assert read_response(s)[2] == b"POST /echo x"
                    elif what == 1:  # reset mid-response
                        s.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
                        s.recv(rng.randint(1, 100_000))
                    elif what == 2:  # pipelined, unread
                        s.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n" * rng.randint(1, 20))
                    elif what == 3:  # upload cut short
                        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\n"
                                  b"Content-Length: 99999\r\n\r\n")
                        s.sendall(b"u" * rng.randint(0, 50_000))
                    else:  # nothing at all
                        pass
                finally:
                    if rng.random() < 0.5:
                        reset(s)
                    else:
                        s.close()
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert wait_for(lambda: tracker.ended == tracker.started, timeout=10), (
        tracker.started, tracker.ended)
    still_serving(st)
    no_unexpected_errors(error_log)


@pytest.mark.parametrize("request_bytes", [
    b"POST /h HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
    b"POST /h HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
], ids=["content-length", "chunked"])
@pytest.mark.parametrize("delay", [0, 0.05], ids=["app-reads-at-once", "app-reads-late"])
def test_half_closed_client_gets_its_response(serve, error_log, request_bytes, delay):
    """The client half-closes after a complete request: it is answered. Also when the EOF comes
    before the app reads the body, which is all in the buffer (that used to count as a
    disconnect: no response at all)."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await asyncio.sleep(delay)
        await echo(scope, receive, send)

    st = serve(app)
    for _ in range(3):
        s = st.connect(timeout=5)
        s.sendall(request_bytes)
        s.shutdown(socket.SHUT_WR)
        status, _, body, _ = read_response(s)
        assert (status, body) == (200, b"POST /h hi")
        s.close()
    still_serving(st)
    no_unexpected_errors(error_log)


def test_pipelined_request_whose_body_never_comes_after_eof_hears_a_disconnect(serve, error_log):
    """The client sent a request, the head of a second one, and left (EOF while the first ran):
    the second one's receive() must say http.disconnect (it used to wait for good, as the
    transport reads nothing after EOF)."""
    got = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/ok":
            return await echo(scope, receive, send)
        if scope["path"] == "/first":
            await asyncio.sleep(0.05)  # the EOF arrives while this one runs
        got.append((scope["path"], (await receive())["type"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    st = serve(app)
    s = st.connect(timeout=5)
    s.sendall(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
              b"POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    assert wait_for(lambda: len(got) == 2, timeout=3), got
    assert got == [("/first", "http.request"), ("/second", "http.disconnect")]
    s.close()
    still_serving(st)
