"""Test-only stand-in for ``cicada._core.HttpServer`` built on uvicorn's h11 protocol, with the
same constructor and attributes. The Python side (CLI, lifespan, supervisor, reload, signals,
graceful drain) is tested through it while the C protocol is not in this build; once
``cicada._core.HttpServer`` exists the tests use the real one (see conftest.http_args).

Never used by the product: it is selected with ``--http uvicorn_backend:HttpServer``.
"""

from __future__ import annotations

import logging
import time
from email.utils import formatdate
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState


class _Proxy:
    """X-Forwarded-For/-Proto from peers ``trusted(host)`` accepts (rightmost untrusted hop)."""

    def __init__(self, app: Any, trusted: Any) -> None:
        self.app, self.trusted = app, trusted

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if self.trusted(client[0] if client else None):
                headers = dict(scope["headers"])
                proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1").strip()
                if proto in ("http", "https"):
                    scope["scheme"] = proto
                xff = headers.get(b"x-forwarded-for")
                if xff:
                    hops = [h.strip() for h in xff.decode("latin-1").split(",") if h.strip()]
                    chosen = hops[0] if hops else None
                    for hop in reversed(hops):
                        if not self.trusted(hop):
                            chosen = hop
                            break
                    if chosen:
                        scope["client"] = (chosen, 0)
        await self.app(scope, receive, send)


class HttpServer:
    def __init__(self, app: Any, loop: Any, *, root_path: str = "", scheme: str = "http",
                 server_header: bytes | None = b"cicada", date_header: bool = True,
                 default_headers: Any = (), limit_concurrency: int | None = None,
                 timeout_keep_alive: float = 5.0, proxy_headers: bool = False,
                 trusted_proxy: Any = None, access_logger: Any = None,
                 error_logger: Any = None, state: Any = None, max_head_size: int | None = None,
                 **_: Any) -> None:
        if proxy_headers and trusted_proxy is not None:
            app = _Proxy(app, trusted_proxy)
        self.config = uvicorn.Config(
            app, root_path=root_path, limit_concurrency=limit_concurrency,
            timeout_keep_alive=timeout_keep_alive, proxy_headers=False, log_config=None,
            lifespan="off", h11_max_incomplete_event_size=max_head_size, ws="none",
        )
        self.config.load()
        self.state = ServerState()
        headers = list(default_headers)
        if server_header is not None:
            headers = [(b"server", server_header)] + headers
        self.date_header = date_header
        self.extra_headers = headers
        self._refresh_headers()
        self.app_state = state if state is not None else {}
        self.loop = loop
        self.access_logger = access_logger

    def _refresh_headers(self) -> None:
        date = [(b"date", formatdate(time.time(), usegmt=True).encode())] if self.date_header else []
        self.state.default_headers = date + self.extra_headers

    def __call__(self) -> H11Protocol:
        self._refresh_headers()
        proto = H11Protocol(self.config, self.state, self.app_state, self.loop)
        proto.access_logger = self.access_logger or logging.getLogger("cicada.access.off")
        proto.access_log = self.access_logger is not None
        return proto

    def shutdown(self) -> None:
        for conn in list(self.state.connections):
            conn.shutdown()

    def close_all(self) -> None:
        for conn in list(self.state.connections):
            if conn.transport is not None:
                conn.transport.close()

    @property
    def connection_count(self) -> int:
        return len(self.state.connections)

    @property
    def active_requests(self) -> int:
        return len(self.state.tasks)

    @property
    def request_count(self) -> int:
        return self.state.total_requests
