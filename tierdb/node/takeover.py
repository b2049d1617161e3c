"""Writer handover: a new writer claims an ``s3_only`` collection it opened from S3.

The claim, before the collection takes any write (``[node] takeover``, ``serve --takeover``):
1. **WAL marker.**  Append this writer's claim marker as the next WAL object, put-if-absent.  If
   the previous writer got that position first, its object is applied and the marker tries the
   next one (``Collection.append_claim_marker``).  So every write the previous writer had
   acknowledged (its WAL PUT succeeded) is applied here, and its next WAL PUT gets 412: fenced,
   with nothing acknowledged.
2. **Claim manifest.**  Publish the current manifest again as version *S3's latest + 1* with this
   writer's id, put-if-absent; the previous writer's next manifest (a flush or merge) collides
   with it: fenced.  Its ``wal_seq`` stays the one of the segments it lists (the WAL after it,
   marker included, is replayed by every open), so the manifest stays true.  If the previous
   writer published a manifest after this node opened the collection, the collection is opened
   again from S3 (the marker is in its WAL) and the publish retried.

A crash between the steps leaves the collection unclaimed in S3 (the newest manifest is not this
writer's), so the next start with takeover claims it again: a second marker is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec

from ..engine import manifest as manifests
from ..engine.collection import Collection
from ..errors import ErrorKind, TierDBError, unavailable
from ..storage.base import BlobStore

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 10   # each retry means the previous writer published another manifest meanwhile


async def claim(coll: Collection, remote: BlobStore, reopen: Callable[[Collection], Awaitable[Collection]]) -> Collection:
    """Claim an open s3_only collection for this writer; returns the (possibly reopened)
    collection, ready to take writes.  Raises if the claim could not be made: the collection
    must then not take writes."""
    started = time.perf_counter()
    latest = await manifests.load_latest(remote, coll.name)
    if latest is not None and _ours(latest, coll):
        return coll  # this writer published the newest manifest: it owns the collection already
    marker_seq = await asyncio.to_thread(coll.append_claim_marker)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert coll.manifest is not None
        versions = await manifests.versions(remote, coll.name)
        if versions and versions[-1] != coll.manifest.version:
            coll = await reopen(coll)
            continue
        claimed = msgspec.structs.replace(
            coll.manifest, version=coll.manifest.version + 1, writer_id=coll.writer_id, created_at=time.time()
        )
        try:
            await manifests.publish(remote, claimed)
        except TierDBError as exc:
            if exc.kind is not ErrorKind.FENCED:
                raise
            coll = await reopen(coll)
            continue
        coll.manifest = claimed
        log.warning(
            "collection claimed from the previous writer",
            extra={"collection": coll.name, "previous_writer": latest.writer_id if latest else "",
                   "manifest_version": claimed.version, "wal_marker_seq": marker_seq, "attempts": attempt,
                   "duration_ms": round((time.perf_counter() - started) * 1000, 1)},
        )
        return coll
    raise unavailable(
        f"collection {coll.name!r} could not be claimed: the previous writer kept publishing manifests "
        f"({MAX_ATTEMPTS} attempts); stop it and restart this node",
        collection=coll.name,
    )


def _ours(manifest: msgspec.Struct, coll: Collection) -> bool:
    return bool(manifest.writer_id) and manifest.writer_id == coll.writer_id and (
        manifest.spec.incarnation == coll.spec.incarnation
    )
