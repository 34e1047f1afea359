"""Logging from the ``logging:`` config section: text or JSON lines, to stderr
(journald under systemd) and optionally to a size-rotated file.

JSON lines use python-json-logger (one object per line, exceptions included)
so log shippers and ``jq`` read them without a parsing rule.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys

from pythonjsonlogger.json import JsonFormatter

from .settings import LoggingConfig

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_MARK = "_edge_agent_handler"


def make_formatter(kind: str) -> logging.Formatter:
    if kind == "json":
        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(threadName)s %(message)s",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "threadName": "thread"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(settings: LoggingConfig, verbose: bool = False) -> None:
    """Replace the root handlers with the configured ones (safe to call again)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if getattr(handler, _MARK, False):
            handler.close()
    formatter = make_formatter(settings.format)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if settings.file is not None:
        settings.file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(
            settings.file, maxBytes=settings.max_bytes, backupCount=settings.backup_count, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else getattr(logging, settings.level))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
