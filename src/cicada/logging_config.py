"""Logging for the cicada server: the TRACE level, the colourising formatters, the default
dictConfig (loggers ``cicada``, ``cicada.error``, ``cicada.access``) and ``configure_logging``.

Named ``logging_config`` so it never shadows the standard ``logging`` module. It only formats and
configures; it decides nothing about what gets logged.
"""

from __future__ import annotations

import copy
import http
import json
import logging
import logging.config
import os
import sys
from typing import Any

TRACE_LOG_LEVEL = 5

LOG_LEVELS: dict[str, int] = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE_LOG_LEVEL,
}

_ANSI = {
    "red": 31,
    "green": 32,
    "yellow": 33,
    "blue": 34,
    "cyan": 36,
    "bright_red": 91,
    "bright_white": 97,
}


def style(text: str, fg: str | None = None, bold: bool = False) -> str:
    """Wrap ``text`` in ANSI escapes (colour and/or bold)."""
    prefix = ""
    if fg is not None:
        prefix += f"\033[{_ANSI[fg]}m"
    if bold:
        prefix += "\033[1m"
    return f"{prefix}{text}\033[0m"


_LEVEL_COLOURS = {
    TRACE_LOG_LEVEL: "blue",
    logging.DEBUG: "cyan",
    logging.INFO: "green",
    logging.WARNING: "yellow",
    logging.ERROR: "red",
    logging.CRITICAL: "bright_red",
}


class ColourFormatter(logging.Formatter):
    """Adds ``%(levelprefix)s`` ("INFO:     ", coloured on a terminal). A record may carry
    ``extra={"color_message": ...}``: a variant of its message used only when colouring."""

    stream = sys.stderr

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: str = "%",
        use_colors: bool | None = None,
    ) -> None:
        if use_colors is None:
            try:
                use_colors = self.stream.isatty()
            except (AttributeError, ValueError):
                use_colors = False
        self.use_colors = bool(use_colors)
        super().__init__(fmt=fmt, datefmt=datefmt, style=style)  # type: ignore[arg-type]

    def _level_prefix(self, record: logging.LogRecord) -> str:
        name = record.levelname
        pad = " " * max(0, 8 - len(name))
        if self.use_colors:
            colour = _LEVEL_COLOURS.get(record.levelno)
            if colour:
                name = style(name, fg=colour)
        return name + ":" + pad

    def formatMessage(self, record: logging.LogRecord) -> str:
        rec = copy.copy(record)
        if self.use_colors and "color_message" in rec.__dict__:
            rec.msg = rec.__dict__["color_message"]
            rec.__dict__["message"] = rec.getMessage()
        rec.__dict__["levelprefix"] = self._level_prefix(rec)
        return super().formatMessage(rec)


class DefaultFormatter(ColourFormatter):
    """Formatter for ``cicada`` / ``cicada.error`` (stderr)."""


class AccessFormatter(ColourFormatter):
    """Formatter for ``cicada.access``. The server logs access lines with the arguments
    ``(client_addr, method, full_path, http_version, status_code)``; this adds the fields
    ``client_addr``, ``request_line`` and ``status_code`` ("200 OK") to the record."""

    stream = sys.stdout

    _STATUS_COLOURS = {1: "bright_white", 2: "green", 3: "yellow", 4: "red", 5: "bright_red"}

    def _status(self, code: int) -> str:
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = ""
        text = f"{code} {phrase}"
        if self.use_colors:
            return style(text, fg=self._STATUS_COLOURS.get(code // 100, "bright_white"))
        return text

    def formatMessage(self, record: logging.LogRecord) -> str:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client_addr, method, full_path, http_version, status_code = args
            request_line = f"{method} {full_path} HTTP/{http_version}"
            if self.use_colors:
                request_line = style(request_line, bold=True)
            try:
                status = self._status(int(status_code))  # type: ignore[call-overload]
            except (TypeError, ValueError):
                status = str(status_code)
            rec = copy.copy(record)
            rec.__dict__.update(
                client_addr=client_addr, request_line=request_line, status_code=status
            )
            return super().formatMessage(rec)
        # Not an access record in the expected shape: fall back to the plain message so a
        # custom log call on this logger never breaks formatting.
        rec = copy.copy(record)
        rec.__dict__.setdefault("client_addr", "-")
        rec.__dict__.setdefault("request_line", rec.getMessage())
        rec.__dict__.setdefault("status_code", "-")
        return super().formatMessage(rec)


LOGGING_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {
            "()": "cicada.logging_config.DefaultFormatter",
            "fmt": "%(levelprefix)s %(message)s",
            "use_colors": None,
        },
        "access": {
            "()": "cicada.logging_config.AccessFormatter",
            "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
            "use_colors": None,
        },
    },
    "handlers": {
        "default": {
            "formatter": "default",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
        },
        "access": {
            "formatter": "access",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "cicada": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "cicada.error": {"level": "INFO"},
        "cicada.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}


def default_logging_config() -> dict[str, Any]:
    """A fresh deep copy of the default dictConfig (callers may mutate it)."""
    return copy.deepcopy(LOGGING_CONFIG)


def _load_config_file(path: str) -> None:
    if path.endswith(".json"):
        with open(path) as fh:
            logging.config.dictConfig(json.load(fh))
    elif path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as exc:
            raise ImportError(
                "--log-config with a YAML file needs PyYAML: pip install PyYAML "
                "(or cicada[standard])"
            ) from exc
        with open(path) as fh:
            logging.config.dictConfig(yaml.safe_load(fh))
    else:
        logging.config.fileConfig(path, disable_existing_loggers=False)


def configure_logging(
    log_config: Any = LOGGING_CONFIG,
    log_level: str | int | None = None,
    access_log: bool = True,
    use_colors: bool | None = None,
) -> None:
    """Apply a logging configuration: a dictConfig dict, a path (.json/.yaml/.yml = dictConfig,
    anything else = fileConfig .ini), a ConfigParser / file object (fileConfig), or None (leave
    logging alone). Then apply ``log_level`` and ``access_log`` on top, like uvicorn."""
    logging.addLevelName(TRACE_LOG_LEVEL, "TRACE")

    if log_config is not None:
        if isinstance(log_config, os.PathLike):
            log_config = os.fspath(log_config)
        if isinstance(log_config, dict):
            cfg = copy.deepcopy(log_config)
            if use_colors in (True, False):
                for name in ("default", "access"):
                    fmt = cfg.get("formatters", {}).get(name)
                    if isinstance(fmt, dict):
                        fmt["use_colors"] = use_colors
            logging.config.dictConfig(cfg)
        elif isinstance(log_config, str):
            _load_config_file(log_config)
        else:
            logging.config.fileConfig(log_config, disable_existing_loggers=False)

    if log_level is not None:
        level = LOG_LEVELS[log_level.lower()] if isinstance(log_level, str) else log_level
        for name in ("cicada.error", "cicada.access", "cicada.asgi"):
            logging.getLogger(name).setLevel(level)
    if access_log is False:
        access = logging.getLogger("cicada.access")
        access.handlers = []
        access.propagate = False
