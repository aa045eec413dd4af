"""``--log-level trace``: an ASGI middleware logging every scope and message at TRACE level on
``cicada.asgi`` (bodies shortened to their size). Only installed at trace level; it must never
change what the app sees or sends.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

from cicada.logging_config import TRACE_LOG_LEVEL

_ids = itertools.count(1)


def _shorten(message: dict[str, Any]) -> dict[str, Any]:
    out = dict(message)
    for key in ("body", "bytes", "text"):
        if key in out and out[key] is not None:
            out[key] = f"<{len(out[key])} {'chars' if key == 'text' else 'bytes'}>"
    if "headers" in out:
        out["headers"] = "<...>"
    return out


class MessageLoggerMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.logger = logging.getLogger("cicada.asgi")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        task = f"ASGI [{next(_ids)}]"
        log = self.logger.log
        client = scope.get("client")
        prefix = f"{client[0]}:{client[1]} - " if client else ""

        async def inner_receive() -> Any:
            message = await receive()
            log(TRACE_LOG_LEVEL, "%s%s Receive %s", prefix, task, _shorten(message))
            return message

        async def inner_send(message: Any) -> None:
            log(TRACE_LOG_LEVEL, "%s%s Send %s", prefix, task, _shorten(message))
            await send(message)

        log(TRACE_LOG_LEVEL, "%s%s Started scope=%s", prefix, task, _shorten(dict(scope)))
        try:
            await self.app(scope, inner_receive, inner_send)
        except BaseException:
            log(TRACE_LOG_LEVEL, "%s%s Raised exception", prefix, task)
            raise
        log(TRACE_LOG_LEVEL, "%s%s Completed", prefix, task)
