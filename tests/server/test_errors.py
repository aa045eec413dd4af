"""Bad clients and bad apps: every failure gets a response or a clear error, then a clean close."""

from __future__ import annotations

import asyncio
import re

import pytest
from apps import hello, read_body
from support.server_thread import read_response, recv_until_closed, wait_for



@pytest.mark.parametrize(
    "request_bytes,status",
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * 150 + b"\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    ],
)
def test_parser_rejections(serve, error_log, request_bytes, status):
    st = serve(hello)
    s = st.connect()
    s.sendall(request_bytes)
    data = recv_until_closed(s)  # the server closes AFTER the response
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert b"connection: close" in head
    assert b"content-type: text/plain; charset=utf-8" in head
    assert body and int(head.split(b"content-length: ")[1].split(b"\r\n")[0]) == len(body)
    assert wait_for(lambda: any("Invalid HTTP request received" in m
                                for m in error_log.handler.messages()))


def test_rejection_after_good_pipelined_request(serve):
    st = serve(hello)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nBad Header: x\r\n\r\n")
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"HTTP/1.1 400 Bad Request" in data


def test_head_too_large_incomplete(serve):
    st = serve(hello, max_head_size=1024)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + b"a" * 2000)
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 431 ")


def test_503_over_limit_concurrency(serve, error_log):
    release = asyncio.Event()
    started = []

    async def app(scope, receive, send):
        started.append(1)
        if len(started) == 1:
            await release.wait()
        await hello(scope, receive, send)

    st = serve(app, limit_concurrency=1)
    a = st.connect()
    a.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert wait_for(lambda: st.server.active_requests == 1)
    b = st.connect()
    b.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = recv_until_closed(b)
    assert data.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert data.endswith(b"Service Unavailable")
    st.loop.call_soon_threadsafe(release.set)
    assert read_response(a)[2] == b"hello"
    assert "Exceeded concurrency limit." in error_log.handler.messages()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_500_on_exception_before_start(serve, error_log, method):
    async def app(scope, receive, send):
        raise ValueError("boom")

    st = serve(app)
    s = st.connect()
    s.sendall(method.encode() + b" / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    if method == "HEAD":  # RFC 9110 §9.3.2: no content, only the length a GET's would have
        assert data.endswith(b"\r\n\r\n") and b"content-length: 21\r\n" in data
    else:
        assert data.endswith(b"\r\n\r\nInternal Server Error")
    assert wait_for(lambda: error_log.handler.records)
    rec = error_log.handler.records[0]
    assert rec.getMessage().startswith("Exception in ASGI application")
    assert rec.exc_info and rec.exc_info[0] is ValueError


def test_500_when_app_is_not_a_coroutine_function(serve, error_log):
    def app(scope, receive, send):
        raise TypeError("not async")

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert recv_until_closed(s).startswith(b"HTTP/1.1 500 ")


def test_500_when_app_returns_a_non_awaitable(serve, error_log):
    def app(scope, receive, send):
        return None  # a plain function: create_task() refuses it

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert recv_until_closed(s).startswith(b"HTTP/1.1 500 ")
    assert wait_for(lambda: error_log.handler.records)
    assert error_log.handler.records[0].exc_info[0] is TypeError


def test_close_on_exception_after_start(serve, error_log):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise ValueError("late boom")

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert not data.endswith(b"0\r\n\r\n")  # the response was cut, not completed
    assert wait_for(lambda: error_log.handler.records)


def test_500_when_app_returns_without_response(serve, error_log):
    async def app(scope, receive, send):
        return None

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert recv_until_closed(s).startswith(b"HTTP/1.1 500 ")
    assert wait_for(lambda: "ASGI callable returned without starting response."
                    in error_log.handler.messages())


def test_500_when_app_returns_after_start_before_any_body(serve, error_log):
    # The head is held back until the first body message, so nothing reached the client yet:
    # a clean 500 is still possible.
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert recv_until_closed(s).startswith(b"HTTP/1.1 500 ")
    assert wait_for(lambda: "ASGI callable returned without completing response."
                    in error_log.handler.messages())


def test_close_when_app_returns_mid_response(serve, error_log):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 200")
    assert wait_for(lambda: "ASGI callable returned without completing response."
                    in error_log.handler.messages())


START = {"type": "http.response.start", "status": 200, "headers": []}

INVALID = {
    "unknown type": [{"type": "http.nope"}],
    "body before start": [{"type": "http.response.body", "body": b"x"}],
    "start twice": [START, START],
    "non-bytes body": [START, {"type": "http.response.body", "body": "text"}],
    "int body": [START, {"type": "http.response.body", "body": 5}],
    "bad status": [{"type": "http.response.start", "status": "200", "headers": []}],
    "status out of range": [{"type": "http.response.start", "status": 42, "headers": []}],
    "CR in header value": [{"type": "http.response.start", "status": 200,
                            "headers": [(b"x", b"a\r\nInjected: 1")]}],
    "NUL in header value": [{"type": "http.response.start", "status": 200,
                             "headers": [(b"x", b"a\x00")]}],
    "non-token header name": [{"type": "http.response.start", "status": 200,
                               "headers": [(b"bad name", b"v")]}],
    "str header": [{"type": "http.response.start", "status": 200, "headers": [("x", "y")]}],
    "header not a pair": [{"type": "http.response.start", "status": 200, "headers": [(b"x",)]}],
    "bad content-length": [{"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", b"abc")]}],
    "body longer than content-length": [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]},
        {"type": "http.response.body", "body": b"abc"}],
    "body shorter than content-length": [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]},
        {"type": "http.response.body", "body": b"abc"}],
    "message after completion": [START, {"type": "http.response.body", "body": b""},
                                 {"type": "http.response.body", "body": b""}],
    "trailers without trailers=True": [START, {"type": "http.response.body", "body": b""},
                                       {"type": "http.response.trailers", "headers": []}],
    "trailers with content-length": [
        {"type": "http.response.start", "status": 200, "trailers": True,
         "headers": [(b"content-length", b"1")]},
        {"type": "http.response.body", "body": b"a"},
        {"type": "http.response.trailers", "headers": []}],
    "not a dict": [[("type", "http.response.start")]],
}


def sending(messages, raised):
    """An app that sends `messages` in order; the RuntimeError a send raises goes to `raised`."""
    async def app(scope, receive, send):
        try:
            for msg in messages:
                await send(msg)
        except RuntimeError as exc:
            raised.append(str(exc))
            raise

    return app


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_app_messages_raise_runtime_error(serve, error_log, case):
    raised = []
    st = serve(sending(INVALID[case], raised))
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    data = recv_until_closed(s)
    assert data == b"" or data.startswith(b"HTTP/1.1 ")
    assert wait_for(lambda: raised and error_log.handler.records)
    assert raised[0]  # a message that names the problem
    assert error_log.handler.records[0].exc_info[0] is RuntimeError


# Messages that once went out as a broken response (and left the client waiting): each is now a
# RuntimeError that names the problem, before anything is written, so the client gets a 500.
INVALID_ON_THE_WIRE = {
    # RFC 9112 §6.1: chunked must be the final coding, or the client reads until the close.
    "chunked not last": ([(b"transfer-encoding", b"chunked, gzip")], 200, False,
                         "chunked must be the last coding"),
    "chunked twice": ([(b"transfer-encoding", b"chunked, chunked")], 200, False,
                      "chunked must be the last coding"),
    "two chunked fields": ([(b"transfer-encoding", b"chunked"), (b"transfer-encoding",
                                                                 b"chunked")], 200, False,
                           "chunked must be the last coding"),
    # RFC 9110 §15.2: a 1xx is interim; sent as the response, the client waits for another.
    "1xx status": ([], 100, False, "from 200 to 599"),
    "103 status": ([], 103, False, "from 200 to 599"),
    # RFC 9110 §15: valid status codes are 100..599.
    "status 600": ([], 600, False, "from 200 to 599"),
    "status 999": ([], 999, False, "from 200 to 599"),
    # A file sent as it is can't carry trailers: the head said chunked, the file went raw.
    "pathsend with trailers": ([], 200, True, "pathsend can't be used with trailers"),
}


@pytest.mark.parametrize("case", list(INVALID_ON_THE_WIRE))
def test_invalid_on_the_wire_is_refused_with_500(serve, error_log, tmp_path, case):
    headers, status, pathsend, message = INVALID_ON_THE_WIRE[case]
    f = tmp_path / "f.txt"
    f.write_bytes(b"0123456789")
    raised = []
    start = {"type": "http.response.start", "status": status, "headers": headers,
             "trailers": pathsend}
    last = ({"type": "http.response.pathsend", "path": str(f)} if pathsend
            else {"type": "http.response.body", "body": b"hello"})
    st = serve(sending([start, last], raised))
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 500 ") and data.endswith(b"Internal Server Error")
    assert raised and message in raised[0]
    assert wait_for(lambda: error_log.handler.records)


def test_transfer_encoding_with_chunked_last_is_kept(serve):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"transfer-encoding", b"gzip, chunked")]})
        await send({"type": "http.response.body", "body": b"not really gzip"})

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        data += s.recv(65536)
    assert b"transfer-encoding: gzip, chunked\r\n" in data
    assert data.endswith(b"\r\n\r\nf\r\nnot really gzip\r\n0\r\n\r\n")


def test_send_while_pathsend_is_sending_the_file(serve, tmp_path):
    """A second send() while a large pathsend still waits for the client (not awaited, or from
    another task) is refused: its bytes once went into the middle of the file's."""
    f = tmp_path / "big"
    f.write_bytes(b"f" * (8 << 20))
    got = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        pending = send({"type": "http.response.pathsend", "path": str(f)})
        try:
            await send({"type": "http.response.body", "body": b"XYZ", "more_body": True})
        except RuntimeError as exc:
            got.append(str(exc))
        await pending

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, body, _ = read_response(s)
    assert (status, len(body)) == (200, 8 << 20) and body.count(b"f") == len(body)
    assert wait_for(lambda: got) and "still sending its file" in got[0]
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # the stream is still in step
    assert read_response(s)[0] == 200


def test_send_after_complete_response_with_connection_close_names_the_mistake(serve):
    """The app completed its response with `connection: close` (so the server closed the
    connection) and sends again: the error is the app's message after completion, not a
    ClientDisconnected that blames a client who did nothing."""
    got = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"connection", b"close")]})
        await send({"type": "http.response.body", "body": b"done"})
        await asyncio.sleep(0.05)  # the close has happened
        try:
            await send({"type": "http.response.body", "body": b"more"})
        except Exception as exc:
            got.append(exc)

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert recv_until_closed(s).endswith(b"\r\n\r\ndone")
    assert wait_for(lambda: got)
    assert type(got[0]) is RuntimeError and "after response already completed" in str(got[0])


MUTATIONS = {
    "inject": lambda headers, pair: pair.__setitem__(1, b"1\r\nInjected: yes"),
    "append content-length": lambda headers, pair: headers.append((b"content-length", b"1")),
    "replace a pair by an int": lambda headers, pair: headers.__setitem__(0, 5),
    "append a str pair": lambda headers, pair: headers.append(("x-b", "2")),
    "empty a pair": lambda headers, pair: pair.clear(),
    "empty the list": lambda headers, pair: headers.clear(),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_header_list_changed_after_start_changes_nothing(serve, error_log, mutation):
    """The head goes out with the first body message. An app that changes the header list it
    gave http.response.start before then (reusing it, say) must get the head it sent: this once
    crashed the process (a pair replaced or emptied) or sent unchecked header lines."""
    async def app(scope, receive, send):
        pair = [b"x-a", b"1"]
        headers = [pair]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        MUTATIONS[mutation](headers, pair)
        await send({"type": "http.response.body", "body": b"hello"})

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, body, head = read_response(s)
    assert (status, body) == (200, b"hello")
    assert headers[b"x-a"] == b"1" and headers[b"content-length"] == b"5"
    assert b"injected" not in head.lower() and b"x-b" not in head
    assert not error_log.handler.records


def test_start_checks_headers_after_the_trailers_flag(serve):
    """'trailers' is read before the headers are checked: a __bool__ that changes the header
    list can't slip an unchecked header into the head."""
    class Sneaky:
        def __init__(self, headers):
            self.headers = headers

        def __bool__(self):
            self.headers.append((b"x-b", b"2\r\nInjected: yes"))
            return False

    raised = []

    async def app(scope, receive, send):
        headers = [(b"x-a", b"1")]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers,
                        "trailers": Sneaky(headers)})
        except RuntimeError as exc:
            raised.append(str(exc))
            raise

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 500 ") and b"Injected" not in data
    assert raised and "Invalid HTTP header value" in raised[0]


def test_headers_iterator_error_reaches_the_app(serve):
    """An iterable of headers that fails while it is read: the app gets its own exception, not
    a RuntimeError saying headers must be iterable (they are)."""
    class Boom(Exception):
        pass

    def headers():
        yield (b"x-a", b"1")
        raise Boom("from the generator")

    raised = []

    async def app(scope, receive, send):
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers()})
        except Exception as exc:
            raised.append(exc)
            raise

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert recv_until_closed(s).startswith(b"HTTP/1.1 500 ")
    assert wait_for(lambda: raised)
    assert type(raised[0]) is Boom


def test_more_body_bool_that_clears_the_message(serve):
    """more_body's __bool__ is app code run while the body is being sent: emptying the message
    there must not free the body under the server (`make asan` would see a use after free)."""
    class Clears:
        msg = None

        def __bool__(self):
            self.msg.clear()
            return False

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        more = Clears()
        msg = {"type": "http.response.body", "body": b"%d" % (10 ** 40), "more_body": more}
        more.msg = msg
        await send(msg)

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert read_response(s)[2] == b"%d" % (10 ** 40)


def test_websocket_upgrade_refused_for_now(serve, error_log):
    st = serve(hello)
    s = st.connect()
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 400 ") and data.endswith(b"Unsupported upgrade request.")
    assert "Unsupported upgrade request." in error_log.handler.messages()


def test_other_upgrade_is_served_as_http(serve):
    st = serve(hello)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    assert read_response(s)[2] == b"hello"


def test_send_after_disconnect_raises_client_disconnected(serve):
    import cicada._core as core

    outcome = []
    gone = asyncio.Event()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        assert (await receive())["type"] == "http.request"
        msg = await receive()
        outcome.append(msg["type"])
        try:
            await send({"type": "http.response.body", "body": b"y", "more_body": True})
        except OSError as exc:
            outcome.append(type(exc))

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    s.recv(100)
    s.close()
    assert wait_for(lambda: len(outcome) == 2)
    assert outcome == ["http.disconnect", core.ClientDisconnected]
    del gone


def test_receive_body_error_mid_body(serve, error_log):
    got = []

    async def app(scope, receive, send):
        while True:
            m = await receive()
            got.append(m["type"])
            if m["type"] == "http.disconnect" or not m.get("more_body"):
                break

    st = serve(app)
    s = st.connect()
    s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\nzz\r\n")
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 400 ")
    assert wait_for(lambda: got and got[-1] == "http.disconnect")


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"default_headers": [(b"x-a", "1")]}, TypeError, "default_headers must be (bytes, bytes) pairs"),
    ({"default_headers": [(b"x-a",)]}, TypeError, "default_headers must be (bytes, bytes) pairs"),
    ({"default_headers": [b"x-a: 1"]}, TypeError, "default_headers must be (bytes, bytes) pairs"),
    ({"default_headers": 5}, TypeError, "default_headers must be a sequence"),
    ({"default_headers": [(b"bad name", b"1")]}, ValueError, "invalid header name"),
    ({"default_headers": [(b"x-a", b"1\r\nx-b: 2")]}, ValueError, "invalid header value"),
    ({"server_header": b"evil\r\nx: 1"}, ValueError, "invalid header value"),
    ({"state": [1]}, TypeError, "state must be a dict or None"),
    ({"trusted_proxy": 1}, TypeError, "trusted_proxy must be callable or None"),
    ({"tls_info": "x"}, TypeError, "tls_info must be callable or None"),
    ({"max_headers": 0}, ValueError, "HttpServer limits must be positive"),
    ({"write_high_water": 10, "write_low_water": 20}, ValueError, "low <= high"),
    ({"timeout_keep_alive": "5"}, TypeError, "must be real number"),
    ({"ws_max_size": 0}, ValueError, "ws_max_size"),
])
def test_http_server_arguments_rejected_with_a_message(kwargs, exc, message):
    """HttpServer is the server's configuration: each bad value names itself (and nothing leaks
    on the way out: `make asan` runs this under LeakSanitizer)."""
    from cicada import _core

    if not hasattr(_core, "HttpServer"):
        pytest.skip("no C server in this build")
    with pytest.raises(exc, match=re.escape(message)):
        _core.HttpServer(lambda *a: None, None, **kwargs)


def test_http_server_arguments_accepted():
    from cicada import _core

    if not hasattr(_core, "HttpServer"):
        pytest.skip("no C server in this build")
    srv = _core.HttpServer(lambda *a: None, None, server_header=None,
                           default_headers=[(b"X-A", b"1"), [b"x-b", b"2"]], state={},
                           trusted_proxy=lambda host: True, max_headers=10)
    assert srv.connection_count == 0


def test_receive_body_error_after_start_before_any_body_is_a_400(serve, error_log):
    """The app started its response (the head is held back until the first body message) and
    then reads a body whose framing breaks: nothing went out yet, so the client still gets the
    400 that names the problem (it used to get a silent close), and the app's send hears that the
    client is gone."""
    got = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            m = await receive()
            got.append(m["type"])
            if m["type"] == "http.disconnect" or not m.get("more_body"):
                break
        try:
            await send({"type": "http.response.body", "body": b"late"})
        except OSError as exc:
            got.append(type(exc).__name__)

    st = serve(app)
    s = st.connect()
    s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\nzz\r\n")
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 400 ") and data.endswith(b"invalid chunk size"), data
    assert wait_for(lambda: got and got[-1] == "ClientDisconnected"), got
    assert not [r for r in error_log.handler.records if r.exc_info]
