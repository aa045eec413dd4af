"""Fixtures for the WebSocket tests: a cicada HttpServer with WebSockets on, in a thread, on
asyncio, uvloop and cicada's own loop; clients are the `websockets` library or the raw-socket
client in wsraw.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.fixtures import LOOPS, error_log, loop_kind, serving  # noqa: E402,F401


@pytest.fixture
def serve(loop_kind, error_log):  # noqa: F811
    """serve(app, **settings) -> a started ServerThread with ws="auto"; stopped at teardown."""
    yield from serving(loop_kind, error_log, ws="auto")
