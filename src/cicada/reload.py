"""``--reload``: a parent process that watches --reload-dir (default: the working directory) with
watchfiles and restarts the spawned server process when a matching file (*.py unless
--reload-include/--reload-exclude say otherwise) changes. Development only.

The parent binds the socket once, so clients never see "connection refused" across restarts.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import signal
import threading
from pathlib import Path
from socket import socket
from types import FrameType
from typing import Any

from cicada.config import Config
from cicada.logging_config import style
from cicada.process import WorkerProcess

logger = logging.getLogger("cicada.error")

MISSING_WATCHFILES = (
    "--reload needs the 'watchfiles' package: pip install watchfiles (or cicada[standard])"
)


class ReloadUnavailable(RuntimeError):
    pass


class FileFilter:
    """Decides whether a changed path should trigger a reload."""

    def __init__(self, config: Config) -> None:
        self.includes = list(config.reload_includes) or ["*.py"]
        self.excludes = list(config.reload_excludes)
        self.roots = [Path(d) for d in config.reload_dirs]

    def _relative_parts(self, path: Path) -> tuple[str, ...]:
        for root in self.roots:
            try:
                return path.relative_to(root).parts
            except ValueError:
                continue
        return path.parts

    def __call__(self, change: Any, path: str) -> bool:
        p = Path(path)
        parts = self._relative_parts(p)
        # An excluded pattern matching any component (".*" hides .git/, .venv/ ...) wins.
        for part in parts:
            if any(fnmatch.fnmatch(part, pat) for pat in self.excludes):
                return False
        rel = "/".join(parts)
        if any(fnmatch.fnmatch(rel, pat) for pat in self.excludes):
            return False
        return any(fnmatch.fnmatch(p.name, pat) or fnmatch.fnmatch(rel, pat) for pat in self.includes)


def _display(path: str) -> str:
    try:
        return f"'{Path(path).relative_to(Path.cwd())}'"
    except ValueError:
        return f"'{path}'"


class ChangeReload:
    name = "WatchFiles"

    def __init__(self, config: Config, sockets: list[socket]) -> None:
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            raise ReloadUnavailable(MISSING_WATCHFILES) from None
        self.config = config
        self.sockets = sockets
        self.should_exit = threading.Event()
        self.filter = FileFilter(config)
        self.process: WorkerProcess | None = None

    def _signal(self, sig: int, frame: FrameType | None) -> None:
        self.should_exit.set()

    def _start_child(self) -> None:
        self.process = WorkerProcess(self.config, self.sockets)
        self.process.start()

    def _stop_child(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        timeout = self.config.timeout_graceful_shutdown
        self.process.join(None if timeout is None else timeout + 5)
        if self.process.is_alive():
            logger.error("Server process [%s] did not stop in time; killing it.", self.process.pid)
            self.process.kill()
            self.process.join()
        self.process.close()

    def run(self) -> None:
        import watchfiles

        pid = os.getpid()
        logger.info(
            "Started reloader process [%d] using %s",
            pid,
            self.name,
            extra={
                "color_message": "Started reloader process ["
                + style("%d", fg="cyan", bold=True)
                + "] using "
                + style("%s", fg="cyan", bold=True)
            },
        )
        original = {sig: signal.signal(sig, self._signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._start_child()
            for changes in watchfiles.watch(
                *self.config.reload_dirs,
                watch_filter=self.filter,
                stop_event=self.should_exit,
                debounce=int(self.config.reload_delay * 1000) or 1,
                step=50,
                yield_on_timeout=True,
                rust_timeout=500,
                ignore_permission_denied=True,
            ):
                if self.should_exit.is_set():
                    break
                if not changes:
                    continue
                logger.warning(
                    "%s detected changes in %s. Reloading...",
                    self.name,
                    ", ".join(sorted({_display(path) for _, path in changes})),
                )
                self._stop_child()
                self._start_child()
            self._stop_child()
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
            for sock in self.sockets:
                sock.close()
        logger.info(
            "Stopping reloader process [%d]",
            pid,
            extra={"color_message": "Stopping reloader process [" + style("%d", fg="cyan", bold=True) + "]"},
        )
