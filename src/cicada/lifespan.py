"""The ASGI lifespan protocol, run in Python around the server: startup before the first accept,
shutdown after the connections drained. ``state`` is the dict handed to the app in the lifespan
scope and given to the C HttpServer, which copies it into every request scope.

Failure rules follow uvicorn: in ``auto`` mode an app that raises on the lifespan scope is taken as
"lifespan unsupported" (info log, serving continues); in ``on`` mode, or on an explicit
``lifespan.startup.failed``, startup fails and the server exits with status 3.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

STATE_TRANSITION_ERROR = "Got invalid state transition on lifespan protocol."


class Lifespan:
    def __init__(self, app: Any, mode: str = "auto", asgi_version: str = "3.0",
                 shutdown_timeout: float | None = None) -> None:
        self.app = app
        self.mode = mode
        self.asgi_version = asgi_version
        self.shutdown_timeout = shutdown_timeout
        self.logger = logging.getLogger("cicada.error")
        self.state: dict[str, Any] = {}
        self.should_exit = False
        self.error_occurred = False
        self.startup_failed = False
        self.shutdown_failed = False
        self._task: asyncio.Task[None] | None = None
        self._startup_done: asyncio.Event | None = None
        self._shutdown_done: asyncio.Event | None = None
        self._queue: asyncio.Queue[dict[str, Any]] | None = None

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    async def startup(self) -> None:
        if not self.enabled:
            return
        self.logger.info("Waiting for application startup.")
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._main(), name="cicada-lifespan")
        await self._queue.put({"type": "lifespan.startup"})
        await self._startup_done.wait()
        if self.startup_failed or (self.error_occurred and self.mode == "on"):
            self.logger.error("Application startup failed. Exiting.")
            self.should_exit = True
        else:
            self.logger.info("Application startup complete.")

    async def shutdown(self) -> None:
        if not self.enabled or self.error_occurred or self._queue is None:
            return
        assert self._shutdown_done is not None
        self.logger.info("Waiting for application shutdown.")
        await self._queue.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._shutdown_done.wait(), self.shutdown_timeout)
        except asyncio.TimeoutError:
            self.logger.error(
                "Application shutdown did not complete within %s seconds; cancelling it.",
                self.shutdown_timeout,
            )
            if self._task is not None:
                self._task.cancel()
            self.should_exit = True
            return
        if self.shutdown_failed or (self.error_occurred and self.mode == "on"):
            self.logger.error("Application shutdown failed. Exiting.")
            self.should_exit = True
        else:
            self.logger.info("Application shutdown complete.")

    async def _main(self) -> None:
        assert self._startup_done is not None and self._shutdown_done is not None
        scope = {
            "type": "lifespan",
            "asgi": {"version": self.asgi_version, "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except asyncio.CancelledError:
            # Forced exit: the loop is being torn down, not an app failure.
            self.error_occurred = True
            raise
        except BaseException as exc:
            self.error_occurred = True
            if self.startup_failed or self.shutdown_failed:
                return
            if self.mode == "auto":
                self.logger.info("ASGI 'lifespan' protocol appears unsupported.")
            else:
                self.logger.error("Exception in 'lifespan' protocol\n", exc_info=exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self._startup_done.set()
            self._shutdown_done.set()

    async def _receive(self) -> dict[str, Any]:
        assert self._queue is not None
        return await self._queue.get()

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._startup_done is not None and self._shutdown_done is not None
        kind = message.get("type")
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            if self._startup_done.is_set() or self._shutdown_done.is_set():
                raise RuntimeError(STATE_TRANSITION_ERROR)
            self._startup_done.set()
            if kind == "lifespan.startup.failed":
                self.startup_failed = True
                if message.get("message"):
                    self.logger.error(message["message"])
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            if not self._startup_done.is_set() or self._shutdown_done.is_set():
                raise RuntimeError(STATE_TRANSITION_ERROR)
            self._shutdown_done.set()
            if kind == "lifespan.shutdown.failed":
                self.shutdown_failed = True
                if message.get("message"):
                    self.logger.error(message["message"])
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} sent on the lifespan scope.")
