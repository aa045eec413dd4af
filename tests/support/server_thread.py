"""Run a cicada HttpServer (or uvicorn's protocol, for comparison) on a free loopback port in a
background thread with its own event loop, and stop it cleanly.

Tests talk to it over real sockets; the app runs on the server thread's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from typing import Any, Callable


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the given kind: "asyncio", "uvloop" or "cicada" (cicada's own)."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if kind == "cicada":
        import cicada.loop

        return cicada.loop.new_event_loop()
    return asyncio.new_event_loop()


class ServerThread:
    def __init__(self, app, *, loop_kind: str = "asyncio", backend: str = "cicada", **settings):
        self.app = app
        self.loop_kind = loop_kind
        self.backend = backend
        self.settings = settings
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server = None  # the cicada HttpServer (or None for uvicorn)
        self.port = 0
        self.host = "127.0.0.1"
        self._aio_server = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._error: BaseException | None = None
        self.log_records: list[logging.LogRecord] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "ServerThread":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("server thread did not start")
        if self._error:
            raise self._error
        return self

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        return new_loop(self.loop_kind)

    def _run(self) -> None:
        loop = self.loop = self._new_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # pragma: no cover - surfaced to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        # stopping: close the listener, then every connection
        loop.run_until_complete(self._shutdown())
        loop.close()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        if self.backend == "cicada":
            import cicada._core as core

            self.server = core.HttpServer(self.app, loop, **self.settings)
            factory = self.server
        else:
            factory = _uvicorn_factory(self.app, loop, **self.settings)
        self._aio_server = await loop.create_server(factory, self.host, 0)
        self.port = self._aio_server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        self._aio_server.close()
        if self.server is not None:
            self.server.shutdown()
            for _ in range(100):
                if self.server.connection_count == 0 and self.server.active_requests == 0:
                    break
                await asyncio.sleep(0.01)
            self.server.close_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)

    def stop(self) -> None:
        if self.loop and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the server loop's thread and return its result."""
        fut = asyncio.run_coroutine_threadsafe(_as_coro(fn), self.loop)
        return fut.result(10)

    # -- clients -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def connect(self, timeout: float = 5.0) -> "Sock":
        s = Sock(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect((self.host, self.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class UvicornThread(ServerThread):
    """uvicorn's HTTP protocol (`protocol`: httptools or h11) on its own asyncio loop, in a thread;
    `config` goes to uvicorn's Config (e.g. ws="wsproto" for its WebSocket protocols)."""

    def __init__(self, app, protocol, **config):
        super().__init__(app, loop_kind="asyncio", backend="uvicorn")
        self.protocol = protocol
        self.config = config

    async def _serve(self):
        from uvicorn.config import Config
        from uvicorn.server import ServerState

        if self.protocol == "h11":
            from uvicorn.protocols.http.h11_impl import H11Protocol as Proto
        else:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Proto
        loop = asyncio.get_running_loop()
        config = Config(self.app, http=self.protocol, lifespan="off", log_config=None,
                        **self.config)
        config.load()
        state = ServerState()
        self._aio_server = await loop.create_server(
            lambda: Proto(config=config, server_state=state, app_state={}, _loop=loop),
            self.host, 0)
        self.port = self._aio_server.sockets[0].getsockname()[1]



@contextlib.contextmanager
def against_uvicorn(app, logger_name: str, loop_kind: str, uvicorn: dict, **cicada_options):
    """cicada's server and uvicorn's serving one app side by side, for the differential tests,
    each logging into a ListHandler. `uvicorn` maps a name to a UvicornThread's (protocol,
    options). Yields (cicada, its handler, {name: uvicorn thread}, uvicorn's handler)."""
    cc_log = logging.getLogger(logger_name)
    cc_log.propagate = False
    cc_handler = ListHandler()
    cc_log.addHandler(cc_handler)
    uv_log = logging.getLogger("uvicorn.error")
    uv_handler = ListHandler()
    uv_log.addHandler(uv_handler)
    old_prop, uv_log.propagate = uv_log.propagate, False
    cc = ServerThread(app, loop_kind=loop_kind, error_logger=cc_log, **cicada_options).start()
    uvs = {name: UvicornThread(app, proto, **opts).start() for name, (proto, opts) in uvicorn.items()}
    try:
        yield cc, cc_handler, uvs, uv_handler
    finally:
        cc.stop()
        for u in uvs.values():
            u.stop()
        cc_log.removeHandler(cc_handler)
        uv_log.removeHandler(uv_handler)
        uv_log.propagate = old_prop

async def _as_coro(fn):
    return fn()


def _uvicorn_factory(app, loop, **settings):
    """uvicorn's httptools protocol, for side-by-side scope comparison."""
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    config = Config(app, http="httptools", lifespan="off", **settings)
    config.load()
    state = ServerState()
    return lambda: HttpToolsProtocol(config=config, server_state=state, app_state={}, _loop=loop)


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


# -- tiny raw HTTP client helpers -------------------------------------------------------------

class Sock(socket.socket):
    """A client socket that remembers bytes read past the end of a response."""

    _cicada_buf = b""


def wait_for(pred: Callable[[], Any], timeout: float = 5.0) -> bool:
    """Poll pred() until it is true or the timeout passes; returns its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return bool(pred())


def recv_until_closed(s: socket.socket, limit: int = 1 << 24) -> bytes:
    out = bytearray()
    while len(out) < limit:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


def read_response(s: socket.socket, head_only: bool = False) -> tuple[int, dict, bytes, bytes]:
    """Read one HTTP/1.x response from s: (status, headers lowercased, body, raw head).
    Handles Content-Length, chunked and close-delimited bodies. `head_only` for HEAD requests."""
    buf = getattr(s, "_cicada_buf", b"")
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        key = k.strip().lower()
        headers[key] = (headers[key] + b", " + v.strip()) if key in headers else v.strip()
    body = b""
    if head_only or status in (204, 304) or 100 <= status < 200:
        s._cicada_buf = rest  # type: ignore[attr-defined]
        return status, headers, b"", head
    if b"content-length" in headers:
        n = int(headers[b"content-length"])
        while len(rest) < n:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-body")
            rest += chunk
        body, rest = rest[:n], rest[n:]
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body, rest, trailers = _read_chunked(s, rest)
        headers.update({b"trailer:" + k: v for k, v in trailers.items()})
    else:
        body = rest + recv_until_closed(s)
        rest = b""
    s._cicada_buf = rest  # type: ignore[attr-defined]
    return status, headers, body, head


def _read_chunked(s, rest):
    body = bytearray()
    trailers = {}

    def need(n_bytes_pred):
        nonlocal rest
        while not n_bytes_pred(rest):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-chunked-body")
            rest += chunk

    while True:
        need(lambda r: b"\r\n" in r)
        line, _, rest = rest.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            while True:
                need(lambda r: b"\r\n" in r)
                line, _, rest = rest.partition(b"\r\n")
                if not line:
                    return bytes(body), rest, trailers
                k, _, v = line.partition(b":")
                trailers[k.strip().lower()] = v.strip()
        need(lambda r: len(r) >= size + 2)
        body += rest[:size]
        rest = rest[size + 2:]
