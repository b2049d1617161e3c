"""RemoteGc over an in-memory S3 with an injected clock and faults: what it keeps, the grace
period, in-flight uploads, idle runs that cost nothing, and failures that lose no progress."""

from __future__ import annotations

import pytest

from tierdb import keys
from tierdb.engine import manifest as manifests
from tierdb.errors import TierDBError
from tierdb.models import CollectionSpec, Manifest, SegmentRef
from tierdb.storage.faults import FaultInjectingStore
from tierdb.storage.memory import MemoryStore
from tierdb.workers.gc import RemoteGc

NAME = "c"
GRACE = 10.0
SPEC = CollectionSpec(name=NAME, dimension=4)


def seg(n: int) -> str:
    return f"{n:032x}"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def publish(store: MemoryStore, version: int, segments: list[int], wal_seq: int) -> None:
    refs = [SegmentRef(id=seg(n), rows=1, size=1, sha256="0" * 64, indexed=False) for n in segments]
    for ref in refs:
        await store.put(keys.segment_key(NAME, ref.id), b"s")
    manifest = Manifest(version=version, spec=SPEC, segments=refs, wal_seq=wal_seq, created_at=0.0)
    await store.put(keys.manifest_key(NAME, version), manifests.encode(manifest))


@pytest.fixture
async def bucket() -> MemoryStore:
    """Manifests 1..5 (segments {1}, {1,2}, {2,3}, {3,4}, {4,5}; wal_seq 10*version) and WAL
    objects starting at 1, 11, ..., 51 (ten records each)."""
    store = MemoryStore()
    for version, segments in enumerate([[1], [1, 2], [2, 3], [3, 4], [4, 5]], start=1):
        await publish(store, version, segments, wal_seq=10 * version)
    for first in range(1, 60, 10):
        await store.put(keys.wal_key(NAME, first), b"w")
    return store


# keep 3 -> manifests 3..5 kept; segment 1 unreferenced; WAL objects whose records all precede
# manifest 3's wal_seq (30): those starting at 1, 11, 21.
UNNEEDED = {
    keys.manifest_key(NAME, 1), keys.manifest_key(NAME, 2), keys.segment_key(NAME, seg(1)),
    keys.wal_key(NAME, 1), keys.wal_key(NAME, 11), keys.wal_key(NAME, 21),
}


async def all_keys(store: MemoryStore) -> set[str]:
    return {info.key for info in await store.list(keys.collection_prefix(NAME))}


async def assert_kept_manifests_whole(store: MemoryStore) -> None:
    for version in await manifests.versions(store, NAME):
        manifest = manifests.decode(await store.get(keys.manifest_key(NAME, version)), source="test")
        for ref in manifest.segments:
            assert await store.head(keys.segment_key(NAME, ref.id)) is not None, (version, ref.id)


async def test_deletes_exactly_the_unneeded_objects_after_the_grace_period(bucket):
    clock = Clock()
    gc = RemoteGc(bucket, NAME, keep_manifests=3, grace_secs=GRACE, clock=clock)
    before = await all_keys(bucket)
    assert await gc.run_once(5) == 0                 # first seen unneeded now
    clock.now = GRACE - 0.1
    assert await gc.run_once(5) == 0
    assert await all_keys(bucket) == before
    clock.now = GRACE
    assert await gc.run_once(5) == len(UNNEEDED)
    assert await all_keys(bucket) == before - UNNEEDED
    assert await manifests.versions(bucket, NAME) == [3, 4, 5]
    await assert_kept_manifests_whole(bucket)


async def test_zero_keep_still_keeps_the_newest_manifest(bucket):
    gc = RemoteGc(bucket, NAME, keep_manifests=0, grace_secs=0, clock=Clock())
    await gc.run_once(5)
    assert await manifests.versions(bucket, NAME) == [5]
    await assert_kept_manifests_whole(bucket)
    # WAL after manifest 5 (wal_seq 50) stays: the object starting at 41 holds 41..50 only.
    assert {keys.parse_wal_key(i.key) for i in await bucket.list(keys.wal_prefix(NAME))} == {51}


async def test_a_segment_uploaded_before_its_manifest_is_never_taken(bucket):
    """An upload in flight: the segment is in S3, its manifest not yet.  It looks unneeded
    until the manifest lands; the grace period must cover that, and the clock restarts if it
    becomes unneeded again later."""
    clock = Clock()
    gc = RemoteGc(bucket, NAME, keep_manifests=3, grace_secs=GRACE, clock=clock)
    await bucket.put(keys.segment_key(NAME, seg(6)), b"s")
    assert await gc.run_once(5) == 0
    clock.now = GRACE / 2
    await publish(bucket, 6, [5, 6], wal_seq=60)      # the manifest arrives within the grace
    await gc.run_once(6)
    clock.now = 3 * GRACE
    await gc.run_once(6)
    assert await bucket.head(keys.segment_key(NAME, seg(6))) is not None
    await assert_kept_manifests_whole(bucket)


async def test_an_idle_collection_costs_no_request(bucket):
    faults = FaultInjectingStore(bucket)
    gc = RemoteGc(faults, NAME, keep_manifests=3, grace_secs=0, clock=Clock())
    assert await gc.run_once(5) == len(UNNEEDED)
    faults.inject("permanent")                       # any request now fails the test
    assert await gc.run_once(5) == 0
    assert await gc.run_once(5) == 0


async def test_a_failed_delete_loses_no_progress_and_never_takes_a_needed_object(bucket):
    faults = FaultInjectingStore(bucket)
    gc = RemoteGc(faults, NAME, keep_manifests=3, grace_secs=0, clock=Clock())
    before = await all_keys(bucket)
    deletes = 0
    original_delete = bucket.delete

    async def counting_delete(key: str) -> None:
        nonlocal deletes
        deletes += 1
        await original_delete(key)

    bucket.delete = counting_delete                  # type: ignore[method-assign]
    fault = faults.inject("transient", ops="delete", times=1)
    with pytest.raises(TierDBError):
        await gc.run_once(5)
    assert fault not in faults.faults                # it fired once
    assert await all_keys(bucket) == before          # the first delete failed: nothing gone
    assert await gc.run_once(5) == len(UNNEEDED)     # the next run picks the work up again
    assert deletes == len(UNNEEDED)
    assert await all_keys(bucket) == before - UNNEEDED
    await assert_kept_manifests_whole(bucket)


async def test_a_failed_listing_deletes_nothing_and_the_next_run_retries_it(bucket):
    """Regression: the newest version was marked seen before the listing, so after a failed
    listing an idle collection was never collected again (until its next manifest)."""
    faults = FaultInjectingStore(bucket)
    gc = RemoteGc(faults, NAME, keep_manifests=3, grace_secs=0, clock=Clock())
    before = await all_keys(bucket)
    faults.inject("transient", ops="list", prefix=keys.wal_prefix(NAME), times=1)
    with pytest.raises(TierDBError):
        await gc.run_once(5)
    assert await all_keys(bucket) == before
    assert await gc.run_once(5) == len(UNNEEDED)


async def test_no_manifest_means_nothing_is_unneeded():
    store = MemoryStore()
    await store.put(keys.segment_key(NAME, seg(1)), b"s")   # a first upload in flight
    gc = RemoteGc(store, NAME, keep_manifests=1, grace_secs=0, clock=Clock())
    assert await gc.run_once(0) == 0
    assert await store.head(keys.segment_key(NAME, seg(1))) is not None
