"""``cicada.run(app, **options)``: the programmatic entry point (same option names as the CLI,
like ``uvicorn.run``). Picks single process, --workers supervisor or --reload supervisor.

Exit statuses: 0 after a normal or graceful stop, 3 when startup fails (import error, lifespan
startup failure, bind error), like uvicorn.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from cicada.config import STARTUP_FAILURE, Config

logger = logging.getLogger("cicada.error")


def run_config(config: Config) -> None:
    """Serve with an already-built Config (the CLI's path). Exits with status 3 on startup
    failure."""
    from cicada.server import Server, bind_socket

    if config.use_subprocess and not isinstance(config.app, str):
        logger.warning("You must pass the application as an import string to enable 'reload' or 'workers'.")
        sys.exit(STARTUP_FAILURE)
    if not config.use_subprocess:
        # Import in the foreground so a bad import string fails before anything is bound.
        config.load()

    server = Server(config)
    code = 0
    try:
        if config.should_reload:
            from cicada.reload import ChangeReload, ReloadUnavailable

            try:
                reloader = ChangeReload(config, sockets=[])
            except ReloadUnavailable as exc:
                logger.error("%s", exc)
                sys.exit(STARTUP_FAILURE)
            reloader.sockets = [bind_socket(config)]
            reloader.run()
        elif config.workers > 1:
            from cicada.supervisor import Supervisor

            if config.reuse_port and config.uds is None and config.fd is None:
                from cicada.server import reserve_reuse_port

                placeholder = reserve_reuse_port(config)
                try:
                    code = Supervisor(config, sockets=[]).run()
                finally:
                    placeholder.close()
            else:
                code = Supervisor(config, sockets=[bind_socket(config)]).run()
        else:
            server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if config.uds and os.path.exists(config.uds):
            try:
                os.remove(config.uds)
            except OSError:
                pass
    if code:
        sys.exit(code)
    if not server.started and not config.use_subprocess:
        sys.exit(STARTUP_FAILURE)


def run(app: Any, **kwargs: Any) -> None:
    """Run ``app`` (an ASGI app object or an import string ``"module:attr"``).

    Keyword arguments are Config's (the CLI options with underscores): host, port, uds, fd,
    workers, reload, lifespan, log_level, proxy_headers, forwarded_allow_ips, root_path,
    limit_concurrency, limit_max_requests, timeout_keep_alive, timeout_graceful_shutdown,
    headers, server_header, date_header, loop, ... See docs/usage.md."""
    app_dir = kwargs.pop("app_dir", None)
    if app_dir is not None:
        sys.path.insert(0, app_dir)
    config = Config(app, **kwargs)
    run_config(config)
