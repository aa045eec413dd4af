"""Differential test: what cicada's HTTP server does with odd and hostile ASGI messages from the
app, against uvicorn's (httptools and h11 protocols), with the ASGI spec as the judge.

Hypothesis generates a *plan*: the app's side of one request. A plan is a list of steps:
`http.response.start` / `http.response.body` / `http.response.trailers` /
`http.response.pathsend` messages, receive() calls, mutations of a header list already sent,
an unknown message type, or the app raising. Every value in a message is drawn from odd but
plausible types and hostile ones: the message as a dict, a dict subclass, a Mapping that is not a
dict, with keys missing or extra; the status as int, bool, HTTPStatus, an int subclass with a
lying `__index__`, huge, negative, float, str; headers as list, tuple, generator, an iterator
that raises half-way, a list whose items mutate it while it is read, pairs as lists, tuples or
3-tuples, names and values as bytes, bytearray, memoryview or str, non-ASCII, empty, CTLs,
many of them, duplicate or conflicting Content-Length, Transfer-Encoding, `connection: close`;
the body as bytes, bytearray, memoryview (non-contiguous, 2-D, non-byte format), str, None,
missing, large; more_body as bool, int, truthy objects and objects whose `__bool__` raises or
clears the message; pathsend of a file, a PathLike, a missing file, a directory, a PathLike
whose __fspath__ raises. The client sends a simple GET, HEAD, or a POST with a body.

`model()` says, from the ASGI HTTP spec (and RFC 9110/9112 for what goes on the wire), which
send() must raise, what the app's own exception must be, and what the client must get. Each plan
runs once on cicada's server and once on uvicorn's; cicada is held to the model exactly, and the
two servers' observations (which send raised, the client's status, app headers and body) are
compared, after these normalisations:

- Exception types are not compared for invalid messages: cicada must raise RuntimeError with a
  message (it names the problem; not empty), uvicorn raises whatever its code trips on
  (KeyError, TypeError, AttributeError...). An exception the app's own object raised (`Boom`,
  from a `__bool__`, a header iterator or a mapping) must reach the app unchanged from both.
- A 500 from the server and a connection closed without a complete response are one outcome,
  "failed": uvicorn writes the head at http.response.start and can only close when the app fails
  later, cicada holds the head back until the first body message and can still answer 500.
- Only the app's own headers are compared (date, server, connection, content-length and
  transfer-encoding are the server's framing choice: cicada sends a single-message body with
  Content-Length, uvicorn chunks it); the reason phrase is not compared (RFC 9112 §4: a client
  should ignore it).
- Extensions are the server's to advertise (ASGI: an app only uses one listed in
  scope["extensions"]): the app sends trailers and pathsend only where advertised (cicada), and
  falls back to a plain body with the file's bytes where not (uvicorn). Trailers are checked on
  cicada only.
- A plan that uses something on which uvicorn is laxer than the spec (and sends what a client
  can't trust, or hangs), or where the spec leaves the choice to the server, is run on cicada
  alone, against the model. Each such case is a named predicate in NOT_COMPARED, with the
  clause that decides it: a Mapping that is not a dict, a dict subclass's own get(), a float
  status, a 1xx or 6xx status, bytes-like (or, on h11, str) header names and values, non-token
  names, CTLs in values (cicada refuses only CR, LF and NUL; RFC 9110 §5.5), padded values (h11
  refuses them), framing headers from the app (uvicorn int()s Content-Length, sends TE with CL),
  memoryview bodies uvicorn measures in elements, falsy non-bytes bodies uvicorn skips, a body on
  a 204/304 (cicada drops it, uvicorn raises), a non-bytes body on HEAD (uvicorn never reads
  it), an int subclass's own __int__ (h11 calls it), headers None (cicada: no headers).
- Which send raised is compared; when one did, the client's view is not (what went out before
  the failure is each server's timing), nor is it when the app never completed the response.
- A client that has the whole response (a HEAD, a 204, a body complete by its Content-Length)
  may close before the app is done; uvicorn then ignores the app's further sends (ASGI before
  2.4), cicada still says a message after completion is one: the app raising there on cicada
  alone is not a difference.
- receive() that can only wait (the body was read, the response is not done) gives up after
  RECEIVE_WAIT and records "timeout"; a client that has left by then makes it a disconnect: the
  two are one outcome.

Invariants on cicada alone, every example: the server thread never dies; the client's read ends
within TIMEOUT (no hang); the client gets the complete response the model says, or (when the
app failed or never completed it) a 500 or a close, never a response that claims to be complete
and is not; every send the model says is invalid raises a RuntimeError with a message (the app's
own exception unchanged, FileNotFoundError for a missing pathsend file), every valid one does
not; every exception that ends the app is logged; a response whose app asked for
`connection: close` is followed by a close; a fresh connection is served afterwards.

TEST_APPMSG_LOOP=asyncio|uvloop runs cicada's server on that loop instead of cicada's own.

TEST_APPMSG_EXAMPLES=N runs N examples instead of the CI default (e.g. 3000 to hunt);
TEST_APPMSG_SEED=S draws other examples than the derandomised CI ones.
"""

from __future__ import annotations

import array
import asyncio
import dataclasses
import enum
import http
import itertools
import os
import socket
import tempfile
import time

import pytest

hypothesis = pytest.importorskip("hypothesis")
uvicorn = pytest.importorskip("uvicorn")

from hypothesis import example, given, seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from support.hunt import hunt_settings  # noqa: E402
from support.hostile import (  # noqa: E402
    Boom, BoolRaises, DictSub, Falsy, FrozenMapping, OddInt, RaisingDict, StrSub, Truthy,
)
from support.server_thread import against_uvicorn  # noqa: E402

EXAMPLES, _settings, SEED = hunt_settings("TEST_APPMSG", 150)
TIMEOUT = 5.0  # a client read that has not ended by then is a hang
RECEIVE_WAIT = 0.2  # a receive() with nothing to receive gives up after this
LOOP = os.environ.get("TEST_APPMSG_LOOP", "cicada")  # the loop cicada's server runs on
FILE_BYTES = bytes(range(256)) * 40  # what pathsend sends (or its body fallback)


# --- hostile values ---------------------------------------------------------------------------


class Color(enum.IntEnum):
    OK = 200
    TEAPOT = 418


class Clears:
    """more_body whose __bool__ empties the message it sits in, then says False."""

    msg: dict | None = None

    def __bool__(self):
        if self.msg is not None:
            self.msg.clear()
        return False


def raising_iter(pairs, at):
    for i, p in enumerate(pairs):
        if i == at:
            raise Boom("headers iterator")
        yield p


class FspathRaises:
    def __fspath__(self):
        raise Boom("fspath")


class Pathlike:
    def __init__(self, path):
        self.path = path

    def __fspath__(self):
        return self.path


class SelfMutating(list):
    """A header list whose __iter__ appends a bad pair to itself before iterating."""

    def __iter__(self):
        self.append(("bad", "pair"))
        return super().__iter__()


# --- plans -------------------------------------------------------------------------------------

@dataclasses.dataclass
class Hdr:
    """One generated header: how to build the name and value, and what the spec says of it."""

    name: bytes
    value: bytes
    kind: str = "bytes"  # bytes, bytearray, memoryview, str, list-pair, triple, single

    def __repr__(self):
        return f"H({self.name!r}, {self.value[:40]!r}, {self.kind})"


@dataclasses.dataclass
class Step:
    op: str  # start, body, trailers, pathsend, receive, mutate, other, raise
    status: str = "200"  # a key of STATUSES
    headers: list = dataclasses.field(default_factory=list)
    container: str = "list"  # list, tuple, generator, raising, selfmut, none, missing, str
    body: str = "bytes"  # a kind of body
    size: int = 0
    more: str = "missing"  # missing, False, True, 0, 1, truthy, falsy, raises, clears
    wrapper: str = "dict"  # dict, dictsub, mapping, raisingdict, extra, notype
    trailers: bool = False
    how: str = ""  # mutate: append-bad, setitem-int, clear-pair, inject

    def __repr__(self):
        fields = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)[1:]
                  if getattr(self, f.name) != f.default and f.name != "headers"]
        hs = self.headers
        if hs:
            fields.append(f"headers={hs[:6]!r}" + (f"+{len(hs) - 6}" if len(hs) > 6 else ""))
        return f"{self.op}({', '.join(fields)})"


STATUSES = {
    "200": 200, "204": 204, "304": 304, "404": 404, "418": 418, "599": 599, "100": 100,
    "true": True, "http-status": http.HTTPStatus.CREATED, "intenum": Color.TEAPOT,
    "oddint": OddInt(203), "huge": 10 ** 30, "neg": -200, "float": 200.0, "str": "200",
    "99": 99, "600": 600, "none": None, "missing": ...,
}
# RFC 9110 §15: 100..599; a 1xx is interim, never the response (cicada refuses it).
VALID_STATUS = {"200": 200, "204": 204, "304": 304, "404": 404, "418": 418, "599": 599,
                "http-status": 201, "intenum": 418, "oddint": 203}


def build_headers(step: Step):
    pairs = []
    for h in step.headers:
        n, v = h.name, h.value
        if h.kind == "bytearray":
            pairs.append((bytearray(n), bytearray(v)))
        elif h.kind == "memoryview":
            pairs.append((memoryview(n), memoryview(v)))
        elif h.kind == "str":
            pairs.append((n.decode("latin-1"), v.decode("latin-1")))
        elif h.kind == "list-pair":
            pairs.append([n, v])
        elif h.kind == "triple":
            pairs.append((n, v, b"extra"))
        elif h.kind == "single":
            pairs.append((n,))
        else:
            pairs.append((n, v))
    c = step.container
    if c == "tuple":
        return tuple(pairs)
    if c == "generator":
        return (p for p in pairs)
    if c == "raising":
        return raising_iter(pairs, len(pairs) // 2)
    if c == "selfmut":
        return SelfMutating(pairs)
    if c == "none":
        return None
    if c == "str":
        return "x-a: 1"
    return pairs


def build_body(step: Step):
    n = step.size
    raw = (b"0123456789abcdef" * (n // 16 + 1))[:n]
    k = step.body
    if k == "bytes":
        return raw
    if k == "bytearray":
        return bytearray(raw)
    if k == "memoryview":
        return memoryview(raw)
    if k == "strided":  # non-contiguous: every other byte of a doubled buffer
        return memoryview(bytes(b for c in raw for b in (c, 0)))[::2]
    if k == "2d":
        m = n - n % 2
        return memoryview(raw[:m]).cast("B", (2, m // 2)) if m else memoryview(b"")
    if k == "int-array":
        return array.array("i", range(n // 4 + 1))
    if k == "str":
        return raw.decode()
    if k == "none":
        return None
    if k == "int":
        return n
    raise AssertionError(k)


def body_wire(step: Step) -> bytes | None:
    """The bytes a valid body puts on the wire (None: not a valid body)."""
    obj = build_body(step) if step.body != "missing" else b""
    if step.body in ("str", "none", "int"):
        return None
    return bytes(memoryview(obj).tobytes()) if obj is not None else b""


def build_more(step: Step):
    return {"False": False, "True": True, "0": 0, "1": 1, "truthy": Truthy(), "falsy": Falsy(),
            "raises": BoolRaises(), "clears": Clears(), "list": [1]}.get(step.more, False)


def more_value(step: Step):
    """True/False for more_body, or "boom" when its truth raises."""
    if step.more == "raises":
        return "boom"
    return step.more in ("True", "1", "truthy", "list")


def wrap(d: dict, wrapper: str):
    if wrapper == "dictsub":
        return DictSub(d)
    if wrapper == "mapping":
        return FrozenMapping(d)
    if wrapper == "raisingdict":
        return RaisingDict(d)
    if wrapper == "extra":
        d["x-extension-key"] = object()
        return d
    if wrapper == "notype":
        d.pop("type")
        return d
    if wrapper == "typesub":
        d["type"] = StrSub(d["type"])
        return d
    if wrapper == "bytestype":
        d["type"] = d["type"].encode()
        return d
    return d


def build_message(step: Step, extensions: dict, ctx: dict):
    """The message for a step, built fresh for each server (plans hold no live objects)."""
    if step.op == "start":
        d = {"type": "http.response.start"}
        if step.status != "missing":
            d["status"] = STATUSES[step.status]
        if step.container != "missing":
            d["headers"] = ctx["headers"] = build_headers(step)
        if step.trailers and "http.response.trailers" in extensions:
            d["trailers"] = True
        return wrap(d, step.wrapper)
    if step.op in ("body", "pathsend") and (step.op == "body" or
                                           "http.response.pathsend" not in extensions):
        d = {"type": "http.response.body"}
        if step.op == "pathsend":
            d["body"] = FILE_BYTES
        elif step.body != "missing":
            d["body"] = build_body(step)
        if step.more != "missing":
            d["more_body"] = build_more(step)
            if step.more == "clears":
                d["more_body"].msg = d
        return wrap(d, step.wrapper)
    if step.op == "pathsend":
        path = {"file": ctx["file"], "missing": ctx["file"] + ".missing",
                "dir": os.path.dirname(ctx["file"]), "fspath-raises": FspathRaises(),
                "pathlike": Pathlike(ctx["file"])}[step.how or "file"]
        return {"type": "http.response.pathsend", "path": path}
    if step.op == "trailers":
        return {"type": "http.response.trailers", "headers": build_headers(step),
                "more_trailers": False}
    if step.op == "other":
        return {"type": "websocket.send", "text": "x"}
    raise AssertionError(step.op)


def mutate(ctx: dict, how: str) -> None:
    """Change the header list the app passed to http.response.start, after the send."""
    h = ctx.get("headers")
    if not isinstance(h, list):
        return
    if how == "append-bad":
        h.append(("not", "bytes"))
    elif how == "append-cl":
        h.append((b"content-length", b"1"))
    elif how == "setitem-int" and h:
        h[0] = 5
    elif how == "inject" and h and isinstance(h[0], list):
        h[0][1] = b"v\r\nInjected: 1"
    elif how == "clear-pair" and h and isinstance(h[0], list):
        h[0].clear()
    elif how == "clear":
        h.clear()


# --- the model ---------------------------------------------------------------------------------

TCHAR = set(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
NO_BODY = (204, 304)


@dataclasses.dataclass
class Expect:
    raised_at: int | None = None  # index (among the app's sends) of the send that must raise
    boom: bool = False  # ... with the app's own Boom (else a RuntimeError)
    app_raised: bool = False  # an exception ends the app: it must be logged
    complete: bool = False  # the response was complete (the client must get it whole)
    status: int = 0
    headers: list = dataclasses.field(default_factory=list)
    body: bytes = b""
    trailers: list = dataclasses.field(default_factory=list)
    close: bool = False  # the app asked for connection: close
    received: list = dataclasses.field(default_factory=list)  # receive() results' types
    loose: bool = False  # pathsend with a Content-Length of its own: the wire is not modelled
    maybe_complete: bool = False
    oserror: bool = False  # the send must raise OSError (pathsend of a missing file)


def header_ok(h: Hdr) -> bool:
    if h.kind not in ("bytes", "list-pair"):
        return False
    return (bool(h.name) and all(c in TCHAR for c in h.name)
            and not any(c in b"\r\n\x00" for c in h.value))


def chunked_last(v: bytes) -> bool:
    codings = [t.strip().lower() for t in v.split(b",") if t.strip()]
    return bool(codings) and codings[-1] == b"chunked" and codings.count(b"chunked") == 1


def start_verdict(step: Step):
    """(error, facts) for an http.response.start: error is None, "boom" or "invalid"; checked
    in the order cicada checks (any order is right when a message has two problems)."""
    if step.wrapper in ("mapping", "notype", "bytestype"):
        return "invalid", {}
    if step.status not in VALID_STATUS:
        return "invalid", {}
    headers = [] if step.container in ("none", "missing") else step.headers
    if step.container == "raising" and headers:
        return "boom", {}
    if step.container in ("str", "selfmut"):  # selfmut's __iter__ adds a str pair
        return "invalid", {}
    if not all(header_ok(h) for h in headers):
        return "invalid", {}
    cls = [h.value for h in headers if h.name.lower() == b"content-length"]
    tes = [h.value for h in headers if h.name.lower() == b"transfer-encoding"]
    if any(not v.isdigit() or len(v) > 19 for v in cls) or len(set(cls)) > 1:
        return "invalid", {}
    if len(tes) > 1 or (tes and (cls or not chunked_last(tes[0]))):
        return "invalid", {}
    close = any(h.name.lower() == b"connection" and b"close" in
                [t.strip().lower() for t in h.value.split(b",")] for h in headers)
    return None, {"cl": int(cls[0]) if cls else None, "te": bool(tes), "close": close,
                  "status": VALID_STATUS[step.status],
                  "headers": [(h.name.lower(), h.value.strip(b" \t")) for h in headers
                              if h.name.lower() not in FRAMING]}


def body_verdict(step: Step):
    """(error, wire bytes, more) for a body message (or pathsend's fallback body)."""
    if step.wrapper in ("mapping", "notype", "bytestype"):
        return "invalid", b"", False
    wire = body_wire(step) if step.op == "body" else FILE_BYTES
    if wire is None:
        return "invalid", b"", False
    more = more_value(step) if step.op == "body" else False
    if more == "boom":
        return "boom", b"", False
    return None, wire, more


def model(plan: list[Step], method: str, extensions: bool) -> Expect:
    """What the ASGI spec requires for this plan, run by an app on a server that advertises
    trailers and pathsend (extensions) or not."""
    e = Expect()
    state, facts, body, tr_pending, got_request, sends = "init", {}, b"", False, False, 0
    for step in plan:
        if step.op == "raise":
            e.app_raised = True
            break
        if step.op == "mutate":
            continue
        if step.op == "receive":
            if state == "done":
                e.received.append("http.disconnect")
            elif not got_request:
                e.received.append("http.request")
                got_request = True
            else:
                e.received.append("timeout")  # nothing to receive until the response is done
            continue
        if step.op == "trailers" and not extensions:
            continue
        err = None
        if step.op == "other":
            err = "invalid"
        elif state == "init":
            if step.op != "start":
                err = "invalid"
            else:
                err, facts = start_verdict(step)
                if not err:
                    state = "started"
                    tr_pending = step.trailers and extensions
        elif state in ("started", "body") and step.op in ("body", "pathsend"):
            no_body = method == "HEAD" or facts["status"] in NO_BODY
            if step.op == "pathsend" and extensions and (state != "started" or facts["te"]
                                                         or tr_pending):
                err = "invalid"
            elif step.op == "pathsend" and extensions and step.how in ("missing", "dir",
                                                                       "fspath-raises"):
                err = {"missing": "oserror", "dir": "invalid", "fspath-raises": "boom"}[step.how]
            elif step.op == "pathsend" and extensions and facts["cl"] is not None:
                e.loose, state = True, "done"  # the file is cut to (or short of) that length
            else:
                err, wire, more = body_verdict(step)
                if not err and not no_body and facts["cl"] is not None and (
                        len(body) + len(wire) > facts["cl"] or
                        (not more and len(body) + len(wire) != facts["cl"])):
                    err = "invalid"
                if not err:
                    if not no_body:
                        body += wire
                    state = "body"
                    if not more:
                        state = "trailers" if tr_pending else "done"
        elif state == "trailers" and step.op == "trailers":
            if facts["status"] in NO_BODY or method == "HEAD":  # no body, no trailers
                state = "done"
            elif facts["cl"] is not None:
                err, state = "invalid", "done"  # the body was complete: cicada ends it there
            elif not all(header_ok(h) for h in step.headers):
                err = "invalid"
            else:
                e.trailers = [(h.name.lower(), h.value.strip(b" \t")) for h in step.headers]
                state = "done"
        else:
            err = "invalid"  # out of order, or after the response is complete
        if err:
            e.raised_at, e.boom, e.app_raised = sends, err == "boom", True
            e.oserror = err == "oserror"
            break
        sends += 1
    # A body complete by its Content-Length, then no trailers: complete on the wire.
    # Complete on the wire though the app is not done: the head is out and the body is complete
    # by its Content-Length, or there is none (204, 304, HEAD).
    e.maybe_complete = state in ("body", "trailers") and (
        facts["cl"] == len(body) or facts["status"] in NO_BODY or method == "HEAD")
    if state == "done" or e.maybe_complete:
        e.complete = state == "done"
        e.status, e.headers, e.body, e.close = (facts["status"], facts["headers"], body,
                                                facts["close"])
    return e


# --- strategies --------------------------------------------------------------------------------

good_names = st.sampled_from([b"x-a", b"X-Mixed-Case", b"content-type", b"cache-control",
                              b"set-cookie", b"x-" + b"n" * 40, b"Date", b"server"])
odd_names = st.sampled_from([b"", b"a b", b"a:b", b"a/b", b"\xc3\xa9", b"(x)", b"a\r\nb",
                             b"x\x00", b"a\tb"])
good_values = st.sampled_from([b"1", b"", b"text/plain", b"a, b", b"\xe9t\xe9", b"v" * 300,
                               b" padded "])
odd_values = st.sampled_from([b"a\r\nInjected: 1", b"\x00", b"a\nb", b"\x01", b"\x7f", b"\x1b[0m"])


@st.composite
def headers_list(draw, framing=True):
    out = []
    for _ in range(draw(st.integers(0, 4))):
        roll = draw(st.integers(0, 19))
        if roll < 12:
            h = Hdr(draw(good_names), draw(good_values))
        elif roll < 14:
            h = Hdr(draw(odd_names), draw(good_values))
        elif roll < 16:
            h = Hdr(draw(good_names), draw(odd_values))
        else:
            h = Hdr(draw(good_names), draw(good_values),
                    draw(st.sampled_from(["bytearray", "memoryview", "str", "list-pair",
                                          "triple", "single"])))
        out.append(h)
    if framing and draw(st.integers(0, 3)) == 0:
        name = draw(st.sampled_from([b"content-length", b"Content-Length",
                                     b"transfer-encoding", b"connection"]))
        if name.lower() == b"content-length":
            v = draw(st.sampled_from([b"SIZE", b"SIZE", b"0", b"3", b"+3", b" 3", b"abc",
                                      b"99999999999999999999"]))
        elif name == b"transfer-encoding":
            v = draw(st.sampled_from([b"chunked", b"Chunked", b"gzip", b"gzip, chunked",
                                      b"chunked, gzip"]))
        else:
            v = draw(st.sampled_from([b"close", b"keep-alive", b"Close", b"upgrade, close"]))
        out.append(Hdr(name, v))
        if draw(st.integers(0, 3)) == 0:
            out.append(Hdr(name, v if draw(st.booleans()) else b"5"))
    if draw(st.integers(0, 29)) == 0:
        out += [Hdr(b"x-many-%d" % i, b"v") for i in range(draw(st.sampled_from([50, 300])))]
    return out


wrappers = st.sampled_from(["dict"] * 14 + ["dictsub", "mapping", "raisingdict", "extra",
                                            "notype", "typesub", "bytestype"])
body_kinds = st.sampled_from(["bytes"] * 8 + ["bytearray", "memoryview", "strided", "2d",
                                              "int-array", "str", "none", "int", "missing"])
mores = st.sampled_from(["missing"] * 4 + ["False", "True", "0", "1", "truthy", "falsy",
                                            "raises", "clears", "list"])
sizes = st.one_of(st.integers(0, 20), st.integers(0, 20), st.sampled_from([70000, 1 << 20]))


@st.composite
def plans(draw):
    steps = []
    status = draw(st.sampled_from(["200"] * 10 + sorted(STATUSES)))
    steps.append(Step("start", status=status, headers=draw(headers_list()),
                      container=draw(st.sampled_from(["list"] * 10 + [
                          "tuple", "generator", "raising", "selfmut", "none", "missing",
                          "str"])),
                      wrapper=draw(wrappers), trailers=draw(st.integers(0, 5)) == 0))
    if draw(st.integers(0, 9)) == 0:
        steps.insert(0, draw(st.sampled_from([Step("body"), Step("other"), Step("receive")])))
    for _ in range(draw(st.integers(0, 4))):
        roll = draw(st.integers(0, 19))
        if roll < 12:
            steps.append(Step("body", body=draw(body_kinds), size=draw(sizes),
                              more=draw(mores), wrapper=draw(wrappers)))
        elif roll < 14:
            steps.append(Step("mutate", how=draw(st.sampled_from(
                ["append-bad", "append-cl", "setitem-int", "inject", "clear-pair", "clear"]))))
        elif roll < 15:
            steps.append(Step("trailers", headers=draw(headers_list(framing=False))))
        elif roll < 16:
            steps.append(Step("pathsend", how=draw(st.sampled_from(
                ["file", "file", "pathlike", "missing", "dir", "fspath-raises"]))))
        elif roll < 18:
            steps.append(Step("receive"))
        elif roll < 19:
            steps.append(Step("other"))
        else:
            steps.append(Step("raise"))
    # Usually end the response, so that complete responses are compared too.
    if draw(st.integers(0, 3)):
        steps.append(Step("body", body="bytes", size=draw(st.integers(0, 8)),
                          more="False"))
    if any(s.trailers for s in steps[:1]) and draw(st.booleans()):
        steps.append(Step("trailers", headers=[Hdr(b"x-trailer", b"t")]))
    if draw(st.integers(0, 4)) == 0:
        steps.append(Step("receive"))
    # Fill in Content-Length "SIZE" with the real total of the valid bodies, most of the time.
    total = sum(len(body_wire(s) or b"") for s in steps if s.op == "body")
    total += sum(len(FILE_BYTES) for s in steps if s.op == "pathsend")
    for h in steps[0].headers:
        if h.value == b"SIZE":
            h.value = str(total).encode()
    method = draw(st.sampled_from(["GET", "GET", "POST", "HEAD"]))
    return method, steps


# --- running a plan ----------------------------------------------------------------------------

@dataclasses.dataclass
class Seen:
    steps: list  # per step run: "ok", ("raised", exc) ; stops at the first raise
    received: list
    client: object  # ("response", status, app headers, body, trailers, closed) or "failed"
    ended: bool  # the client's read ended within TIMEOUT
    logged: int  # app exceptions logged
    raw: bytes = b""

    def __repr__(self):
        c = self.client
        if c != "failed":
            c = (*c[:3], f"<{len(c[3])} bytes {c[3][:60]!r}>", *c[4:])
        return (f"Seen(steps={self.steps!r}, received={self.received!r}, client={c!r}, "
                f"ended={self.ended}, logged={self.logged}, raw={self.raw[:300]!r})")


class App:
    """One app for all plans: the plan is looked up by path; what happened is recorded."""

    def __init__(self):
        self.plans: dict[str, list] = {}
        self.results: dict[str, tuple] = {}
        self.file = tempfile.NamedTemporaryFile(prefix="cicada-appmsg-", delete=False)
        self.file.write(FILE_BYTES)
        self.file.flush()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        plan = self.plans.get(scope["path"])
        if plan is None:  # the fresh request after each plan
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"fresh"})
            return
        ext = scope.get("extensions") or {}
        steps, received = [], []
        try:
            await self.run(plan, ext, receive, send, steps, received)
        finally:  # the plan is over (and its observation final) only when the app is
            self.results[scope["path"]] = (steps, received)

    async def run(self, plan, ext, receive, send, steps, received):
        ctx = {"file": self.file.name}
        for step in plan:
            if step.op == "raise":
                raise Boom("app raised")
            if step.op == "mutate":
                mutate(ctx, step.how)
                continue
            if step.op == "receive":
                try:
                    received.append((await asyncio.wait_for(receive(), RECEIVE_WAIT))["type"])
                except asyncio.TimeoutError:
                    received.append("timeout")
                continue
            if step.op == "trailers" and "http.response.trailers" not in ext:
                continue
            try:
                msg = build_message(step, ext, ctx)
                await send(msg)
            except Exception as exc:
                steps.append(("raised", exc))
                raise
            steps.append("ok")


def read_client(sock, probe_close=False, head=False) -> tuple[object, bool, bytes]:
    """The client's view: a complete response (status, headers, body, trailers, closed after),
    or "failed"; and whether reading ended in time."""
    sock.settimeout(TIMEOUT)
    data = b""
    ended = True
    deadline = time.monotonic() + TIMEOUT
    closed = False
    while True:
        parsed = parse_response(data, head_only=head)
        if parsed is not None and parsed != "close-delimited":
            break
        try:
            chunk = sock.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        except socket.timeout:
            ended = False
            break
        if not chunk:
            closed = True
            break
        data += chunk
        if time.monotonic() > deadline:
            ended = False
            break
    parsed = parse_response(data, eof=closed, head_only=head)
    if parsed is None or parsed == "close-delimited":
        return "failed", ended, data
    status, headers, body, trailers, rest = parsed
    if not closed and probe_close:  # did the server close after the response?
        sock.settimeout(0.3)
        try:
            more = sock.recv(65536)
            closed = more == b""
        except socket.timeout:
            closed = False
        except (ConnectionResetError, BrokenPipeError):
            closed = True
    return ("response", status, headers, body, trailers, closed), ended, data


FRAMING = {b"date", b"server", b"connection", b"content-length", b"transfer-encoding"}


def parse_response(data: bytes, eof: bool = False, head_only: bool = False):
    """(status, app headers, body, trailers, rest) of a complete response at the start of data,
    None when incomplete (or invalid)."""
    if b"\r\n\r\n" not in data:
        return None
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit() or not lines[0].startswith(b"HTTP/1.1 "):
        return None
    status = int(parts[1])
    fields = []
    for line in lines[1:]:
        if b":" not in line:
            return None
        k, _, v = line.partition(b":")
        fields.append((k.lower(), v.strip(b" \t")))
    app_headers = [(k, v) for k, v in fields if k not in FRAMING]
    cls = {v for k, v in fields if k == b"content-length"}
    te = [v for k, v in fields if k == b"transfer-encoding"]
    if status in NO_BODY or status < 200 or head_only:
        return status, app_headers, b"", [], rest
    if te:
        if te[-1].split(b",")[-1].strip().lower() != b"chunked":
            return None  # RFC 9112 §6.3: not chunked-final: close-delimited, can't be trusted
        body, trailers, pos = b"", [], 0
        while True:
            nl = rest.find(b"\r\n", pos)
            if nl < 0:
                return None
            try:
                size = int(rest[pos:nl].split(b";")[0], 16)
            except ValueError:
                return None
            pos = nl + 2
            if size == 0:
                while True:
                    nl = rest.find(b"\r\n", pos)
                    if nl < 0:
                        return None
                    line = rest[pos:nl]
                    pos = nl + 2
                    if not line:
                        return status, app_headers, body, trailers, rest[pos:]
                    k, _, v = line.partition(b":")
                    trailers.append((k.lower(), v.strip()))
            if len(rest) < pos + size + 2:
                return None
            body += rest[pos:pos + size]
            if rest[pos + size:pos + size + 2] != b"\r\n":
                return None
            pos += size + 2
    if cls:
        if len(cls) > 1:
            return None
        n = int(cls.pop())
        if len(rest) < n:
            return None
        return status, app_headers, rest[:n], [], rest[n:]
    if eof:
        return status, app_headers, rest, [], b""  # close-delimited
    return "close-delimited"


@pytest.fixture(scope="module")
def servers():
    """cicada's server and uvicorn's (httptools and h11), each with the shared App and a logger
    that records the app exceptions it logs."""
    app = App()
    with against_uvicorn(app, "cicada.test.appmsg", LOOP,
                         {p: (p, {}) for p in ("httptools", "h11")}) as (cc, cch, uvs, uvh):
        yield app, cc, cch, uvs, uvh
    os.unlink(app.file.name)


_ids = itertools.count()


def run_plan(app, server, handler, method, plan) -> Seen:
    path = f"/p{next(_ids)}"
    app.plans[path] = plan
    before = len([r for r in handler.records if r.exc_info])
    s = server.connect(TIMEOUT)
    body = b"hello=1" if method == "POST" else b""
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: a\r\n".encode() +
              (b"Content-Length: %d\r\n" % len(body) if body else b"") + b"\r\n" + body)
    probe = any(h.name.lower() == b"connection" for h in _headers(plan))
    client, ended, raw = read_client(s, probe, head=method == "HEAD")
    s.close()
    # The app's task may still be finishing (logging): wait for its result and the log line.
    deadline = time.monotonic() + TIMEOUT
    while path not in app.results and time.monotonic() < deadline:
        time.sleep(0.005)
    steps, received = app.results.get(path, ([], []))
    expect_log = any(isinstance(x, tuple) for x in steps) or any(p.op == "raise" for p in plan)
    while expect_log and time.monotonic() < deadline and \
            len([r for r in handler.records if r.exc_info]) == before:
        time.sleep(0.005)
    logged = len([r for r in handler.records if r.exc_info]) - before
    del app.plans[path]
    return Seen(list(steps), list(received), client, ended, logged, raw)


def fresh_ok(server) -> bool:
    s = server.connect(TIMEOUT)
    try:
        s.sendall(b"GET /fresh HTTP/1.1\r\nHost: a\r\n\r\n")
        client, ended, _ = read_client(s)
    finally:
        s.close()
    return client != "failed" and client[1] == 200 and client[3] == b"fresh"


# --- where the servers are not compared ------------------------------------------------------

def _start(plan):
    return plan[0] if plan and plan[0].op == "start" else None


def _headers(plan):
    return [h for s in plan if s.op in ("start", "trailers") for h in s.headers]


def _bodies(plan):
    return [s for s in plan if s.op == "body"]


# Plans on which uvicorn is not compared with cicada (cicada is still held to the model): uvicorn
# accepts what the spec does not allow, or the spec leaves the choice open. Each names its clause.
NOT_COMPARED = {
    # ASGI: a message is a dict; uvicorn indexes any Mapping.
    "Mapping message": lambda p, *_: any(s.wrapper == "mapping" for s in p),
    # ASGI leaves open how a server reads the dict: uvicorn calls a subclass's get(), cicada
    # reads the dict.
    "dict subclass with its own get": lambda p, *_: any(s.wrapper == "raisingdict" for s in p),
    # ASGI: status is an int; uvicorn looks 200.0 up in its status-line table.
    "float status": lambda p, *_: any(s.op == "start" and s.status == "float" for s in p),
    # RFC 9110 §15.2 (a 1xx is interim) and §15 (100..599): uvicorn sends a 100 as the
    # response (httptools) or a 600 (h11).
    "1xx or 6xx status": lambda p, *_: any(
        s.op == "start" and s.status in ("100", "600") for s in p),
    # ASGI: header names and values are byte strings; uvicorn takes a bytearray (and h11 a
    # memoryview, or an ASCII str, which it encodes).
    "bytes-like header": lambda p, proto, method: any(
        h.kind in ("bytearray", "memoryview") or (h.kind == "str" and proto == "h11")
        for h in _headers(p)) or (proto == "h11" and any(s.container == "selfmut" for s in p)),
    # h11 reads the status with int(), which calls a subclass's own __int__; cicada reads the
    # int's value (ASGI: status is an int; the value is the int's).
    "int subclass status": lambda p, proto, method: proto == "h11" and any(
        s.op == "start" and s.status == "oddint" for s in p),
    # RFC 9110 §5.1 (field-name = token): uvicorn's name check lets "/", non-ASCII and an empty
    # name through.
    "non-token header name": lambda p, *_: any(
        h.name in (b"", b"a/b", b"\xc3\xa9") for h in _headers(p)),
    # RFC 9110 §5.5: a sender must not send CTLs in a value; uvicorn (httptools) refuses them
    # all, h11 some, cicada only CR, LF and NUL (reported, left as it is).
    "CTL in header value": lambda p, *_: any(
        any(c in h.value for c in b"\x01\x7f\x1b") for h in _headers(p)),
    # h11 refuses a value with leading or trailing whitespace; it is OWS on the wire (RFC 9112
    # §5) and harmless.
    "padded header value": lambda p, *_: any(h.value.strip() != h.value for h in _headers(p)),
    # RFC 9110 §8.6 (Content-Length = 1*DIGIT, one value) and RFC 9112 §6.1-6.2 (chunked last,
    # never with Content-Length): uvicorn int()s the value (" 3", "+3"), keeps the first of two
    # different ones, adds its own chunked to a "gzip", and sends TE with CL; h11 frames by
    # itself. Framing headers from the app are checked on cicada against the model only.
    "framing headers": lambda p, *_: any(
        h.name.lower() in (b"content-length", b"transfer-encoding") for h in _headers(p)),
    # uvicorn len()s a memoryview (elements, not bytes: a wrong chunk size), can't join a
    # strided one, and takes an array.array only on some loops.
    "bytes-like body": lambda p, *_: any(
        s.body in ("strided", "2d", "int-array") for s in _bodies(p)),
    # ASGI: body is bytes; uvicorn skips a falsy one (None, "", 0) when it chunks.
    "falsy non-bytes body": lambda p, *_: any(
        (s.body in ("str", "int") and s.size == 0) or s.body == "none" for s in _bodies(p)),
    # RFC 9110 §15.3.5/15.4.5: no content on a 204/304; cicada drops the body, uvicorn raises.
    "body on 204/304": lambda p, *_: any(
        s.op == "start" and s.status in ("204", "304") for s in p),
    # uvicorn writes nothing for a HEAD body and never looks at it (ASGI: body is bytes).
    "HEAD with a non-bytes body": lambda p, proto, method: method == "HEAD" and any(
        s.body in ("str", "int", "none") for s in _bodies(p)),
    # Extensions (see the module docstring): the app's fallback on uvicorn differs by design.
    "trailers/pathsend": lambda p, *_: any(
        s.op in ("trailers", "pathsend") or s.trailers for s in p),
    # None for headers: cicada reads it as no headers, uvicorn list(None)s it.
    "headers None": lambda p, *_: any(s.op == "start" and s.container == "none" for s in p),
}


def not_compared(plan, proto, method):
    return [name for name, pred in NOT_COMPARED.items() if pred(plan, proto, method)]


# --- the checks --------------------------------------------------------------------------------

def outcome(seen: Seen):
    """(index of the send that raised or None, it was the app's Boom, the client's view)."""
    raised = next((i for i, x in enumerate(seen.steps) if x != "ok"), None)
    boom = raised is not None and isinstance(seen.steps[raised][1], Boom)
    if seen.client == "failed" or seen.client[1] == 500:  # plans never send a 500
        client = "failed"
    else:
        _, status, headers, body, _trailers, _closed = seen.client
        client = (status, headers, body)
    return raised, boom, client


def check_cicada(plan, method, seen: Seen, cc):
    e = model(plan, method, extensions=True)
    ctx = f"\nplan={plan!r}\nmethod={method}\nexpected={e!r}"[:3000] + f"\nseen={seen!r}"[:3000]
    assert seen.ended, "hang: the client's read did not end" + ctx
    raised, boom, client = outcome(seen)
    assert raised == e.raised_at, "a send raised (or not) against the spec" + ctx
    if raised is not None:
        exc = seen.steps[raised][1]
        if e.boom:
            assert isinstance(exc, Boom), "the app's own exception was replaced" + ctx
        elif e.oserror:
            assert isinstance(exc, FileNotFoundError) and str(exc), ctx
        else:
            assert isinstance(exc, RuntimeError) and str(exc), "unclear error" + ctx
    if e.app_raised:
        assert seen.logged >= 1, "app exception not logged" + ctx
    if client != "failed" and seen.raw.startswith(b"HTTP/1.1 ") and e.complete:
        # The server adds Date and Server only when the app did not set them (RFC 9110 §6.6.1).
        head = seen.raw.split(b"\r\n\r\n", 1)[0].lower()
        start = next(s for s in plan if s.op == "start")
        sent = [] if start.container in ("none", "missing") else start.headers
        for name in (b"date", b"server"):
            mine = sum(1 for h in sent if h.name.lower() == name)
            assert head.count(b"\r\n" + name + b":") == (mine or 1), name + ctx.encode()
    if e.loose:
        pass
    elif e.complete:
        assert client == (e.status, e.headers, e.body), "wrong response" + ctx
        if e.trailers:
            assert seen.client[4] == e.trailers, ctx
        if e.close:
            assert seen.client[5], "the app's connection: close not honoured" + ctx
    elif e.maybe_complete and client != "failed":
        assert client == (e.status, e.headers, e.body), ctx
    else:
        assert client == "failed", "a response the app never completed" + ctx
    assert len(seen.received) == len(e.received) and all(
        s == m or (m == "timeout" and s == "http.disconnect")  # the client may have left
        for s, m in zip(seen.received, e.received)), "receive() results" + ctx
    assert cc._thread.is_alive(), "cicada's server thread died" + ctx
    assert fresh_ok(cc), "no fresh response afterwards" + ctx


def compare(plan, method, cc_seen: Seen, uv_seen: Seen, proto):
    ctx = (f"uvicorn[{proto}] differs:\nplan={plan!r}\nmethod={method}\n"
           f"cicada={cc_seen!r}"[:3000] + f"\nuvicorn={uv_seen!r}"[:3000])
    assert uv_seen.ended, ctx
    c, u = outcome(cc_seen), outcome(uv_seen)
    e = model(plan, method, extensions=False)
    if c[0] is not None and u[0] is None and (e.complete or e.maybe_complete) and (
            "after response already completed" in str(cc_seen.steps[c[0]][1])):
        return  # the client had it all and left: uvicorn ignores sends after a disconnect
    assert c[0] == u[0], ctx  # the same send raised (or none did)
    # The clients' views are compared when the app completed its response: after a failure,
    # what went out before it is each server's choice (uvicorn writes the head at start).
    if c[0] is None and e.complete:
        assert c[2] == u[2], ctx
    elif c[1] and _start(plan) and _start(plan).status in VALID_STATUS:
        assert u[1], ctx  # the app's own exception reached it unchanged
    assert [m.replace("timeout", "http.disconnect") for m in cc_seen.received] == \
        [m.replace("timeout", "http.disconnect") for m in uv_seen.received], ctx


@pytest.mark.parametrize("proto", ["httptools", "h11"])
def test_app_messages_against_uvicorn(servers, proto):
    app, cc, cc_handler, uvs, uv_handler = servers
    uv = uvs[proto]

    @given(plans())
    @_settings
    # The bugs this test found, pinned (each also has its own test in test_errors.py).
    @example(("GET", [Step("start", headers=[Hdr(b"x-a", b"1", "list-pair")]),
                      Step("mutate", how="inject"), Step("mutate", how="setitem-int"),
                      Step("body", size=5, more="False")]))
    @example(("GET", [Step("start", headers=[Hdr(b"x-a", b"1", "list-pair")]),
                      Step("mutate", how="clear-pair"), Step("body", size=5, more="False")]))
    @example(("GET", [Step("start", trailers=True), Step("pathsend")]))
    @example(("GET", [Step("start", headers=[Hdr(b"transfer-encoding", b"chunked, gzip")]),
                      Step("body", size=5, more="False")]))
    @example(("GET", [Step("start", status="100"), Step("body", size=5, more="False")]))
    @example(("GET", [Step("start", status="600"), Step("body", size=5, more="False")]))
    @example(("GET", [Step("start", headers=[Hdr(b"connection", b"close")]),
                      Step("body", size=5, more="False"), Step("receive"),
                      Step("body", size=1, more="False")]))
    @example(("GET", [Step("start"), Step("body", size=3, more="clears")]))
    @example(("HEAD", [Step("start"), Step("raise")]))
    @example(("GET", [Step("start", headers=[Hdr(b"Date", b"x"), Hdr(b"server", b"y")]),
                      Step("body", size=3, more="False")]))
    def inner(mp):
        method, plan = mp
        cc_seen = run_plan(app, cc, cc_handler, method, plan)
        check_cicada(plan, method, cc_seen, cc)
        if not not_compared(plan, proto, method):  # uvicorn may hang on what it gets wrong
            uv_seen = run_plan(app, uv, uv_handler, method, plan)
            compare(plan, method, cc_seen, uv_seen, proto)

    if SEED is not None:
        inner = seed(int(SEED))(inner)
    inner()
