"""``Server``: one serving process. Binds (host/port, --uds, --fd, or sockets inherited from a
supervisor), runs lifespan startup, creates the C ``HttpServer`` protocol factory and the asyncio
servers, ticks every 0.1 s (exit flag, --limit-max-requests, gunicorn heartbeat), and on
SIGINT/SIGTERM drains gracefully: stop accepting, ``shutdown()``, wait for in-flight requests up to
--timeout-graceful-shutdown, ``close_all()``, lifespan shutdown. A second Ctrl-C forces.

It never parses command lines and never forks; see cli.py / supervisor.py / reload.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

from cicada.config import STARTUP_FAILURE, Config
from cicada.lifespan import Lifespan
from cicada.logging_config import style

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

logger = logging.getLogger("cicada.error")
_ACCEPT_SETTLE_ITERATIONS = 4


# -- binding ----------------------------------------------------------------------------------
def _format_address(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def log_listening(config: Config, sock: socket.socket | None = None, port: int | None = None) -> None:
    """The "cicada running on ..." line (after binding, with the real port when --port 0)."""
    if config.uds is not None:
        logger.info("cicada running on unix socket %s (Press CTRL+C to quit)", config.uds)
        return
    if config.fd is not None and sock is not None:
        logger.info("cicada running on socket %s (Press CTRL+C to quit)", sock.getsockname())
        return
    if port is None:
        port = config.port
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            port = sock.getsockname()[1]
    address = _format_address(config.host, port, "https" if config.is_ssl else "http")
    logger.info(
        "cicada running on %s (Press CTRL+C to quit)",
        address,
        extra={"color_message": "cicada running on " + style("%s", bold=True) + " (Press CTRL+C to quit)"},
    )


def _bind_unix(path: str, backlog: int) -> socket.socket:
    perms = 0o666
    if os.path.exists(path):
        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"--uds {path!r} exists and is not a socket; refusing to replace it")
        perms = stat.S_IMODE(st.st_mode)
        os.unlink(path)  # a stale socket from a previous run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, perms)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_tcp(host: str, port: int, backlog: int, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # Like asyncio's create_server: an IPv6 host binds IPv6 only.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def reserve_reuse_port(config: Config) -> socket.socket:
    """--workers with --reuse-port: every worker binds and listens on its own SO_REUSEPORT
    socket (the kernel spreads connections). The parent holds a bound, non-listening socket so
    the port (even --port 0) stays reserved; it never receives connections."""
    try:
        sock = _bind_tcp(config.host, config.port, config.backlog, reuse_port=True, listen=False)
    except OSError as exc:
        logger.error("%s", exc)
        sys.exit(STARTUP_FAILURE)
    config.port = sock.getsockname()[1]
    log_listening(config, sock)
    return sock


def bind_socket(config: Config) -> socket.socket:
    """Bind the one listening socket a supervisor shares with its workers. Logs the address;
    exits with status 3 if binding fails."""
    try:
        if config.uds is not None:
            sock = _bind_unix(config.uds, config.backlog)
        elif config.fd is not None:
            sock = socket.socket(fileno=config.fd)
        else:
            sock = _bind_tcp(config.host, config.port, config.backlog, config.reuse_port)
    except OSError as exc:
        logger.error("%s", exc)
        sys.exit(STARTUP_FAILURE)
    log_listening(config, sock)
    sock.set_inheritable(True)
    return sock


_TLS_VERSIONS = {"SSLv3": 0x0300, "TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def _first_pem_certificate(path: str | None) -> str | None:
    """The first certificate of --ssl-certfile (the server's own), as PEM text."""
    if not path:
        return None
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        return None
    return text[start:stop + len(end)] + "\n"


def _rfc4514(subject: tuple) -> str | None:
    """getpeercert()'s subject as an RFC 4514 distinguished name (most specific RDN first)."""
    names = {"commonName": "CN", "countryName": "C", "localityName": "L", "organizationName": "O",
             "organizationalUnitName": "OU", "stateOrProvinceName": "ST", "streetAddress": "STREET",
             "domainComponent": "DC", "userId": "UID"}
    rdns = []
    for rdn in reversed(subject):
        parts = []
        for key, value in rdn:
            value = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
            if value[:1] in ("#", " "):
                value = "\\" + value
            if value.endswith(" ") and not value.endswith("\\ "):
                value = value[:-1] + "\\ "
            parts.append(f"{names.get(key, key)}={value}")
        rdns.append("+".join(parts))
    return ",".join(rdns) or None


def tls_scope_info(context: Any, certfile: str | None) -> Callable[[Any], dict[str, Any]]:
    """The callable the C server asks once per TLS connection for the ASGI ``tls`` scope
    extension: server_cert, client_cert_chain, client_cert_name, client_cert_error, tls_version and
    cipher_suite (the IANA numbers, from OpenSSL's cipher list)."""
    server_cert = _first_pem_certificate(certfile)
    suites = {c["name"]: c["id"] & 0xFFFF for c in context.get_ciphers()}

    def info(ssl_object: Any) -> dict[str, Any]:
        import ssl

        chain: tuple[str, ...] = ()
        name = None
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            get_chain = getattr(ssl_object, "get_verified_chain", None)  # 3.13+
            ders = get_chain() if get_chain is not None else None
            chain = tuple(ssl.DER_cert_to_PEM_cert(bytes(d)) for d in (ders or [der]))
            name = _rfc4514((ssl_object.getpeercert() or {}).get("subject", ()))
        cipher = ssl_object.cipher()
        return {
            "server_cert": server_cert,
            "client_cert_chain": chain,
            "client_cert_name": name,
            "client_cert_error": None,
            "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
            "cipher_suite": suites.get(cipher[0]) if cipher else None,
        }

    return info


def build_http_server(config: Config, loop: asyncio.AbstractEventLoop, state: dict[str, Any]) -> Any:
    """Instantiate the C HttpServer (the protocol factory) from the config."""
    access = logging.getLogger("cicada.access")
    access_logger = access if config.access_log and access.hasHandlers() and access.isEnabledFor(logging.INFO) else None
    kwargs: dict[str, Any] = {
        "root_path": config.root_path,
        "scheme": "https" if config.is_ssl else "http",
        "server_header": config.server_header_value,
        "date_header": config.date_header,
        "default_headers": list(config.encoded_headers),
        "limit_concurrency": config.limit_concurrency,
        "timeout_keep_alive": float(config.timeout_keep_alive),
        "proxy_headers": config.proxy_headers,
        "trusted_proxy": config.trusted_proxy if config.proxy_headers else None,
        "access_logger": access_logger,
        "error_logger": logging.getLogger("cicada.error"),
        "state": state,
        # WebSockets (ws_protocol.c)
        "ws": config.ws,
        "ws_max_size": config.ws_max_size,
        "ws_max_queue": config.ws_max_queue,
        "ws_ping_interval": config.ws_ping_interval,
        "ws_ping_timeout": config.ws_ping_timeout,
        "ws_per_message_deflate": config.ws_per_message_deflate,
    }
    if config.h11_max_incomplete_event_size is not None:
        kwargs["max_head_size"] = config.h11_max_incomplete_event_size
    factory = config.http_server_factory()
    if config.ssl is not None and factory.__module__ == "cicada._core":
        kwargs["tls_info"] = tls_scope_info(config.ssl, config.ssl_certfile)
    return factory(config.loaded_app, loop, **kwargs)


# -- the server -------------------------------------------------------------------------------
def freeze_startup_heap() -> None:
    """Move everything the app built at import and startup into the GC's permanent generation.

    Under load a framework's in-flight request objects get promoted to the oldest generation, and
    each full collection then rescans the whole startup heap (FastAPI's routes, pydantic models):
    measured here at ~26 ms a pause, which set FastAPI's p99. Frozen objects are never scanned, so
    those pauses shrink to the size of the live request state. Startup objects that later become
    cyclic garbage are not reclaimed; that is the usual trade (gunicorn users do the same).
    """
    gc.collect()
    gc.freeze()


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.started = False
        self.should_exit = False
        self.force_exit = False
        self.http_server: Any = None
        self.servers: list[asyncio.base_events.Server] = []
        self.lifespan: Lifespan | None = None
        self.last_notified = 0.0
        # Called (in the event loop) once the server accepts connections; supervisors use it
        # to learn a worker is ready.
        self.on_started: Callable[[], None] | None = None
        self._captured_signals: list[int] = []
        self._tasks_before_serving: set[asyncio.Task[Any]] = set()
        max_requests = config.limit_max_requests
        if max_requests is not None and config.limit_max_requests_jitter:
            max_requests += random.randint(0, config.limit_max_requests_jitter)
        self.limit_max_requests = max_requests

    # -- entry points ---------------------------------------------------------------------
    def run(self, sockets: list[socket.socket] | None = None) -> None:
        """Blocking: serve in a fresh event loop (--loop) until told to stop."""
        loop_factory = self.config.get_loop_factory()
        with self.capture_signals(), asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(self.serve(sockets=sockets))

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        with self.capture_signals():
            await self._serve(sockets)

    async def _serve(self, sockets: list[socket.socket] | None) -> None:
        pid = os.getpid()
        config = self.config
        if not config.loaded:
            config.load()
        self.lifespan = Lifespan(
            config.loaded_app,
            config.lifespan,
            config.asgi_version,
            shutdown_timeout=config.timeout_graceful_shutdown,
        )
        logger.info(
            "Started server process [%d]",
            pid,
            extra={"color_message": "Started server process [" + style("%d", fg="cyan") + "]"},
        )
        await self.startup(sockets=sockets)
        if not self.should_exit:
            await self.main_loop()
        if self.started:
            await self.shutdown(sockets=sockets)
            logger.info(
                "Finished server process [%d]",
                pid,
                extra={"color_message": "Finished server process [" + style("%d", fg="cyan") + "]"},
            )

    # -- startup --------------------------------------------------------------------------
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        assert self.lifespan is not None
        config = self.config
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)

        loop = asyncio.get_running_loop()
        try:
            self.http_server = build_http_server(config, loop, self.lifespan.state)
        except (TypeError, ValueError) as exc:
            # The HTTP implementation rejected a setting: say which, don't dump a traceback.
            logger.error("Invalid HTTP server settings: %s", exc)
            await self.lifespan.shutdown()
            sys.exit(STARTUP_FAILURE)
        srv = self.http_server
        try:
            if sockets is not None:
                for sock in sockets:
                    self.servers.append(await loop.create_server(srv, sock=sock, backlog=config.backlog, ssl=config.ssl))
            elif config.fd is not None:
                sock = socket.socket(fileno=config.fd)
                self.servers.append(await loop.create_server(srv, sock=sock, backlog=config.backlog, ssl=config.ssl))
            elif config.uds is not None:
                sock = _bind_unix(config.uds, config.backlog)
                self.servers.append(await loop.create_server(srv, sock=sock, backlog=config.backlog, ssl=config.ssl))
            else:
                self.servers.append(
                    await loop.create_server(
                        srv,
                        host=config.host,
                        port=config.port,
                        backlog=config.backlog,
                        ssl=config.ssl,
                        reuse_address=True,
                        reuse_port=config.reuse_port or None,
                    )
                )
        except OSError as exc:
            logger.error("%s", exc)
            for server in self.servers:
                server.close()
            await self.lifespan.shutdown()
            sys.exit(STARTUP_FAILURE)

        if sockets is None:
            listeners: Sequence[socket.socket] = [s for server in self.servers for s in (server.sockets or ())]
            log_listening(config, listeners[0] if listeners else None)
        self._tasks_before_serving = set(asyncio.all_tasks())
        freeze_startup_heap()
        self.started = True
        if self.on_started is not None:
            self.on_started()

    # -- main loop ------------------------------------------------------------------------
    async def main_loop(self) -> None:
        while not await self.on_tick():
            await asyncio.sleep(0.1)

    async def on_tick(self) -> bool:
        config = self.config
        if config.callback_notify is not None:
            now = time.monotonic()
            if now - self.last_notified > config.timeout_notify:
                self.last_notified = now
                await config.callback_notify()
        if self.should_exit:
            return True
        limit = self.limit_max_requests
        if limit is not None and self.http_server is not None and self.http_server.request_count >= limit:
            logger.info("Maximum request limit of %d exceeded. Terminating process.", limit)
            return True
        return False

    # -- shutdown -------------------------------------------------------------------------
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        assert self.lifespan is not None
        logger.info("Shutting down")
        # asyncio accepts in one callback and makes the connection in a task a few iterations
        # later; a listener closed in between makes that task fail (Server._attach) and the
        # accepted socket is dropped. So stop accepting, let those connections be made (only
        # then does connection_count, and so the drain below, know them), then close.
        self._stop_accepting()
        for _ in range(_ACCEPT_SETTLE_ITERATIONS):
            await asyncio.sleep(0)
        for server in self.servers:
            server.close()
        for sock in sockets or ():
            sock.close()
        srv = self.http_server
        if srv.connection_count and not self.force_exit:
            # Connections accepted just before the listeners closed may have their request
            # bytes in flight or still unread in the socket; give the loop a moment to read
            # them so shutdown() sees those connections as busy instead of idle (closing a
            # socket with unread data would reset it and lose the request).
            await asyncio.sleep(0.1)
        srv.shutdown()
        try:
            await asyncio.wait_for(self._wait_drained(), timeout=self.config.timeout_graceful_shutdown)
        except asyncio.TimeoutError:
            logger.error(
                "Cancel %s running task(s), timeout graceful shutdown exceeded", srv.active_requests
            )
        if srv.connection_count or srv.active_requests or self.force_exit:
            srv.close_all()
            self._cancel_request_tasks()
            await asyncio.sleep(0)
        if not self.force_exit:
            await self.lifespan.shutdown()

    def _stop_accepting(self) -> None:
        """Stop polling the listeners without closing them. uvloop accepts in C and keeps
        polling: it makes its connections from the accept callback, so it needs no pause."""
        loop = asyncio.get_running_loop()
        for server in self.servers:
            for sock in server.sockets or ():
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, OSError):
                    loop.remove_reader(sock.fileno())

    async def _wait_drained(self) -> None:
        srv = self.http_server
        if srv.connection_count and not self.force_exit:
            logger.info("Waiting for connections to close. (CTRL+C to force quit)")
            while srv.connection_count and not self.force_exit:
                await asyncio.sleep(0.1)
        if srv.active_requests and not self.force_exit:
            logger.info("Waiting for background tasks to complete. (CTRL+C to force quit)")
            while srv.active_requests and not self.force_exit:
                await asyncio.sleep(0.1)
        if not self.force_exit:
            for server in self.servers:
                await server.wait_closed()

    def _cancel_request_tasks(self) -> None:
        # Tasks the app started while serving (request handlers still running after the
        # deadline). Tasks that existed before we began accepting - the lifespan task and
        # whatever lifespan startup spawned - are left for lifespan shutdown.
        current = asyncio.current_task()
        lifespan_task = self.lifespan._task if self.lifespan else None
        for task in asyncio.all_tasks():
            if task is current or task is lifespan_task or task in self._tasks_before_serving:
                continue
            task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")

    # -- signals --------------------------------------------------------------------------
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._captured_signals.append(sig)
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True
