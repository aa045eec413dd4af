"""Loading the user's application: ``module:attr.attr`` import strings, app factories, and the
ASGI2 / ASGI3 / WSGI interface detection (ASGI2 apps get wrapped into ASGI3).

It never starts anything; errors are ``ImportFromStringError`` / ``AppLoadError`` with a message
meant for the user, which the caller logs before exiting.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
from typing import Any


class ImportFromStringError(Exception):
    """An import string could not be resolved (bad format, missing module, missing attribute)."""


class AppLoadError(Exception):
    """The imported object cannot be served (factory failed, WSGI without an adapter, ...)."""


def import_from_string(import_str: Any) -> Any:
    """Resolve ``"package.module:attr.sub"``. Non-strings are returned unchanged."""
    if not isinstance(import_str, str):
        return import_str
    module_str, _, attrs_str = import_str.partition(":")
    if not module_str or not attrs_str:
        raise ImportFromStringError(
            f'Import string "{import_str}" must be in format "<module>:<attribute>".'
        )
    try:
        module = importlib.import_module(module_str)
    except ModuleNotFoundError as exc:
        # Only a missing *top* module is the user's typo; a missing dependency inside the
        # module must surface with its own traceback.
        if exc.name != module_str and not module_str.startswith(f"{exc.name}."):
            raise
        raise ImportFromStringError(f'Could not import module "{module_str}".') from None
    instance: Any = module
    try:
        for attr in attrs_str.split("."):
            instance = getattr(instance, attr)
    except AttributeError:
        raise ImportFromStringError(
            f'Attribute "{attrs_str}" not found in module "{module_str}".'
        ) from None
    return instance


class ASGI2Middleware:
    """Presents an ASGI2 application (``app(scope)`` returning ``coro(receive, send)``) as ASGI3."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        instance = self.app(scope)
        await instance(receive, send)


def _is_coroutine_callable(obj: Any) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    # before 3.12 inspect cannot mark a coroutine function that is not Python code (such as
    # cicada.middleware.HTTPMiddleware.__call__); asyncio's check reads the marker it carries
    return sys.version_info < (3, 12) and asyncio.iscoroutinefunction(obj)


def _looks_like_wsgi(app: Any) -> bool:
    """A plain (non-async) callable taking exactly two positional parameters is WSGI's
    ``(environ, start_response)``; an ASGI2 app takes one (``scope``)."""
    target = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__", None)
    if target is None or _is_coroutine_callable(target) or inspect.isclass(app):
        return False
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) == 2


def detect_interface(app: Any) -> str:
    """Return "asgi3", "asgi2" or "wsgi" for an application object (uvicorn's rules, plus a
    WSGI check so a Flask/Django WSGI app gets a clear error instead of a runtime crash)."""
    if inspect.isclass(app):
        return "asgi3" if hasattr(app, "__await__") else "asgi2"
    if inspect.isfunction(app):
        if _is_coroutine_callable(app):
            return "asgi3"
        return "wsgi" if _looks_like_wsgi(app) else "asgi2"
    call = getattr(app, "__call__", None)
    if _is_coroutine_callable(call):
        return "asgi3"
    return "wsgi" if _looks_like_wsgi(app) else "asgi2"


def wrap_wsgi(app: Any) -> Any:
    """WSGI apps run through a2wsgi when it is installed; otherwise a clear error."""
    try:
        from a2wsgi import WSGIMiddleware
    except ImportError:
        raise AppLoadError(
            "The application looks like a WSGI app (callable(environ, start_response)). cicada "
            "serves ASGI apps; install 'a2wsgi' to run WSGI apps through it, or pass "
            "--interface asgi2/asgi3 if the detection is wrong."
        ) from None
    return WSGIMiddleware(app)


def load_app(app: Any, *, factory: bool, interface: str, logger: Any) -> tuple[Any, str]:
    """Import/resolve ``app``, call it if it is a factory, and return ``(asgi3_app, interface)``.

    Raises ImportFromStringError or AppLoadError with a user-facing message."""
    obj = import_from_string(app)
    # Like uvicorn: try calling the object with no arguments. An ASGI app raises TypeError
    # (missing scope/receive/send); anything that returns is a factory.
    try:
        produced = obj()
    except TypeError as exc:
        if factory:
            raise AppLoadError(f"Error loading ASGI app factory: {exc}") from exc
    else:
        if not factory:
            logger.warning(
                "ASGI app factory detected. Using it, but please consider setting the "
                "--factory flag explicitly."
            )
        obj = produced
    if interface == "auto":
        interface = detect_interface(obj)
    if interface == "wsgi":
        return wrap_wsgi(obj), interface
    if interface == "asgi2":
        return ASGI2Middleware(obj), interface
    return obj, interface
