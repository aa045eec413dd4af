"""Random middleware programs for the differential test (test_differential.py).

A program is a raw ASGI app (a list of ops), 1..4 stacked dispatch layers (each with its own
plan) and a client (request body chunks, maybe a disconnect). `run_program` builds the stack on
either implementation, runs it (one or several requests through one stack) in-process on a given
loop with a fake server, and returns one `Outcome` per request: what the server's send got
(normalised), the exception out of the top app, what the app and every dispatch saw, and what
kept objects say afterwards. Both implementations must produce equal outcomes, except where
docs/middleware.md documents a difference or BaseHTTPMiddleware races with itself (normalised
in `Outcome.compare_key`).

Shapes where BaseHTTPMiddleware itself races (its app runs in a child task, concurrently with
dispatch) are not generated; see the strategies in test_differential.py for which and why.
"""

from __future__ import annotations

import asyncio
import contextvars
import faulthandler
import weakref
from dataclasses import dataclass, field

from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

HANG = 3.0  # seconds after which a program counts as hung
WATCHDOG = 60.0  # a run stuck that long without the loop turning (C spinning): dump and exit


class AppError(Exception):
    """What the app raises."""


class CauseError(Exception):
    """The __cause__ of an app's or dispatch's exception."""


class DispatchError(Exception):
    """What a dispatch raises."""


class AppBaseError(BaseException):
    """What the app raises that is not an Exception."""


class Marker:
    """A weakref-able object put in the scope: nothing may keep it after the request."""


# The request's Outcome, for the app and the dispatches (one stack serves several requests).
# Set in the request's task before the stack is called: BaseHTTPMiddleware's child tasks copy it.
CURRENT: contextvars.ContextVar = contextvars.ContextVar("current")


# --- programs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    chunks: tuple[bytes, ...] = (b"",)  # the request body, in http.request messages
    disconnect_at: int | None = None  # http.disconnect instead of chunks[i:] (None: no disconnect)

    def inbox(self):
        msgs = [
            {"type": "http.request", "body": c, "more_body": i < len(self.chunks) - 1}
            for i, c in enumerate(self.chunks)
        ]
        if self.disconnect_at is not None:
            msgs = msgs[: self.disconnect_at] + [{"type": "http.disconnect"}]
        return msgs


@dataclass(frozen=True)
class App:
    """A raw ASGI app: ops run in order.

    ("recv",)                          await receive() (logged)
    ("debug", n)                       send http.response.debug
    ("start", status, headers)         send http.response.start
    ("body", bytes, more_body)         send http.response.body (more_body omitted when None)
    ("pathsend", path)                 send http.response.pathsend
    ("raise", kind)                    raise: "plain", "group", "group1", "cause", "base"
    ("return",)                        return (the rest is not run)
    ("sleep",)                         await asyncio.sleep(0)
    ("hang",)                          wait until the server cancels the request
    via_task: sends are awaited through a task of their own (asyncio.ensure_future(send(m)))
    """

    ops: tuple = ()
    via_task: bool = False


@dataclass(frozen=True)
class Layer:
    """One dispatch.

    pre_body: before call_next: None, "body" (await request.body()), "stream" (request.stream()
              read to its end), "stream_first" (its first chunk only)
    action:   "own"          return its own Response without calling call_next
              "pass"         return call_next's response
              "modify"       change status/headers of call_next's response, return it
              "read_new"     read body_iterator fully, return a new Response with that body
              "partial_new"  read `take` chunks, return a new Response with them
              "read_orig"    read body_iterator fully, return the original (empty) response
              "partial_orig" read `take` chunks, return the original (rest of the body)
              "aclose_orig"  read `take` chunks, aclose() body_iterator, return the original
              "wrap"         return a StreamingResponse over the original body_iterator
              "raise"        raise after call_next
              "raise_before" raise before call_next
              "bad_return"   return None
    catch:    None, "call_next" (try/except Exception around call_next), "all" (around call_next
              and the body reads): the handler returns a fallback Response
    """

    pre_body: str | None = None
    action: str = "pass"
    take: int = 1
    catch: str | None = None
    status: int | None = None  # modify / own / new responses
    headers: tuple = ()  # (name, value) str pairs set on the response
    delete: str | None = None  # header deleted by modify
    background: bool = False
    post_body: bool = False  # await request.body() after call_next (and its body reads)
    call_next_in_task: bool = False  # await asyncio.ensure_future(call_next(request))
    read_in_task: bool = False  # body_iterator read in a task dispatch awaits
    hdr_op: str = "set"  # how modify sets headers: "set", "append", "setdefault"
    background_raises: bool = False
    keep: bool = False  # keeps request and response past the request (checked after all runs)
    sleep: bool = False  # a turn of the loop before call_next and after it
    check_disconnected: str | None = None  # await request.is_disconnected(): "before"/"after"
    # call_next or "both"


@dataclass(frozen=True)
class Program:
    app: App
    layers: tuple[Layer, ...]
    client: Client = Client()
    runs: int = 1  # requests through the same stack (pooled objects get reused)
    concurrent: bool = False  # runs at once (gather) instead of one after another


# --- running ---------------------------------------------------------------------------------


def exc_desc(exc: BaseException):
    # BaseHTTPMiddleware's protocol checks are asserts: an app sending a body or pathsend before
    # http.response.start fails with AssertionError there, with a RuntimeError naming the
    # dispatch in cicada (docs/middleware.md: bad input is a clear error)
    if type(exc) is AssertionError:
        return "RuntimeError"
    if isinstance(exc, BaseExceptionGroup):
        leaves = tuple(sorted(repr(exc_desc(e)) for e in exc.exceptions))
        return ("group", type(exc).__name__, leaves)
    return type(exc).__name__


def make_exc(kind: str, cls=AppError):
    if kind == "group":
        return ExceptionGroup("app group", [cls("g1"), KeyError("g2")])
    if kind == "group1":
        return ExceptionGroup("app group of one", [cls("g1")])
    if kind == "base":
        return AppBaseError("base")
    exc = cls(kind)
    if kind == "cause":
        exc.__cause__ = CauseError("cause")
    return exc


@dataclass
class Outcome:
    sent: list = field(default_factory=list)  # normalised server-side messages
    raw: list = field(default_factory=list)  # the messages as sent (copies), for reports
    exc: object = None  # exc_desc of what the top app raised, "HANG", or None
    exc_msg: str = ""
    app_log: list = field(default_factory=list)
    layer_logs: list = field(default_factory=list)
    server_receives: int = 0
    dispatch_raised: bool = False
    app_started: bool = False
    app_raised_mid_body: bool = False
    kept: list = field(default_factory=list)  # (layer, request, response) dispatch kept
    kept_summary: list = field(default_factory=list)
    kept_iters: list = field(default_factory=list)  # call_next responses dispatch kept
    request_task: object = None
    canceller: object = None

    def compare_key(self):
        """What both implementations must agree on."""
        sent = list(self.sent)
        # docs/middleware.md: an app failing mid-stream makes cicada propagate its error without
        # first sending a final empty body (BaseHTTPMiddleware completes the body, then raises)
        if self.exc is not None and sent and sent[-1] == ("end",):
            sent.pop()
        layer_logs = self.layer_logs
        if self.exc is not None and self.app_raised_mid_body:
            # the same documented difference: the response fails with the app, so no layer's
            # background task runs (BaseHTTPMiddleware completes the body and runs them first)
            layer_logs = [[e for e in log if e != ("background",)] for log in layer_logs]
        app_log = list(self.app_log)
        # A dispatch (or its background task) raising, whatever the reason, or the response
        # failing, cancels the app. BaseHTTPMiddleware's app runs in a
        # task of its own, ahead of dispatch by a message per layer (each layer's task holds
        # one), so by then it may have got further (raised, returned) than cicada's, which runs
        # only when dispatch pulls: how it stopped is a race there.
        if (self.dispatch_raised or self.exc is not None) and app_log and app_log[-1][0] in (
            "raise", "end", "cancelled"
        ):
            app_log[-1] = ("stopped",)
        return {
            "sent": sent,
            "exc": self.exc,
            "app_log": app_log,
            "layer_logs": layer_logs,
            "kept": self.kept_summary,
        }


def normalise(sent):
    """Body messages merged: ('body', bytes) per run of body messages, ('end',) where one ends
    the body. Other messages as (type, essential fields)."""
    out = []
    ended = False
    for m in sent:
        t = m.get("type")
        if ended:
            out.append(("after-end", t))
            continue
        if t == "http.response.body":
            body = bytes(m.get("body", b""))
            if body:
                if out and out[-1][0] == "body":
                    out[-1] = ("body", out[-1][1] + body)
                else:
                    out.append(("body", body))
            if not m.get("more_body", False):
                out.append(("end",))
                ended = True
        elif t == "http.response.start":
            headers = tuple((bytes(k), bytes(v)) for k, v in m.get("headers", ()))
            out.append(("start", m["status"], headers))
        elif t == "http.response.pathsend":
            out.append(("pathsend", m["path"]))
            ended = True
        elif t == "http.response.debug":
            out.append(("debug", repr(m.get("info"))))
        elif t == "http.response.early_hint":
            out.append(("early_hint", repr(m.get("links"))))
        else:
            out.append((t,))
    return out


class Server:
    def __init__(self, client: Client):
        self.inbox = client.inbox()
        self.disconnected = False
        self.sent = []
        self.receives = 0

    async def receive(self):
        # Eager: once the client's messages are used up the client is gone. (A blocking server
        # would make apps reading past the body wait on BaseHTTPMiddleware's races.)
        self.receives += 1
        if self.inbox:
            return self.inbox.pop(0)
        return {"type": "http.disconnect"}

    async def send(self, message):
        copy = dict(message)
        if "headers" in copy:
            copy["headers"] = [(bytes(k), bytes(v)) for k, v in copy["headers"]]
        self.sent.append(copy)


def msg_desc(m):
    if m.get("type") == "http.request":
        return ("req", bytes(m.get("body", b"")), bool(m.get("more_body", False)))
    return (m.get("type"),)


async def cancel_later(task):
    """Cancels `task` a few dozen loop turns later: what the app sent before it waits has
    reached the server by then also through BaseHTTPMiddleware's chain of tasks."""
    for _ in range(50):
        await asyncio.sleep(0)
    task.cancel()


def build_app(prog: App, refs: list):
    async def app(scope, receive, send):
        out = CURRENT.get()
        log = out.app_log
        if prog.via_task:
            async def send_(m):  # noqa: E306
                await asyncio.ensure_future(send(m))
        else:
            send_ = send
        started = False
        try:
            for op in prog.ops:
                kind = op[0]
                if kind == "recv":
                    log.append(("recv", msg_desc(await receive())))
                elif kind == "debug":
                    await send_({"type": "http.response.debug", "info": {"n": op[1]}})
                elif kind == "start":
                    if started:  # a second start fails the response like an error
                        out.app_raised_mid_body = True
                    started = True
                    m = {"type": "http.response.start", "status": op[1]}
                    form = op[3] if len(op) > 3 else "tuples"
                    if form == "tuples":
                        m["headers"] = [(k, v) for k, v in op[2]]
                    elif form == "lists":
                        m["headers"] = [[k, v] for k, v in op[2]]
                    elif form == "tuple":
                        m["headers"] = tuple((k, v) for k, v in op[2])
                    await send_(m)  # form "none": no "headers" key
                elif kind == "body":
                    m = {"type": "http.response.body"}
                    form = op[3] if len(op) > 3 else "bytes"
                    if form == "bytes":
                        m["body"] = op[1]
                    elif form == "bytearray":
                        m["body"] = bytearray(op[1])
                    elif form == "memoryview":
                        m["body"] = memoryview(op[1])
                    if op[2] is not None:  # form "none": no "body" key (an empty body)
                        m["more_body"] = op[2]
                    await send_(m)
                elif kind == "early_hint":
                    await send_({"type": "http.response.early_hint", "links": ["</s.css>"]})
                elif kind == "unknown":
                    if started:
                        out.app_raised_mid_body = True
                    await send_({"type": "http.response.bogus"})
                elif kind == "pathsend":
                    await send_({"type": "http.response.pathsend", "path": op[1]})
                elif kind == "raise":
                    if started:
                        out.app_raised_mid_body = True
                    exc = make_exc(op[1])
                    refs.append(weakref.ref(exc))
                    log.append(("raise", op[1]))
                    raise exc
                elif kind == "return":
                    break
                elif kind == "sleep":  # a turn of the loop
                    await asyncio.sleep(0)
                elif kind == "hang":  # the server cancels the request meanwhile
                    log.append(("hang",))
                    out.canceller = asyncio.ensure_future(cancel_later(out.request_task))
                    await asyncio.sleep(HANG * 10)
            log.append(("end",))
        except asyncio.CancelledError:
            log.append(("cancelled",))
            raise

    return app


def build_dispatch(plan: Layer, idx: int, refs: list):
    async def read_here(it, limit=None):
        got = []
        async for chunk in it:
            if isinstance(chunk, (bytes, bytearray, memoryview)):
                got.append(bytes(chunk))
            else:
                got.append(("msg", chunk.get("type")))
            if limit is not None and len(got) >= limit:
                break
        return got

    async def read(it, limit=None):
        if plan.read_in_task:
            return await asyncio.ensure_future(read_here(it, limit))
        return await read_here(it, limit)

    async def dispatch(request, call_next):
        out = CURRENT.get()
        try:
            response = await dispatch_(request, call_next, out, out.layer_logs[idx])
        except Exception:
            out.dispatch_raised = True
            raise
        if plan.keep:
            out.kept.append((idx, request, response))
        return response

    async def dispatch_(request, call_next, out, log):
        def response(status, content):
            r = Response(content, status_code=status or 200, headers=dict(plan.headers))
            refs.append(weakref.ref(r))
            if plan.background:
                r.background = BackgroundTask(background)
            return r

        async def background():
            log.append(("background",))
            if plan.background_raises:
                out.dispatch_raised = True
                raise DispatchError("background")

        def dispatch_error(kind):
            out.dispatch_raised = True
            exc = make_exc(kind, DispatchError)
            refs.append(weakref.ref(exc))
            return exc

        async def post_body(request):
            if plan.post_body:
                try:
                    log.append(("post_body", await request.body()))
                except Exception as exc:  # "Stream consumed", ClientDisconnect
                    log.append(("post_body_exc", type(exc).__name__, str(exc)))

        if plan.pre_body:
            try:
                if plan.pre_body == "stream":
                    log.append(("pre_stream", [c async for c in request.stream()]))
                elif plan.pre_body == "stream_first":
                    stream = request.stream()
                    log.append(("pre_stream_first", await stream.__anext__()))
                    await stream.aclose()
                else:
                    log.append(("pre_body", await request.body()))
            except Exception as exc:  # ClientDisconnect
                log.append(("pre_body_exc", type(exc).__name__))
                raise
        if plan.sleep:
            await asyncio.sleep(0)
        if plan.check_disconnected in ("before", "both"):
            log.append(("disconnected", await request.is_disconnected()))
        if plan.action == "raise_before":
            raise dispatch_error("plain")
        if plan.action == "own":
            await post_body(request)
            return response(plan.status, b"own%d" % idx)
        if plan.action == "bad_return":
            return None

        async def body_part(resp):
            if plan.action in ("read_new", "read_orig"):
                got = await read(resp.body_iterator)
            elif plan.action in ("partial_new", "partial_orig", "aclose_orig"):
                got = await read(resp.body_iterator, plan.take)
                if plan.action == "aclose_orig":
                    await resp.body_iterator.aclose()
            else:
                return resp
            log.append(("read", got))
            if plan.action.endswith("_new"):
                data = b"".join(c for c in got if isinstance(c, bytes))
                return response(plan.status or resp.status_code, data)
            return resp

        async def main():
            if plan.call_next_in_task:
                resp = await asyncio.ensure_future(call_next(request))
            else:
                resp = await call_next(request)
            log.append(("call_next", resp.status_code))
            if plan.keep:
                out.kept_iters.append(resp)
            return await body_part(resp) if plan.catch == "all" else resp

        try:
            result = await main()
        except Exception as exc:
            if plan.catch is None:
                log.append(("call_next_exc", exc_desc(exc)))
                raise
            log.append(("caught", exc_desc(exc)))
            await post_body(request)
            return response(599, b"fallback%d" % idx)
        if plan.sleep:
            await asyncio.sleep(0)
        if plan.check_disconnected in ("after", "both"):
            log.append(("disconnected", await request.is_disconnected()))
        if plan.catch != "all":
            result = await body_part(result)
        await post_body(request)
        if plan.action == "raise":
            raise dispatch_error("cause")
        if plan.action == "modify":
            if plan.status is not None:
                result.status_code = plan.status
            for k, v in plan.headers:
                if plan.hdr_op == "append":
                    result.headers.append(k, v)
                elif plan.hdr_op == "setdefault":
                    result.headers.setdefault(k, v)
                elif plan.hdr_op == "update":
                    result.headers.update({k: v})
                elif plan.hdr_op == "raw":
                    result.raw_headers = [*result.raw_headers, (k.encode(), v.encode())]
                else:
                    result.headers[k] = v
            if plan.delete is not None and plan.delete in result.headers:
                del result.headers[plan.delete]
        if plan.action == "wrap":
            original = result

            async def gen():  # a pathsend can't go through a StreamingResponse: skipped
                async for chunk in original.body_iterator:
                    if isinstance(chunk, bytes):
                        yield chunk

            result = StreamingResponse(gen(), status_code=original.status_code,
                                       headers=dict(plan.headers))
        if plan.background and plan.action in ("pass", "modify", "read_orig", "partial_orig"):
            result.background = BackgroundTask(background)
        return result

    return dispatch


def http_scope(marker, path="/"):
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"example.org")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "extensions": {"http.response.pathsend": {}},
        "marker": marker,
    }


async def kept_summary(out: Outcome, marker):
    """What dispatch's kept request and response say once every run is over: they must still
    be this request's (no pooled object reused under a reference dispatch kept)."""
    summary = []
    for idx, request, response in out.kept:
        item = [idx, request.method, request.url.path, request.scope.get("marker") is marker]
        # only the outermost layer's response: in a stack of cicada layers an outer layer's
        # call_next returns the very response object the inner dispatch returned, so its
        # changes show in the inner layer's reference (docs/middleware.md, object identities)
        if response is not None and idx == 0:
            item += [isinstance(response, Response), response.status_code,
                     [(bytes(k), bytes(v)) for k, v in response.raw_headers]]
        summary.append(tuple(item))
    out.kept.clear()
    # a kept call_next response's body read after the request: nothing (BaseHTTPMiddleware's
    # raises anyio.ClosedResourceError when the body was never read)
    for response in out.kept_iters:
        try:
            async with asyncio.timeout(HANG):
                got = [bytes(c) async for c in response.body_iterator if not isinstance(c, dict)]
        except TimeoutError:
            got = "HANG"
        except Exception as exc:
            got = [] if type(exc).__name__ == "ClosedResourceError" else type(exc).__name__
        summary.append(("stale body", got))
    out.kept_iters.clear()
    return summary


async def run_one(app, prog: Program, refs: list, n: int, out: Outcome):
    CURRENT.set(out)
    server = Server(prog.client)
    marker = Marker()
    refs.append(weakref.ref(marker))
    scope = http_scope(marker, f"/r{n}")
    # the request runs in a task of its own, as in a server: the app's ("hang",) cancels it
    out.request_task = task = asyncio.ensure_future(app(scope, server.receive, server.send))
    await asyncio.wait([task], timeout=HANG)
    if not task.done():
        out.exc = "HANG"
        task.cancel()
        await asyncio.wait([task], timeout=HANG)
    elif task.cancelled():
        out.exc = "cancelled by the server"
    elif task.exception() is not None:
        exc = task.exception()
        out.exc = exc_desc(exc)
        out.exc_msg = f"{type(exc).__name__}: {exc}"
        del exc
    if out.canceller is not None:
        await out.canceller
    out.request_task = task = out.canceller = None
    out.raw = server.sent
    out.sent = normalise(server.sent)
    out.server_receives = server.receives
    return marker


def run_program(impl, prog: Program, loop_factory, refs: list) -> list[Outcome]:
    """Runs `prog` on `impl` in a fresh loop, prog.runs requests through one stack; weakrefs to
    objects that must die go to `refs`. One Outcome per request."""
    app = build_app(prog.app, refs)
    for i in reversed(range(len(prog.layers))):
        app = impl(app, dispatch=build_dispatch(prog.layers[i], i, refs))
    outs = [Outcome(layer_logs=[[] for _ in prog.layers],
                    app_started=any(op[0] == "start" for op in prog.app.ops))
            for _ in range(prog.runs)]

    async def main():
        if prog.concurrent:
            markers = await asyncio.gather(
                *(run_one(app, prog, refs, n, out) for n, out in enumerate(outs)))
        else:
            markers = [await run_one(app, prog, refs, n, out) for n, out in enumerate(outs)]
        for out, marker in zip(outs, markers):
            out.kept_summary = await kept_summary(out, marker)

    faulthandler.dump_traceback_later(WATCHDOG, exit=True)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())
    finally:
        faulthandler.cancel_dump_traceback_later()
    return outs

