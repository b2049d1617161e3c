"""One error type for the whole engine, and the one table of error kinds.

``ERROR_KINDS`` is the only place that says, for each kind an error response can carry, which
HTTP status it has and which exception the clients raise for it (by class name in
``tierdb.client.errors``, which builds its lookups from this table).  The API (api/errors.py),
the HTTP clients and embedded mode all read it, so they cannot drift apart.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple


class ErrorKind(str, enum.Enum):
    INVALID = "invalid"                  # 400: the request is wrong; nothing changed
    NOT_FOUND = "not_found"              # 404
    CONFLICT = "conflict"                # 409: e.g. collection already exists
    PRECONDITION = "precondition"        # 412: conditional write lost (object exists)
    TOO_LARGE = "too_large"              # 413
    UNAUTHORIZED = "unauthorized"        # 401
    FORBIDDEN = "forbidden"              # 403
    FENCED = "fenced"                    # 409: another writer owns the collection
    READ_ONLY = "read_only"              # 403: a reader node takes no writes; send them to the writer
    UNAVAILABLE = "unavailable"          # 503: try again later (recovering, S3 down, shutting down)
    INSUFFICIENT_STORAGE = "insufficient_storage"  # 507: disk full / read-only
    CORRUPT = "corrupt"                  # 500: on-disk or in-S3 data failed a checksum
    # Kinds only the HTTP layer produces (routing, media types, slow clients, rate limits, bugs).
    INTERNAL = "internal"                # 500: an unexpected error; details only in the server log
    METHOD_NOT_ALLOWED = "method_not_allowed"          # 405
    TIMEOUT = "timeout"                  # 408: the client sent its request too slowly
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415
    TOO_MANY_REQUESTS = "too_many_requests"            # 429


class KindRule(NamedTuple):
    status: int        # the HTTP status of an error of this kind
    client_error: str  # the exception class the clients raise (a name in tierdb.client.errors)


# Order matters where statuses repeat: the first kind listed for a status is the one an error
# with only that status (a proxy's answer, a framework error) is given.
ERROR_KINDS: dict[ErrorKind, KindRule] = {
    ErrorKind.INVALID: KindRule(400, "InvalidRequest"),
    ErrorKind.UNAUTHORIZED: KindRule(401, "Unauthorized"),
    ErrorKind.FORBIDDEN: KindRule(403, "Forbidden"),
    ErrorKind.READ_ONLY: KindRule(403, "ReadOnly"),
    ErrorKind.NOT_FOUND: KindRule(404, "NotFound"),
    ErrorKind.METHOD_NOT_ALLOWED: KindRule(405, "InvalidRequest"),
    ErrorKind.TIMEOUT: KindRule(408, "InvalidRequest"),
    ErrorKind.CONFLICT: KindRule(409, "Conflict"),
    ErrorKind.FENCED: KindRule(409, "Fenced"),
    ErrorKind.PRECONDITION: KindRule(412, "Conflict"),
    ErrorKind.TOO_LARGE: KindRule(413, "PayloadTooLarge"),
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: KindRule(415, "InvalidRequest"),
    ErrorKind.TOO_MANY_REQUESTS: KindRule(429, "RateLimited"),
    ErrorKind.INTERNAL: KindRule(500, "ServerError"),
    ErrorKind.CORRUPT: KindRule(500, "ServerError"),
    ErrorKind.UNAVAILABLE: KindRule(503, "Unavailable"),
    ErrorKind.INSUFFICIENT_STORAGE: KindRule(507, "InsufficientStorage"),
}

HTTP_STATUS: dict[ErrorKind, int] = {kind: rule.status for kind, rule in ERROR_KINDS.items()}

_KIND_BY_STATUS: dict[int, ErrorKind] = {}
for _kind, _rule in ERROR_KINDS.items():
    _KIND_BY_STATUS.setdefault(_rule.status, _kind)


def kind_for_status(status: int) -> ErrorKind | None:
    """The kind of an error known only by its HTTP status (None: no kind has that status)."""
    return _KIND_BY_STATUS.get(status)


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


def too_large(message: str, **context: Any) -> TierDBError:
    return TierDBError(ErrorKind.TOO_LARGE, message, **context)
def read_only(what: str, writer_url: str = "", **context: Any) -> TierDBError:
    """The one READ_ONLY error: this node is a read replica and refuses ``what``."""
    where = f"send it to the writer at {writer_url}" if writer_url else "send it to the writer node"
    return TierDBError(ErrorKind.READ_ONLY, f"this node is a read replica and takes no writes ({what}): {where}",
                       writer_url=writer_url, **context)


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
