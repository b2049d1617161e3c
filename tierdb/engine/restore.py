"""Disaster recovery for memory_s3: rebuild a collection's local state from S3.

The result is exactly the state of the latest S3 manifest plus the WAL objects that continue
it: segments (checksums verified), the WAL tail as local WAL files, the manifest, and the
uploader's state saying all of it is already in S3.  It is staged aside and renamed into place
last (see ``localdirs``), so the local manifest appears only with everything it needs.  Normal
recovery then opens it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time

import msgspec

from .. import keys
from ..crashpoints import crash_point
from ..errors import ErrorKind, TierDBError, corrupt, unavailable
from ..models import COLLECTION_NAME, Manifest, SegmentRef
from ..storage.base import BlobStore
from ..storage.local import LocalStore
from . import localdirs
from . import manifest as manifests
from .upload_state import UploadState, save_state
from .wal import claim_record, decode_records, frame, object_seqs
from .wal import tail as wal_tail_scan

log = logging.getLogger(__name__)


async def remote_collection_names(remote: BlobStore) -> list[str]:
    infos = await remote.list(keys.COLLECTIONS_PREFIX)
    names = {keys.collection_of(info.key) for info in infos if keys.parse_manifest_key(info.key) is not None}
    bad = sorted(n for n in names if not COLLECTION_NAME.fullmatch(n))
    if bad:
        log.warning("S3 holds objects under invalid collection names; ignored", extra={"names": bad[:10]})
    return sorted(names - set(bad))


async def wal_tail(remote: BlobStore, name: str, after_seq: int) -> list[tuple[int, bytes]]:
    """The WAL objects holding records after ``after_seq``, contiguous, as (first_seq, bytes)."""
    tail: list[tuple[int, bytes]] = []
    chain = wal_tail_scan.SeqChain(after_seq)
    for first in wal_tail_scan.after(await object_seqs(remote, name), after_seq):
        if chain.starts_after_gap(first):
            log.warning("WAL objects after a gap ignored", extra={"collection": name, "expected": chain.next_needed, "found": first})
            break
        key = keys.wal_key(name, first)
        data = await remote.get(key)
        records, end = decode_records(data, source=key)
        if end != len(data) or not records or records[0].seq != first:
            raise corrupt(f"WAL object {key} in S3 is damaged", key=key)
        tail.append((first, data))
        chain.reach(records[-1].seq)
    return tail


def _matches(ref: SegmentRef, data: bytes) -> bool:
    return len(data) == ref.size and hashlib.sha256(data).hexdigest() == ref.sha256


async def verify_manifest(store: BlobStore, manifest: Manifest) -> list[str]:
    """Problems with the objects a manifest references (missing, wrong size or checksum)."""
    problems = []
    for ref in manifest.segments:
        key = keys.segment_key(manifest.spec.name, ref.id)
        try:
            data = await store.get(key)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            problems.append(f"{key}: {exc}")
            continue
        if not _matches(ref, data):
            problems.append(f"{key}: size or sha256 does not match the manifest")
    return problems


# Crash points inside a restore, in order (TIERDB_TEST_CRASH_AT=restore:<step>, for kill -9 tests).
RESTORE_STEPS = ("first_segment", "segments", "wal", "upload_state", "manifest_staged", "old_retired", "published")


MAX_CLAIM_ATTEMPTS = 10


class _Superseded(Exception):
    """The previous writer shipped a WAL object or manifest while this node claimed: restore again."""


async def restore_collection(remote: BlobStore, data_dir: str, name: str, *, claim_for: str = "") -> Manifest | None:
    """Restore ``name`` from its latest S3 manifest into ``data_dir``; None if S3 has none.

    Atomic: everything is staged in a private directory (files and directories fsynced) that is
    renamed to ``collections/<name>`` as the very last step, replacing whatever was there (an
    unfinished restore, or the old copy for ``tierdb restore --force``).  A crash at any step
    leaves either the previous state or the restored one; the leftover staging directory is
    removed at the next start.

    ``claim_for`` (a writer id; handover with ``node.takeover``): before the staged copy is
    published, claim the collection from the writer that published the latest manifest (see
    ``_claim``).  The local copy exists only once the claim is in S3, so a crash mid-claim makes
    the next start restore and claim again.
    """
    for _ in range(MAX_CLAIM_ATTEMPTS):
        try:
            return await _restore_once(remote, data_dir, name, claim_for)
        except _Superseded:
            continue
    raise unavailable(
        f"collection {name!r} could not be claimed: the previous writer kept shipping to S3 "
        f"({MAX_CLAIM_ATTEMPTS} attempts); stop it and restart this node",
        collection=name,
    )


async def _claim(remote: BlobStore, stage: BlobStore, latest: Manifest, shipped: int, writer_id: str) -> Manifest:
    """Claim a memory_s3 collection restored up to WAL record ``shipped``; the claim manifest.

    1. This writer's claim marker becomes WAL object ``shipped + 1`` in S3 (put-if-absent) and the
       first record of the staged local WAL after the restored tail: the previous writer's next
       WAL file lands on that key, so its upload gets 412 and it is fenced.  Identical bytes
       already there are this writer's own earlier attempt.
    2. The latest manifest again as version ``latest + 1`` with this writer's id (put-if-absent):
       the previous writer's next manifest collides with it.
    Either collision the other way round (it shipped first) raises ``_Superseded``."""
    name = latest.spec.name
    marker_seq = shipped + 1
    key = keys.wal_key(name, marker_seq)
    data = frame(claim_record(marker_seq, writer_id))
    try:
        await remote.put(key, data, if_absent=True)
    except TierDBError as exc:
        if exc.kind is not ErrorKind.PRECONDITION:
            raise
        if await remote.get(key) != data:
            raise _Superseded from exc
    await stage.put(key, data)
    claimed = msgspec.structs.replace(latest, version=latest.version + 1, writer_id=writer_id, created_at=time.time())
    try:
        await manifests.publish(remote, claimed)
    except TierDBError as exc:
        if exc.kind is ErrorKind.FENCED:
            raise _Superseded from exc
        raise
    log.warning("collection claimed from the previous writer",
                extra={"collection": name, "previous_writer": latest.writer_id, "manifest_version": claimed.version,
                       "wal_marker_seq": marker_seq})
    return claimed


async def _restore_once(remote: BlobStore, data_dir: str, name: str, claim_for: str) -> Manifest | None:
    started = time.perf_counter()
    latest = await manifests.load_latest(remote, name)
    if latest is None:
        return None
    await asyncio.to_thread(localdirs.remove_leftovers, data_dir, name)
    staging = localdirs.staging_dir(data_dir, name)
    stage = LocalStore(staging)  # the data directory's layout, below a private root
    for number, ref in enumerate(latest.segments):  # one GET per segment: verified in memory, then staged
        key = keys.segment_key(name, ref.id)
        data = await remote.get(key)
        if not _matches(ref, data):
            raise corrupt(f"cannot restore {name!r} from S3: {key} does not match its manifest entry", collection=name)
        await stage.put(key, data)
        if number == 0:
            crash_point("restore:first_segment")
    crash_point("restore:segments")
    shipped = latest.wal_seq
    for first, data in await wal_tail(remote, name, latest.wal_seq):
        await stage.put(keys.wal_key(name, first), data)  # same name as the local WAL file
        records, _ = decode_records(data, source=name)
        shipped = max(shipped, records[-1].seq)
    await asyncio.to_thread(os.makedirs, keys.wal_dir(staging, name), exist_ok=True)
    if claim_for and latest.writer_id != claim_for:
        latest = await _claim(remote, stage, latest, shipped, claim_for)
        shipped += 1
    crash_point("restore:wal")
    state = UploadState(
        s3_version=latest.version,
        local_version=latest.version,
        shipped_seq=shipped,
        segments=[ref.id for ref in latest.segments],
        caught_up_at=time.time(),
    )
    await asyncio.to_thread(save_state, keys.upload_state_path(staging, name), state)
    crash_point("restore:upload_state")
    await stage.put(keys.manifest_key(name, latest.version), manifests.encode(latest))
    crash_point("restore:manifest_staged")
    await asyncio.to_thread(localdirs.publish_staged, data_dir, staging, name)
    crash_point("restore:published")
    log.info(
        "collection restored from S3",
        extra={"collection": name, "manifest_version": latest.version, "segments": len(latest.segments),
               "wal_seq": shipped, "duration_ms": round((time.perf_counter() - started) * 1000, 1)},
    )
    return latest


async def last_wal_seq(remote: BlobStore, name: str) -> int:
    """The highest WAL record sequence number in the collection's S3 WAL objects (0 if none)."""
    firsts = await object_seqs(remote, name)
    if not firsts:
        return 0
    key = keys.wal_key(name, firsts[-1])
    records, _ = decode_records(await remote.get(key), source=key)
    return records[-1].seq if records else firsts[-1]
