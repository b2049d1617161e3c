"""The compaction job: flush memtables that are due and merge segments, collection by collection."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from ..errors import TierDBError

log = logging.getLogger(__name__)


class Compactable(Protocol):
    """What the job needs of a collection (``engine.collection.Collection`` is one)."""

    name: str

    async def maybe_compact(self) -> object: ...


async def run_compaction(collections: Iterable[Compactable]) -> None:
    for coll in collections:
        try:
            await coll.maybe_compact()
        except TierDBError as exc:
            log.warning("compaction failed", extra={"collection": coll.name, "error": exc.message})
        except Exception:
            log.exception("compaction crashed", extra={"collection": coll.name})
