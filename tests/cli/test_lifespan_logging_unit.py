"""In-process unit tests: the lifespan state machine, the log formatters, reload's file filter."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from cicada.lifespan import Lifespan
from cicada.logging_config import AccessFormatter, DefaultFormatter, TRACE_LOG_LEVEL, configure_logging
from cicada_proc import run_cli


def run(coro):
    return asyncio.run(coro)


def test_lifespan_state_and_order():
    events = []

    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        msg = await receive()
        events.append(msg["type"])
        scope["state"]["x"] = 1
        await send({"type": "lifespan.startup.complete"})
        msg = await receive()
        events.append(msg["type"])
        await send({"type": "lifespan.shutdown.complete"})

    async def main():
        ls = Lifespan(app, "on")
        await ls.startup()
        assert not ls.should_exit and ls.state == {"x": 1}
        await ls.shutdown()
        assert not ls.should_exit

    run(main())
    assert events == ["lifespan.startup", "lifespan.shutdown"]


def test_lifespan_startup_failed_message(caplog):
    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    async def main():
        ls = Lifespan(app, "auto")
        await ls.startup()
        return ls

    with caplog.at_level(logging.INFO, logger="cicada.error"):
        ls = run(main())
    assert ls.should_exit
    assert "no database" in caplog.text and "Application startup failed. Exiting." in caplog.text


@pytest.mark.parametrize("mode, should_exit", [("auto", False), ("on", True)])
def test_lifespan_exception_auto_vs_on(mode, should_exit, caplog):
    async def app(scope, receive, send):
        raise RuntimeError("no lifespan here")

    async def main():
        ls = Lifespan(app, mode)
        await ls.startup()
        await ls.shutdown()  # a no-op after an error
        return ls

    with caplog.at_level(logging.INFO, logger="cicada.error"):
        ls = run(main())
    assert ls.should_exit is should_exit
    if mode == "auto":
        assert "ASGI 'lifespan' protocol appears unsupported." in caplog.text
    else:
        assert "Exception in 'lifespan' protocol" in caplog.text


def test_lifespan_shutdown_timeout(caplog):
    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await asyncio.sleep(30)  # never completes shutdown

    async def main():
        ls = Lifespan(app, "on", shutdown_timeout=0.2)
        await ls.startup()
        await ls.shutdown()
        return ls

    ls = run(main())
    assert ls.should_exit


def test_lifespan_off_does_nothing():
    async def app(scope, receive, send):
        raise AssertionError("must not be called")

    async def main():
        ls = Lifespan(app, "off")
        await ls.startup()
        await ls.shutdown()

    run(main())


def test_lifespan_bad_transition_is_an_error(caplog):
    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.startup.complete"})

    async def main():
        ls = Lifespan(app, "on")
        await ls.startup()
        await asyncio.sleep(0.05)
        return ls

    with caplog.at_level(logging.INFO, logger="cicada.error"):
        ls = run(main())
    assert ls.error_occurred and "invalid state transition" in caplog.text


def _record(msg, *args, level=logging.INFO, name="cicada.error"):
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_default_formatter_prefix_and_colours():
    plain = DefaultFormatter("%(levelprefix)s %(message)s", use_colors=False)
    assert plain.format(_record("hello")) == "INFO:     hello"
    assert plain.format(_record("x", level=logging.CRITICAL)) == "CRITICAL: x"
    coloured = DefaultFormatter("%(levelprefix)s %(message)s", use_colors=True)
    assert coloured.format(_record("hi")).startswith("\x1b[32mINFO\x1b[0m:")
    rec = _record("plain %s", "v")
    rec.color_message = "fancy %s"
    assert coloured.format(rec).endswith("fancy v")
    assert plain.format(rec).endswith("plain v")


def test_access_formatter():
    fmt = AccessFormatter('%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False)
    rec = _record('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", "/a?b=1", "1.1", 404, name="cicada.access")
    assert fmt.format(rec) == 'INFO:     1.2.3.4:5 - "GET /a?b=1 HTTP/1.1" 404 Not Found'
    odd = _record("free text", name="cicada.access")
    assert "free text" in fmt.format(odd)


def test_trace_level_and_log_level():
    configure_logging(log_level="trace")
    assert logging.getLevelName(TRACE_LOG_LEVEL) == "TRACE"
    assert logging.getLogger("cicada.error").level == TRACE_LOG_LEVEL
    configure_logging(log_level="info")


def test_reload_filter(tmp_path):
    from cicada.config import Config
    from cicada.reload import FileFilter

    cfg = Config("m:a", reload=True, reload_dirs=[str(tmp_path)], reload_includes=["*.html"],
                 reload_excludes=["skip_*.py"], log_config=None)
    f = FileFilter(cfg)
    assert f(None, str(tmp_path / "app.py"))
    assert f(None, str(tmp_path / "templates" / "index.html"))
    assert not f(None, str(tmp_path / "notes.txt"))
    assert not f(None, str(tmp_path / "skip_me.py"))
    assert not f(None, str(tmp_path / ".venv" / "lib" / "x.py"))
    assert not f(None, str(tmp_path / "__pycache__" / "app.cpython-311.pyc"))


def test_reload_without_watchfiles_is_a_clear_error(tmp_path):
    (tmp_path / "watchfiles.py").write_text("raise ImportError('simulated: not installed')\n")
    import os

    r = run_cli(["testapps:app", "--reload", "--port", "0"],
                env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).parent.parent / "integration")])})
    assert r.returncode == 3
    assert "--reload needs the 'watchfiles' package" in r.stderr
