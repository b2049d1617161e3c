"""Exception handlers: every error leaves the API as JSON ``{"error", "message", "request_id", ...}``.

- ``TierDBError``: its kind's status; client errors (4xx) also carry their scalar context
  (e.g. ``"field": "dimension"``); server errors never expose context.
- Litestar ``HTTPException`` (unknown route, wrong method, body too large, 415, parameter
  validation): its status with a message naming the problem.
- Anything else: 500 with the request id; the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import (
    HTTP_404_NOT_FOUND,
    HTTP_405_METHOD_NOT_ALLOWED,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_500_INTERNAL_SERVER_ERROR,
)
from litestar.types import ExceptionHandlersMap

from ..errors import ErrorKind, TierDBError, kind_for_status
from ..logging_setup import request_id_for_scope
from .codec import JSON, encode_json

log = logging.getLogger("tierdb.api")

_RESERVED = frozenset({"error", "message", "request_id"})
_SCALARS = (str, int, float, bool)
RETRY_AFTER_SECS = 1


def error_response(
    request: Request[Any, Any, Any],
    status_code: int,
    kind: str,
    message: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    request_id = request_id_for_scope(request.scope)
    body: dict[str, Any] = {"error": kind, "message": message, "request_id": request_id}
    body.update(extra or {})
    return Response(encode_json(body), status_code=status_code, media_type=JSON, headers=headers)


def _safe_context(context: dict[str, Any]) -> dict[str, Any]:
    """Only plain scalars (and lists of them) leave the server, never objects or reserved keys."""
    safe: dict[str, Any] = {}
    for key, value in context.items():
        if key in _RESERVED:
            continue
        if isinstance(value, _SCALARS) or (
            isinstance(value, list) and all(isinstance(item, _SCALARS) for item in value)
        ):
            safe[key] = value
    return safe


def tierdb_error_handler(request: Request[Any, Any, Any], exc: TierDBError) -> Response[bytes]:
    status = exc.status_code
    headers = {"retry-after": str(RETRY_AFTER_SECS)} if exc.kind is ErrorKind.UNAVAILABLE else None
    if status >= 500:
        level = logging.WARNING if exc.kind is ErrorKind.UNAVAILABLE else logging.ERROR
        log.log(level, "%s %s failed: %s", request.method, request.url.path, exc.message,
                extra={"error_kind": exc.kind.value})
        return error_response(request, status, exc.kind.value, exc.message, headers=headers)
    return error_response(request, status, exc.kind.value, exc.message, _safe_context(exc.context), headers)


def _validation_message(exc: ValidationException) -> str:
    problems = exc.extra if isinstance(exc.extra, list) else []
    details = [
        f"{item.get('source', 'parameter')} {item.get('key', '?')!r}: {item.get('message', 'invalid')}"
        for item in problems
        if isinstance(item, dict)
    ]
    return "invalid request: " + "; ".join(details) if details else f"invalid request: {exc.detail}"


def _body_limit(request: Request[Any, Any, Any]) -> int | None:
    try:
        return request.route_handler.resolve_request_max_body_size()
    except (AttributeError, KeyError, LookupError):
        return None


def _http_message(request: Request[Any, Any, Any], exc: HTTPException) -> str:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        return _validation_message(exc)
    if status == HTTP_404_NOT_FOUND:
        return f"no route matches {request.method} {request.url.path}"
    if status == HTTP_405_METHOD_NOT_ALLOWED:
        return f"method {request.method} is not allowed on {request.url.path}"
    if status == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        limit = _body_limit(request)
        bound = f"the limit of {limit} bytes" if limit else "the limit"
        return f"request body exceeds {bound} (server.max_body_bytes)"
    return str(exc.detail)


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status >= 500:
        return internal_error_handler(request, exc)
    kind = kind_for_status(status) or ErrorKind.INVALID
    return error_response(request, status, kind.value, _http_message(request, exc), headers=exc.headers or None)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    request_id = request_id_for_scope(request.scope)
    log.error(
        "unhandled error in %s %s",
        request.method,
        request.url.path,
        exc_info=exc,
        extra={"request_id": request_id},
    )
    message = f"internal server error; quote request id {request_id} when reporting it"
    return error_response(request, HTTP_500_INTERNAL_SERVER_ERROR, ErrorKind.INTERNAL.value, message)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    TierDBError: tierdb_error_handler,
    HTTPException: http_exception_handler,
    Exception: internal_error_handler,
}
