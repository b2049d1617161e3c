"""The one WAL contiguity scan (engine/wal/tail.py) and its users: the local and S3 logs,
restore and the S3 garbage collector agree on which WAL files continue a position, and a
missing run of records after the position is refused instead of silently skipped."""

from __future__ import annotations

import asyncio

import pytest

from tierdb import keys
from tierdb.engine import manifest as manifests, restore
from tierdb.engine.wal import LocalWal, S3Wal, WalRecord, frame, tail
from tierdb.errors import ErrorKind, TierDBError
from tierdb.models import CollectionSpec, Manifest
from tierdb.storage.memory import MemoryStore
from tierdb.workers.gc import RemoteGc

NAME = "c"


def record(seq: int) -> WalRecord:
    return WalRecord(seq=seq, op="delete", ids=[f"id-{seq}"])


def objects(*runs: range) -> dict[int, bytes]:
    """WAL objects by first seq, one per run of seqs."""
    return {run.start: b"".join(frame(record(s)) for s in run) for run in runs}


async def s3_store(runs: dict[int, bytes]) -> MemoryStore:
    store = MemoryStore()
    for first, data in runs.items():
        await store.put(keys.wal_key(NAME, first), data)
    return store


async def s3_scan(store: MemoryStore, after_seq: int) -> list[int]:
    wal = S3Wal(store, NAME, asyncio.get_running_loop())
    return await asyncio.to_thread(lambda: [r.seq for r in wal.scan(after_seq)])


def test_spans_covered_and_after():
    assert tail.spans([]) == []
    assert tail.spans([5, 1, 9]) == [(1, 4), (5, 8), (9, None)]
    assert tail.covered([1, 5, 9], 8) == [1, 5]
    assert tail.covered([1, 5, 9], 7) == [1]          # 5..8 still holds record 8
    assert tail.covered([1, 5, 9], 100) == [1, 5]     # the last file's end is unknown: never covered
    assert tail.after([9, 1, 5], 4) == [5, 9]
    assert tail.after([1, 5, 9], 0) == [1, 5, 9]


def test_chain_refuses_a_gap_and_a_late_start():
    chain = tail.SeqChain(after_seq=10)
    assert not chain.starts_after_gap(11) and chain.starts_after_gap(12)
    chain.follow(3, "w")                    # a file may start before the position
    chain.follow(4, "w")
    with pytest.raises(TierDBError, match="sequence gap, expected 5 got 6"):
        chain.follow(6, "w")
    late = tail.SeqChain(after_seq=10)
    with pytest.raises(TierDBError, match="sequence gap, expected 11 got 12"):
        late.follow(12, "w")


async def test_s3_scan_skips_covered_objects_and_follows_the_rest():
    store = await s3_store(objects(range(1, 5), range(5, 9), range(9, 12)))
    assert await s3_scan(store, 6) == [7, 8, 9, 10, 11]
    assert await s3_scan(store, 0) == list(range(1, 12))
    assert await s3_scan(store, 11) == []


async def test_s3_scan_refuses_records_missing_right_after_the_position():
    """Regression: the WAL object holding record 11 is gone; the S3 log used to replay 12.. as if
    nothing was missing, silently dropping the acknowledged write 11."""
    store = await s3_store(objects(range(12, 14)))
    with pytest.raises(TierDBError) as err:
        await s3_scan(store, 10)
    assert err.value.kind is ErrorKind.CORRUPT
    assert "sequence gap, expected 11 got 12" in err.value.message


def test_local_scan_refuses_records_missing_right_after_the_position(tmp_path):
    """Regression: same hole in the local log (files start at 12, the manifest covers up to 10)."""
    wal = LocalWal(str(tmp_path))
    wal.open_for_append(12)
    wal.append([frame(record(12)), frame(record(13))])
    wal.close()
    with pytest.raises(TierDBError) as err:
        list(LocalWal(str(tmp_path)).scan(after_seq=10))
    assert err.value.kind is ErrorKind.CORRUPT and "expected 11 got 12" in err.value.message
    assert [r.seq for r in LocalWal(str(tmp_path)).scan(after_seq=11)] == [12, 13]


async def test_restore_tail_and_gc_split_the_wal_where_the_log_does():
    runs = objects(range(1, 5), range(5, 9), range(9, 12))
    store = await s3_store(runs)
    taken = await restore.wal_tail(store, NAME, 6)
    assert [first for first, _ in taken] == [5, 9] == tail.after(list(runs), 6)

    spec = CollectionSpec(name=NAME, dimension=2)
    await manifests.publish(store, Manifest(version=1, spec=spec, segments=[], wal_seq=6, created_at=0.0))
    gc = RemoteGc(store, NAME, keep_manifests=1, grace_secs=0)
    assert await gc.run_once(newest_version=1) == 1
    assert [first for first, _ in await restore.wal_tail(store, NAME, 6)] == [5, 9]
    assert await s3_scan(store, 6) == [7, 8, 9, 10, 11]


async def test_restore_tail_stops_at_a_gap():
    store = await s3_store(objects(range(1, 5), range(7, 9)))  # 5 and 6 are missing
    assert [first for first, _ in await restore.wal_tail(store, NAME, 2)] == [1]
    assert [first for first, _ in await restore.wal_tail(store, NAME, 5)] == [1]  # 1..4, then 6 is missing
    # Object 1's name says it ends at 6: objects 7.. continue a position of 6.
    assert [first for first, _ in await restore.wal_tail(store, NAME, 6)] == [7]

