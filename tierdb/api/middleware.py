"""HTTP metrics middleware: latency and count per method, route template and status."""

from __future__ import annotations

import time
from typing import Any

from .. import metrics

UNMATCHED_ROUTE = "unmatched"


class MetricsMiddleware:
    """Records every routed HTTP request in ``http_request_duration_seconds``/``http_requests_total``.

    The ``route`` label is the route template (``/v1/collections/{name}/query``), never the raw
    path, so collection names and document ids do not create new series.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_with_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("path_template") or UNMATCHED_ROUTE
            metrics.observe_request(scope["method"], route, status, time.perf_counter() - start)
