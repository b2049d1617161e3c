"""Route handlers, one module per resource."""

from __future__ import annotations

from .collections import CollectionController
from .documents import DocumentController
from .health import HealthController
from .metrics import metrics_endpoint
from .query import QueryController

ROUTE_HANDLERS = [
    CollectionController,
    DocumentController,
    QueryController,
    HealthController,
    metrics_endpoint,
]

__all__ = ["ROUTE_HANDLERS"]
