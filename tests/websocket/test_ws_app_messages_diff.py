"""Differential test of the app's side of a WebSocket: what cicada's server does with odd and
hostile ASGI websocket messages from the app, against uvicorn's two WebSocket implementations
(`websockets` and `wsproto`, behind its h11 protocol), with the ASGI websocket spec (2.4, with the
denial-response extension) and RFC 6455 as the judges.

Hypothesis generates a *plan*: the app's side of one session, against a well-behaved raw client
(wsraw) that offers two subprotocols, sends a few text messages as soon as it has its 101, answers
pings, echoes the server's close frame and reads until the TCP connection closes. A plan is a list
of steps: `websocket.accept` (subprotocol offered, not offered, empty, not a str; headers valid,
bytes-like, invalid, or the handshake's own: Sec-WebSocket-Accept, -Protocol, -Extensions, Upgrade,
Connection, framing headers), `websocket.send` (text, bytes, both, neither, None, str subclasses,
lone surrogates, bytearray/memoryview/strided, wrong types, 1 MiB), `websocket.close` (valid,
reserved and out-of-range codes, bool, int subclasses, str; reasons too long, not str, with
surrogates), `websocket.http.response.start`/`.body` (statuses, headers, chunks, more_body whose
truth raises), receive() (also a second, concurrent one), an unknown message type, and the app
raising. Each message is a dict, a dict subclass (one whose own accessors raise), a Mapping that
is not a dict, not a mapping at all, with extra keys, without a type, with a str-subclass or bytes
type. In one plan in four the app catches what its sends raise and goes on: a send that failed
must leave the session as it was (nothing of it sent, the state unchanged).

`model()` says which send() must raise (a RuntimeError with a message; the app's own exception
unchanged), what each receive() returns, and what the client must see: a 101 with the right
Sec-WebSocket-Accept, the subprotocol and the app's headers, then exactly the app's frames and
its close (1000 when it returns, 1011 when it raises), then the TCP close; or a 403 (close before
accept), a 500 (no handshake, or an exception before it), the app's denial response; or, when the
app ends a denial response half-way, a closed connection without a complete response. Invariants
on cicada, every example: the client's read ends within TIMEOUT (no hang, no silent close), every
app exception is logged, the server thread lives and serves a fresh WebSocket afterwards.

Each plan runs on cicada's server and on uvicorn's, and the two are compared where the spec leaves
no choice: which send raised, and the client's view. Normalisations and plans not compared:

- Exception types are not compared: uvicorn raises whatever its code trips on (KeyError,
  TypeError, websockets' ProtocolError, wsproto's LocalProtocolError...). cicada must raise a
  RuntimeError with a message, or (a lone surrogate in text or reason, which can't be encoded as
  UTF-8) the UnicodeEncodeError that names it.
- Received messages are not compared: after a close, which client messages still reach the app
  is timing (cicada delivers what arrived before the app's close; uvicorn's websockets drops its
  queue), and the disconnect codes differ by design (uvicorn's wsproto reports the app's own code
  at once). cicada's are checked against the model.
- Reason phrases and the server's own headers (server, date) are not compared; a 500's body is not.
- When the app ends without sending websocket.close, cicada closes with 1000 (1011 when the app
  raised), as docs/websocket-server.md says and RFC 6455 §7.1.1 suggests (the server starts the
  closing handshake); uvicorn drops the TCP connection without a close frame (the client sees
  1006). Only the frames before it are compared then.
- NOT_COMPARED lists the plans on which uvicorn accepts what the spec does not allow, or the spec
  leaves the choice open, each with the clause that decides it; cicada is still held to the model.

TEST_WSAPP_LOOP=asyncio|uvloop runs cicada's server on that loop instead of cicada's own.
TEST_WSAPP_EXAMPLES=N runs N examples instead of the CI default (e.g. 3000 to hunt);
TEST_WSAPP_SEED=S draws other examples than the derandomised CI ones.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import enum
import hashlib
import http
import importlib.util
import itertools
import os
import socket
import struct
import time

import pytest

hypothesis = pytest.importorskip("hypothesis")
uvicorn = pytest.importorskip("uvicorn")

from hypothesis import example, given, seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from support.hunt import hunt_settings  # noqa: E402
from support.hostile import (  # noqa: E402
    Boom, BoolRaises, BytesSub, DictSub, FrozenMapping, OddInt, RaisingDict, StrSub, Truthy,
)
from support.server_thread import against_uvicorn  # noqa: E402
from wsraw import GUID, Reader, frame  # noqa: E402

EXAMPLES, _settings, SEED = hunt_settings("TEST_WSAPP", 150)
LOOP = os.environ.get("TEST_WSAPP_LOOP", "cicada")  # the loop cicada's server runs on
TIMEOUT = 5.0  # a client read that has not ended by then is a hang
WAIT_SHORT = 0.15  # a receive() the model says can only wait gives up after this
WAIT_LONG = 3.0  # a receive() the model says gets a message waits up to this
IMPLS = ["websockets", "wsproto"]  # uvicorn's WebSocket implementations compared
OFFERED = ["chat", "superchat"]  # the client's Sec-WebSocket-Protocol
CLIENT_MSGS = ["c0", "c1"]  # what the client sends right after the 101
RESERVED_HEADERS = {b"sec-websocket-accept", b"sec-websocket-protocol", b"sec-websocket-extensions",
                    b"upgrade", b"connection", b"content-length", b"transfer-encoding"}


# --- hostile values ---------------------------------------------------------------------------


class Code(enum.IntEnum):
    AWAY = 1001
    PRIVATE = 4000


def raising_iter(pairs):
    yield from pairs[:len(pairs) // 2]
    raise Boom("headers iterator")


# --- plans -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Hdr:
    name: bytes
    value: bytes
    kind: str = "bytes"  # bytes, list-pair, bytearray, memoryview, str, triple

    def __repr__(self):
        return f"H({self.name!r}, {self.value[:30]!r}, {self.kind})"


@dataclasses.dataclass
class Step:
    op: str  # accept, send, close, deny_start, deny_body, receive, concurrent, other, raise,
    # catch (first: the app catches what its sends raise and goes on)
    sub: str = "missing"  # accept: a key of SUBS
    headers: list = dataclasses.field(default_factory=list)
    container: str = "missing"  # list, tuple, generator, raising, none, missing, str
    text: str = "missing"  # send: a key of TEXTS
    bytes: str = "missing"  # send: a key of BYTES
    code: str = "missing"  # close: a key of CODES
    reason: str = "missing"  # close: a key of REASONS
    status: str = "403"  # deny_start: a key of STATUSES
    body: str = "bytes"  # deny_body: a key of BODIES
    more: str = "missing"  # deny_body: missing, False, True, truthy, raises
    wrapper: str = "dict"  # dict, dictsub, raisingdict, mapping, notdict, extra, notype, ...
    other: str = "websocket.nope"  # other: the type sent
    # Filled in by model(): receive: how long to wait; concurrent: whether it runs at all.
    wait: float = WAIT_SHORT
    skip: bool = False

    def __repr__(self):
        skip = {"headers", "wait", "skip"}
        fields = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)[1:]
                  if getattr(self, f.name) != f.default and f.name not in skip]
        if self.headers:
            fields.append(f"headers={self.headers[:6]!r}")
        return f"{self.op}({', '.join(fields)})"


SUBS = {"missing": ..., "none": None, "offered": "chat", "offered2": "superchat",
        "strsub": StrSub("chat"), "unoffered": "other", "empty": "", "bytes": b"chat", "int": 5,
        "crlf": "chat\r\nx-injected: 1"}
SUB_OK = {"missing": None, "none": None, "offered": "chat", "offered2": "superchat",
          "strsub": "chat"}  # RFC 6455 §4.2.2: one of the values the client offered, or none
HUGE = 1 << 20
TEXTS = {"missing": ..., "none": None, "str": "héllo ✓", "empty": "", "strsub": StrSub("sub"),
         "surrogate": "a\ud800b", "bytes": b"raw", "int": 7, "huge": "x" * HUGE}
TEXT_OK = {"str": "héllo ✓", "empty": "", "strsub": "sub", "huge": "x" * HUGE}
BYTES = {"missing": ..., "none": None, "bytes": b"\x00\xffdata", "empty": b"",
         "bytessub": BytesSub(b"sub"), "bytearray": bytearray(b"ba"),
         "memoryview": memoryview(b"mv"), "strided": memoryview(b"s-t-r-i-d-e")[::2],
         "str": "text", "int": 3, "huge": b"y" * HUGE}
BYTES_OK = {"bytes": b"\x00\xffdata", "empty": b"", "bytessub": b"sub", "bytearray": b"ba",
            "memoryview": b"mv", "huge": b"y" * HUGE}
CODES = {"missing": ..., "none": None, "1000": 1000, "1001": 1001, "1003": 1003, "1011": 1011,
         "1012": 1012, "3000": 3000, "4999": 4999, "intenum": Code.PRIVATE, "oddint": OddInt(4001),
         "1004": 1004, "1005": 1005, "1006": 1006, "1015": 1015, "1016": 1016, "2999": 2999,
         "999": 999, "5000": 5000, "0": 0, "neg": -1, "huge": 1 << 70, "true": True,
         "str": "1000", "float": 1000.0}
# RFC 6455 §7.4: 1000-1003, 1007-1011 and 3000-4999; 1012-1014 registered with IANA since.
CODE_OK = {"missing": 1000, "none": 1000, "1000": 1000, "1001": 1001, "1003": 1003, "1011": 1011,
           "1012": 1012, "3000": 3000, "4999": 4999, "intenum": 4000, "oddint": 4001}
REASONS = {"missing": ..., "none": None, "empty": "", "bye": "bye ✓", "strsub": StrSub("sub"),
           "long-ascii": "r" * 200, "long-utf8": "é" * 100, "max": "m" * 123,
           "surrogate": "x\udc80", "bytes": b"bye", "int": 1}


def reason_wire(key: str) -> bytes:
    """The reason on the wire: cicada cuts one over 123 bytes before a continuation byte."""
    r = REASONS[key]
    if r is ... or r is None:
        return b""
    full = r.encode()
    n = len(full)
    if n > 123:
        n = 123
        while n and (full[n] & 0xC0) == 0x80:
            n -= 1
    return full[:n]


REASON_OK = {"missing", "none", "empty", "bye", "strsub", "long-ascii", "long-utf8", "max"}
STATUSES = {"403": 403, "200": 200, "401": 401, "599": 599, "http-status": http.HTTPStatus.GONE,
            "oddint": OddInt(429), "101": 101, "100": 100, "600": 600, "999": 999, "neg": -403,
            "true": True, "float": 403.0, "str": "403", "none": None, "missing": ...}
STATUS_OK = {"403": 403, "200": 200, "401": 401, "599": 599, "http-status": 410, "oddint": 429}
BODIES = {"missing": ..., "none": None, "bytes": b"denied", "empty": b"",
          "bytearray": bytearray(b"ba"), "memoryview": memoryview(b"mv"),
          "strided": memoryview(b"s-t-r")[::2], "str": "text", "int": 5}
BODY_OK = {"missing": b"", "none": b"", "bytes": b"denied", "empty": b"", "bytearray": b"ba",
           "memoryview": b"mv"}


def build_headers(step: Step):
    pairs = []
    for h in step.headers:
        n, v = h.name, h.value
        pairs.append({"bytearray": (bytearray(n), bytearray(v)),
                      "memoryview": (memoryview(n), memoryview(v)),
                      "str": (n.decode("latin-1"), v.decode("latin-1")),
                      "list-pair": [n, v], "triple": (n, v, b"x")}.get(h.kind, (n, v)))
    c = step.container
    if c == "tuple":
        return tuple(pairs)
    if c == "generator":
        return (p for p in pairs)
    if c == "raising":
        return raising_iter(pairs)
    if c == "none":
        return None
    if c == "str":
        return "x-a: 1"
    return pairs


def wrap(d: dict, wrapper: str):
    if wrapper == "dictsub":
        return DictSub(d)
    if wrapper == "raisingdict":
        return RaisingDict(d)
    if wrapper == "mapping":
        return FrozenMapping(d)
    if wrapper == "notdict":
        return [d["type"]]
    if wrapper == "str":
        return d["type"]
    if wrapper == "extra":
        d["x-extension-key"] = object()
    elif wrapper == "notype":
        del d["type"]
    elif wrapper == "typesub":
        d["type"] = StrSub(d["type"])
    elif wrapper == "bytestype":
        d["type"] = d["type"].encode()
    return d


def put(d: dict, key: str, table: dict, which: str):
    if table[which] is not ...:
        d[key] = table[which]


def build_message(step: Step):
    """The message for a step, built fresh for each server (plans hold no live objects)."""
    if step.op == "accept":
        d = {"type": "websocket.accept"}
        put(d, "subprotocol", SUBS, step.sub)
        if step.container != "missing":
            d["headers"] = build_headers(step)
    elif step.op == "send":
        d = {"type": "websocket.send"}
        put(d, "text", TEXTS, step.text)
        put(d, "bytes", BYTES, step.bytes)
    elif step.op == "close":
        d = {"type": "websocket.close"}
        put(d, "code", CODES, step.code)
        put(d, "reason", REASONS, step.reason)
    elif step.op == "deny_start":
        d = {"type": "websocket.http.response.start"}
        put(d, "status", STATUSES, step.status)
        if step.container != "missing":
            d["headers"] = build_headers(step)
    elif step.op == "deny_body":
        d = {"type": "websocket.http.response.body"}
        put(d, "body", BODIES, step.body)
        if step.more != "missing":
            d["more_body"] = {"False": False, "True": True, "truthy": Truthy(),
                              "raises": BoolRaises()}[step.more]
    elif step.op == "other":
        d = {"type": step.other, "text": "x"}
    else:
        raise AssertionError(step.op)
    return wrap(d, step.wrapper)


# --- the model ---------------------------------------------------------------------------------

TCHAR = set(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclasses.dataclass
class Expect:
    # (index among the app's sends, kind) of each send that must raise: "invalid" (a
    # RuntimeError), "boom" (the app's own exception), "encode" (RuntimeError or the
    # UnicodeEncodeError of a lone surrogate), "either" (Boom or RuntimeError: both are there).
    # An app that catches them goes on; a failed send must leave the session as it was.
    raised: list = dataclasses.field(default_factory=list)
    app_raised: bool = False  # an exception ends the app: it must be logged
    # What the client sees: ("ws", subprotocol, app headers, frames, close) /
    # ("http", status, app headers, body) / "failed" (closed without a complete response).
    client: object = None
    close_code: int = 1000  # the app's close code, which the client echoes
    state: str = "init"  # where the app left the session
    received: list = dataclasses.field(default_factory=list)


def header_ok(h: Hdr) -> bool:
    return (h.kind in ("bytes", "list-pair") and bool(h.name) and all(c in TCHAR for c in h.name)
            and not any(c in b"\r\n\x00" for c in h.value))


def headers_verdict(step: Step, reserved: set):
    """(error, the app's headers as the client sees them) for accept / deny_start."""
    if step.container in ("none", "missing"):
        return None, []
    if step.container == "str":
        return "invalid", []
    if step.container == "raising":
        if not all(header_ok(h) for h in step.headers[:len(step.headers) // 2]):
            return "either", []  # an invalid pair, or the iterator's Boom: either may come first
        return "boom", []
    if not all(header_ok(h) for h in step.headers):
        return "invalid", []
    if any(h.name.lower() in reserved for h in step.headers):
        return "invalid", []
    return None, [(h.name.lower(), h.value.strip(b" \t")) for h in step.headers
                  if h.name.lower() not in RESERVED_HEADERS | {b"server", b"date"}]


BAD_WRAPPERS = ("mapping", "notdict", "str", "notype", "bytestype")


def model(plan: list[Step]) -> Expect:
    """What the ASGI websocket spec and RFC 6455 require for this plan. Also fills in each
    receive step's wait and whether a concurrent receive runs (only where receive() must wait)."""
    e = Expect()
    state = "init"  # init, open, closed (the app's close), denying, done (403/denial/500)
    connect_given = False
    client_left = list(CLIENT_MSGS)  # messages the client sent that the app has not received
    sub, headers, frames, close, resp = None, [], [], None, None
    deny_status, deny_headers, deny_body, deny_cl = 0, [], b"", None
    close_code = 1000
    sends = 0
    catching = bool(plan) and plan[0].op == "catch"

    def receive_result():
        nonlocal connect_given
        if not connect_given:
            connect_given = True
            return "websocket.connect", WAIT_LONG
        if state in ("init", "denying"):
            return "timeout", WAIT_SHORT
        if state == "open":
            if client_left:
                client_left.pop(0)
                return "websocket.receive", WAIT_LONG
            return "timeout", WAIT_SHORT
        if state == "closed":  # what arrived before the close, then the client's echo
            return "after-close", WAIT_LONG
        return "websocket.disconnect:1006", WAIT_LONG

    for step in plan:
        if step.op == "catch":
            continue
        if step.op == "raise":
            e.app_raised = True
            break
        if step.op == "receive":
            r, step.wait = receive_result()
            e.received.append(r)
            continue
        if step.op == "concurrent":
            waits = connect_given and (state in ("init", "denying") or
                                       (state == "open" and not client_left))
            step.skip = not waits
            if waits:
                e.received.append("concurrent-refused")
            continue
        err = None
        if step.wrapper in BAD_WRAPPERS or step.op == "other":
            err = "invalid"
        elif state == "init" and step.op == "accept":
            if step.sub not in SUB_OK:
                err = "invalid"
            else:
                err, hs = headers_verdict(step, RESERVED_HEADERS)
                if not err:
                    state, sub, headers = "open", SUB_OK[step.sub], hs
        elif state == "init" and step.op == "close":
            state, resp = "done", (403, [], b"")
        elif state == "init" and step.op == "deny_start":
            if step.status not in STATUS_OK:
                err = "invalid"
            else:
                # The server frames a denial: Content-Length (the app's own, if it matches the
                # body; RFC 9110 §8.6), never Transfer-Encoding; then it closes.
                err, hs = headers_verdict(step, {b"transfer-encoding"})
                cls = {h.value.strip(b" \t") for h in step.headers
                       if h.name.lower() == b"content-length"} if step.container not in (
                    "none", "missing", "str", "raising") else set()
                if not err and (len(cls) > 1 or any(not v.isdigit() for v in cls)):
                    err = "invalid"
                if not err:
                    state, deny_status, deny_headers = "denying", STATUS_OK[step.status], hs
                    deny_cl = int(cls.pop()) if cls else None
        elif state == "denying" and step.op == "deny_body":
            if step.body not in BODY_OK:
                err = "invalid"
            elif step.more == "raises":
                err = "boom"
            elif deny_cl is not None and (
                    len(deny_body) + len(BODY_OK[step.body]) > deny_cl or (
                        step.more in ("missing", "False") and
                        len(deny_body) + len(BODY_OK[step.body]) != deny_cl)):
                err = "invalid"
            else:
                deny_body += BODY_OK[step.body]
                if step.more in ("missing", "False"):
                    state, resp = "done", (deny_status, deny_headers, deny_body)
        elif state == "open" and step.op == "send":
            if BYTES[step.bytes] not in (..., None):
                if step.bytes not in BYTES_OK:
                    err = "invalid"
                else:
                    frames.append((2, BYTES_OK[step.bytes]))
            elif step.text == "surrogate":
                err = "encode"
            elif step.text not in TEXT_OK:
                err = "invalid"
            else:
                frames.append((1, TEXT_OK[step.text].encode()))
        elif state == "open" and step.op == "close":
            if step.code not in CODE_OK or step.reason not in REASON_OK:
                err = "encode" if step.reason == "surrogate" and step.code in CODE_OK \
                    else "invalid"
            else:
                state = "closed"
                close_code = CODE_OK[step.code]
                close = (close_code, reason_wire(step.reason))
        else:
            err = "invalid"  # out of order, or after the end
        if err:
            e.raised.append((sends, err))
            if not catching:
                e.app_raised = True
                break
        sends += 1
    # The app ends here: returning, or raising.
    if state == "init":
        e.client = ("http", 500, None, None)
    elif state == "denying":  # the server holds a denial until it is complete: still a 500
        e.client = ("http", 500, None, None)
    elif state == "done":
        e.client = ("http", *resp)
    else:
        if close is None:
            close = (1011 if e.app_raised else 1000, b"")
        e.client = ("ws", sub, headers, frames, close)
    e.close_code, e.state = close_code, state
    return e


# --- strategies --------------------------------------------------------------------------------

good_names = st.sampled_from([b"x-a", b"X-Mixed-Case", b"set-cookie", b"cache-control",
                              b"x-" + b"n" * 40, b"server", b"date"])
odd_names = st.sampled_from([b"", b"a b", b"a:b", b"\xc3\xa9", b"a\r\nb", b"x\x00"])
reserved_names = st.sampled_from([b"Sec-WebSocket-Accept", b"sec-websocket-protocol",
                                  b"Sec-WebSocket-Extensions", b"upgrade", b"Connection",
                                  b"content-length", b"transfer-encoding"])
good_values = st.sampled_from([b"1", b"", b"text/plain", b"a, b", b"\xe9t\xe9", b" padded "])
odd_values = st.sampled_from([b"a\r\nInjected: 1", b"\x00", b"a\nb"])


@st.composite
def headers_list(draw):
    out = []
    for _ in range(draw(st.integers(0, 3))):
        roll = draw(st.integers(-20, 19))
        if roll < 12:
            h = Hdr(draw(good_names), draw(good_values))
        elif roll < 14:
            h = Hdr(draw(odd_names), draw(good_values))
        elif roll < 15:
            h = Hdr(draw(good_names), draw(odd_values))
        elif roll < 17:
            h = Hdr(draw(reserved_names), b"1")
        else:
            h = Hdr(draw(good_names), draw(good_values), draw(st.sampled_from(
                ["list-pair", "bytearray", "memoryview", "str", "triple"])))
        out.append(h)
    return out


wrappers = st.sampled_from(["dict"] * 60 + ["dictsub", "raisingdict", "mapping", "notdict",
                                            "str", "extra", "notype", "typesub", "bytestype"])
containers = st.sampled_from(["list"] * 6 + ["missing"] * 3 + ["tuple", "generator", "raising",
                                                                "none", "str"])


def often(common, *rare):
    return st.sampled_from([common] * (len(rare) or 1) * 2 + list(rare))


@st.composite
def accept_step(draw):
    return Step("accept", sub=draw(often("missing", *SUBS)), headers=draw(headers_list()),
                container=draw(containers), wrapper=draw(wrappers))


@st.composite
def send_step(draw):
    roll = draw(st.integers(0, 9))
    text = draw(often("str", *[k for k in TEXTS if k != "huge"]))
    data = draw(often("bytes", *[k for k in BYTES if k != "huge"]))
    if draw(st.integers(0, 29)) == 0:
        text, data = "huge", "huge"
    if roll < 5:
        return Step("send", text=text, wrapper=draw(wrappers))
    if roll < 9:
        return Step("send", bytes=data, wrapper=draw(wrappers))
    return Step("send", text=text, bytes=data, wrapper=draw(wrappers))


@st.composite
def close_step(draw):
    return Step("close", code=draw(often("missing", *CODES)),
                reason=draw(often("missing", *REASONS)), wrapper=draw(wrappers))


@st.composite
def deny_steps(draw):
    steps = [Step("deny_start", status=draw(often("403", *STATUSES)),
                  headers=draw(headers_list()), container=draw(containers),
                  wrapper=draw(wrappers))]
    for _ in range(draw(st.integers(0, 3))):
        steps.append(Step("deny_body", body=draw(often("bytes", *BODIES)),
                          more=draw(st.sampled_from(["True", "True", "truthy", "raises"])),
                          wrapper=draw(wrappers)))
    if draw(st.integers(0, 4)):
        steps.append(Step("deny_body", body=draw(often("bytes", *BODIES)),
                          more=draw(st.sampled_from(["missing", "False"]))))
    # The app's own Content-Length: most often the body's real length.
    if draw(st.integers(0, 4)) == 0:
        total = sum(len(BODY_OK.get(s.body, b"")) for s in steps[1:])
        steps[0].headers.append(Hdr(b"Content-Length", draw(st.sampled_from(
            [b"%d" % total] * 3 + [b" %d " % total, b"%d" % (total + 1), b"+1", b"x"]))))
        if steps[0].container == "missing":
            steps[0].container = "list"
    return steps


def misc_step():
    return st.one_of(st.just(Step("receive")), st.just(Step("receive")),
                     st.just(Step("concurrent")), st.just(Step("raise")),
                     st.sampled_from([Step("other", other=t) for t in (
                         "websocket.nope", "http.response.start", "websocket.receive",
                         "websocket.connect")]))


@st.composite
def plans(draw):
    steps = [Step("catch")] if draw(st.integers(0, 3)) == 0 else []
    if draw(st.integers(0, 2)):
        steps.append(Step("receive"))
    if draw(st.integers(0, 9)) == 0:
        steps.append(draw(st.one_of(send_step(), misc_step())))
    opening = draw(st.integers(0, 9))
    if opening < 6:
        steps.append(draw(accept_step()))
    elif opening < 8:
        steps += draw(deny_steps())
    elif opening < 9:
        steps.append(draw(close_step()))
    for _ in range(draw(st.integers(0, 5))):
        roll = draw(st.integers(0, 19))
        if roll < 9:
            steps.append(draw(send_step()))
        elif roll < 11:
            steps.append(draw(close_step()))
        elif roll < 16:
            steps.append(draw(misc_step()))
        elif roll < 18:
            steps.append(draw(accept_step()))
        else:
            steps += draw(deny_steps())[:draw(st.integers(1, 2))]
    if draw(st.integers(0, 2)) == 0:
        steps.append(draw(close_step()))
    for _ in range(draw(st.integers(0, 2))):
        steps.append(Step("receive"))
    return steps


# --- running a plan ----------------------------------------------------------------------------


@dataclasses.dataclass
class Seen:
    steps: list  # per send: "ok" or ("raised", exc); stops at the first raise
    received: list  # receive() results: type (":code" for a disconnect), "timeout", ...
    client: object  # as Expect.client, with the headers the client saw
    ended: bool  # the client's read ended within TIMEOUT
    logged: int  # app exceptions logged
    raw: bytes = b""

    def __repr__(self):
        return (f"Seen(steps={self.steps!r}, received={self.received!r}, "
                f"client={_short(self.client)!r}, ended={self.ended}, logged={self.logged}, "
                f"raw={self.raw[:300]!r})")


def _short(x):
    if isinstance(x, (bytes, str)) and len(x) > 80:
        return f"<{len(x)}: {x[:40]!r}...>"
    if isinstance(x, (list, tuple)):
        return type(x)(_short(i) for i in x)
    return x


class App:
    """One app for all plans: the plan is looked up by path; what happened is recorded."""

    def __init__(self):
        self.plans: dict[str, list] = {}
        self.results: dict[str, tuple] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return
        plan = self.plans.get(scope["path"])
        if plan is None:  # the fresh session after each plan: echo one message, close
            await receive()
            await send({"type": "websocket.accept"})
            m = await receive()
            await send({"type": "websocket.send", "text": m.get("text")})
            await send({"type": "websocket.close", "code": 4321})
            return
        steps, received = [], []
        try:
            await self.run(plan, receive, send, steps, received)
        finally:  # the plan is over (and its observation final) only when the app is
            self.results[scope["path"]] = (steps, received)

    @staticmethod
    async def run(plan, receive, send, steps, received):
        catching = bool(plan) and plan[0].op == "catch"
        for step in plan:
            if step.op == "catch":
                continue
            if step.op == "raise":
                raise Boom("app raised")
            if step.op == "receive":
                try:
                    m = await asyncio.wait_for(receive(), step.wait)
                except asyncio.TimeoutError:
                    received.append("timeout")
                else:
                    t = m["type"]
                    received.append(f"{t}:{m.get('code')}" if t == "websocket.disconnect" else t)
                continue
            if step.op == "concurrent":
                if step.skip:
                    continue
                first = asyncio.ensure_future(receive())
                for _ in range(3):
                    await asyncio.sleep(0)
                try:
                    await asyncio.wait_for(receive(), WAIT_SHORT)
                    received.append("concurrent-allowed")
                except asyncio.TimeoutError:
                    received.append("concurrent-waited")
                except RuntimeError as exc:
                    received.append("concurrent-refused" if str(exc) else "concurrent-unclear")
                if first.done():
                    received.append("first-done")
                first.cancel()
                await asyncio.sleep(0)
                continue
            try:
                await send(build_message(step))
            except Exception as exc:
                steps.append(("raised", exc))
                if catching:
                    continue
                raise
            steps.append("ok")


def read_session(sock, accept_want: bytes):
    """(client view, ended, raw head): the whole session as a well-behaved client sees it."""
    buf = b""
    deadline = time.monotonic() + TIMEOUT
    try:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return "failed", True, buf
            buf += chunk
            if time.monotonic() > deadline:
                return "failed", False, buf
    except (ConnectionResetError, BrokenPipeError):
        return "failed", True, buf
    except socket.timeout:
        return "failed", False, buf
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return "failed", True, buf
    status = int(parts[1])
    fields = []
    for line in lines[1:]:
        k, sep, v = line.partition(b":")
        if not sep:
            return ("bad-head", line), True, buf
        fields.append((k.lower(), v.strip(b" \t")))
    names = [k for k, _ in fields]
    app_headers = [(k, v) for k, v in fields if k not in RESERVED_HEADERS | {b"server", b"date"}]
    if status != 101 and [v.lower() for k, v in fields if k == b"transfer-encoding"] == [
            b"chunked"] and b"content-length" not in names:  # uvicorn's wsproto chunks a denial
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
        except socket.timeout:
            return "failed", False, buf
        body = b""
        while True:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep or not size_line.strip() or any(
                    c not in b"0123456789abcdefABCDEF" for c in size_line.strip()):
                return ("bad-chunks", status), True, buf
            n = int(size_line, 16)
            if n == 0:
                break
            body, rest = body + rest[:n], rest[n + 2:]
        if rest != b"\r\n":
            return ("trailing-bytes", status, rest), True, buf
        return ("http", status, app_headers if status != 500 else None,
                body if status != 500 else None), True, buf
    if status != 101:
        cls = [v for k, v in fields if k == b"content-length"]
        if len(cls) != 1 or not cls[0].isdigit():
            return ("bad-length", status, cls), True, buf
        n = int(cls[0])
        try:
            while len(rest) < n:
                chunk = sock.recv(65536)
                if not chunk:
                    return "failed", True, buf
                rest += chunk
            tail = sock.recv(65536)  # the server closes after a refusal
        except (ConnectionResetError, BrokenPipeError):
            tail = b""
        except socket.timeout:
            return "failed", False, buf
        body = rest[:n] if status != 500 else None
        headers = app_headers if status != 500 else None
        return ("http", status, headers, body) if not rest[n:] + tail else \
            ("trailing-bytes", status, rest[n:] + tail), True, buf
    # A 101: the handshake must be one the client can accept (RFC 6455 §4.1).
    if [v for k, v in fields if k == b"sec-websocket-accept"] != [accept_want] or \
            names.count(b"upgrade") != 1 or names.count(b"connection") != 1 or \
            names.count(b"sec-websocket-extensions") or names.count(b"sec-websocket-protocol") > 1:
        return ("bad-101", fields), True, buf
    sub = next((v.decode("latin-1") for k, v in fields if k == b"sec-websocket-protocol"), None)
    try:
        sock.sendall(b"".join(frame(0x1, m.encode()) for m in CLIENT_MSGS))
    except OSError:
        pass
    reader = Reader(sock, rest)
    frames, close = [], None
    try:
        while True:
            f = reader.read()
            if f is None:
                return ("ws-no-close", sub, app_headers, frames), True, buf
            fin, op, payload = f
            if op == 0x9:
                sock.sendall(frame(0xA, payload))
            elif op == 0x8:
                close = (struct.unpack("!H", payload[:2])[0], payload[2:]) if payload else \
                    (1005, b"")
                try:
                    sock.sendall(frame(0x8, payload[:2]))  # echo the code (RFC 6455 §5.5.1)
                except OSError:
                    pass
                break
            else:
                frames.append((op, payload))
        if not reader.at_eof():
            return ("ws-open-after-close", sub, app_headers, frames, close), True, buf
    except socket.timeout:
        return ("ws", sub, app_headers, frames, close), False, buf
    return ("ws", sub, app_headers, frames, close), True, buf


@pytest.fixture(scope="module")
def servers():
    """cicada's server and uvicorn's (websockets and wsproto), each with the shared App and a
    logger that records the app exceptions it logs."""
    app = App()
    ws = {"ws_ping_interval": None, "ws_per_message_deflate": False}
    uvicorn = {w: ("h11", {"ws": w, **ws}) for w in IMPLS if importlib.util.find_spec(w)}
    with against_uvicorn(app, "cicada.test.wsapp", LOOP, uvicorn, ws="auto", **ws) as (
            cc, cch, uvs, uvh):
        yield app, cc, cch, uvs, uvh


_ids = itertools.count()


def _logged(handler):
    return len([r for r in handler.records if r.exc_info])


def run_plan(app, server, handler, plan) -> Seen:
    path = f"/p{next(_ids)}"
    app.plans[path] = plan
    before = _logged(handler)
    s = server.connect(TIMEOUT)
    want = client_handshake_path(s, path)
    client, ended, raw = read_session(s, want)
    s.close()
    # The app may still be finishing (logging): wait for its result and the log line.
    deadline = time.monotonic() + TIMEOUT
    while path not in app.results and time.monotonic() < deadline:
        time.sleep(0.005)
    steps, received = app.results.get(path, ([], ["app-not-done"]))
    expect_log = any(p.op == "raise" for p in plan) or (
        plan[:1] != [Step("catch")] and any(isinstance(x, tuple) for x in steps))
    while expect_log and time.monotonic() < deadline and _logged(handler) == before:
        time.sleep(0.005)
    del app.plans[path]
    return Seen(list(steps), list(received), client, ended, _logged(handler) - before, raw)


def client_handshake_path(sock, path):
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
                 b"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: " +
                 ", ".join(OFFERED).encode() + b"\r\n\r\n")
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def fresh_ok(server) -> bool:
    s = server.connect(TIMEOUT)
    try:
        want = client_handshake_path(s, "/fresh")
        client, ended, _ = read_session(s, want)
    finally:
        s.close()
    return ended and client[0] == "ws" and client[3] == [(1, b"c0")] and \
        client[4] == (4321, b"")


# --- where the servers are not compared ------------------------------------------------------


def _msgs(plan):
    return [s for s in plan if s.op not in ("receive", "concurrent", "raise")]


def _accept_headers(plan):
    return [h for s in plan if s.op == "accept" for h in s.headers]


def _deny_headers(plan):
    return [h for s in plan if s.op == "deny_start" for h in s.headers]


NOT_COMPARED = {
    # ASGI: a message is a dict; uvicorn indexes any Mapping (and a list or str given a key
    # raises TypeError there, as it does on cicada: the same send raises, but which one first
    # is each server's order of checks).
    "not a dict": lambda p, impl: any(s.wrapper in ("mapping", "notdict", "str") for s in p),
    # ASGI leaves open how a server reads the dict: uvicorn calls a subclass's get().
    "dict subclass with its own get": lambda p, impl: any(s.wrapper == "raisingdict" for s in p),
    # RFC 6455 §4.2.2 (the subprotocol MUST be one the client offered; the client fails the
    # connection otherwise): uvicorn's websockets sends any str it is given, and a non-str too.
    "subprotocol not offered": lambda p, impl: any(
        s.op == "accept" and s.sub not in SUB_OK for s in p),
    # ASGI (accept's headers must not include sec-websocket-protocol) and RFC 6455 §4.1 (the
    # handshake's own headers; RFC 9110 §8.6 / RFC 9112 §6.1: no Content-Length or
    # Transfer-Encoding on a 1xx): uvicorn sends them, a second Sec-WebSocket-Accept included.
    # RFC 9110 §5.1 (field-name = token) and §5.5: uvicorn's websockets sends what it is
    # given, names and values alike; bytes-like pairs are converted by both.
    "handshake or odd headers": lambda p, impl: any(
        h.name.lower() in RESERVED_HEADERS or not header_ok(h)
        for h in _accept_headers(p) + _deny_headers(p)),
    # A denial start whose headers iterator raises: uvicorn's wsproto has marked the handshake
    # done by then and closes without a response; cicada answers 500 (nothing went out).
    "raising denial headers (wsproto)": lambda p, impl: impl == "wsproto" and any(
        s.op == "deny_start" and s.container == "raising" for s in p),
    # ASGI: a denial's headers are optional (an empty list if missing); uvicorn's wsproto
    # raises KeyError without them.
    "denial without headers (wsproto)": lambda p, impl: impl == "wsproto" and any(
        s.op == "deny_start" and s.container == "missing" for s in p),
    # The app's own Server or Date (RFC 9110 §6.6: they replace the server's): websockets
    # fails the handshake with a 500 when the app sends a Date (or a Server) it also sets.
    "server/date from the app (websockets)": lambda p, impl: impl == "websockets" and any(
        h.name.lower() in (b"server", b"date") for h in _accept_headers(p) + _deny_headers(p)),
    # h11 (under wsproto) refuses a value with leading or trailing whitespace; it is OWS on
    # the wire (RFC 9112 §5) and harmless.
    "padded header value (wsproto)": lambda p, impl: impl == "wsproto" and any(
        h.value.strip() != h.value for h in _accept_headers(p) + _deny_headers(p)),
    # RFC 9110 §5.5 (a field value is octets; obs-text is allowed): uvicorn's websockets
    # decodes the app's value as latin-1 and websockets sends it encoded as UTF-8.
    "non-ASCII header value (websockets)": lambda p, impl: impl == "websockets" and any(
        any(c >= 0x80 for c in h.value) for h in _accept_headers(p) + _deny_headers(p)),
    # Generators and iterators of headers: uvicorn's websockets list()s them (a raising one
    # raises the app's exception, as on cicada); compared but for this: wsproto on a denial
    # list()s message["headers"] only when the key is there.
    "headers None": lambda p, impl: any(s.container == "none" for s in p if s.op in (
        "accept", "deny_start")),
    # A header container that is a str: uvicorn iterates its characters (and fails on them
    # later or not at all).
    "str headers": lambda p, impl: any(s.container == "str" for s in p if s.op in (
        "accept", "deny_start")),
    # RFC 9110 §15 (a status is 100..599, a 1xx interim, never the final response): uvicorn
    # sends a 1xx denial, and websockets only a status HTTPStatus knows (not 599); wsproto
    # takes any int or a float.
    "odd denial status": lambda p, impl: any(
        s.op == "deny_start" and (s.status not in STATUS_OK or (
            impl == "websockets" and s.status == "599")) for s in p),
    # ASGI: body is bytes, b"" when missing; uvicorn raises KeyError without one, adds a
    # bytearray to bytes, and a str or memoryview raises on one implementation, not the other.
    "bytes-like, odd or missing denial body": lambda p, impl: any(
        s.op == "deny_body" and s.body not in ("bytes", "empty") for s in p),
    # A close reason over 123 bytes (RFC 6455 §5.5: a control frame's payload is at most 125
    # bytes): cicada cuts it at a character boundary, uvicorn raises.
    "long close reason": lambda p, impl: any(
        s.op == "close" and s.reason in ("long-ascii", "long-utf8") for s in p),
    # ASGI: text is a str, bytes is bytes. uvicorn's websockets sends a str given as bytes
    # (as text), bytes given as text (as binary), bytearray/memoryview as binary;
    # wsproto refuses some and sends others. cicada takes any contiguous buffer for bytes.
    "odd send payload": lambda p, impl: any(
        s.op == "send" and (s.text not in ("missing", "none", "str", "empty", "strsub")
                            or s.bytes not in ("missing", "none", "bytes", "empty"))
        for s in p),
    # ASGI: code is an int; uvicorn's websockets and wsproto take a float, an int subclass's
    # own __int__, and (wsproto) any int at all, 1005/1006 and 5000 included. A code of None
    # is the default for cicada (as a reason of None is for all three); websockets raises.
    "odd close code": lambda p, impl: any(
        s.op == "close" and s.code not in ("missing", "1000", "1001", "3000", "4999")
        for s in p),
    # ASGI: reason is a str; uvicorn's `reason or ""` turns any falsy value into "" and
    # websockets encodes a str subclass; wsproto sends bytes as they are.
    "odd close reason": lambda p, impl: any(
        s.op == "close" and s.reason not in ("missing", "none", "empty", "bye", "max")
        for s in p),
    # A receive() made while another waits: websockets raises its ConcurrencyError, wsproto
    # queues both (ASGI leaves concurrent receive() undefined).
    "concurrent receive": lambda p, impl: any(s.op == "concurrent" for s in p),
    # The app ends a denial response half-way: cicada, which holds it until it is complete,
    # answers 500; uvicorn's websockets sends a 403, wsproto has sent the head and closes.
    "unfinished denial": lambda p, impl: model(p).state == "denying",
    # The app catches a failed send and goes on: the spec says nothing of the state a failed
    # send leaves; cicada is held to "as before it" (the model), uvicorn's is whatever its code
    # did before it tripped (websockets has recorded the subprotocol, wsproto its state...).
    "caught errors": lambda p, impl: p[:1] == [Step("catch")] and bool(model(p).raised),
    # The app returns without a handshake (ASGI: the server answers 500): uvicorn's websockets
    # sends its 500 and then a 101 on the same connection.
    "no handshake (websockets)": lambda p, impl: impl == "websockets" and model(p).client == (
        "http", 500, None, None) and not model(p).app_raised,
}


def not_compared(plan, impl):
    return [name for name, pred in NOT_COMPARED.items() if pred(plan, impl)]


# --- the checks --------------------------------------------------------------------------------


def received_ok(seen: list, want: list, close_code: int) -> bool:
    """receive() results against the model: after the app's close, a prefix of the client's
    messages still queued may come first; then the client's echo of the close."""
    if len(seen) != len(want):
        return False
    after = False
    for s, w in zip(seen, want):
        if w == "after-close":
            # The client echoes the app's code; 1012-1014 are refused by cicada's parser (it
            # knows RFC 6455's list), which then reports 1002.
            codes = {close_code, 1002} if close_code in (1012, 1013, 1014) else {close_code}
            if s == "websocket.receive" and not after:
                continue
            if s.startswith("websocket.disconnect:") and int(s.split(":")[1]) in codes:
                after = True
                continue
            return False
        if s != w:
            return False
    return True


def check_cicada(plan, seen: Seen, cc):
    e = model(plan)
    ctx = f"\nplan={plan!r}\nexpected={_short(e)!r}"[:3000] + f"\nseen={seen!r}"[:3000]
    assert seen.ended, "hang: the client's read did not end" + ctx
    raised = [i for i, x in enumerate(seen.steps) if x != "ok"]
    assert raised == [i for i, _ in e.raised], "a send raised (or not) against the spec" + ctx
    for i, kind in e.raised:
        exc = seen.steps[i][1]
        if kind == "boom":
            assert isinstance(exc, Boom), "the app's own exception was replaced" + ctx
        elif kind == "either":
            assert isinstance(exc, Boom) or (isinstance(exc, RuntimeError) and str(exc)), ctx
        elif kind == "encode":
            assert isinstance(exc, (RuntimeError, UnicodeEncodeError)) and str(exc), ctx
        else:
            assert isinstance(exc, RuntimeError) and str(exc), "unclear error" + ctx
    if e.app_raised:
        assert seen.logged >= 1, "app exception not logged" + ctx
    assert seen.client == e.client, "the client saw something else" + ctx
    head = seen.raw.split(b"\r\n\r\n", 1)[0].lower()
    for name in (b"server", b"date"):  # the app's own replaces the server's (RFC 9110 §6.6)
        mine = max([sum(h.name.lower() == name for h in s.headers) for s in plan] + [1])
        assert head.count(b"\r\n" + name + b":") <= mine, name + ctx.encode()
    assert received_ok(seen.received, e.received, e.close_code), "receive() results" + ctx
    assert cc._thread.is_alive(), "cicada's server thread died" + ctx
    assert fresh_ok(cc), "no fresh WebSocket afterwards" + ctx


def compare(plan, cc_seen: Seen, uv_seen: Seen, impl):
    ctx = (f"uvicorn[{impl}] differs:\nplan={plan!r}\n"
           f"cicada={cc_seen!r}"[:3000] + f"\nuvicorn={uv_seen!r}"[:3000])
    assert uv_seen.ended, ctx
    c = next((i for i, x in enumerate(cc_seen.steps) if x != "ok"), None)
    u = next((i for i, x in enumerate(uv_seen.steps) if x != "ok"), None)
    assert c == u, ctx
    cv, uv = cc_seen.client, uv_seen.client
    if cv[0] == "ws" and uv[0] == "ws-no-close" and not any(
            s.op == "close" and "ok" == (cc_seen.steps + [None] * 99)[i]
            for i, s in enumerate(_msgs(plan))):
        cv = cv[:4]  # the app never closed: uvicorn drops the connection without a close frame
        uv = ("ws", *uv[1:])
    if cv[0] == "http" == uv[0] and not any(s.op == "deny_start" for s in plan):
        cv, uv = cv[:2], uv[:2]  # a 403 or 500 of the server's own: its headers are its own
    elif uv[0] == "http" and uv[2] and not any(
            h.name.lower() == b"content-type" for h in _deny_headers(plan)):
        # uvicorn's websockets gives a denial without one a content-type of its own
        uv = (*uv[:2], [h for h in uv[2] if h != (b"content-type", b"text/plain")], *uv[3:])
    assert cv == uv, ctx


@pytest.mark.parametrize("impl", IMPLS)
def test_ws_app_messages_against_uvicorn(servers, impl):
    app, cc, cc_handler, uvs, uv_handler = servers
    if impl not in uvs:  # wsproto comes with the bench extra (hypercorn), not the test one
        pytest.skip(f"{impl} is not installed")
    uv = uvs[impl]

    @given(plans())
    @_settings
    # The bugs this test found, pinned (each also has its own test in test_ws_messages.py).
    @example([Step("accept", wrapper="notdict")])
    @example([Step("accept", wrapper="mapping")])
    @example([Step("accept", container="raising", headers=[Hdr(b"x-a", b"1")] * 2)])
    @example([Step("accept", sub="unoffered")])
    @example([Step("accept", container="list", headers=[Hdr(b"Sec-WebSocket-Accept", b"1")])])
    @example([Step("accept", container="list", headers=[Hdr(b"server", b"mine")])])
    @example([Step("accept"), Step("close", code="2999")])
    @example([Step("deny_start", container="generator", headers=[Hdr(b"x-a", b"1")]),
              Step("deny_body")])
    @example([Step("deny_start", status="101"), Step("deny_body")])
    @example([Step("deny_start", container="list", headers=[Hdr(b"content-length", b"3")]),
              Step("deny_body")])
    @example([Step("deny_start"), Step("deny_body", more="True"), Step("raise")])
    @example([Step("catch"), Step("deny_start"), Step("deny_body", more="raises"),
              Step("deny_body")])
    def inner(plan):
        model(plan)  # fills in the receive steps' waits first
        cc_seen = run_plan(app, cc, cc_handler, plan)
        check_cicada(plan, cc_seen, cc)
        if not not_compared(plan, impl):
            uv_seen = run_plan(app, uv, uv_handler, plan)
            compare(plan, cc_seen, uv_seen, impl)

    if SEED is not None:
        inner = seed(int(SEED))(inner)
    inner()
