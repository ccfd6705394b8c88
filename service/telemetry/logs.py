"""Log lines: one JSON object per event (python-json-logger) or a readable line for a terminal.

Every line carries `timestamp`, `level`, `logger` and `message`, plus the context of the work
it belongs to: the HTTP request's `request_id`, or the SQS `message_id` and `s3_key` in the
worker. That context lives in context variables (`bound`), so a line logged anywhere below a
request or a message (a core use case, the store) carries it without being passed the ids,
and so do uvicorn's access lines, which are formatted by the same handler. Fields given as
`extra=` (an identify's songs and confidences, a play's song) become JSON fields.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["json", "text"]

#: The fields of the work under way (request_id, message_id, s3_key), for every line.
_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "log_context", default=MappingProxyType({})
)

#: time.perf_counter() when the HTTP request under way came in (the access line's elapsed_ms).
_REQUEST_STARTED: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "request_started", default=None
)

#: LogRecord attributes that are not an event's own fields (uvicorn adds color_message, its
#: message with terminal colour codes).
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add `fields` to every line logged inside the block (in this task and the tasks and
    threads it starts)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def context_value(name: str) -> Any:
    """The bound field `name` of the work under way, or None."""
    return _CONTEXT.get().get(name)


@contextmanager
def request_bound(request_id: str) -> Iterator[None]:
    """`bound(request_id=...)`, and the request's start for its access line's elapsed_ms."""
    token = _REQUEST_STARTED.set(time.perf_counter())
    try:
        with bound(request_id=request_id):
            yield
    finally:
        _REQUEST_STARTED.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (without overwriting the record's own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _CONTEXT.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class AccessFilter(logging.Filter):
    """Gives uvicorn's access lines their parts as fields: client, method, path, status (its
    message is `'%s - "%s %s HTTP/%s" %d'` with those arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, _, status = args
            record.client, record.method, record.path, record.status = (
                client,
                method,
                path,
                status,
            )
            started = _REQUEST_STARTED.get()
            if started is not None:
                record.elapsed_ms = round((time.perf_counter() - started) * 1000.0, 1)
        return True


class TextFormatter(logging.Formatter):
    """A terminal's line: time, level, logger, message, then the event's fields as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {
            k: v
            for k, v in record.__dict__.items()
            if k not in _RECORD_ATTRS and not k.startswith("_")
        }
        if fields:
            line += "  " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
        # python-json-logger's default list also drops taskName; keep "message" and ours.
        reserved_attrs=[a for a in _RECORD_ATTRS if a not in ("levelname", "name", "message")],
    )


def configure_logging(level: str, fmt: LogFormat, stream: Any = None) -> logging.Handler:
    """One handler on the root logger for the app and uvicorn alike (uvicorn runs with
    `log_config=None`, so its loggers propagate here); the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(level)
    access = logging.getLogger("uvicorn.access")
    for old in [f for f in access.filters if isinstance(f, AccessFilter)]:
        access.removeFilter(old)
    access.addFilter(AccessFilter())
    return handler
