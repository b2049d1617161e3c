"""The composition root: one node's stores, collections and workers.

``Engine`` owns the data-directory lock, the node id, the stores, the scheduler and the metric
callbacks; it asks ``tiering.placement`` where each collection lives, builds it from the core
(``tierdb.engine``) and attaches the workers (``tierdb.workers``).  Only this package imports
both the core and the workers.  ``ReaderEngine`` (``reader.py``) is the read-replica root.
"""

from ..config import Settings
from .engine import Engine
from .reader import ReaderEngine

__all__ = ["Engine", "ReaderEngine", "build_engine"]


def build_engine(settings: Settings) -> Engine:
    """The node's role is decided here, once: a writer ``Engine`` or a read replica
    (``node.role = "reader"``), which serves the same API surface and refuses writes."""
    if settings.node.role == "reader":
        return ReaderEngine(settings)
    return Engine(settings)
