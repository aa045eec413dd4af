"""Fixtures for the HttpServer black-box tests: a server thread per test, on asyncio, uvloop and
cicada's own loop."""

from __future__ import annotations

import pytest

from support.fixtures import LOOPS, error_log, loop_kind, serving  # noqa: F401


@pytest.fixture
def serve(loop_kind, error_log):  # noqa: F811
    """serve(app, **settings) -> a started ServerThread; stopped at teardown."""
    yield from serving(loop_kind, error_log)
