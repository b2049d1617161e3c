"""The composition root: one node's stores, collections and workers.

``Engine`` owns the data-directory lock, the node id, the stores, the scheduler and the metric
callbacks; it asks ``tiering.placement`` where each collection lives, builds it from the core
(``tierdb.engine``) and attaches the workers (``tierdb.workers``).  Only this package imports
both the core and the workers.
"""

from .engine import Engine

__all__ = ["Engine"]
