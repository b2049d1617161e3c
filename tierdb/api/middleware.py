"""The one ASGI layer around every routed HTTP request (one call per request, not a stack):

- binds ``request_id``/``collection`` to the logging context (tierdb.logging_setup),
- gives a body still arriving a deadline (``server.body_read_timeout_secs``, slow_clients.py),
- when the request is done: request metrics and the access log line.

The response status is recorded in the scope by ``before_send`` (the app's before-send hook,
which also echoes the request id), so this layer does not wrap ``send``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send

from .. import metrics
from ..logging_setup import REQUEST_ID_HEADER, collection_var, request_id_for_scope, request_id_var
from .slow_clients import body_already_received, with_body_deadline

UNMATCHED_ROUTE = "unmatched"
# The status of the response started for this scope (a request that ends without one: 500).
_STATUS_SCOPE_KEY = "tierdb.status"
_REQUEST_ID_HEADER = REQUEST_ID_HEADER.encode()

access_logger = logging.getLogger("tierdb.access")


async def before_send(message: dict[str, Any], scope: dict[str, Any]) -> None:
    """A before-send hook: on every HTTP response, routed or not, echo the request id and note
    the status for ``RequestMiddleware``."""
    if message["type"] == "http.response.start" and scope.get("type") == "http":
        scope[_STATUS_SCOPE_KEY] = message["status"]
        headers = list(message.get("headers", ()))
        headers.append((_REQUEST_ID_HEADER, request_id_for_scope(scope).encode()))
        message["headers"] = headers


def observe_request(scope: dict[str, Any], status: int, seconds: float) -> None:
    """Record one finished request in ``http_request_duration_seconds``/``http_requests_total``.

    The ``route`` label is the route template (``/v1/collections/{name}/query``), never the raw
    path, so collection names and document ids do not create new series.
    """
    route = scope.get("path_template") or UNMATCHED_ROUTE
    metrics.observe_request(scope["method"], route, status, seconds)


def log_access(scope: dict[str, Any], status: int, seconds: float) -> None:
    access_logger.info(
        "%s %s %d",
        scope["method"],
        scope["path"],
        status,
        extra={
            "duration_ms": round(seconds * 1000, 3),
            "method": scope["method"],
            "path": scope["path"],
            "route": scope.get("path_template", ""),
            "status": status,
        },
    )


class RequestMiddleware:
    """Request context, body deadline, metrics and access log of one HTTP request (see above)."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True, body_read_timeout_secs: float) -> None:
        self.app = app
        self.access_log = access_log
        self.body_read_timeout_secs = body_read_timeout_secs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_token = request_id_var.set(request_id_for_scope(scope))  # type: ignore[arg-type]
        path_params = scope.get("path_params")
        collection_token = collection_var.set(path_params.get("name") if path_params else None)
        if not body_already_received(receive):
            receive = with_body_deadline(scope, receive, self.body_read_timeout_secs)
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            elapsed = time.perf_counter() - start
            status = scope.get(_STATUS_SCOPE_KEY, 500)  # type: ignore[call-overload]
            observe_request(scope, status, elapsed)  # type: ignore[arg-type]
            if self.access_log and access_logger.isEnabledFor(logging.INFO):
                log_access(scope, status, elapsed)  # type: ignore[arg-type]
            collection_var.reset(collection_token)
            request_id_var.reset(request_token)
