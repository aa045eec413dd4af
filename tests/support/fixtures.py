"""Shared pytest fixtures for suites that run cicada's HttpServer in a thread: the loop to run
on (asyncio, uvloop and cicada's own loop), a private error logger that records its lines, and a
server starter. A suite's conftest imports them and may wrap `serving` with its own defaults."""

from __future__ import annotations

import logging

import pytest

from support.server_thread import ListHandler, ServerThread

LOOPS = ["asyncio", "uvloop", "cicada"]


@pytest.fixture(params=LOOPS)
def loop_kind(request):
    return request.param


@pytest.fixture
def error_log():
    logger = logging.getLogger(f"cicada.test.error.{id(object())}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = ListHandler()
    logger.addHandler(handler)
    logger.handler = handler  # type: ignore[attr-defined]
    yield logger
    logger.removeHandler(handler)


def serving(loop_kind, error_log, **defaults):
    """Generator body of a `serve` fixture: yields start(app, **settings) -> a started
    ServerThread (defaults and the test's error logger applied); stops them all at teardown."""
    started = []

    def start(app, **settings):
        settings.setdefault("error_logger", error_log)
        for key, value in defaults.items():
            settings.setdefault(key, value)
        st = ServerThread(app, loop_kind=loop_kind, **settings).start()
        started.append(st)
        return st

    yield start
    for st in started:
        st.stop()
