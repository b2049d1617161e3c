"""Writer handover over an in-memory S3: the claim marker, the claim manifest and the fencing of
the old writer at each of its write paths (WAL commit, WAL re-read, uploader)."""

from __future__ import annotations

import msgspec
import pytest

from tests.unit.test_uploader import DIM, NAME, FakeS3, settings_for, start, write
from tierdb import keys
from tierdb.config import NodeSettings
from tierdb.engine import manifest as manifests
from tierdb.engine.wal import claim_record, frame
from tierdb.errors import ErrorKind, TierDBError
from tierdb.models import CollectionSpec

pytestmark = pytest.mark.asyncio


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> FakeS3:
    fake = FakeS3()
    import tierdb.node.engine as engine_module

    monkeypatch.setattr(engine_module, "open_s3_store", fake.open)
    return fake


def settings(tmp_path, node: str, policy: str, *, takeover: bool = False):
    base = settings_for(tmp_path / node)
    return msgspec.structs.replace(
        base,
        storage=msgspec.structs.replace(base.storage, tiering_policy=policy),
        node=NodeSettings(takeover=takeover),
    )


async def created(tmp_path, s3, policy: str):
    engine = await start(settings(tmp_path, "a", policy))
    await engine.create_collection(CollectionSpec(name=NAME, dimension=DIM, tiering_policy=policy))
    coll = engine.get_collection(NAME)
    await write(coll, 0, 10)
    return engine, coll


async def test_s3_only_takeover_claims_and_the_old_writer_is_fenced_at_its_next_write(tmp_path, s3):
    a, coll_a = await created(tmp_path, s3, "s3_only")
    b = await start(settings(tmp_path, "b", "s3_only", takeover=True))
    try:
        coll_b = b.get_collection(NAME)
        assert coll_b.state == "ready" and coll_b.stats().count == 10
        newest = await manifests.load_latest(s3.bucket, NAME)
        assert newest.writer_id == b.writer_id != a.writer_id
        marker = keys.wal_key(NAME, coll_b.last_seq)
        assert s3.bucket._objects[marker] == frame(claim_record(coll_b.last_seq, b.writer_id))
        with pytest.raises(TierDBError) as refused:
            await write(coll_a, 100, 1)
        assert refused.value.kind is ErrorKind.FENCED and coll_a.state == "fenced"
        await write(coll_b, 200, 5)
        assert coll_b.stats().count == 15
    finally:
        await a.close()
        await b.close()
    again = await start(settings(tmp_path, "c", "s3_only"))   # a fresh open replays the marker as a no-op
    try:
        assert again.get_collection(NAME).stats().count == 15
    finally:
        await again.close()


async def test_s3_only_writer_meeting_another_writers_marker_when_it_rereads_its_wal_is_fenced(tmp_path, s3):
    a, coll = await created(tmp_path, s3, "s3_only")
    try:
        seq = coll.last_seq + 1
        await s3.bucket.put(keys.wal_key(NAME, seq), frame(claim_record(seq, "another-writer")), if_absent=True)
        coll._wal_uncertain = True      # an earlier PUT failed ambiguously: the next commit re-reads the tail
        with pytest.raises(TierDBError) as refused:
            await write(coll, 100, 1)
        assert refused.value.kind is ErrorKind.FENCED and coll.state == "fenced"
        assert keys.wal_key(NAME, seq + 1) not in s3.bucket._objects
    finally:
        await a.close()


async def test_memory_s3_uploader_is_fenced_when_another_writer_holds_its_next_wal_object(tmp_path, s3):
    a, coll = await created(tmp_path, s3, "memory_s3")
    try:
        await coll.uploader.run_once(force=True)
        shipped = coll.uploader.shipped_seq()
        await write(coll, 100, 3)
        await s3.bucket.put(keys.wal_key(NAME, shipped + 1), frame(claim_record(shipped + 1, "new-writer")), if_absent=True)
        await coll.uploader.run_once(force=True)
        assert coll.state == "fenced"
        assert len(coll.dlq) == 0    # not a failure for a human: another writer owns the collection
    finally:
        await a.close()


async def test_memory_s3_takeover_restore_claims_before_the_copy_exists(tmp_path, s3):
    a, coll_a = await created(tmp_path, s3, "memory_s3")
    await coll_a.uploader.run_once(force=True)
    b = await start(settings(tmp_path, "b", "memory_s3", takeover=True))
    try:
        coll_b = b.get_collection(NAME)
        assert coll_b.state == "ready" and coll_b.stats().count == 10
        newest = await manifests.load_latest(s3.bucket, NAME)
        assert newest.writer_id == b.writer_id and coll_b.manifest.version == newest.version
        await write(coll_a, 100, 2)      # A's unshipped writes: its uploader is fenced, never ships them
        await coll_a.uploader.run_once(force=True)
        assert coll_a.state == "fenced"
        await write(coll_b, 200, 2)
        await coll_b.uploader.run_once(force=True)
        assert coll_b.state == "ready" and coll_b.uploader.shipped_seq() == coll_b.last_seq
    finally:
        await a.close()
        await b.close()
    again = await start(settings(tmp_path, "c", "memory_s3"))
    try:
        got = again.get_collection(NAME)
        assert got.stats().count == 12
    finally:
        await again.close()
