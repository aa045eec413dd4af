"""Worker processes for the supervisors (--workers, --reload): a spawned child that re-imports
the app, inherits the listening sockets by fd passing, runs ``Server.run(sockets)`` and reports
"ready" through a pipe once it accepts connections.

Spawn rather than fork: the child starts from a clean interpreter (no threads, no loop, no
half-imported app), which is what --reload needs and what keeps workers independent.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from socket import socket
from typing import Any

from cicada.config import STARTUP_FAILURE, Config

multiprocessing.allow_connection_pickling()
_spawn = multiprocessing.get_context("spawn")

logger = logging.getLogger("cicada.error")


def _child_main(config: Config, sockets: list[socket], ready: Connection | None,
                stdin_fileno: int | None) -> None:
    if stdin_fileno is not None:
        try:
            sys.stdin = os.fdopen(stdin_fileno)
        except OSError:
            pass
    config.configure_logging()
    from cicada.server import Server

    server = Server(config)

    def notify_ready() -> None:
        if ready is not None:
            try:
                ready.send_bytes(b"ready")
            except OSError:
                pass

    server.on_started = notify_ready
    try:
        # No sockets: the worker binds itself (--reuse-port).
        server.run(sockets=sockets or None)
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)


class WorkerProcess:
    """One spawned server process plus its readiness pipe."""

    def __init__(self, config: Config, sockets: list[socket]) -> None:
        self.config = config
        self._ready_recv, ready_send = _spawn.Pipe(duplex=False)
        try:
            stdin_fileno: int | None = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            stdin_fileno = None
        self.process = _spawn.Process(
            target=_child_main,
            args=(config, sockets, ready_send, stdin_fileno),
            name="cicada-worker",
        )
        self._ready_send = ready_send
        self.ready = False
        self.started_at = 0.0
        self.stopping_since: float | None = None

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.process.start()
        self._ready_send.close()  # the child holds its own copy

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    def is_alive(self) -> bool:
        return self.process.is_alive()

    def poll_ready(self, timeout: float = 0.0) -> bool:
        if not self.ready:
            try:
                if self._ready_recv.poll(timeout):
                    self._ready_recv.recv_bytes()
                    self.ready = True
            except (EOFError, OSError):
                pass
        return self.ready

    def wait_ready(self, timeout: float, abort: Any = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.poll_ready(0.1):
                return True
            if not self.is_alive():
                return self.poll_ready(0)
            if abort is not None and abort():
                return False
        return False

    def send_signal(self, sig: int) -> None:
        if self.process.pid is not None and self.process.exitcode is None:
            try:
                os.kill(self.process.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        """Ask for a graceful stop (SIGTERM)."""
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
        if self.process.exitcode is None:
            self.send_signal(signal.SIGTERM)
            logger.info("Terminated child process [%s]", self.pid)

    def kill(self) -> None:
        if self.process.exitcode is None:
            self.process.kill()

    def join(self, timeout: float | None = None) -> None:
        self.process.join(timeout)

    def close(self) -> None:
        try:
            self._ready_recv.close()
        except OSError:
            pass
