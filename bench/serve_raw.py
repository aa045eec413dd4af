"""Minimal launcher: serve a module:app with cicada's C HttpServer on uvloop (or asyncio).

Used by bench/suites/server.py so the benchmark measures the C protocol alone, independent of the
CLI. Usage: python bench/serve_raw.py MODULE:APP PORT [asyncio|uvloop]
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import sys

import cicada._core as core


def main() -> None:
    target, port = sys.argv[1], int(sys.argv[2])
    loop_kind = sys.argv[3] if len(sys.argv) > 3 else "uvloop"
    mod, _, attr = target.partition(":")
    app = getattr(importlib.import_module(mod), attr)
    if loop_kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    srv = core.HttpServer(app, loop, access_logger=None)
    server = loop.run_until_complete(
        loop.create_server(srv, "127.0.0.1", port, backlog=2048, reuse_address=True))
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()
    server.close()
    srv.shutdown()
    srv.close_all()


if __name__ == "__main__":
    main()
