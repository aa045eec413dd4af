"""Worker processes for the supervisors (--workers, --reload): a spawned child that re-imports
the app, inherits the listening sockets by fd passing, runs ``Server.run(sockets)`` and reports
"ready" through a pipe once it accepts connections. The same pipe carries the supervisor's health
checks: a thread in the child answers each "ping" with "pong", so a process that is frozen
(stopped, or stuck in C code holding the GIL) stops answering; a slow event loop still answers,
as with uvicorn.

Spawn rather than fork: the child starts from a clean interpreter (no threads, no loop, no
half-imported app), which is what --reload needs and what keeps workers independent.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from socket import socket
from typing import Any

from cicada.config import STARTUP_FAILURE, Config

multiprocessing.allow_connection_pickling()
_spawn = multiprocessing.get_context("spawn")

logger = logging.getLogger("cicada.error")


def _answer_pings(conn: Connection, lock: threading.Lock) -> None:
    while True:
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if msg == b"ping":
            with lock:
                try:
                    conn.send_bytes(b"pong")
                except OSError:
                    return


def _child_main(config: Config, sockets: list[socket], conn: Connection | None,
                stdin_fileno: int | None) -> None:
    if stdin_fileno is not None:
        try:
            sys.stdin = os.fdopen(stdin_fileno)
        except OSError:
            pass
    config.configure_logging()
    from cicada.server import Server

    server = Server(config)
    lock = threading.Lock()
    if conn is not None:
        threading.Thread(target=_answer_pings, args=(conn, lock), name="cicada-healthcheck", daemon=True).start()
        # health checks may start: a process frozen during the app's startup is found too
        with lock:
            try:
                conn.send_bytes(b"answering")
            except OSError:
                pass

    def notify_ready() -> None:
        if conn is not None:
            with lock:
                try:
                    conn.send_bytes(b"ready")
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
        self._conn, child_conn = _spawn.Pipe(duplex=True)
        try:
            stdin_fileno: int | None = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            stdin_fileno = None
        self.process = _spawn.Process(
            target=_child_main,
            args=(config, sockets, child_conn, stdin_fileno),
            name="cicada-worker",
        )
        self._child_conn = child_conn
        self.ready = False
        self.answering = False  # its thread answering health checks runs
        self.unhealthy = False  # killed for a health check it did not answer
        self.started_at = 0.0
        self.stopping_since: float | None = None
        self.ping_sent_at: float | None = None  # an unanswered health check
        self.last_pong = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.process.start()
        self._child_conn.close()  # the child holds its own copy

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    def is_alive(self) -> bool:
        return self.process.is_alive()

    def _read_messages(self, timeout: float) -> None:
        try:
            while self._conn.poll(timeout):
                msg = self._conn.recv_bytes()
                if msg == b"ready":
                    self.ready = True
                elif msg == b"answering":
                    self.answering = True
                elif msg == b"pong":
                    self.ping_sent_at = None
                    self.last_pong = time.monotonic()
                timeout = 0.0
        except (EOFError, OSError):
            pass

    def poll_ready(self, timeout: float = 0.0) -> bool:
        self._read_messages(0.0 if self.ready else timeout)
        return self.ready

    def check_health(self, timeout: float, interval: float) -> bool:
        """Send a health check when one is due; False when the last one went unanswered for
        longer than ``timeout`` seconds. Only meaningful once the worker is answering."""
        now = time.monotonic()
        if self.ping_sent_at is not None:
            return now - self.ping_sent_at <= timeout
        if now - max(self.last_pong, self.started_at) >= interval:
            try:
                self._conn.send_bytes(b"ping")
                self.ping_sent_at = now
            except OSError:
                pass  # the child is gone: reap() sees it exit
        return True

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
            self._conn.close()
        except OSError:
            pass
