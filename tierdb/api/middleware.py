"""HTTP request metrics: latency and count per method, route template and status."""

from __future__ import annotations

from typing import Any

from .. import metrics

UNMATCHED_ROUTE = "unmatched"


def observe_request(scope: dict[str, Any], status: int, seconds: float) -> None:
    """Record one finished request in ``http_request_duration_seconds``/``http_requests_total``.

    The ``route`` label is the route template (``/v1/collections/{name}/query``), never the raw
    path, so collection names and document ids do not create new series.
    """
    route = scope.get("path_template") or UNMATCHED_ROUTE
    metrics.observe_request(scope["method"], route, status, seconds)
