"""retrywatch's own log lines on stderr, text or JSON Lines, one format for every logger.

:func:`configure` puts one handler on the root logger: retrywatch's records (at the
configured level) and everything else that propagates there (uvicorn's, asyncio's,
libraries' warnings) come out alike. Every record has an RFC 3339 time with its UTC
offset, the level and the logger's name; a traceback is kept (text: the lines after the
record; JSON: the ``exc_info`` field, whole). The JSON is python-json-logger's::

    {"time": "2026-12-02T08:44:55.474+00:00", "level": "ERROR", "logger": "retrywatch",
     "message": "ingest loop", "exc_info": "Traceback (most recent call last):\\n..."}

uvicorn configures its own handlers unless ``log_config`` is None:
:data:`UVICORN_CONFIG` is what :func:`retrywatch.serve.service.serve` gives it, and
:func:`configure` takes back the handlers of :data:`UVICORN_LOGGERS` from a server
configured before (their records propagate to the root).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

__all__ = ["TEXT_FORMAT", "UVICORN_CONFIG", "UVICORN_LOGGERS", "Json", "Text", "configure",
           "rfc3339"]

#: The text lines: time, level, logger, message (a traceback follows on its lines).
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The fields of a JSON record, renamed (python-json-logger reads the names from it).
_JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
_RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}
#: uvicorn's records carry a colored copy of their message, not ours to print.
_NOT_FIELDS = [*RESERVED_ATTRS, "color_message", "taskName"]
#: uvicorn's loggers (``uvicorn.error`` is its server's; ``uvicorn.access`` stays off).
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
#: ``uvicorn.Config``'s options that leave its loggers to :func:`configure`.
UVICORN_CONFIG: dict[str, Any] = {"log_config": None}
_HANDLER = "retrywatch"


def rfc3339(created: float) -> str:
    """``2026-12-02T08:44:55.474+00:00``: the instant in UTC, milliseconds."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


class Text(logging.Formatter):
    """``2026-12-02T08:44:55.474+00:00 WARNING retrywatch: message``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return rfc3339(record.created)


class Json(JsonFormatter):
    """One JSON object per record: time, level, logger, message, ``exc_info`` (the whole
    traceback) when there is one, and the record's ``extra`` fields."""

    def __init__(self) -> None:
        super().__init__(_JSON_FIELDS, rename_fields=_RENAMED, reserved_attrs=_NOT_FIELDS)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return rfc3339(record.created)


class _Stderr(logging.StreamHandler[TextIO]):
    """Writes to ``sys.stderr`` as it is when a record comes (as :data:`logging.lastResort`
    does): a redirection made later (a test's capture) is followed, never a closed one."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure(fmt: str, level: str) -> logging.Handler:
    """Log to stderr as ``fmt`` (``text`` or ``json``); retrywatch's records from ``level``
    up (debug, info, warning, error), other loggers' as they are set (the root: warning).
    Called again, it replaces its handler. Returns the handler."""
    handler = _Stderr()
    handler.set_name(_HANDLER)
    handler.setFormatter(Json() if fmt == "json" else Text())
    root = logging.getLogger()
    root.handlers[:] = [*(h for h in root.handlers if h.get_name() != _HANDLER), handler]
    ours = logging.getLogger("retrywatch")
    ours.handlers[:] = [h for h in ours.handlers if h.get_name() != _HANDLER]
    ours.setLevel(level.upper())
    ours.propagate = True
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return handler
