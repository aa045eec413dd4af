"""pathsend, trailers, proxy headers, scope contents (diffed against uvicorn), access log, state."""

from __future__ import annotations

import logging
import os
import time

import pytest
from apps import hello
from support.server_thread import (ListHandler, ServerThread, read_response, recv_until_closed,
                                   wait_for)



@pytest.mark.parametrize("size", [0, 1, 100_000, 5_000_000])
def test_pathsend(serve, tmp_path, size):
    data = os.urandom(size)
    f = tmp_path / "blob.bin"
    f.write_bytes(data)

    async def app(scope, receive, send):
        assert "http.response.pathsend" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.pathsend", "path": str(f)})

    st = serve(app)
    s = st.connect(timeout=30)
    for _ in range(2):  # keep-alive continues after a file
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body, _ = read_response(s)
        assert status == 200 and int(headers[b"content-length"]) == size
        assert body == data


def test_pathsend_slow_reader_fallback(serve, tmp_path):
    import socket

    data = os.urandom(20_000_000)
    f = tmp_path / "big.bin"
    f.write_bytes(data)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(f)})

    st = serve(app)
    s = st.connect(timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    time.sleep(0.3)  # let the kernel buffers fill so the copy path has to take over
    status, headers, body, _ = read_response(s)
    assert body == data


def test_pathsend_head(serve, tmp_path):
    f = tmp_path / "x.txt"
    f.write_bytes(b"abcdef")

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(f)})

    st = serve(app)
    s = st.connect()
    s.sendall(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, _, _ = read_response(s, head_only=True)
    assert headers[b"content-length"] == b"6"
    assert read_response(s)[2] == b"abcdef"


def test_pathsend_missing_file_raises_in_app(serve, error_log, tmp_path):
    errors = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await send({"type": "http.response.pathsend", "path": str(tmp_path / "nope")})
        except OSError as exc:
            errors.append(exc)
            raise

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert recv_until_closed(s).startswith(b"HTTP/1.1 500 ")
    assert isinstance(errors[0], FileNotFoundError)


def test_trailers(serve):
    async def app(scope, receive, send):
        assert "http.response.trailers" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"trailer", b"x-checksum")]})
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b"def"})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"42")],
                    "more_trailers": False})

    st = serve(app)
    s = st.connect()
    for _ in range(2):
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body, _ = read_response(s)
        assert body == b"abcdef"
        assert headers[b"transfer-encoding"] == b"chunked"
        assert headers[b"trailer:x-checksum"] == b"42"


def test_trailers_single_body_still_chunked(serve):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": []})
        await send({"type": "http.response.body", "body": b"all"})
        await send({"type": "http.response.trailers", "headers": [(b"x-a", b"1")],
                    "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": [(b"x-b", b"2")]})

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, body, _ = read_response(s)
    assert body == b"all" and headers[b"trailer:x-a"] == b"1" and headers[b"trailer:x-b"] == b"2"


def test_trailers_on_http10_are_dropped(serve):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": []})
        await send({"type": "http.response.body", "body": b"x"})
        await send({"type": "http.response.trailers", "headers": [(b"x-a", b"1")]})

    st = serve(app)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = recv_until_closed(s)
    assert data.endswith(b"\r\n\r\nx")


def _scope_capture():
    scopes = []

    async def app(scope, receive, send):
        scopes.append(scope)
        await hello(scope, receive, send)

    return app, scopes


def _request_raw(port, raw):
    import socket

    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(raw)
    data = b""
    while b"hello" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()


REQUESTS = [
    b"GET /a/b%20c/%E2%9C%93?x=1&y=%20 HTTP/1.1\r\nHost: example\r\nUser-Agent: t\r\n"
    b"X-Mixed-Case: V\r\n\r\n",
    b"POST /p HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
    b"GET /bad%FF%FE HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://example.com/abs/path?q HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET http://example.com:8080/x/y HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"DELETE /%2F/x HTTP/1.1\r\nHost: a\r\nAccept: a\r\nAccept: b\r\n\r\n",
]


@pytest.mark.parametrize("target, path, query", [
    (b"http://example.com", "/", b""),
    (b"http://example.com?a=1", "/", b"a=1"),
    (b"https://user@example.com:8443", "/", b""),
    (b"http://example.com/a%20b?x=/y", "/a b", b"x=/y"),
])
def test_absolute_form_with_an_empty_path_is_root(loop_kind, target, path, query):
    """RFC 9110 4.2.3: an empty path in an absolute URI means "/". httptools (uvicorn) answers
    400 to these; cicada serves them."""
    app, scopes = _scope_capture()
    with ServerThread(app, loop_kind=loop_kind) as st:
        _request_raw(st.port, b"GET " + target + b" HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert wait_for(lambda: len(scopes) == 1)
    assert (scopes[0]["path"], scopes[0]["query_string"]) == (path, query)
    assert scopes[0]["raw_path"] == path.replace(" ", "%20").encode()


@pytest.mark.parametrize("root_path", ["", "/api"])
def test_scope_matches_uvicorn(loop_kind, root_path):
    results = {}
    for backend in ("cicada", "uvicorn"):
        app, scopes = _scope_capture()
        kw = {"root_path": root_path}
        with ServerThread(app, loop_kind=loop_kind, backend=backend, **kw) as st:
            for raw in REQUESTS:
                _request_raw(st.port, raw)
            assert wait_for(lambda: len(scopes) == len(REQUESTS))
            results[backend] = scopes
    for ours, theirs in zip(results["cicada"], results["uvicorn"]):
        ours = dict(ours)
        theirs = dict(theirs)
        # ports differ between the two runs; the shape must not
        for key in ("client", "server"):
            assert isinstance(ours[key], tuple) and ours[key][0] == theirs[key][0]
            ours.pop(key), theirs.pop(key)
        assert ours.pop("asgi") == {"version": "3.0", "spec_version": "2.4"}
        assert theirs.pop("asgi")["version"] == "3.0"
        assert ours.pop("extensions") == {"http.response.pathsend": {},
                                          "http.response.trailers": {}}
        theirs.pop("extensions", None)
        ours["headers"] = [tuple(h) for h in ours["headers"]]
        theirs["headers"] = [tuple(h) for h in theirs["headers"]]
        if theirs.get("path") == "/abs/path" or ours.get("raw_path", b"").endswith(b"*"):
            pass
        assert ours == theirs


def test_state_is_a_shallow_copy(serve):
    states = []

    async def app(scope, receive, send):
        states.append(scope["state"])
        scope["state"]["mutated"] = True
        await hello(scope, receive, send)

    shared = {"db": object()}
    st = serve(app, state=shared)
    s = st.connect()
    for _ in range(2):
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        read_response(s)
    assert states[0] is not states[1] and states[0] is not shared
    assert states[1]["db"] is shared["db"] and "mutated" not in shared


def test_unix_socket_gives_none_addresses(tmp_path, loop_kind):
    import asyncio
    import socket
    import threading

    import cicada._core as core

    scopes = []

    async def app(scope, receive, send):
        scopes.append(scope)
        await hello(scope, receive, send)

    path = str(tmp_path / "s.sock")
    ready = threading.Event()
    box = {}

    def run():
        from support.server_thread import new_loop

        loop = new_loop(loop_kind)
        box["loop"] = loop

        async def main():
            srv = core.HttpServer(app, loop)
            box["server"] = await loop.create_unix_server(srv, path)
            ready.set()
            await asyncio.sleep(3600)

        try:
            loop.run_until_complete(main())
        except RuntimeError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait(5)
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert recv_until_closed(s).endswith(b"hello")
    box["loop"].call_soon_threadsafe(box["loop"].stop)
    t.join(5)
    assert scopes[0]["client"] is None and scopes[0]["server"] is None


@pytest.mark.parametrize(
    "peer_trusted,xff,xfp,expected_client,expected_scheme",
    [
        (True, b"1.2.3.4", b"https", ("1.2.3.4", 0), "https"),
        (True, b"9.9.9.9, 1.2.3.4, 127.0.0.1", b"https", ("1.2.3.4", 0), "https"),
        (True, b"[::1]:8080", None, ("::1", 8080), "http"),
        (True, b"5.6.7.8:99", b"wss", ("5.6.7.8", 99), "wss"),
        (True, None, b"ftp", None, "http"),
        (False, b"1.2.3.4", b"https", None, "http"),
    ],
)
def test_proxy_headers(serve, peer_trusted, xff, xfp, expected_client, expected_scheme):
    scopes = []

    async def app(scope, receive, send):
        scopes.append(scope)
        await hello(scope, receive, send)

    trusted = {"127.0.0.1"} if peer_trusted else set()
    st = serve(app, proxy_headers=True, trusted_proxy=lambda host: host in trusted)
    s = st.connect()
    req = b"GET / HTTP/1.1\r\nHost: a\r\n"
    if xff:
        req += b"X-Forwarded-For: " + xff + b"\r\n"
    if xfp:
        req += b"X-Forwarded-Proto: " + xfp + b"\r\n"
    s.sendall(req + b"\r\n")
    read_response(s)
    sc = scopes[0]
    assert sc["scheme"] == expected_scheme
    if expected_client is None:
        assert sc["client"][0] == "127.0.0.1" and sc["client"][1] != 0
    else:
        assert sc["client"] == expected_client


def test_proxy_headers_ignored_when_disabled(serve):
    scopes = []

    async def app(scope, receive, send):
        scopes.append(scope)
        await hello(scope, receive, send)

    st = serve(app, proxy_headers=False, trusted_proxy=lambda host: True)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n\r\n")
    read_response(s)
    assert scopes[0]["scheme"] == "http" and scopes[0]["client"][0] == "127.0.0.1"


def test_access_log_format(serve):
    logger = logging.getLogger("cicada.test.access")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = ListHandler()
    logger.addHandler(handler)
    try:
        st = serve(hello, access_logger=logger)
        s = st.connect()
        s.sendall(b"GET /p%20q?a=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        read_response(s)
        assert wait_for(lambda: handler.records)
        rec = handler.records[0]
        assert rec.msg == '%s - "%s %s HTTP/%s" %d'
        client, method, path, version, status = rec.args
        assert client.startswith("127.0.0.1:") and method == "GET"
        assert path == "/p%20q?a=1" and version == "1.1" and status == 200
    finally:
        logger.removeHandler(handler)


def test_trusted_proxy_raising_gives_500(serve, error_log):
    def trusted(host):
        raise ValueError("bad config")

    st = serve(hello, proxy_headers=True, trusted_proxy=trusted)
    s = st.connect()
    # The predicate is only consulted when there is a forwarded header to apply.
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n")
    assert recv_until_closed(s).startswith(b"HTTP/1.1 500 ")
    assert wait_for(lambda: error_log.handler.records)
    assert error_log.handler.records[0].exc_info[0] is ValueError


def test_trusted_proxy_asked_once_per_connection_and_only_when_needed(serve):
    asked = []
    scopes = []

    def trusted(host):
        asked.append(host)
        return True

    async def app(scope, receive, send):
        scopes.append(scope)
        await hello(scope, receive, send)

    st = serve(app, proxy_headers=True, trusted_proxy=trusted)
    s = st.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    read_response(s)
    assert asked == []  # no forwarded header: nothing to decide
    for ip in (b"1.2.3.4", b"5.6.7.8"):
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: " + ip + b"\r\n\r\n")
        read_response(s)
    assert [sc["client"] for sc in scopes[1:]] == [("1.2.3.4", 0), ("5.6.7.8", 0)]
    # the peer once for the connection, then each forwarded entry (not the peer again)
    assert asked == ["127.0.0.1", "1.2.3.4", "5.6.7.8"]
    s2 = st.connect()
    s2.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n")
    read_response(s2)
    assert scopes[-1]["scheme"] == "https" and asked[-1] == "127.0.0.1"
