"""One error type for the whole engine; the kind decides the HTTP status."""

from __future__ import annotations

import enum
from typing import Any


class ErrorKind(str, enum.Enum):
    INVALID = "invalid"                  # 400: the request is wrong; nothing changed
    NOT_FOUND = "not_found"              # 404
    CONFLICT = "conflict"                # 409: e.g. collection already exists
    PRECONDITION = "precondition"        # 412: conditional write lost (object exists)
    TOO_LARGE = "too_large"              # 413
    UNAUTHORIZED = "unauthorized"        # 401
    FORBIDDEN = "forbidden"              # 403
    FENCED = "fenced"                    # 409: another writer owns the collection
    UNAVAILABLE = "unavailable"          # 503: try again later (recovering, S3 down, shutting down)
    INSUFFICIENT_STORAGE = "insufficient_storage"  # 507: disk full / read-only
    CORRUPT = "corrupt"                  # 500: on-disk or in-S3 data failed a checksum


HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.PRECONDITION: 412,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.FENCED: 409,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.INSUFFICIENT_STORAGE: 507,
    ErrorKind.CORRUPT: 500,
}


class TierDBError(Exception):
    """An error with a kind (mapped to an HTTP status) and structured context."""

    def __init__(self, kind: ErrorKind, message: str, **context: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.context = context

    @property
    def status_code(self) -> int:
        return HTTP_STATUS[self.kind]

    def __str__(self) -> str:
        return self.message


def invalid(message: str, **context: Any) -> TierDBError:
    return TierDBError(ErrorKind.INVALID, message, **context)


def not_found(message: str, **context: Any) -> TierDBError:
    return TierDBError(ErrorKind.NOT_FOUND, message, **context)


def corrupt(message: str, **context: Any) -> TierDBError:
    return TierDBError(ErrorKind.CORRUPT, message, **context)


def unavailable(message: str, **context: Any) -> TierDBError:
    return TierDBError(ErrorKind.UNAVAILABLE, message, **context)


def fenced(collection: str, what: str, **context: Any) -> TierDBError:
    """The one FENCED error: another writer wrote ``what`` (a WAL record or manifest version this
    node meant to write), so it owns the collection now."""
    return TierDBError(
        ErrorKind.FENCED,
        f"collection {collection!r}: {what} was written by another writer; this node stops writing the collection",
        collection=collection,
        **context,
    )


def still_fenced(collection: str, reason: str) -> TierDBError:
    """A write refused because the collection was fenced earlier (``reason``: that error's message)."""
    return TierDBError(ErrorKind.FENCED, f"collection {collection!r} is fenced: {reason}", collection=collection)
