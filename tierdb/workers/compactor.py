"""The compaction job: flush memtables that are due and merge segments, collection by collection."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import TierDBError

if TYPE_CHECKING:
    from ..engine.engine import Engine

log = logging.getLogger(__name__)


async def run_compaction(engine: "Engine") -> None:
    for coll in engine.open_collections():
        try:
            await coll.maybe_compact()
        except TierDBError as exc:
            log.warning("compaction failed", extra={"collection": coll.name, "error": exc.message})
        except Exception:
            log.exception("compaction crashed", extra={"collection": coll.name})
