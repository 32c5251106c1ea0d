"""Logging: readable one-line text by default, JSON lines with LOG_FORMAT=json.

The server id and connection id ride in context variables, which trio copies
into every task a connection starts, so each line names them without threading
a logger through the code.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from datetime import UTC, datetime

from .config import Settings

server_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("server_id", default="-")
connection_id_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "connection_id", default="-"
)

_HANDLER_NAME = "wsproto_trio"


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.server_id = server_id_var.get()
        record.connection_id = connection_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "server": getattr(record, "server_id", "-"),
            "connection": getattr(record, "connection_id", "-"),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The default text format, with the timestamp's seconds formatted once per second.

    At the default level every inbound message is logged (as the prototype did), so
    this runs per message: ``strftime`` per line was a fifth of its cost.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s [%(server_id)s] %(name)s: %(message)s")
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"


def configure_logging(settings: Settings) -> None:
    """Install our handler on the package logger once; later calls adjust it."""
    server_id_var.set(settings.server_id)
    # Fields no formatter of ours (nor Hypercorn's) shows, looked up for every
    # record otherwise (documented switches of the logging module).
    logging.logThreads = False
    logging.logMultiprocessing = False
    logger = logging.getLogger("wsproto_trio")
    logger.setLevel(settings.log_level)
    logger.propagate = False
    handler = next((h for h in logger.handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.addFilter(_ContextFilter())
        logger.addHandler(handler)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
