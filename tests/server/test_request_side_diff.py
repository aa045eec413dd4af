"""Differential test of the request side: what an ASGI app gets from receive(), and what the client
gets back, as a client sends bodies in every framing and timing on one keep-alive connection.
cicada's server is judged by a model of RFC 9112/9110 and the ASGI HTTP spec, and compared with
uvicorn's (httptools and h11) where the RFC leaves the server no choice.

Hypothesis generates a *session*: 1-4 requests on one connection, pipelined (all bytes at once,
split at random points with small delays) or sequential (each response read before the next
request goes out). Each request has a method (GET, HEAD, POST, PUT), a version (1.1 or 1.0), a
body framed by Content-Length or chunked (chunk sizes, extensions, trailers, upper/lower-case hex,
leading zeros), maybe `Expect: 100-continue` (the client waits for the 100 or a final response, as
curl does, then sends the body, or gives up on it when the response says close; a pipelining
client sends it at once), maybe
`Connection: close` / `keep-alive`, and a body that may hold a complete request (smuggling bait).
Some requests have malformed framing: a bad chunk size, CL with TE, two different CLs, a CL with
garbage, a TE that is not chunked-final. The session ends normally, or the client closes after a
head, mid-body, before reading the responses, or half-closes (shutdown(SHUT_WR)) after sending.

Each request names the app's receive pattern in its path: read the whole body, read one message
then respond, respond without reading, start the response then read (the head is held back until
the first body message), respond then receive() (must be http.disconnect at once:
the response is complete), read the body then receive() again (must wait: http.disconnect only if
the client went), stream the response while reading, raise after the first message.

`judge()` holds cicada to the model: the bytes the app gets are what the client sent, in order,
with `more_body` true on every message but the last (false exactly when the body is complete);
an http.disconnect only when the client went (or the response is done); 100 Continue only when the
app reads before responding, never for another request and never after a final response; each
response is the right request's (a body is never parsed as a request: no request the client did
not send reaches the app); a response the RFC says closes the connection closes it, one that must
keep it does, and the next pipelined request is served; malformed framing gets a 4xx that names
the problem (a 400 when the head says it, the app's own response or a 400 when the body shows
it), then a close; no hang, no lost server thread, every app exception logged once, nothing else
logged with a traceback.

uvicorn is run on the same sessions; the servers' observations (the client's statuses and bodies,
what each app read, when it heard http.disconnect, when the connection closed) are compared
except where NOT_COMPARED names the clause that leaves the choice open or where uvicorn does what
the RFC or spec forbids (each entry says which).

TEST_REQSIDE_LOOP=asyncio|uvloop runs cicada's server on that loop instead of cicada's own.
TEST_REQSIDE_EXAMPLES=N runs N examples instead of the CI default (e.g. 3000 to hunt, about
two minutes per 2000; pass --timeout=0, past pytest-timeout's limit);
TEST_REQSIDE_SEED=S draws other examples than the derandomised CI ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import os
import socket
import time

import pytest

hypothesis = pytest.importorskip("hypothesis")
uvicorn = pytest.importorskip("uvicorn")

from hypothesis import example, given, seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from support.hunt import hunt_settings  # noqa: E402
from support.server_thread import against_uvicorn  # noqa: E402

EXAMPLES, _settings, SEED = hunt_settings("TEST_REQSIDE", 150)
LOOP = os.environ.get("TEST_REQSIDE_LOOP", "cicada")  # the loop cicada's server runs on
TIMEOUT = 5.0  # a client read (or an app's receive) that has not ended by then is a hang
AGAIN_WAIT = 0.05  # receive() after the whole body: gives up after this if the client stays
EXPECT_WAIT = 0.1  # a client with Expect: 100-continue sends the body anyway after this
SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

# --- sessions -----------------------------------------------------------------------------------

PATTERNS = ["all", "part", "none", "after", "again", "stream", "late", "raise"]
READS_FIRST = {"all", "part", "again", "raise"}  # receive() before http.response.start
HEAD_BAD = ["cl+te", "two-cl", "cl-garbage", "te-not-chunked"]  # the head shows it: a 400
BODY_BAD = ["bad-chunk-size", "chunk-overlong"]  # only the body shows it


@dataclasses.dataclass
class Req:
    method: str = "POST"
    version: str = "1.1"
    framing: str = "cl"  # none, cl, chunked, or one of HEAD_BAD / BODY_BAD
    body: bytes = b""
    chunks: tuple = ()  # chunked: the sizes the body is cut into
    upper: bool = False  # chunk sizes in upper-case hex
    zeros: int = 0  # leading zeros on each chunk size
    ext: bool = False  # chunk extensions
    trailers: bool = False
    expect: bool = False
    conn: str = ""  # Connection: "", "close", "keep-alive"
    app: str = "all"

    def __repr__(self):
        fields = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                  if getattr(self, f.name) != f.default and f.name != "body"]
        if self.body:
            fields.append(f"body=<{len(self.body)}: {self.body[:24]!r}>")
        return f"Req({', '.join(fields)})"


@dataclasses.dataclass
class Session:
    reqs: list
    pipelined: bool = False
    ending: str = "normal"  # normal, close-after-head, close-mid-body, close-before-response,
    #                          half-close
    cuts: tuple = ()  # fractions of the byte stream after which the client pauses
    pause: float = 0.0


def _size_line(n: int, r: Req) -> bytes:
    h = (b"%X" if r.upper else b"%x") % n
    return b"0" * r.zeros + h + (b";ext=1;q=\"a b\"" if r.ext else b"") + b"\r\n"


def encode(r: Req, path: str) -> tuple[bytes, bytes]:
    """(head, body bytes on the wire) for a request."""
    lines = [f"{r.method} {path} HTTP/{r.version}".encode(), b"Host: a"]
    body = r.body
    wire = b""
    f = r.framing
    if f == "cl" or (f == "none" and False):
        lines.append(b"Content-Length: %d" % len(body))
        wire = body
    elif f in ("chunked", "bad-chunk-size", "chunk-overlong"):
        lines.append(b"Transfer-Encoding: chunked")
        pos = 0
        parts = []
        for n in r.chunks:
            parts.append(_size_line(n, r) + body[pos:pos + n] + b"\r\n")
            pos += n
        if f == "bad-chunk-size":
            parts.insert(len(parts) // 2, b"zz\r\nab\r\n")
        elif f == "chunk-overlong":
            parts.insert(len(parts) // 2, b"2\r\nabcd\r\n")
        parts.append(b"0" * r.zeros + b"0\r\n" + (b"X-Trailer: t\r\n" if r.trailers else b"") +
                     b"\r\n")
        wire = b"".join(parts)
    elif f == "cl+te":
        lines += [b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"]
        wire = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"
    elif f == "two-cl":
        lines += [b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 1)]
        wire = body
    elif f == "cl-garbage":
        lines.append(b"Content-Length: %dx" % len(body))
        wire = body
    elif f == "te-not-chunked":
        lines.append(b"Transfer-Encoding: gzip")
        wire = body
    if r.expect:
        lines.append(b"Expect: 100-continue")
    if r.conn:
        lines.append(b"Connection: " + r.conn.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n", wire


# --- the app --------------------------------------------------------------------------------------


class Boom(Exception):
    """The app's own exception (pattern "raise")."""


@dataclasses.dataclass
class Rec:
    """What the app saw for one request."""

    msgs: list = dataclasses.field(default_factory=list)  # ("req", body, more) / ("disc",) /
    #                                                        ("timeout",) / ("hang",)
    send_failed: bool = False
    done: bool = False

    def __repr__(self):
        ms = [(m[0], f"<{len(m[1])}: {m[1][:16]!r}>", m[2]) if m[0] == "req" else m
              for m in self.msgs]
        return f"Rec({ms}, send_failed={self.send_failed}, done={self.done})"


class App:
    def __init__(self):
        self.records: dict[str, Rec] = {}
        self.unexpected: list = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        path = scope["path"]
        parts = path.split("/")
        if path == "/fresh":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"fresh"})
            return
        if len(parts) != 4 or parts[1][:1] != "s" or parts[3] not in PATTERNS:
            self.unexpected.append(path)  # never sent as a request: smuggled
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"smuggled"})
            return
        rec = self.records[path] = Rec()
        try:
            await self.run(parts[3], int(parts[2][1:]), rec, receive, send)
        finally:
            rec.done = True

    async def recv(self, rec, receive, wait=TIMEOUT):
        try:
            m = await asyncio.wait_for(receive(), wait)
        except asyncio.TimeoutError:
            rec.msgs.append(("timeout",) if wait != TIMEOUT else ("hang",))
            return None
        if m["type"] == "http.request":
            rec.msgs.append(("req", bytes(m.get("body", b"")), bool(m.get("more_body", False))))
            return m
        rec.msgs.append(("disc",) if m["type"] == "http.disconnect" else (m["type"],))
        return None

    async def read_all(self, rec, receive, between=None):
        while True:
            m = await self.recv(rec, receive)
            if m is None or not m.get("more_body", False):
                return m is not None
            if between:
                await between()

    async def send(self, rec, send, msg):
        if rec.send_failed:
            return
        try:
            await send(msg)
        except OSError:  # cicada: ClientDisconnected once the client left
            rec.send_failed = True

    async def respond(self, rec, send, body, headers=()):
        await self.send(rec, send, {"type": "http.response.start", "status": 200,
                                    "headers": list(headers)})
        await self.send(rec, send, {"type": "http.response.body", "body": body})

    async def run(self, pattern, i, rec, receive, send):
        body = b"r%d" % i
        if pattern == "all":
            await self.read_all(rec, receive)
            await self.respond(rec, send, body)
        elif pattern == "part":
            await self.recv(rec, receive)
            await self.respond(rec, send, body)
        elif pattern == "none":
            await self.respond(rec, send, body)
        elif pattern == "after":
            await self.respond(rec, send, body)
            await self.recv(rec, receive, AGAIN_WAIT)
        elif pattern == "again":
            if await self.read_all(rec, receive):
                await self.recv(rec, receive, AGAIN_WAIT)
            await self.respond(rec, send, body)
        elif pattern == "stream":
            await self.send(rec, send, {"type": "http.response.start", "status": 200,
                                        "headers": []})
            await self.send(rec, send, {"type": "http.response.body", "body": b"s",
                                        "more_body": True})

            async def between():
                await self.send(rec, send, {"type": "http.response.body", "body": b"",
                                            "more_body": True})

            await self.read_all(rec, receive, between)
            await self.send(rec, send, {"type": "http.response.body", "body": body})
        elif pattern == "late":  # start (the head is not on the wire yet), then read
            await self.send(rec, send, {"type": "http.response.start", "status": 200,
                                        "headers": []})
            await self.read_all(rec, receive)
            await self.send(rec, send, {"type": "http.response.body", "body": body})
        elif pattern == "raise":
            await self.recv(rec, receive)
            raise Boom("raised mid-read")


def expected_body(r: Req, i: int) -> bytes:
    if r.method == "HEAD":
        return b""
    return (b"s" if r.app == "stream" else b"") + b"r%d" % i


# --- the client ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Resp:
    status: int
    headers: dict
    body: bytes
    interim: int  # 100 Continue responses before it


@dataclasses.dataclass
class Client:
    responses: list  # Resp per request answered, in order
    closed: bool  # the server closed the connection after the last of them
    hang: bool  # a read did not end within TIMEOUT
    early_100: list  # per request: a 100 came before the client sent the body (Expect)
    sent_body: list  # per request: the client sent (all of) the body
    error: str = ""

    def __repr__(self):
        rs = [(r.status, r.body[:40], r.interim, r.headers.get(b"connection")) for r in
              self.responses]
        return (f"Client(responses={rs}, closed={self.closed}, hang={self.hang}, "
                f"early_100={self.early_100}, sent_body={self.sent_body}, error={self.error!r})")


class Reader:
    """Reads responses off a socket; knows which requests were HEAD."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b""
        self.eof = False

    def fill(self, deadline) -> bool:
        """More bytes; False at EOF. Raises socket.timeout past the deadline."""
        if self.eof:
            return False
        self.s.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            chunk = self.s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def head(self, deadline):
        """(status, headers) of the next response head, or None at EOF."""
        while b"\r\n\r\n" not in self.buf:
            if not self.fill(deadline):
                return None
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        first = lines[0].split(b" ")
        if len(first) < 2 or not first[0].startswith(b"HTTP/1.") or not first[1].isdigit():
            raise ValueError(f"unparseable response head {head[:80]!r}")
        status = int(first[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
        return status, headers

    def peek(self, deadline):
        """Wait for the next response head without taking it, unless it is a 100 Continue:
        (status, headers) or None at EOF. Raises socket.timeout past the deadline."""
        while b"\r\n\r\n" not in self.buf:
            if not self.fill(deadline):
                return None
        saved = self.buf
        status, headers = self.head(deadline)
        if status != 100:
            self.buf = saved
        return status, headers

    def response(self, is_head, deadline, stop_at_100=False):
        """The next final response (Resp), None at EOF before one; with stop_at_100 a 100
        Continue is returned as it comes (status 100)."""
        interim = 0
        while True:
            h = self.head(deadline)
            if h is None:
                return None
            status, headers = h
            if status == 100:
                interim += 1
                if stop_at_100:
                    return Resp(100, headers, b"", interim)
                continue
            break
        body = b""
        if is_head or status in (204, 304):
            pass
        elif b"content-length" in headers:
            n = int(headers[b"content-length"])
            while len(self.buf) < n:
                if not self.fill(deadline):
                    return None
            body, self.buf = self.buf[:n], self.buf[n:]
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                while b"\r\n" not in self.buf:
                    if not self.fill(deadline):
                        return None
                line, _, self.buf = self.buf.partition(b"\r\n")
                n = int(line.split(b";")[0], 16)
                while len(self.buf) < n + 2:
                    if not self.fill(deadline):
                        return None
                if n == 0:
                    while b"\r\n\r\n" not in b"\r\n" + self.buf:
                        if not self.fill(deadline):
                            return None
                    _, _, self.buf = (b"\r\n" + self.buf).partition(b"\r\n\r\n")
                    break
                body += self.buf[:n]
                self.buf = self.buf[n + 2:]
        else:
            while self.fill(deadline):
                pass
            body, self.buf = self.buf, b""
        return Resp(status, headers, body, interim)

    def closed(self, deadline) -> bool:
        """Whether the server closes (EOF with nothing more) by the deadline."""
        try:
            while self.fill(deadline):
                pass
        except socket.timeout:
            return False
        return True


def send_split(sock, data: bytes, sess: Session, offset: int, total: int) -> None:
    """Send data (bytes offset..offset+len of the session's stream), pausing at the cuts. A
    server that closed (after a 400, say) may reset the rest: the client then reads what came."""
    try:
        _send_split(sock, data, sess, offset, total)
    except (BrokenPipeError, ConnectionResetError):
        pass


def _send_split(sock, data, sess, offset, total):
    pos = 0
    for c in sess.cuts:
        at = int(c * total) - offset
        if pos < at < len(data):
            sock.sendall(data[pos:at])
            time.sleep(sess.pause)
            pos = at
    if pos < len(data):
        sock.sendall(data[pos:])


def run_session(server, sess: Session, sid: str, apps_done=lambda: True) -> Client:
    s = server.connect(TIMEOUT)
    rd = Reader(s)
    reqs = sess.reqs
    wires = [encode(r, f"/{sid}/r{i}/{r.app}") for i, r in enumerate(reqs)]
    total = sum(len(h) + len(b) for h, b in wires)
    client = Client([], False, False, [False] * len(reqs), [False] * len(reqs))
    deadline = time.monotonic() + TIMEOUT
    last = len(reqs) - 1
    try:
        if sess.pipelined:
            stream = b"".join(h + b for h, b in wires)
            if sess.ending == "close-after-head":
                stream = stream[:len(stream) - len(wires[-1][1])]
            elif sess.ending == "close-mid-body":
                stream = stream[:len(stream) - len(wires[-1][1]) // 2 - 1]
            send_split(s, stream, sess, 0, total)
            client.sent_body = [True] * len(reqs)
            if sess.ending not in ("normal", "half-close"):
                client.sent_body[-1] = sess.ending == "close-before-response"
                s.close()
                return client
            if sess.ending == "half-close":
                half_close(s)
            for r in reqs:
                resp = rd.response(r.method == "HEAD", deadline)
                if resp is None:
                    client.closed = True
                    return client
                client.responses.append(resp)
        else:
            offset = 0
            for i, (r, (head, body)) in enumerate(zip(reqs, wires)):
                last_one = i == last
                if last_one and sess.ending == "close-after-head":
                    send_split(s, head, sess, offset, total)
                    s.close()
                    return client
                if last_one and sess.ending == "close-mid-body":
                    send_split(s, head + body[:len(body) // 2], sess, offset, total)
                    s.close()
                    return client
                send_split(s, head, sess, offset, total)
                offset += len(head)
                send_body = True
                if r.expect:  # wait for the 100 (or a final response's head), as curl does
                    try:
                        got = rd.peek(time.monotonic() + EXPECT_WAIT)
                    except socket.timeout:
                        got = "timeout"
                    if got is None:
                        client.closed = True
                        return client
                    if got != "timeout" and got[0] == 100:
                        client.early_100[i] = True
                    elif got != "timeout":  # a final response first: curl sends the body
                        # after a 2xx, and stops on an error that closes the connection
                        send_body = got[0] < 300 or \
                            got[1].get(b"connection", b"").lower() != b"close"
                if send_body:
                    send_split(s, body, sess, offset, total)
                    client.sent_body[i] = True
                offset += len(body)
                if last_one and sess.ending == "close-before-response":
                    s.close()
                    return client
                if last_one and sess.ending == "half-close":
                    half_close(s)
                resp = rd.response(r.method == "HEAD", deadline)
                if resp is None:
                    client.closed = True
                    return client
                client.responses.append(resp)
                if resp.headers.get(b"connection", b"").lower() == b"close":
                    break
        client.closed = rd.closed(time.monotonic() + 0.5) if must_close_probe(sess, client) \
            else False
        # A response can be complete on the wire before its app is done (HEAD, a streamed
        # one): a client that stays gives the apps their time before it goes.
        end = time.monotonic() + TIMEOUT
        while not apps_done() and time.monotonic() < end:
            time.sleep(0.002)
    except socket.timeout:
        client.hang = True
    except (ConnectionError, OSError, ValueError) as exc:
        client.error = repr(exc)
    finally:
        s.close()
    return client


def half_close(sock) -> None:
    """shutdown(SHUT_WR); a server that closed already (connection: close) may have reset the
    connection for the bytes that came after: the responses may still be readable."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def must_close_probe(sess, client) -> bool:
    """Probe for the close only where it is announced (cheap) or the client half-closed."""
    if not client.responses:
        return False
    last = client.responses[-1]
    return sess.ending == "half-close" or \
        last.headers.get(b"connection", b"").lower() == b"close" or last.status >= 400


# --- the model ------------------------------------------------------------------------------------


def closes_after(r: Req, rec: Rec | None, resp: Resp) -> str:
    """"must", "never" or "either": whether the RFC (and cicada's documented rules) close the
    connection after this request's response."""
    if r.framing in HEAD_BAD or r.framing in BODY_BAD or resp.status >= 400:
        return "must"
    if r.conn == "close" or (r.version == "1.0" and r.conn != "keep-alive"):
        return "must"
    read_all = rec is not None and any(m[0] == "req" and not m[2] for m in rec.msgs)
    if r.expect and r.app not in READS_FIRST and has_body(r):
        return "must"  # docs/server.md: the client may still wait for a 100 that never comes
    if r.version == "1.0" or not read_all or r.app == "stream":
        # an unread body is skipped if buffered, else the connection closes (announced: the
        # judge checks the header), and so when the head went out before the body was in;
        # an HTTP/1.0 keep-alive is the server's choice
        return "either"
    return "never"


def has_body(r: Req) -> bool:
    return bool(r.body) or r.framing != "cl"


def check_msgs(r: Req, rec: Rec, complete_expected: bool, ctx: str) -> None:
    """The body bytes the app saw are what the client sent, in order, with right more_body."""
    want = r.body
    got = b""
    ended = False
    for k, m in enumerate(rec.msgs):
        if m[0] == "req":
            assert not ended, "a message after more_body: False or a disconnect" + ctx
            got += m[1]
            assert want.startswith(got), "the app got bytes the client did not send" + ctx
            if not m[2]:
                assert got == want, "more_body: False before the body was complete" + ctx
                ended = True
        elif m[0] == "disc":
            ended = True
        elif m[0] == "hang":
            raise AssertionError("receive() hung" + ctx)
    if complete_expected and r.app in ("all", "again", "stream", "late"):
        assert got == want and any(m[0] == "req" and not m[2] for m in rec.msgs), \
            "the app did not get the whole body" + ctx


def judge(sess: Session, client: Client, recs: dict, unexpected: list, logged: int,
          sid: str) -> None:
    ctx = f"\nsession={sess!r}\nclient={client!r}\nrecords={recs!r}"[:6000]
    assert not client.hang, "hang: the client's read did not end" + ctx
    assert "unparseable" not in client.error, "bytes that are not a response" + ctx
    assert not unexpected, "a request the client never sent reached the app" + ctx
    reqs = sess.reqs
    normal = sess.ending in ("normal", "half-close")
    raised = 0
    closed_at = None
    for i, r in enumerate(reqs):
        rec = recs.get(f"/{sid}/r{i}/{r.app}")
        resp = client.responses[i] if i < len(client.responses) else None
        c = f"\nrequest {i}: {r!r}" + ctx
        if closed_at is not None:
            assert rec is None, "a request after the close reached the app" + c
            continue
        if rec is not None:
            assert rec.done, "the app never ended" + c
            raised += r.app == "raise"
        present = normal or (not sess.pipelined and i < len(reqs) - 1)
        if r.framing in HEAD_BAD:
            assert rec is None, "a request with bad framing reached the app" + c
            if present:
                assert resp is not None and 400 <= resp.status < 500 and (
                    resp.body or r.method == "HEAD"), \
                    "bad framing not answered with a 4xx that names it" + c
            closed_at = i
            continue
        if resp is None and present and r.framing not in BODY_BAD:
            prev_rec = recs.get(f"/{sid}/r{i - 1}/{reqs[i - 1].app}") if i else None
            if i == 0 or closes_after(reqs[i - 1], prev_rec, client.responses[i - 1]) == "never":
                raise AssertionError("no response" + c)
            # RFC 9112 §9.6 (9.3 for 1.0): a response that does not announce the close keeps
            # the connection for the next request
            prev = client.responses[i - 1].headers.get(b"connection", b"").lower()
            assert prev == b"close" or (reqs[i - 1].version == "1.0" and prev != b"keep-alive"), \
                "the connection closed after a response that did not say so" + c
            closed_at = i
            assert rec is None or rec.send_failed or r.framing in BODY_BAD, \
                "the app responded but the client got nothing" + c
            continue
        if rec is None:
            assert not present or resp is None, "a response without the app" + c
            continue
        complete = present and client.sent_body[i] and r.framing not in BODY_BAD
        check_msgs(r, rec, complete, c)
        if r.app == "after":
            assert rec.msgs == [("disc",)], "receive() after the response: not a disconnect" + c
        if r.app == "again" and complete:
            # after a half-close (cicada answers it) the app hears the EOF as a disconnect
            gone = sess.ending == "half-close" and (sess.pipelined or i == len(reqs) - 1)
            assert rec.msgs[-1] == ("timeout",) or (gone and rec.msgs[-1] == ("disc",)), \
                "receive() after the body did not wait for the client" + c
        if r.framing in BODY_BAD:
            # the app's own response if it went out before the body showed the error (then the
            # close cuts a streamed one short), else a 400 that says why; then a close
            if resp is None:
                assert r.app == "stream" or not present, "no response to a bad body" + c
                closed_at = i
                continue
            assert resp.status in ((500, 400) if r.app == "raise" else (200, 400)), c
            if resp.status == 400:
                assert resp.body or r.method == "HEAD", "a 400 that does not say why" + c
            closed_at = i
            continue
        if resp is None:
            continue
        want_status = 500 if r.app == "raise" else 200
        assert resp.status == want_status, "wrong status" + c
        if want_status == 200:
            assert resp.body == expected_body(r, i), "the response of another request" + c
        # 100 Continue: only for Expect, only if the app read before responding
        assert resp.interim <= 1, "more than one 100 Continue" + c
        if not r.expect:
            assert resp.interim == 0 and not client.early_100[i], "a 100 nobody asked for" + c
        elif r.app in ("none", "after", "stream", "late"):
            assert resp.interim == 0 and not client.early_100[i], \
                "100 Continue though the app did not read first" + c
        elif r.app in READS_FIRST and client.sent_body[i] and has_body(r) and not sess.pipelined:
            assert client.early_100[i], "no 100 Continue for an app that reads" + c
        verdict = closes_after(r, rec, resp)
        conn_close = resp.headers.get(b"connection", b"").lower() == b"close"
        if verdict == "must":
            assert conn_close, "a closing response that does not say connection: close" + c
        if verdict == "never" and i < len(reqs) - 1:
            assert not conn_close, "closed a connection the RFC keeps" + c
        if conn_close:
            closed_at = i
            if i == len(client.responses) - 1 and sess.ending == "normal":
                assert client.closed, "connection: close not followed by a close" + c
    assert logged == raised, f"app exceptions logged: {logged}, raised: {raised}" + ctx


# --- strategies -----------------------------------------------------------------------------------

body_bytes = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([SMUGGLE, b"0\r\n\r\n" + SMUGGLE, b"x" * 70000, b"\r\n\r\n",
                     b"5\r\nhello\r\n0\r\n\r\n"]),
    st.builds(lambda n: bytes(range(256)) * n, st.integers(1, 300)))


@st.composite
def requests_(draw, first=False):
    framing = draw(st.sampled_from(["cl"] * 6 + ["chunked"] * 6 + ["none"] * 2 + HEAD_BAD +
                                   BODY_BAD))
    method = draw(st.sampled_from(["POST", "POST", "PUT", "GET", "HEAD"]))
    version = "1.0" if framing in ("cl", "none") and draw(st.integers(0, 7)) == 0 else "1.1"
    body = b"" if framing == "none" else draw(body_bytes)
    chunks = ()
    if framing in ("chunked",) + tuple(BODY_BAD):
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        edges = [0] + cuts + [len(body)]
        chunks = tuple(b - a for a, b in zip(edges, edges[1:]) if b > a)
    r = Req(method=method, version=version, framing=framing, body=body, chunks=chunks,
            upper=draw(st.booleans()), zeros=draw(st.sampled_from([0, 0, 0, 1, 3])),
            ext=draw(st.integers(0, 4)) == 0, trailers=draw(st.integers(0, 3)) == 0,
            expect=version == "1.1" and framing in ("cl", "chunked") and
            draw(st.integers(0, 4)) == 0,
            conn=draw(st.sampled_from([""] * 8 + ["close", "keep-alive"])),
            app=draw(st.sampled_from(PATTERNS)))
    return r


@st.composite
def sessions(draw):
    reqs = draw(st.lists(requests_(), min_size=1, max_size=4))
    pipelined = draw(st.booleans())  # Expect too: a client need not wait (RFC 9110 §10.1.1)
    ending = draw(st.sampled_from(["normal"] * 8 + ["close-after-head", "close-mid-body",
                                                    "close-before-response", "half-close"]))
    cuts = tuple(sorted(draw(st.lists(st.floats(0, 1), max_size=3))))
    return Session(reqs, pipelined, ending, cuts, draw(st.sampled_from([0.0, 0.001, 0.003])))


# --- running ----------------------------------------------------------------------------------------

_sids = itertools.count()


def run(app, server, handler, sess: Session):
    sid = f"s{next(_sids)}"
    before = len(handler.records)
    mine = lambda: {k: v for k, v in app.records.items() if k.startswith(f"/{sid}/")}  # noqa
    client = run_session(server, sess, sid, lambda: all(v.done for v in mine().values()))
    # The app's tasks may still be finishing: wait until every record is done.
    deadline = time.monotonic() + TIMEOUT
    # A request the server has taken may not have reached the app yet (the client left at
    # once): wait until the records are all done and no new one has come for a moment.
    seen = None
    settle = sess.ending != "normal" or len(client.responses) < len(sess.reqs)
    while time.monotonic() < deadline:
        now = mine()
        if all(v.done for v in now.values()) and (seen == set(now) or not settle):
            break
        seen = set(now) if all(v.done for v in now.values()) else None
        time.sleep(0.02)
    raised = sum(1 for k in mine() if k.endswith("/raise"))
    while time.monotonic() < deadline and \
            len([r for r in handler.records[before:] if r.exc_info]) < raised:
        time.sleep(0.005)
    time.sleep(0.002)
    logged = [r for r in handler.records[before:] if r.exc_info]
    bad = [r for r in logged if not isinstance(r.exc_info[1], Boom)]
    assert not bad, f"unexpected tracebacks: {[r.getMessage() for r in bad]}\n{sess!r}"
    unexpected, app.unexpected[:] = list(app.unexpected), []
    recs = mine()
    for k in recs:
        del app.records[k]
    return sid, client, recs, unexpected, len(logged)


def fresh_ok(server) -> bool:
    s = server.connect(TIMEOUT)
    try:
        s.sendall(b"GET /fresh HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = Reader(s).response(False, time.monotonic() + TIMEOUT)
    finally:
        s.close()
    return resp is not None and resp.status == 200 and resp.body == b"fresh"


@pytest.fixture(scope="module")
def servers():
    app = App()
    with against_uvicorn(app, "cicada.test.reqside", LOOP,
                         {p: (p, {}) for p in ("httptools", "h11")}) as (cc, cch, uvs, uvh):
        yield app, cc, cch, uvs, uvh


# --- where the servers are not compared ---------------------------------------------------------

NOT_COMPARED = {
    # docs/server.md: cicada answers what a half-closed client sent (RFC 9112 §9.6 lets a
    # server keep reading after the client's FIN); uvicorn closes at EOF without answering.
    "half-close": lambda s, proto: s.ending == "half-close",
    # A client that leaves early: how much the app read before it heard http.disconnect is the
    # timing's (cicada is still held to the model: only bytes sent, in order).
    "client leaves early": lambda s, proto: s.ending.startswith("close-"),
    # RFC 9112 §9.6: a server that closes should close its write side first and read on, so
    # that the client's unsent bytes do not reset the connection and destroy the response.
    # cicada lingers; uvicorn closes at once after its 400, and a client still sending a body of
    # some size gets a reset instead of the 400.
    # RFC 9112 §6.3: a request whose Transfer-Encoding is not chunked-final gets a 400 and a
    # close; uvicorn (httptools) runs the app on it first.
    "TE not chunked-final": lambda s, proto: proto == "httptools" and any(
        r.framing == "te-not-chunked" for r in s.reqs),
    # docs/server.md: an app that responds before reading a body the client holds back for
    # 100 Continue gets connection: close from cicada (the client may never send it); uvicorn
    # keeps the connection and waits for the body (RFC 9110 §10.1.1 allows either).
    "Expect and the app responds first": lambda s, proto: any(
        r.expect and r.app not in READS_FIRST and has_body(r) for r in s.reqs),
    # RFC 9112 §6.1: a request with both CL and TE may be rejected (cicada, httptools) or read
    # by its TE, the connection closed after it either way; h11 reads it and keeps the
    # connection (against that MUST).
    "CL with TE": lambda s, proto: proto == "h11" and any(r.framing == "cl+te" for r in s.reqs),
    # RFC 9112 §9.3.2: responses go out in the order of the requests. httptools parses the
    # whole pipeline at once and answers a later bad request's 400 in place of the responses
    # still due to the good ones before it.
    "bad framing pipelined after good requests": lambda s, proto: proto == "httptools" and \
        s.pipelined and any(r.framing in HEAD_BAD + BODY_BAD for r in s.reqs[1:]),
    # RFC 9112 §9.6: a server reads nothing after a request that closes the connection (and
    # answers it). h11 takes the bytes after it as a protocol error and answers a 400 in
    # place of the response due.
    "pipelined after a closing request": lambda s, proto: proto == "h11" and s.pipelined and \
        any(r.conn == "close" or (r.version == "1.0" and r.conn != "keep-alive")
            for r in s.reqs[:-1]),
    # RFC 9110 §9.3.2: no content in a response to HEAD. uvicorn's 400 to a HEAD with bad
    # framing carries its body, which the client reads as the next response.
    "HEAD with bad framing": lambda s, proto: any(
        r.method == "HEAD" and r.framing in HEAD_BAD + BODY_BAD for r in s.reqs),
    # A body whose framing breaks while the app is not reading it: the app's response or a
    # 400 (then a close) are both right; which comes first is each server's timing (uvicorn
    # parses the whole buffer before the app runs, cicada as the app reads).
    "bad body the app does not read through": lambda s, proto: any(
        r.framing in BODY_BAD and r.app not in ("all", "again") for r in s.reqs),
    "400 while the body comes": lambda s, proto: any(
        r.framing in HEAD_BAD and len(r.body) > 1000 for r in s.reqs),
}


def not_compared(sess, proto):
    return [name for name, pred in NOT_COMPARED.items() if pred(sess, proto)]


def digest(b: bytes) -> str:
    return f"<{len(b)} bytes {hashlib.sha1(b).hexdigest()[:10]}>"


def summary(sess, client, recs, sid):
    """What is compared between the servers."""
    out = []
    for i, r in enumerate(sess.reqs):
        rec = recs.get(f"/{sid}/r{i}/{r.app}")
        resp = client.responses[i] if i < len(client.responses) else None
        read = None
        # a bad body: how much of what came before the error reaches the app is the timing's
        if rec and r.app in ("all", "again", "stream", "late") and r.framing not in BODY_BAD:
            read = (digest(b"".join(m[1] for m in rec.msgs if m[0] == "req")),  # how much one
                    any(m[0] == "req" and not m[2] for m in rec.msgs),  # receive() gets: timing
                    [m for m in rec.msgs if m[0] != "req"])
        elif rec:
            read = [m for m in rec.msgs if m[0] != "req"]
        if r.framing in BODY_BAD:  # whether the app even starts before the 400 is the timing's
            out.append((resp and resp.status, None, None, None))
            continue
        # docs/server.md: cicada's 400 names the problem, uvicorn's says "Invalid HTTP request"
        out.append((resp and resp.status, resp and (resp.body if resp.status < 400 else "error"),
                    rec is not None, read))
    return out


def optional_close(sess, obs) -> int | None:
    """The first request after whose response this server closed where the RFC let it choose
    (an unread body not yet arrived: cicada closes, announced; uvicorn reads and drops it)."""
    _, client, recs, sid = obs
    for i, resp in enumerate(client.responses):
        r = sess.reqs[i]
        if resp.headers.get(b"connection", b"").lower() == b"close" and closes_after(
                r, recs.get(f"/{sid}/r{i}/{r.app}"), resp) == "either":
            return i
    return None


def compare(sess, cc_obs, uv_obs, proto):
    c, u = summary(*cc_obs), summary(*uv_obs)
    cuts = [k for k in (optional_close(sess, cc_obs), optional_close(sess, uv_obs)) if k is not None]
    if cuts:  # the sessions are compared up to the first close that was a choice
        c, u = c[:min(cuts) + 1], u[:min(cuts) + 1]
    assert c == u, (f"uvicorn[{proto}] differs:\nsession={sess!r}\ncicada={c!r}\n"
                    f"uvicorn={u!r}\ncicada client={cc_obs[1]!r}\nuvicorn client={uv_obs[1]!r}")


def test_request_side_against_uvicorn(servers):
    app, cc, cc_handler, uvs, uv_handler = servers

    @given(sessions())
    @_settings
    # The bugs this test found, pinned (each also has its own test in test_flow.py,
    # test_hostile_clients.py or test_errors.py).
    @example(Session([Req(app="late", body=b"hi")], ending="half-close"))
    @example(Session([Req(method="GET", framing="none", app="part"), Req(app="part", body=b"hello")],
                     pipelined=True, ending="close-after-head"))
    @example(Session([Req(app="none", body=b"0123456789"), Req(method="GET", framing="none")]))
    @example(Session([Req(framing="bad-chunk-size", chunks=(2,), body=b"ab", app="none")]))
    @example(Session([Req(framing="bad-chunk-size", chunks=(2,), body=b"ab", app="late")]))
    def inner(sess):
        sid, client, recs, unexpected, logged = run(app, cc, cc_handler, sess)
        judge(sess, client, recs, unexpected, logged, sid)
        assert cc._thread.is_alive(), "cicada's server thread died"
        assert fresh_ok(cc), "no fresh response afterwards"
        for proto, uv in uvs.items():
            if not not_compared(sess, proto):
                usid, uclient, urecs, _, _ = run(app, uv, uv_handler, sess)
                compare(sess, (sess, client, recs, sid), (sess, uclient, urecs, usid), proto)

    if SEED is not None:
        inner = seed(int(SEED))(inner)
    inner()
