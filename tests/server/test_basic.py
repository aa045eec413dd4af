"""HttpServer over real sockets: methods, bodies, framing, pipelining, keep-alive, HTTP/1.0."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from apps import echo, hello, read_body, streaming
from support.server_thread import read_response, recv_until_closed


def test_get_and_post(serve):
    st = serve(echo)
    s = st.connect()
    s.sendall(b"GET /x%20y?q=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, body, _ = read_response(s)
    assert status == 200 and body == b"GET /x y "
    assert headers[b"content-length"] == b"9"
    assert b"date" in headers and headers[b"server"] == b"cicada"
    s.sendall(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    status, headers, body, _ = read_response(s)
    assert (status, body) == (200, b"POST /p hello")


def test_httpx_traffic(serve):
    st = serve(echo)
    with httpx.Client(base_url=st.url) as c:
        for i in range(20):
            r = c.post(f"/n{i}", content=b"x" * i)
            assert r.status_code == 200
            assert r.content == f"POST /n{i} ".encode() + b"x" * i
        big = bytes(range(256)) * 4096
        r = c.put("/big", content=big)
        assert r.content == b"PUT /big " + big


@pytest.mark.parametrize("split_every", [1, 3])
def test_chunked_request_split_at_every_byte(serve, split_every):
    st = serve(echo)
    s = st.connect()
    req = (b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nx-t: 1\r\n\r\n")
    for i in range(0, len(req), split_every):
        s.sendall(req[i:i + split_every])
    status, _, body, _ = read_response(s)
    assert (status, body) == (200, b"POST /c abc0123456789abcdef")


def test_content_length_body_split_at_every_byte(serve):
    st = serve(echo)
    s = st.connect()
    req = b"POST /l HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"
    for i in range(len(req)):
        s.sendall(req[i:i + 1])
    assert read_response(s)[2] == b"POST /l hello world"


def test_chunked_response(serve):
    st = serve(streaming([b"a" * 10, b"b" * 100000, b"c"]))
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, body, _ = read_response(s)
    assert headers[b"transfer-encoding"] == b"chunked"
    assert b"content-length" not in headers
    assert body == b"a" * 10 + b"b" * 100000 + b"c"


def test_single_body_gets_content_length_in_one_write(serve):
    st = serve(hello)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, body, _ = read_response(s)
    assert headers[b"content-length"] == b"5" and body == b"hello"


def test_pipelining_in_order(serve):
    async def app(scope, receive, send):
        # later requests finish faster: order must still be kept
        delay = {"/1": 0.05, "/2": 0.0, "/3": 0.01}.get(scope["path"], 0)
        await read_body(receive)
        await asyncio.sleep(delay)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
              b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
              b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
              b"POST /4 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n")
    assert [read_response(s)[2] for _ in range(4)] == [b"/1", b"/2", b"/3", b"/4"]


def test_pipelined_requests_app_not_reading_body(serve):
    st = serve(hello)  # never calls receive()
    s = st.connect()
    s.sendall(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"
              b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    assert read_response(s)[2] == b"hello"
    assert read_response(s)[2] == b"hello"


def test_keep_alive_reuse(serve):
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["client"])
        await hello(scope, receive, send)

    st = serve(app)
    s = st.connect()
    for _ in range(5):
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_response(s)[0] == 200
    assert len(set(seen)) == 1 and len(seen) == 5
    assert st.server.request_count == 5


def test_http10(serve):
    st = serve(hello)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"connection: close\r\n" in data.lower()
    assert data.endswith(b"\r\n\r\nhello")


def test_http10_streaming_is_close_delimited(serve):
    st = serve(streaming([b"ab", b"cd"]))
    s = st.connect()
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = recv_until_closed(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
    assert body == b"abcd"


def test_http10_keep_alive(serve):
    st = serve(hello)
    s = st.connect()
    for _ in range(2):
        s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body, _ = read_response(s)
        assert headers.get(b"connection") == b"keep-alive" and body == b"hello"


def test_head_has_no_body(serve):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})

    st = serve(app)
    s = st.connect()
    s.sendall(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, body, _ = read_response(s, head_only=True)
    assert headers[b"content-length"] == b"5"
    # the next response must start right after the head: no stray body bytes
    status, headers, body, _ = read_response(s)
    assert (status, body) == (200, b"hello")


def test_head_streaming_app(serve):
    st = serve(streaming([b"abc"]))
    s = st.connect()
    s.sendall(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    for _ in range(2):
        status, headers, body, raw = read_response(s, head_only=True)
        assert status == 200
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert read_response(s)[2] == b"abc"


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(serve, status):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
    for _ in range(2):
        st_, headers, body, raw = read_response(s)
        assert st_ == status
        assert b"content-length" not in headers and b"transfer-encoding" not in headers


def test_expect_100_continue_sent_when_app_reads(serve):
    st = serve(echo)
    s = st.connect()
    s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.sendall(b"data")
    assert read_response(s)[2] == b"POST / data"


def test_expect_100_continue_not_sent_when_app_responds_first(serve):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b"too big"})

    st = serve(app)
    s = st.connect()
    s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    status, headers, body, raw = read_response(s)
    assert status == 413 and body == b"too big" and not raw.startswith(b"HTTP/1.1 100")
    # the body never came: the server must not wait for it on this connection
    assert headers.get(b"connection") == b"close"
    assert recv_until_closed(s) == b""


def test_default_and_server_headers(serve):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"Server", b"mine"), (b"X-App", b"1")]})
        await send({"type": "http.response.body", "body": b""})

    st = serve(app, default_headers=[(b"X-Default", b"d")], date_header=False)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, body, raw = read_response(s)
    assert headers[b"server"] == b"mine" and raw.count(b"server:") == 1
    assert headers[b"x-app"] == b"1" and headers[b"x-default"] == b"d"
    assert b"date" not in headers


def test_no_server_header(serve):
    st = serve(hello, server_header=None)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert b"server" not in read_response(s)[1]


def test_app_connection_close(serve):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"connection", b"close")]})
        await send({"type": "http.response.body", "body": b"bye"})

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = recv_until_closed(s)
    assert data.endswith(b"bye") and data.lower().count(b"connection: close") == 1


def test_client_connection_close(serve):
    st = serve(hello)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    data = recv_until_closed(s)
    assert b"connection: close" in data and data.endswith(b"hello")


def test_eof_after_request_still_answers(serve):
    import socket

    st = serve(hello)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    data = recv_until_closed(s)
    assert data.endswith(b"hello")


def test_counters(serve):
    st = serve(hello)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    read_response(s)
    assert st.server.connection_count == 1
    assert st.server.request_count == 1
    s.close()
    import time

    for _ in range(100):
        if st.server.connection_count == 0:
            break
        time.sleep(0.01)
    assert st.server.connection_count == 0 and st.server.active_requests == 0


def test_bytearray_and_memoryview_bodies(serve):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": bytearray(b"ab"), "more_body": True})
        await send({"type": "http.response.body", "body": memoryview(b"cd")})

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert read_response(s)[2] == b"abcd"


def test_date_header_is_imf_fixdate_and_current(serve):
    import email.utils
    import time

    st = serve(hello)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    headers = read_response(s)[1]
    value = headers[b"date"].decode()
    assert value.endswith(" GMT") and len(value) == 29
    when = email.utils.parsedate_to_datetime(value).timestamp()
    assert abs(when - time.time()) < 3


def test_expect_100_continue_chunked_body(serve):
    st = serve(echo)
    s = st.connect()
    s.sendall(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
              b"Expect: 100-continue\r\n\r\n")
    assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.sendall(b"4\r\nbody\r\n0\r\n\r\n")
    status, headers, body, _ = read_response(s)
    assert body == b"POST /c body" and b"connection" not in headers


def test_http10_post_with_body(serve):
    st = serve(echo)
    s = st.connect()
    s.sendall(b"POST /old HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.0 200 OK\r\n") and data.endswith(b"POST /old abc")


def test_large_headers_within_limits(serve):
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["headers"])
        await hello(scope, receive, send)

    st = serve(app)
    s = st.connect()
    hdrs = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 500) for i in range(90))
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n" + hdrs + b"\r\n")
    assert read_response(s)[0] == 200
    assert len(seen[0]) == 91 and seen[0][1] == (b"x-h0", b"v" * 500)
