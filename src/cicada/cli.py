"""The ``cicada`` command line (argparse): uvicorn's options and defaults, each also settable
through a ``CICADA_<OPTION>`` environment variable (``--env-file`` is loaded first, so it may set
them too). ``--help`` shows every option with its default.

It only turns argv/environment into a Config and hands over to ``main.run_config``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

import cicada
from cicada.config import (
    HTTP_CHOICES,
    INTERFACE_CHOICES,
    LIFESPAN_CHOICES,
    LOOP_CHOICES,
    WS_CHOICES,
    Config,
    ConfigError,
    load_env_file,
)
from cicada.logging_config import LOG_LEVELS, LOGGING_CONFIG

ENV_PREFIX = "CICADA_"
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


class UsageError(Exception):
    """A bad command line or environment value (exit status 2, like click)."""


@dataclass
class Opt:
    dest: str
    flags: tuple[str, ...]
    help: str
    type: Any = str  # str, int, float, "bool" (--x/--no-x), "flag" (store_true), "list"
    default: Any = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    default_text: str | None = None  # how --help shows the default when it's computed
    extra_choices_ok: bool = False  # also accept "module:attr"
    env_sep: str | None = None  # for lists: how the env value splits (None = whitespace)
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def env(self) -> str:
        # Named after the flag (what users see in --help): --reload-dir -> CICADA_RELOAD_DIR.
        return ENV_PREFIX + self.flags[0].lstrip("-").replace("-", "_").upper()


def _choices(c: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(x for x in c if x != "none") if c is LOOP_CHOICES else c


OPTIONS: list[Opt] = [
    Opt("host", ("--host",), "Bind socket to this host.", default="127.0.0.1"),
    Opt("port", ("--port",), "Bind socket to this port. If 0, an available port will be picked.", int, 8000),
    Opt("uds", ("--uds",), "Bind to a UNIX domain socket (mode 0666, or the existing socket's mode).", metavar="PATH"),
    Opt("fd", ("--fd",), "Bind to socket from this file descriptor (an inherited listening socket).", int),
    Opt("backlog", ("--backlog",), "Maximum number of connections to hold in backlog.", int, 2048),
    Opt("reuse_port", ("--reuse-port",), "With --workers: each worker listens on its own SO_REUSEPORT socket and the kernel spreads connections (cicada extension).", "bool", False),
    Opt("reload", ("--reload",), "Enable auto-reload (development; needs watchfiles).", "flag", False),
    Opt("reload_dirs", ("--reload-dir",), "Set reload directories explicitly, instead of using the current working directory. Repeatable.", "list", metavar="PATH", default_text="current directory"),
    Opt("reload_includes", ("--reload-include",), "Glob pattern of files to watch (in addition to '*.py'). Repeatable.", "list", metavar="GLOB", default_text="*.py"),
    Opt("reload_excludes", ("--reload-exclude",), "Glob pattern of files to ignore (in addition to '.*, .py[cod], .sw.*, ~*'). Repeatable.", "list", metavar="GLOB", default_text=".*, .py[cod], .sw.*, ~*"),
    Opt("reload_delay", ("--reload-delay",), "Delay (seconds) to collect file changes before reloading.", float, 0.25),
    Opt("workers", ("--workers",), "Number of worker processes.", int, metavar="N", default_text="$WEB_CONCURRENCY or 1"),
    Opt("loop", ("--loop",), "Event loop implementation (or 'module:factory'). auto = cicada's own loop (else uvloop if installed, else asyncio).", str, "auto", _choices(LOOP_CHOICES), extra_choices_ok=True),
    Opt("http", ("--http",), "HTTP protocol implementation: cicada's C parser (h11/httptools are accepted aliases), or 'module:Class' with the HttpServer interface.", str, "auto", HTTP_CHOICES, extra_choices_ok=True),
    Opt("http2", ("--http2",), "HTTP/2 (not supported by cicada; accepted for compatibility and rejected if set).", "flag", False),
    Opt("ws", ("--ws",), "WebSocket protocol implementation. 'none' refuses upgrades; any other value uses cicada's C WebSocket implementation.", str, "auto", WS_CHOICES),
    Opt("ws_max_size", ("--ws-max-size",), "WebSocket max message size in bytes.", int, 16777216),
    Opt("ws_max_queue", ("--ws-max-queue",), "WebSocket received-message queue length; reading pauses when it is full.", int, 32),
    Opt("ws_ping_interval", ("--ws-ping-interval",), "WebSocket ping interval in seconds.", float, 20.0),
    Opt("ws_ping_timeout", ("--ws-ping-timeout",), "WebSocket ping timeout in seconds.", float, 20.0),
    Opt("ws_per_message_deflate", ("--ws-per-message-deflate",), "WebSocket per-message-deflate compression.", "boolval", True),
    Opt("lifespan", ("--lifespan",), "Lifespan implementation.", str, "auto", LIFESPAN_CHOICES),
    Opt("interface", ("--interface",), "Application interface: ASGI3, ASGI2 or WSGI (WSGI needs a2wsgi).", str, "auto", INTERFACE_CHOICES),
    Opt("env_file", ("--env-file",), "Environment configuration file (loaded before CICADA_* variables are read).", metavar="PATH"),
    Opt("log_config", ("--log-config",), "Logging configuration file: .json/.yaml/.yml (dictConfig) or .ini (fileConfig).", metavar="PATH"),
    Opt("log_level", ("--log-level",), "Log level.", str, None, tuple(LOG_LEVELS), default_text="info"),
    Opt("access_log", ("--access-log",), "Enable/Disable access log.", "bool", True),
    Opt("use_colors", ("--use-colors",), "Enable/Disable colorized logging.", "bool", None, default_text="auto (when a terminal)"),
    Opt("proxy_headers", ("--proxy-headers",), "Enable/Disable X-Forwarded-Proto, X-Forwarded-For to populate url scheme and remote address info (from --forwarded-allow-ips peers only).", "bool", True),
    Opt("server_header", ("--server-header",), "Enable/Disable default Server header.", "bool", True),
    Opt("date_header", ("--date-header",), "Enable/Disable default Date header.", "bool", True),
    Opt("forwarded_allow_ips", ("--forwarded-allow-ips",), "Comma separated list of IP addresses, IP networks, or literals (e.g. a unix socket path) to trust with proxy headers. '*' trusts all.", str, default_text="$FORWARDED_ALLOW_IPS or 127.0.0.1,::1"),
    Opt("root_path", ("--root-path",), "Set the ASGI 'root_path' for applications submounted below a given URL path.", str, ""),
    Opt("limit_concurrency", ("--limit-concurrency",), "Maximum number of concurrent connections or tasks to allow, before issuing HTTP 503 responses.", int, default_text="no limit"),
    Opt("limit_max_requests", ("--limit-max-requests",), "Maximum number of requests to service before terminating the process.", int, default_text="no limit"),
    Opt("limit_max_requests_jitter", ("--limit-max-requests-jitter",), "Maximum random jitter added to --limit-max-requests (so workers don't recycle together).", int, 0),
    Opt("timeout_keep_alive", ("--timeout-keep-alive",), "Close Keep-Alive connections if no new data is received within this timeout (seconds).", float, 5),
    Opt("timeout_graceful_shutdown", ("--timeout-graceful-shutdown",), "Maximum number of seconds to wait for graceful shutdown.", float, default_text="wait forever"),
    Opt("timeout_worker_healthcheck", ("--timeout-worker-healthcheck",), "Seconds a worker (--workers) may take to answer a health check before it is killed and replaced; 0 turns the checks off.", float, 5),
    Opt("ssl_keyfile", ("--ssl-keyfile",), "TLS private key file (PEM); may be left out when the certificate file holds the key.", metavar="PATH"),
    Opt("ssl_certfile", ("--ssl-certfile",), "TLS certificate chain file (PEM): turns TLS on (https/wss).", metavar="PATH"),
    Opt("ssl_keyfile_password", ("--ssl-keyfile-password",), "Password of an encrypted private key.", metavar="TEXT"),
    Opt("ssl_version", ("--ssl-version",), "ssl module protocol constant to use.", int, default_text="17 (PROTOCOL_TLS_SERVER)"),
    Opt("ssl_cert_reqs", ("--ssl-cert-reqs",), "Client certificate requirement: 0 none, 1 optional, 2 required (see --ssl-ca-certs).", int, default_text="0"),
    Opt("ssl_ca_certs", ("--ssl-ca-certs",), "CA certificates file to verify client certificates with.", metavar="PATH"),
    Opt("ssl_ciphers", ("--ssl-ciphers",), "OpenSSL cipher list (default: OpenSSL's).", metavar="TEXT"),
    Opt("headers", ("--header",), "Specify custom default HTTP response headers as a Name:Value pair. Repeatable.", "list", metavar="NAME:VALUE", env_sep="\n", default_text="none"),
    Opt("app_dir", ("--app-dir",), "Look for APP in the specified directory, by adding this to the PYTHONPATH.", str, "", default_text="current directory"),
    Opt("h11_max_incomplete_event_size", ("--h11-max-incomplete-event-size",), "Maximum size in bytes of a request head (request line + headers); mapped to cicada's head limit.", int, default_text="65536"),
    Opt("reset_contextvars", ("--reset-contextvars",), "Run each request in a fresh contextvars.Context (not supported yet; rejected if set).", "flag", False),
    Opt("factory", ("--factory",), "Treat APP as an application factory, i.e. a () -> <ASGI app> callable.", "flag", False),
    Opt("accelerate", ("--accelerate",), "Run the Starlette/FastAPI app's @app.middleware(\"http\") and BaseHTTPMiddleware layers (also in mounted sub-apps) on cicada's C middleware, as cicada.middleware.accelerate(app) would (cicada extension).", "bool", False),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # click-like: short usage, then the problem
        message = message.replace("argument ", "Invalid value for ", 1) if message.startswith("argument ") else message
        self.exit(2, f"Usage: cicada [OPTIONS] APP\nTry 'cicada --help' for help.\n\nError: {message}\n")


def _env_value(opt: Opt, raw: str) -> Any:
    try:
        if opt.type in ("bool", "flag", "boolval"):
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"{raw!r} is not a valid boolean")
        if opt.type == "list":
            return [x for x in (raw.split(opt.env_sep) if opt.env_sep else raw.split()) if x.strip()]
        if opt.type is int:
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"{raw!r} is not a valid integer") from None
        if opt.type is float:
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"{raw!r} is not a valid float") from None
        return raw
    except ValueError as exc:
        raise UsageError(f"Invalid value for '{opt.flags[0]}' (from ${opt.env}): {exc}") from None


def _bool_arg(flag: str) -> Any:
    def conv(raw: str) -> bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise argparse.ArgumentTypeError(f"{raw!r} is not a valid boolean")

    return conv


def _choice_type(opt: Opt) -> Any:
    def conv(raw: str) -> str:
        if opt.choices and raw in opt.choices:
            return raw
        if opt.extra_choices_ok and ":" in raw:
            return raw
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not one of {', '.join(repr(c) for c in (opt.choices or ()))}"
            + (" or 'module:attr'" if opt.extra_choices_ok else "")
        )

    return conv


def _show_default(opt: Opt, env_default: Any) -> str:
    text = opt.default_text
    if text is None:
        if opt.type == "bool":
            text = "on" if opt.default else "off"
        elif opt.type == "flag":
            text = "off"
        elif opt.default is None:
            text = "none"
        elif opt.default == "":
            text = "''"
        else:
            text = str(opt.default)
    shown = f"[default: {text}; env: {opt.env}"
    if env_default is not None:
        shown += f" = {env_default!r}"
    return shown + "]"


def build_parser(env: dict[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if env is None else env
    parser = _Parser(
        prog="cicada",
        usage="cicada [OPTIONS] APP",
        description="cicada: a fast ASGI server. Run APP ('module:attribute', e.g. main:app).",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=40, width=100),
        allow_abbrev=False,
    )
    parser.add_argument(
        "app", metavar="APP", nargs="?", default=env.get(ENV_PREFIX + "APP"),
        help=f"The ASGI application as 'module:attribute'. [env: {ENV_PREFIX}APP]",
    )
    parser.add_argument("--version", action="store_true", help="Display the cicada version and exit.")
    for opt in OPTIONS:
        raw = env.get(opt.env)
        default = opt.default if raw is None else _env_value(opt, raw)
        help_text = f"{opt.help} {_show_default(opt, raw)}"
        help_text = help_text.replace("%", "%%")
        if opt.type == "bool":
            parser.add_argument(
                *opt.flags, dest=opt.dest, action=argparse.BooleanOptionalAction, default=default,
                help=help_text,
            )
        elif opt.type == "flag":
            parser.add_argument(*opt.flags, dest=opt.dest, action="store_true", default=default, help=help_text)
        elif opt.type == "boolval":
            parser.add_argument(
                *opt.flags, dest=opt.dest, type=_bool_arg(opt.flags[0]), default=default,
                metavar="BOOL", help=help_text,
            )
        elif opt.type == "list":
            parser.add_argument(
                *opt.flags, dest=opt.dest, action="append", default=None, metavar=opt.metavar,
                help=help_text,
            )
            parser.set_defaults(**{f"_env_{opt.dest}": default})
        else:
            conv = _choice_type(opt) if opt.choices else opt.type
            metavar = opt.metavar or ("{" + ",".join(opt.choices) + "}" if opt.choices else None)
            if metavar is None:
                metavar = {int: "INT", float: "FLOAT"}.get(opt.type, "TEXT")
            parser.add_argument(
                *opt.flags, dest=opt.dest, type=conv, default=default, metavar=metavar, help=help_text,
            )
    return parser


def version_text() -> str:
    return (
        f"cicada {cicada.__version__} with {platform.python_implementation()} "
        f"{platform.python_version()} on {platform.system()}"
    )


def _flag_for(option: str) -> str:
    for opt in OPTIONS:
        if opt.dest == option:
            return opt.flags[0]
    return "--" + option.replace("_", "-") if option != "app" else "APP"


def parse_config_kwargs(argv: list[str] | None) -> tuple[str, dict[str, Any]] | None:
    """argv + environment -> (app, Config kwargs); None after --version."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # --env-file is applied before anything else so it can provide CICADA_* values.
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--env-file", default=os.environ.get(ENV_PREFIX + "ENV_FILE"))
    known, _ = pre.parse_known_args(argv)
    if known.env_file:
        try:
            load_env_file(known.env_file)
        except ConfigError as exc:
            raise UsageError(f"Invalid value for '--env-file': {str(exc).split(': ', 1)[1]}") from None

    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.version:
        print(version_text())
        return None
    if not ns.app:
        print("Usage: cicada [OPTIONS] APP\nTry 'cicada --help' for help.\n", file=sys.stderr)
        raise UsageError("Missing argument 'APP'.")
    kwargs: dict[str, Any] = {}
    for opt in OPTIONS:
        value = getattr(ns, opt.dest)
        if opt.type == "list":
            value = value if value is not None else getattr(ns, f"_env_{opt.dest}")
        kwargs[opt.dest] = value
    return ns.app, kwargs


def _reject_unsupported(kwargs: dict[str, Any]) -> None:
    if kwargs.pop("http2", False):
        raise UsageError("Invalid value for '--http2': HTTP/2 is not supported by cicada.")
    if kwargs.pop("reset_contextvars", False):
        raise UsageError("Invalid value for '--reset-contextvars': not supported by cicada yet.")


def main(argv: list[str] | None = None) -> int:
    try:
        parsed = parse_config_kwargs(argv)
        if parsed is None:
            return 0
        app, kwargs = parsed
        _reject_unsupported(kwargs)
        if kwargs.get("log_config") is None:
            kwargs["log_config"] = LOGGING_CONFIG
        if kwargs.get("app_dir") is not None:
            sys.path.insert(0, kwargs["app_dir"])
        kwargs.pop("env_file", None)  # already loaded above
        config = Config(app, **kwargs)
    except UsageError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        message = str(exc).replace(f"'{exc.option}'", f"'{_flag_for(exc.option)}'", 1)
        print(f"Error: {message}", file=sys.stderr)
        return 2
    except (OSError, ValueError, ImportError) as exc:
        # e.g. an unreadable or malformed --log-config
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    from cicada.main import run_config

    run_config(config)
    return 0
