"""``--loop`` choices turned into an event-loop factory for ``asyncio.Runner``: asyncio, uvloop,
cicada's own loop (``cicada.loop.new_event_loop``, also what ``auto`` picks) or a custom
``module:callable``.

It only picks a factory; it never creates or runs a loop itself.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from cicada.importer import ImportFromStringError, import_from_string

logger = logging.getLogger("cicada.error")

CICADA_LOOP_MISSING = "cicada's own loop is not available in this build"


class LoopUnavailable(RuntimeError):
    """The requested loop implementation cannot be used here."""


def _cicada_loop() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        mod = importlib.import_module("cicada.loop")
    except ImportError:
        raise LoopUnavailable(CICADA_LOOP_MISSING) from None
    factory = getattr(mod, "new_event_loop", None)
    if factory is None:
        raise LoopUnavailable(CICADA_LOOP_MISSING)
    # As uvicorn does for uvloop: app code that calls asyncio.new_event_loop() gets our loop
    # too, so the sync-calls-async recipes users copy keep working (they nest on it).
    mod.install()
    return factory


def _uvloop() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        raise LoopUnavailable("--loop uvloop needs the 'uvloop' package: pip install uvloop") from None
    return uvloop.new_event_loop


def resolve_loop_factory(name: str) -> Callable[[], Any] | None:
    """Return the loop factory for ``name`` or raise LoopUnavailable / ImportFromStringError."""
    if name == "none":
        return None
    if name == "asyncio":
        return asyncio.SelectorEventLoop
    if name == "uvloop":
        return _uvloop()
    if name == "cicada":
        return _cicada_loop()
    if name == "auto":
        # cicada's own loop first: the server runs at least as fast on it as on uvloop (its
        # transport and the HTTP protocol call each other in C), and the app's sync code can
        # call async code on it (nested run_until_complete).
        for pick in (_cicada_loop, _uvloop):
            try:
                return pick()
            except LoopUnavailable:
                pass
        return asyncio.SelectorEventLoop
    factory = import_from_string(name)
    if not callable(factory):
        raise LoopUnavailable(f"--loop {name!r} does not name a callable")
    return factory


def loop_factory(name: str) -> Callable[[], Any] | None:
    """Like resolve_loop_factory, but logs the problem and exits with status 3 (startup
    failure), which is what the CLI and workers want."""
    try:
        return resolve_loop_factory(name)
    except (LoopUnavailable, ImportFromStringError) as exc:
        logger.error("Error loading event loop: %s", exc)
        sys.exit(3)
