"""Structured logging: JSON lines or text, request ids carried through contextvars.

``configure_logging(settings.log)`` installs one handler on the root logger (stderr, plus an
optional rotating file).  Every record gets ``request_id`` and ``collection`` from the current
request context, so engine code logs plain ``logger.info(...)`` and still lands in the right
request.  ``tierdb.api.middleware.RequestMiddleware`` creates that context for each HTTP request.

JSON line fields: timestamp, level, logger, message, request_id, collection, duration_ms,
any ``extra={...}`` fields, and ``exception`` (the formatted traceback) when there is one.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import secrets
import sys
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

import msgspec

from .config import LogSettings

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_SCOPE_KEY = "tierdb.request_id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

request_id_var: ContextVar[str | None] = ContextVar("tierdb_request_id", default=None)
collection_var: ContextVar[str | None] = ContextVar("tierdb_collection", default=None)

# Third-party loggers that are chatty at INFO (apscheduler logs every job it adds and runs).
_QUIET_LOGGERS = ("apscheduler",)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
    "collection",
    "color_message",  # uvicorn's coloured duplicate of the message
}
_json_encoder = msgspec.json.Encoder(enc_hook=str)


# -- request ids -------------------------------------------------------------------------------


def sanitize_request_id(value: str | None) -> str | None:
    """An incoming X-Request-ID if it is safe to echo and log (<=128 of [A-Za-z0-9._-]), else None."""
    if value and _VALID_REQUEST_ID.match(value):
        return value
    return None


def new_request_id() -> str:
    return secrets.token_hex(16)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    size = len(name)
    for key, value in scope.get("headers", ()):
        if len(key) == size and key.lower() == name:  # the length first: most headers differ in it
            return value.decode("latin-1")
    return None


def request_id_for_scope(scope: dict[str, Any]) -> str:
    """The request id of this ASGI scope: the sanitized incoming header or a new one (stable per scope)."""
    request_id = scope.get(_REQUEST_ID_SCOPE_KEY)
    if request_id is None:
        incoming = sanitize_request_id(_header(scope, REQUEST_ID_HEADER.encode()))
        request_id = incoming or new_request_id()
        scope[_REQUEST_ID_SCOPE_KEY] = request_id
    return request_id


# -- formatting --------------------------------------------------------------------------------


class ContextFilter(logging.Filter):
    """Copies request_id/collection from the context onto each record (unless set via extra)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        if getattr(record, "collection", None) is None:
            record.collection = collection_var.get()
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "collection": getattr(record, "collection", None),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _json_encoder.encode(entry).decode()


class TextFormatter(logging.Formatter):
    """``2024-05-01T10:00:00.000Z INFO tierdb.api [req=..] [coll=..] message key=value ...``"""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name]
        if getattr(record, "request_id", None):
            parts.append(f"[req={record.request_id}]")
        if getattr(record, "collection", None):
            parts.append(f"[coll={record.collection}]")
        parts.append(record.getMessage())
        parts.extend(f"{key}={value}" for key, value in _extras(record).items())
        line = " ".join(str(part) for part in parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure_logging(settings: LogSettings) -> None:
    """Replace the root logger's handlers with ours (idempotent: safe to call again)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tierdb", False):
            root.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if settings.file:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                settings.file,
                maxBytes=settings.file_max_bytes,
                backupCount=settings.file_backups,
                encoding="utf-8",
            )
        )
    for handler in handlers:
        handler._tierdb = True  # type: ignore[attr-defined]
        handler.setFormatter(_formatter(settings.format))
        handler.addFilter(ContextFilter())
        root.addHandler(handler)
    root.setLevel(settings.level)
    quiet_level = logging.DEBUG if settings.level == "DEBUG" else logging.WARNING
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(quiet_level)
