"""Fixtures for the WebSocket tests: a cicada HttpServer with WebSockets on, in a thread, on
asyncio and uvloop; clients are the `websockets` library or the raw-socket client in wsraw.py."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.server_thread import ListHandler, ServerThread  # noqa: E402

LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(params=LOOPS)
def loop_kind(request):
    return request.param


@pytest.fixture
def error_log():
    logger = logging.getLogger(f"cicada.test.wserror.{id(object())}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = ListHandler()
    logger.addHandler(handler)
    logger.handler = handler  # type: ignore[attr-defined]
    yield logger
    logger.removeHandler(handler)


@pytest.fixture
def serve(loop_kind, error_log):
    """serve(app, **settings) -> a started ServerThread with ws="auto"; stopped at teardown."""
    started = []

    def start(app, **settings):
        settings.setdefault("error_logger", error_log)
        settings.setdefault("ws", "auto")
        st = ServerThread(app, loop_kind=loop_kind, **settings).start()
        started.append(st)
        return st

    yield start
    for st in started:
        st.stop()
