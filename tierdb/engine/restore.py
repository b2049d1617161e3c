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

from .. import keys
from ..crashpoints import crash_point
from ..errors import corrupt
from ..models import COLLECTION_NAME, Manifest, SegmentRef
from ..storage.base import BlobStore
from ..storage.local import LocalStore
from . import localdirs, manifest as manifests
from .upload_state import UploadState, save_state
from .wal import decode_records, object_seqs, tail as wal_tail_scan

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


async def restore_collection(remote: BlobStore, data_dir: str, name: str) -> Manifest | None:
    """Restore ``name`` from its latest S3 manifest into ``data_dir``; None if S3 has none.

    Atomic: everything is staged in a private directory (files and directories fsynced) that is
    renamed to ``collections/<name>`` as the very last step, replacing whatever was there (an
    unfinished restore, or the old copy for ``tierdb restore --force``).  A crash at any step
    leaves either the previous state or the restored one; the leftover staging directory is
    removed at the next start.
    """
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
