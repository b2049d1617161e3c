"""Exceptions raised by the clients (HTTP and embedded alike).

Every error the server reports becomes a ``TierDBClientError`` subclass chosen by the server's
error ``kind`` (falling back on the HTTP status), carrying ``status``, ``kind``, ``message``,
``request_id`` and any extra fields of the error body in ``details``::

    try:
        db.get_collection("nope")
    except NotFound as exc:
        print(exc.status, exc.kind, exc.message)   # 404 not_found collection 'nope' does not exist

The embedded mode raises the same classes (``request_id`` is None there).  Mistakes caught
before anything is sent (mismatched lengths, both ``vector`` and ``vectors``) are plain
``ValueError`` / ``TypeError``.
"""

from __future__ import annotations

from typing import Any

from ..errors import ERROR_KINDS, kind_for_status


class TierDBClientError(Exception):
    """Base class. ``status`` is the HTTP status (0 when no response arrived)."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        request_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.request_id = request_id
        self.details = details or {}

    def __str__(self) -> str:
        head = f"{self.status} {self.kind}" if self.status else self.kind
        tail = f" (request id {self.request_id})" if self.request_id else ""
        return f"{head}: {self.message}{tail}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, kind={self.kind!r}, "
            f"message={self.message!r}, request_id={self.request_id!r})"
        )

    def __reduce__(self) -> Any:  # picklable (multiprocessing, concurrent.futures)
        return (type(self), (self.status, self.kind, self.message, self.request_id, self.details))


class InvalidRequest(TierDBClientError):
    """400 (and 405/415): the request is wrong (dimension, NaN, bad filter, unknown field...); nothing changed."""


class PayloadTooLarge(InvalidRequest):
    """413: too many documents / ids / query vectors in one request, or the body is too big."""


class Unauthorized(TierDBClientError):
    """401: no API key or admin token was sent, and the server requires one."""


class Forbidden(TierDBClientError):
    """403: wrong API key or admin token, or the admin API is disabled on this server."""


class ReadOnly(TierDBClientError):
    """403 ``read_only``: the node is a read replica; send writes to the writer (the message names
    its URL when the replica knows it).  Nothing was changed."""


class NotFound(TierDBClientError):
    """404: no such collection (or document, for ``get_one``)."""


class Conflict(TierDBClientError):
    """409 ``conflict``: e.g. the collection already exists."""


class Fenced(TierDBClientError):
    """409 ``fenced``: another writer owns the collection; this node stopped writing to it."""


class RateLimited(TierDBClientError):
    """429 after the retries ran out."""


class Unavailable(TierDBClientError):
    """503 after the retries ran out: the server is starting, shutting down, or S3 is down."""


class InsufficientStorage(TierDBClientError):
    """507: the server's disk is full or read-only; the write was not applied."""


class ServerError(TierDBClientError):
    """500 and other 5xx: a bug or corrupt data on the server; quote ``request_id`` when reporting."""


class ConnectionFailed(TierDBClientError):
    """No response: the server is unreachable (after the retries)."""


class RequestTimeout(ConnectionFailed):
    """The server accepted the connection but did not answer within ``timeout`` seconds.

    For a call that is not idempotent (e.g. ``compact``) the work may still be going on."""


_CLASSES: dict[str, type[TierDBClientError]] = {
    cls.__name__: cls
    for cls in (
        InvalidRequest, PayloadTooLarge, Unauthorized, Forbidden, ReadOnly, NotFound, Conflict, Fenced,
        RateLimited, Unavailable, InsufficientStorage, ServerError,
    )
}
# Both lookups come from the one table of error kinds (tierdb/errors.py), shared with the server.
_BY_KIND: dict[str, type[TierDBClientError]] = {
    kind.value: _CLASSES[rule.client_error] for kind, rule in ERROR_KINDS.items()
}
_BY_STATUS: dict[int, type[TierDBClientError]] = {
    rule.status: _BY_KIND[kind_for_status(rule.status).value]  # type: ignore[union-attr]
    for rule in ERROR_KINDS.values()
}


def error_class(status: int, kind: str | None) -> type[TierDBClientError]:
    """The exception class for a server error: by ``kind`` first, then by HTTP status."""
    if kind and kind in _BY_KIND:
        return _BY_KIND[kind]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    if status >= 400:
        return InvalidRequest
    return TierDBClientError


def make_error(
    status: int,
    kind: str | None,
    message: str,
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> TierDBClientError:
    """Build the typed exception for an error the server (or the embedded engine) reported."""
    if not kind:
        known = kind_for_status(status)
        kind = known.value if known is not None else ("internal" if status >= 500 else "error")
    return error_class(status, kind)(status, kind, message, request_id, details)


__all__ = [
    "Conflict",
    "ConnectionFailed",
    "Fenced",
    "Forbidden",
    "ReadOnly",
    "InsufficientStorage",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RequestTimeout",
    "ServerError",
    "TierDBClientError",
    "Unauthorized",
    "Unavailable",
    "error_class",
    "make_error",
]
