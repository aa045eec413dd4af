"""``Config``: every server option with uvicorn's names and defaults, validated up front (a bad
value raises ``ConfigError`` naming the option), plus the pieces derived from it at load time
(the ASGI3 app, encoded default headers, the trusted-proxy predicate, the loop factory).

It binds no socket and starts no loop; ``server.py`` / ``supervisor.py`` do that.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cicada.forwarded import TrustedHosts
from cicada.importer import AppLoadError, ImportFromStringError, import_from_string, load_app
from cicada.logging_config import LOG_LEVELS, LOGGING_CONFIG, TRACE_LOG_LEVEL, configure_logging

STARTUP_FAILURE = 3

LOOP_CHOICES = ("auto", "asyncio", "uvloop", "cicada", "none")
HTTP_CHOICES = ("auto", "cicada", "h11", "httptools")
WS_CHOICES = ("auto", "none", "websockets", "websockets-sansio", "wsproto")
LIFESPAN_CHOICES = ("auto", "on", "off")
INTERFACE_CHOICES = ("auto", "asgi3", "asgi2", "wsgi")

logger = logging.getLogger("cicada.error")


class ConfigError(ValueError):
    """An invalid option value. ``option`` is the option's name (Config keyword)."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(f"Invalid value for '{option}': {message}")


def _env_file_values(path: str) -> dict[str, str]:
    """Minimal .env parser used when python-dotenv is not installed: KEY=VALUE lines,
    ``export`` prefixes, # comments, single/double quotes."""
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[7:].lstrip()
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep or not key:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
                if raw.strip().partition("=")[2].strip().startswith('"'):
                    value = value.encode("utf-8").decode("unicode_escape")
            elif " #" in value:
                value = value.split(" #", 1)[0].rstrip()
            values[key] = value
    return values


def load_env_file(path: str | os.PathLike[str]) -> None:
    """Load ``path`` into os.environ without overriding variables already set (dotenv's rule)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError("env_file", f"file {path!r} does not exist")
    try:
        from dotenv import load_dotenv
    except ImportError:
        for key, value in _env_file_values(path).items():
            os.environ.setdefault(key, value)
    else:
        load_dotenv(dotenv_path=path)


def _normalize_list(value: list[str] | str | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(dict.fromkeys(value))


def _check_int(option: str, value: Any, minimum: int | None = None, maximum: int | None = None,
               optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(option, f"{value!r} is not a valid integer") from None
        else:
            raise ConfigError(option, f"expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(option, f"{value} is smaller than the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(option, f"{value} is larger than the maximum {maximum}")
    return value


def _check_float(option: str, value: Any, minimum: float = 0.0, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool):
        raise ConfigError(option, f"expected a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(option, f"{value!r} is not a valid number") from None
    if value != value or value < minimum:
        raise ConfigError(option, f"{value} must be >= {minimum}")
    return value


def _check_choice(option: str, value: Any, choices: tuple[str, ...], allow_import: bool = False) -> str:
    if isinstance(value, str) and (value in choices or (allow_import and ":" in value)):
        return value
    extra = " or an import string 'module:attr'" if allow_import else ""
    raise ConfigError(option, f"{value!r} is not one of {', '.join(choices)}{extra}")


def parse_header(value: str) -> tuple[str, str]:
    """``"Name: value"`` -> ``("Name", "value")`` for --header."""
    name, sep, val = value.partition(":")
    name = name.strip()
    if not sep or not name:
        raise ConfigError("headers", f"{value!r} is not in the form 'name:value'")
    return name, val.strip()


class Config:
    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 8000,
        uds: str | None = None,
        fd: int | None = None,
        loop: str = "auto",
        http: str = "auto",
        ws: str = "auto",
        ws_max_size: int = 16 * 1024 * 1024,
        ws_max_queue: int = 32,
        ws_ping_interval: float | None = 20.0,
        ws_ping_timeout: float | None = 20.0,
        ws_per_message_deflate: bool = True,
        lifespan: str = "auto",
        env_file: str | os.PathLike[str] | None = None,
        log_config: Any = LOGGING_CONFIG,
        log_level: str | int | None = None,
        access_log: bool = True,
        use_colors: bool | None = None,
        interface: str = "auto",
        reload: bool = False,
        reload_dirs: list[str] | str | None = None,
        reload_delay: float = 0.25,
        reload_includes: list[str] | str | None = None,
        reload_excludes: list[str] | str | None = None,
        workers: int | None = None,
        proxy_headers: bool = True,
        server_header: bool = True,
        date_header: bool = True,
        forwarded_allow_ips: list[str] | str | None = None,
        root_path: str = "",
        limit_concurrency: int | None = None,
        limit_max_requests: int | None = None,
        limit_max_requests_jitter: int = 0,
        backlog: int = 2048,
        timeout_keep_alive: float = 5,
        timeout_notify: float = 30,
        timeout_graceful_shutdown: float | None = None,
        timeout_worker_healthcheck: float = 5,
        callback_notify: Callable[..., Awaitable[None]] | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile_password: str | None = None,
        ssl_version: int | None = None,
        ssl_cert_reqs: int | None = None,
        ssl_ca_certs: str | None = None,
        ssl_ciphers: str | None = None,
        headers: list[tuple[str, str]] | list[str] | None = None,
        factory: bool = False,
        h11_max_incomplete_event_size: int | None = None,
        reset_contextvars: bool = False,
        app_dir: str | None = None,
        reuse_port: bool = False,
        accelerate: bool = False,
    ) -> None:
        self.app = app
        self.host = host
        self.port = _check_int("port", port, 0, 65535)
        self.uds = uds
        self.fd = _check_int("fd", fd, 0, optional=True)
        self.loop = _check_choice("loop", loop, LOOP_CHOICES, allow_import=True)
        self.http = http if callable(http) else _check_choice("http", http, HTTP_CHOICES, allow_import=True)
        self.ws = _check_choice("ws", ws, WS_CHOICES)
        self.ws_max_size = _check_int("ws_max_size", ws_max_size, 1)
        self.ws_max_queue = _check_int("ws_max_queue", ws_max_queue, 1)
        self.ws_ping_interval = _check_float("ws_ping_interval", ws_ping_interval, optional=True)
        self.ws_ping_timeout = _check_float("ws_ping_timeout", ws_ping_timeout, optional=True)
        self.ws_per_message_deflate = bool(ws_per_message_deflate)
        self.lifespan = _check_choice("lifespan", lifespan, LIFESPAN_CHOICES)
        self.env_file = env_file
        self.log_config = log_config
        if isinstance(log_level, str):
            if log_level.lower() not in LOG_LEVELS:
                raise ConfigError("log_level", f"{log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        elif log_level is not None:
            _check_int("log_level", log_level, 0)
        self.log_level = log_level
        self.access_log = bool(access_log)
        self.use_colors = use_colors
        self.interface = _check_choice("interface", interface, INTERFACE_CHOICES)
        self.reload = bool(reload)
        self.reload_delay = _check_float("reload_delay", reload_delay)
        self.proxy_headers = bool(proxy_headers)
        self.server_header = bool(server_header)
        self.date_header = bool(date_header)
        if not isinstance(root_path, str) or (root_path and not root_path.startswith("/")):
            raise ConfigError("root_path", f"{root_path!r} must be empty or start with '/'")
        self.root_path = root_path.rstrip("/")
        self.limit_concurrency = _check_int("limit_concurrency", limit_concurrency, 1, optional=True)
        self.limit_max_requests = _check_int("limit_max_requests", limit_max_requests, 1, optional=True)
        self.limit_max_requests_jitter = _check_int("limit_max_requests_jitter", limit_max_requests_jitter, 0)
        self.backlog = _check_int("backlog", backlog, 1)
        self.timeout_keep_alive = _check_float("timeout_keep_alive", timeout_keep_alive)
        self.timeout_notify = _check_float("timeout_notify", timeout_notify)
        self.timeout_graceful_shutdown = _check_float(
            "timeout_graceful_shutdown", timeout_graceful_shutdown, optional=True
        )
        self.timeout_worker_healthcheck = _check_float("timeout_worker_healthcheck", timeout_worker_healthcheck)
        self.callback_notify = callback_notify
        self.ssl_keyfile = ssl_keyfile
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile_password = ssl_keyfile_password
        self.ssl_version = ssl_version
        self.ssl_cert_reqs = ssl_cert_reqs
        self.ssl_ca_certs = ssl_ca_certs
        self.ssl_ciphers = ssl_ciphers
        self.ssl: ssl.SSLContext | None = None
        if self.is_ssl:
            # Fail here, before binding or spawning workers; load() builds the context again in
            # the process that serves (an SSLContext does not pickle into spawned workers).
            self.create_ssl_context()
        self.headers: list[tuple[str, str]] = []
        for item in headers or []:
            if isinstance(item, str):
                self.headers.append(parse_header(item))
            elif isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
                self.headers.append((item[0], item[1]))
            else:
                raise ConfigError("headers", f"{item!r} is not a (name, value) pair of strings")
        for name, value in self.headers:
            try:
                name.encode("latin-1"), value.encode("latin-1")
            except UnicodeEncodeError:
                raise ConfigError("headers", f"{name}: {value!r} is not latin-1 encodable") from None
            if any(c in name for c in " \t\r\n:") or any(c in value for c in "\r\n"):
                raise ConfigError("headers", f"{name!r} has characters not allowed in a header")
        self.factory = bool(factory)
        self.h11_max_incomplete_event_size = _check_int(
            "h11_max_incomplete_event_size", h11_max_incomplete_event_size, 1024, optional=True
        )
        self.reset_contextvars = bool(reset_contextvars)
        self.app_dir = app_dir
        self.reuse_port = bool(reuse_port)
        self.accelerate = bool(accelerate)
        if uds is not None and fd is not None:
            raise ConfigError("uds", "--uds and --fd cannot be used together")
        if not isinstance(host, str) or not host:
            raise ConfigError("host", f"{host!r} is not a host name or address")

        self.loaded = False
        self.configure_logging()

        if env_file is not None:
            logger.info("Loading environment from '%s'", env_file)
            load_env_file(env_file)

        if workers is None:
            env_workers = os.environ.get("WEB_CONCURRENCY")
            workers = env_workers if env_workers else 1
        self.workers = _check_int("workers", workers, 1)

        if forwarded_allow_ips is None:
            forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
        self.forwarded_allow_ips = forwarded_allow_ips

        self.reload_dirs: list[Path] = []
        self.reload_includes: list[str] = []
        self.reload_excludes: list[str] = []
        if (reload_dirs or reload_includes or reload_excludes) and not self.should_reload:
            logger.warning(
                "Current configuration will not reload as not all conditions are met "
                "(--reload and an import string are needed)."
            )
        if self.should_reload:
            dirs = [Path(d).resolve() for d in _normalize_list(reload_dirs)]
            missing = [str(d) for d in dirs if not d.is_dir()]
            if missing:
                raise ConfigError("reload_dirs", f"not a directory: {', '.join(missing)}")
            self.reload_dirs = dirs or [Path.cwd()]
            self.reload_includes = ["*.py"] + [p for p in _normalize_list(reload_includes) if p != "*.py"]
            self.reload_excludes = [".*", ".py[cod]", ".sw.*", "~*"] + _normalize_list(reload_excludes)
            self.reload_excludes = [p for p in self.reload_excludes if p not in _normalize_list(reload_includes)]
            logger.info(
                "Will watch for changes in these directories: %s", sorted(map(str, self.reload_dirs))
            )
        if self.reload and self.workers > 1:
            logger.warning('"workers" flag is ignored when reloading is enabled.')

    # -- derived ------------------------------------------------------------------------------
    @property
    def should_reload(self) -> bool:
        return isinstance(self.app, str) and self.reload

    @property
    def use_subprocess(self) -> bool:
        return bool(self.reload or self.workers > 1)

    @property
    def asgi_version(self) -> str:
        return {"asgi2": "2.0"}.get(self.interface, "3.0")

    def configure_logging(self) -> None:
        try:
            configure_logging(self.log_config, self.log_level, self.access_log, self.use_colors)
        except ImportError:
            raise
        except Exception as exc:  # dictConfig/fileConfig raise ValueError, KeyError, OSError...
            where = f" ({self.log_config})" if isinstance(self.log_config, (str, os.PathLike)) else ""
            raise ConfigError("log_config", f"could not configure logging{where}: {exc!r}") from exc

    def __getstate__(self) -> dict[str, Any]:
        # Sent to spawned workers: drop whatever load() built (the app is re-imported there).
        state = self.__dict__.copy()
        for key in ("loaded_app", "trusted_proxy", "encoded_headers"):
            state.pop(key, None)
        state["loaded"] = False
        state["ssl"] = None
        return state

    def load_app(self) -> Any:
        """Import and resolve the application. Logs the reason and exits with status 3 on
        failure (uvicorn's behaviour)."""
        if self.app_dir is not None and self.app_dir not in sys.path:
            sys.path.insert(0, self.app_dir)
        try:
            app, interface = load_app(
                self.app, factory=self.factory, interface=self.interface, logger=logger
            )
        except (ImportFromStringError, AppLoadError) as exc:
            logger.error("Error loading ASGI app. %s", exc)
            sys.exit(STARTUP_FAILURE)
        self.interface = interface
        return app

    def load(self) -> None:
        """Build the runtime pieces: ASGI3 app, encoded headers, trusted-proxy predicate."""
        assert not self.loaded
        encoded = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in self.headers]
        self.encoded_headers: list[tuple[bytes, bytes]] = encoded
        # A user-supplied Server header replaces ours, like uvicorn.
        self.server_header_value: bytes | None = (
            b"cicada" if self.server_header and not any(n == b"server" for n, _ in encoded) else None
        )
        self.trusted_proxy = TrustedHosts(self.forwarded_allow_ips)
        if self.is_ssl:
            self.ssl = self.create_ssl_context()
        app = self.load_app()
        if self.accelerate:
            self._accelerate(app)
        if logger.getEffectiveLevel() <= TRACE_LOG_LEVEL:
            from cicada.message_logger import MessageLoggerMiddleware

            app = MessageLoggerMiddleware(app)
        self.loaded_app = app
        self.loaded = True

    def _accelerate(self, app: Any) -> None:
        """--accelerate: the app's BaseHTTPMiddleware layers on cicada's middleware. Anything
        that stops it is logged and the app is served as it is (it still works, only slower)."""
        try:
            from cicada.middleware import accelerate_tree
        except ImportError as exc:
            logger.warning("--accelerate needs starlette (%s); middleware runs unchanged", exc)
            return
        try:
            swapped = accelerate_tree(app)
        except (TypeError, RuntimeError) as exc:
            logger.warning("--accelerate: %s; middleware runs unchanged", exc)
            return
        logger.info("--accelerate: %d middleware layer(s) run on cicada's middleware", swapped)

    @property
    def is_ssl(self) -> bool:
        return bool(self.ssl_certfile or self.ssl_keyfile)

    def create_ssl_context(self) -> ssl.SSLContext:
        from cicada.tls import create_ssl_context

        return create_ssl_context(
            self.ssl_certfile,
            self.ssl_keyfile,
            self.ssl_keyfile_password,
            self.ssl_version,
            self.ssl_cert_reqs,
            self.ssl_ca_certs,
            self.ssl_ciphers,
        )

    def http_server_factory(self) -> Callable[..., Any]:
        """The class building the per-server protocol factory (cicada._core.HttpServer unless
        --http names another implementation with the same constructor)."""
        if callable(self.http):
            return self.http
        if ":" in self.http:
            try:
                return import_from_string(self.http)
            except ImportFromStringError as exc:
                logger.error("Error loading custom HTTP implementation. %s", exc)
                sys.exit(STARTUP_FAILURE)
        from cicada import _core

        factory = getattr(_core, "HttpServer", None)
        if factory is None:
            logger.error("This build of cicada has no HTTP server (cicada._core.HttpServer missing).")
            sys.exit(STARTUP_FAILURE)
        return factory

    def get_loop_factory(self) -> Callable[[], Any] | None:
        from cicada.loops import loop_factory

        return loop_factory(self.loop)
