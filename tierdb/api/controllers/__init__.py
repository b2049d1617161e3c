"""Route handlers, one module per resource.

The data routes (/v1) sit in one router guarded by ``require_api_key``; the admin controller
carries ``require_admin`` itself; /health and /metrics carry ``require_status_access`` (open
unless security.protect_status); the probes and the schema stay open.
"""

from __future__ import annotations

from litestar import Router

from ..auth import require_api_key
from .admin import AdminController
from .collections import CollectionController
from .documents import DocumentController
from .health import HealthController
from .metrics import metrics_endpoint
from .query import QueryController

DATA_API = Router(
    path="/",
    route_handlers=[CollectionController, DocumentController, QueryController],
    guards=[require_api_key],
)

ROUTE_HANDLERS = [
    DATA_API,
    AdminController,
    HealthController,
    metrics_endpoint,
]

__all__ = ["ROUTE_HANDLERS"]
