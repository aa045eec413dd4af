"""The HTTP/1.1 request parser through its Python binding (cicada.http): fields, framing,
keep-alive, errors with their statuses, limits, incremental use, the chunked decoder, and no
reference leaks on error paths."""

import gc
import resource
import sys

import pytest

from cicada.http import ChunkedDecoder, HTTPParseError, find_head_end, parse_request

HOST = b"Host: example.com\r\n"


def req(head: bytes) -> bytes:
    return head.replace(b"\n", b"\r\n") + b"\r\n"


def test_simple_get_fields():
    data = b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent:  curl/8 \r\n\r\n"
    r = parse_request(data)
    assert r.method == b"GET"
    assert r.target == b"/path?q=1"
    assert r.http_version == "1.1"
    assert r.headers == [(b"host", b"example.com"), (b"user-agent", b"curl/8")]
    assert r.body == "none"
    assert r.content_length == 0
    assert r.keep_alive is True
    assert r.upgrade is False
    assert r.expect_continue is False
    assert r.head_len == len(data)


def test_input_is_not_modified_and_bytearray_memoryview_work():
    data = bytearray(b"GET / HTTP/1.1\r\nHOST: a\r\nX-Mixed-Case: V\r\n\r\n")
    before = bytes(data)
    r = parse_request(data)
    assert bytes(data) == before
    assert r.headers == [(b"host", b"a"), (b"x-mixed-case", b"V")]
    assert parse_request(memoryview(before)).headers == r.headers


@pytest.mark.parametrize(
    "head, keep_alive",
    [
        (b"GET / HTTP/1.1\r\n" + HOST, True),
        (b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n", False),
        (b"GET / HTTP/1.1\r\n" + HOST + b"Connection: foo, CLOSE\r\n", False),
        (b"GET / HTTP/1.0\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n", True),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n", False),
    ],
)
def test_keep_alive(head, keep_alive):
    assert parse_request(head + b"\r\n").keep_alive is keep_alive


def test_upgrade_and_expect():
    r = parse_request(b"GET /ws HTTP/1.1\r\n" + HOST + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert r.upgrade is True
    assert parse_request(b"GET / HTTP/1.1\r\n" + HOST + b"Upgrade: h2c\r\n\r\n").upgrade is False
    # RFC 9110 7.8: Upgrade in an HTTP/1.0 request MUST be ignored.
    r = parse_request(b"GET /ws HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert r.upgrade is False
    r = parse_request(b"PUT / HTTP/1.1\r\n" + HOST + b"Expect: 100-CONTINUE\r\nContent-Length: 2\r\n\r\n")
    assert r.expect_continue is True
    r = parse_request(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert r.expect_continue is False


def test_body_framing():
    r = parse_request(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello")
    assert (r.body, r.content_length) == ("length", 5)
    r = parse_request(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 5, 5\r\n\r\n")
    assert (r.body, r.content_length) == ("length", 5)
    r = parse_request(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 0\r\n\r\n")
    assert (r.body, r.content_length) == ("none", 0)
    r = parse_request(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n")
    assert (r.body, r.content_length) == ("chunked", None)
    r = parse_request(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 18446744073709551615\r\n\r\n")
    assert r.content_length == 2**64 - 1


@pytest.mark.parametrize(
    "data, status, reason_part",
    [
        (b"GET / HTTP/1.1\n" + HOST + b"\r\n", 400, "LF"),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "colon"),
        (b"GET / HTTP/1.1\r\n" + HOST + b"X: a\r\n b\r\n\r\n", 400, "folding"),
        (b"GET / HTTP/1.1\r\nX: a\r\n\r\n", 400, "Host"),
        (b"GET / HTTP/1.1\r\n" + HOST + HOST + b"\r\n", 400, "Host"),
        (b"GET / HTTP/1.1\r\nHost: user@evil.example\r\n\r\n", 400, "invalid Host"),
        (b"GET / HTTP/1.1\r\nHost: a.example/x\r\n\r\n", 400, "invalid Host"),
        (b"GET /\xc3\xa9 HTTP/1.1\r\n" + HOST + b"\r\n", 400, "target"),
        (b"G(T / HTTP/1.1\r\n" + HOST + b"\r\n", 400, "method"),
        (b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 505, "version"),
        (b"GET / HTTP/1.1\r\n" + HOST + b"X: \x00\r\n\r\n", 400, "value"),
        (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n", 400, "Content-Length"),
        (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, "conflicting"),
        (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "both"),
        (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501, "coding"),
        (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400, "final"),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0"),
    ],
)
def test_errors_carry_status_and_reason(data, status, reason_part):
    with pytest.raises(HTTPParseError) as ei:
        parse_request(data)
    assert isinstance(ei.value, ValueError)
    assert ei.value.status == status
    assert reason_part.lower() in ei.value.reason.lower()
    assert str(ei.value) == ei.value.reason


def test_incremental_prefixes():
    data = b"POST /u HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nabc"
    full = parse_request(data)
    for k in range(full.head_len):
        assert parse_request(data[:k]) is None
    for k in range(full.head_len, len(data) + 1):
        assert parse_request(data[:k]) == full


def test_limits():
    with pytest.raises(HTTPParseError) as ei:
        parse_request(b"GET /" + b"a" * 100, max_request_line=50)
    assert ei.value.status == 414
    with pytest.raises(HTTPParseError) as ei:
        parse_request(b"GET / HTTP/1.1\r\nX: " + b"a" * 200, max_head_size=100)
    assert ei.value.status == 431
    many = b"GET / HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: v\r\n" % i for i in range(5)) + b"\r\n"
    assert len(parse_request(many, max_headers=6).headers) == 6
    with pytest.raises(HTTPParseError) as ei:
        parse_request(many, max_headers=5)
    assert ei.value.status == 431
    big = b"GET / HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: v\r\n" % i for i in range(300)) + b"\r\n"
    assert len(parse_request(big, max_headers=1000).headers) == 301
    # Huge limits are fine: nothing is allocated in proportion to them.
    assert len(parse_request(big, max_headers=10**15, max_request_line=sys.maxsize,
                             max_head_size=sys.maxsize).headers) == 301
    with pytest.raises(ValueError):
        parse_request(many, max_headers=-1)
    with pytest.raises(TypeError):
        parse_request(many, bogus=1)
    with pytest.raises(TypeError):
        parse_request("GET / HTTP/1.1\r\n\r\n")


def test_start_offset_walks_a_pipelined_batch():
    one = b"POST /a HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nabc"
    two = b"GET /b HTTP/1.1\r\n" + HOST + b"\r\n"
    data = one + two + b"\r\n" + two
    r1 = parse_request(data)
    off = r1.head_len + r1.content_length
    r2 = parse_request(data, off)
    assert r2.target == b"/b" and r2.head_len == len(two)
    off += r2.head_len
    r3 = parse_request(data, off)  # leading empty line before the third request
    assert r3.target == b"/b" and r3.head_len == len(two) + 2
    assert off + r3.head_len == len(data)
    assert parse_request(data, len(data)) is None
    with pytest.raises(ValueError):
        parse_request(data, len(data) + 1)


def test_large_head_uses_heap_buffer():
    head = b"GET / HTTP/1.1\r\n" + HOST + b"X-Big: " + b"v" * 20000 + b"\r\n\r\n"
    r = parse_request(head)
    assert r.headers[1] == (b"x-big", b"v" * 20000)


def test_find_head_end():
    data = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"
    assert find_head_end(data) == len(data) - 4
    assert find_head_end(data[:-6]) == -1
    assert find_head_end(data, 10) == len(data) - 4


def test_chunked_decoder_every_split():
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    for k in range(len(body) + 1):
        d = ChunkedDecoder()
        out, done, used = d.feed(body[:k])
        got = b"".join(out)
        total = used
        if not done:
            assert used == k
            out, done, used = d.feed(body[k:])
            got += b"".join(out)
            total += used
        assert done and d.done
        assert got == b"hello world"
        assert total == len(body) - 4


def test_chunked_decoder_errors_are_sticky():
    d = ChunkedDecoder()
    with pytest.raises(HTTPParseError) as ei:
        d.feed(b"zz\r\n")
    assert ei.value.status == 400
    with pytest.raises(HTTPParseError):
        d.feed(b"0\r\n\r\n")
    with pytest.raises(HTTPParseError) as ei:
        ChunkedDecoder(max_trailer=10).feed(b"0\r\nX-Long: 0123456789\r\n\r\n")
    assert "trailer" in ei.value.reason
    with pytest.raises(ValueError):
        ChunkedDecoder(max_trailer=0)
    with pytest.raises(TypeError):
        ChunkedDecoder(1, 2)


def _rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


GOOD = b"POST /u HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\nX-Unknown-Name: y\r\n\r\nabc"
BAD = b"POST /u HTTP/1.1\r\n" + HOST + b"Content-Length: x\r\n\r\n"


def _churn(n):
    for _ in range(n):
        parse_request(GOOD)
        parse_request(GOOD[:20])
        try:
            parse_request(BAD)
        except HTTPParseError:
            pass
        try:
            parse_request(GOOD, bogus=1)
        except TypeError:
            pass
        d = ChunkedDecoder()
        d.feed(b"3\r\nabc\r\n0\r\n\r\n")
        try:
            d.feed(b"x")
        except HTTPParseError:
            pass
        try:
            ChunkedDecoder().feed(b"zz")
        except HTTPParseError:
            pass


def test_no_leak_traced_memory():
    """Objects allocated by the binding on success and error paths are all released."""
    import tracemalloc

    _churn(2000)
    gc.collect()
    tracemalloc.start()
    try:
        _churn(1000)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        _churn(20000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"traced memory grew by {grown} bytes over 20k iterations"


@pytest.mark.skipif("libasan" in __import__("os").environ.get("LD_PRELOAD", ""),
                    reason="ASan's quarantine keeps freed memory resident; traced test covers it")
def test_no_leak_flat_rss():
    _churn(20000)
    gc.collect()
    before = _rss_kb()
    _churn(100000)
    gc.collect()
    assert _rss_kb() - before < 4096, "RSS grew by more than 4 MB over 100k iterations"


def test_parsed_request_object():
    data = b"GET / HTTP/1.1\r\n" + HOST + b"\r\n"
    r = parse_request(data)
    assert r == parse_request(data) and not (r != parse_request(data))
    assert r != parse_request(b"GET /x HTTP/1.1\r\n" + HOST + b"\r\n")
    assert repr(r).startswith("ParsedRequest(method=b'GET', target=b'/'")
    with pytest.raises(AttributeError):
        r.method = b"POST"
    with pytest.raises(TypeError):
        type(r)()
    # A cycle through the mutable headers list is collected (the type supports GC).
    r.headers.append(r)
    del r
    assert gc.collect() >= 1
