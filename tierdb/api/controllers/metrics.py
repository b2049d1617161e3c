"""GET /metrics: Prometheus text exposition of the default registry."""

from __future__ import annotations

from litestar import Response, get

from ... import metrics
from ..auth import require_status_access


@get(
    "/metrics",
    sync_to_thread=False,
    tags=["operations"],
    summary="Prometheus metrics",
    media_type="text/plain",
    guards=[require_status_access],
)
def metrics_endpoint() -> Response[bytes]:
    """Request metrics, per-collection gauges (read from the engine at scrape time), process metrics."""
    body, content_type = metrics.render_latest()
    # An explicit header: Litestar would append a second charset to a text/* media type.
    return Response(body, headers={"content-type": content_type})
