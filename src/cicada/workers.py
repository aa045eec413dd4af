"""``cicada.workers.CicadaWorker``: a gunicorn worker class (``gunicorn -k
cicada.workers.CicadaWorker app:app``). gunicorn keeps the master, binding, worker count and
recycling; each worker runs a cicada ``Server`` on gunicorn's listening sockets.

gunicorn settings used: bind sockets, keepalive -> timeout_keep_alive, graceful_timeout ->
timeout_graceful_shutdown, max_requests(+jitter) -> limit_max_requests, forwarded_allow_ips,
worker_connections -> limit_concurrency, backlog; the heartbeat is refreshed from the server's tick.
SIGTERM and SIGQUIT drain gracefully; SIGINT twice forces. TLS (certfile/keyfile) is refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from cicada.config import Config
from cicada.server import Server


class CicadaWorker(Worker):
    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", "http": "auto"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

        error = logging.getLogger("cicada.error")
        error.handlers = self.log.error_log.handlers
        error.setLevel(self.log.error_log.level)
        error.propagate = False
        access = logging.getLogger("cicada.access")
        access.handlers = self.log.access_log.handlers
        access.setLevel(self.log.access_log.level)
        access.propagate = False

        cfg = self.cfg
        max_requests = self.max_requests if cfg.max_requests and self.max_requests < sys.maxsize else None
        config_kwargs: dict[str, Any] = {
            "app": None,
            "log_config": None,
            "timeout_keep_alive": cfg.keepalive,
            # Refresh gunicorn's heartbeat well inside its timeout (it kills silent workers).
            "timeout_notify": max(1.0, self.timeout / 2),
            "callback_notify": self.callback_notify,
            "limit_max_requests": max_requests,
            "forwarded_allow_ips": cfg.forwarded_allow_ips,
            "timeout_graceful_shutdown": cfg.graceful_timeout,
        }
        if cfg.is_ssl:
            options = cfg.ssl_options
            config_kwargs.update(
                ssl_keyfile=options.get("keyfile"),
                ssl_certfile=options.get("certfile"),
                ssl_keyfile_password=options.get("password"),
                ssl_version=options.get("ssl_version"),
                ssl_cert_reqs=options.get("cert_reqs"),
                ssl_ca_certs=options.get("ca_certs"),
                ssl_ciphers=options.get("ciphers"),
            )
        connections = cfg.settings["worker_connections"].value
        if connections:
            config_kwargs["limit_concurrency"] = connections
        backlog = cfg.settings["backlog"].value
        if backlog:
            config_kwargs["backlog"] = backlog
        config_kwargs.update(self.CONFIG_KWARGS)
        self.config = Config(**config_kwargs)

    def init_signals(self) -> None:
        # Server.capture_signals handles SIGINT/SIGTERM; leave the rest at their defaults so
        # gunicorn sees real exit statuses.
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.siginterrupt(signal.SIGUSR1, False)

    async def _serve(self) -> None:
        self.config.app = self.wsgi  # gunicorn's loaded app object: our ASGI app
        server = self._server = Server(config=self.config)
        loop = asyncio.get_running_loop()
        # gunicorn sends SIGQUIT for a graceful stop on some paths (e.g. `gunicorn --reload`).
        loop.add_signal_handler(signal.SIGQUIT, server.handle_exit, signal.SIGQUIT, None)
        sockets = [getattr(s, "sock", s) for s in self.sockets]
        await server.serve(sockets=sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def run(self) -> None:
        loop_factory = self.config.get_loop_factory()
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(self._serve())

    async def callback_notify(self) -> None:
        # The master gone (killed outright, no signal for us): drain and exit rather than keep
        # serving its socket with nobody to restart or stop us, as gunicorn's own workers do.
        if os.getppid() != self.ppid:
            if not self._server.should_exit:
                self.log.warning("Parent changed (master %s gone), shutting down", self.ppid)
                self._server.should_exit = True
            return
        self.notify()


class CicadaAsyncioWorker(CicadaWorker):
    """Same, on the stdlib asyncio loop."""

    CONFIG_KWARGS = {"loop": "asyncio", "http": "auto"}
