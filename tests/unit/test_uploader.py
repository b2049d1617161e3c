"""The memory_s3 uploader over an in-memory S3 with injected faults: transient failures retry with
backoff and never reach the DLQ, permanent ones heal by themselves once the cause clears, the
upload lag survives restarts, and the small state files are written durably off the event loop.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from pathlib import Path

import msgspec
import numpy as np
import pytest

from tierdb import durable_file, keys
from tierdb.config import (
    CompactionSettings,
    RetrySettings,
    S3Settings,
    Settings,
    StorageSettings,
    UploaderSettings,
)
from tierdb.node import Engine
from tierdb.models import CollectionSpec
from tierdb.storage.faults import FaultInjectingStore
from tierdb.storage.memory import MemoryStore
from tierdb.storage.retry import RetryingStore
from tierdb.workers.dlq import DeadLetterQueue
from tierdb.engine.upload_state import UploadState, save_state
from tierdb.keys import UPLOAD_STATE_FILE as STATE_FILE
from tierdb.workers.uploader import Uploader

DIM = 4
NAME = "docs"
RETRY = RetrySettings(max_retries=1, base_backoff_secs=0.001, max_backoff_secs=0.001)


class FakeS3:
    """One in-memory bucket with a fault injector, shared by every engine a test starts."""

    def __init__(self) -> None:
        self.bucket = MemoryStore()
        self.faults = FaultInjectingStore(self.bucket)

    def open(self, settings: Settings, on_request=None, on_retry=None) -> RetryingStore:
        return RetryingStore(self.faults, settings.retry, on_retry=on_retry)

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.bucket._objects if k.startswith(prefix))


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> FakeS3:
    fake = FakeS3()
    import tierdb.node.engine as engine_module

    monkeypatch.setattr(engine_module, "open_s3_store", fake.open)
    return fake


def settings_for(tmp_path: Path, *, fsync: bool = True, backoff_base: float = 0.0) -> Settings:
    return Settings(
        storage=StorageSettings(data_dir=str(tmp_path / "node"), tiering_policy="memory_s3", fsync=fsync),
        compaction=CompactionSettings(interval_secs=3600),
        s3=S3Settings(bucket="test-bucket"),
        retry=RETRY,
        uploader=UploaderSettings(interval_secs=3600, backoff_base_secs=backoff_base, backoff_max_secs=30.0),
    )


async def start(settings: Settings) -> Engine:
    engine = Engine(settings)
    await engine.start()
    return engine


async def write(coll, start: int, n: int) -> None:
    vectors = np.random.default_rng(start).standard_normal((n, DIM)).astype(np.float32)
    await coll.upsert([f"d{i}" for i in range(start, start + n)], vectors, [{"i": i} for i in range(start, start + n)])


async def wait_for_lag_above(coll, secs: float) -> float:
    """Poll (generous deadline) until the reported upload lag exceeds ``secs``."""
    deadline = asyncio.get_running_loop().time() + 30
    while (lag := coll.stats().upload_lag_secs) <= secs:
        assert asyncio.get_running_loop().time() < deadline, f"lag stuck at {lag}"
        await asyncio.sleep(0.02)
    return lag


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# == item 2: transient failures retry for as long as it takes; permanent ones heal by themselves ======


async def test_transient_failures_never_reach_the_dlq_and_the_lag_returns_to_zero(tmp_path, s3):
    engine = await start(settings_for(tmp_path))
    try:
        await engine.create_collection(CollectionSpec(name=NAME, dimension=DIM))
        coll = engine.get_collection(NAME)
        await write(coll, 0, 20)
        attempts_per_run = RETRY.max_retries + 1
        s3.faults.fail_next(3 * attempts_per_run, ops="put")   # "connection refused" for 3 whole runs
        lags = []
        for failed in range(1, 4):
            assert await coll.uploader.run_once() == 0
            stats = coll.stats()
            assert coll.dlq_entries() == [], "a transient failure must never go to the DLQ"
            assert stats.dlq_size == 0 and coll.state == "ready"
            assert stats.upload_failures == failed and "injected transient" in stats.upload_error
            lags.append(await wait_for_lag_above(coll, lags[-1] if lags else 0.0))
        assert s3.faults.faults == []                          # S3 is back: no human action follows

        assert await coll.uploader.run_once() == 1             # the WAL (manifest v1 went to S3 at create)
        stats = coll.stats()
        assert stats.upload_lag_secs == 0 and stats.upload_queue_size == 0
        assert stats.upload_failures == 0 and stats.upload_error == "" and stats.dlq_size == 0
        assert s3.keys(keys.manifest_prefix(NAME)) and s3.keys(keys.wal_prefix(NAME))
    finally:
        await engine.close()


async def test_permanent_failure_goes_to_the_dlq_and_uploads_resume_by_themselves(tmp_path, s3):
    engine = await start(settings_for(tmp_path))
    try:
        await engine.create_collection(CollectionSpec(name=NAME, dimension=DIM))
        coll = engine.get_collection(NAME)
        await write(coll, 0, 10)
        denied = s3.faults.inject("permanent", ops="put")     # AccessDenied until the policy is fixed
        await coll.uploader.run_once()
        [entry] = coll.dlq_entries()
        assert entry.permanent and entry.code == "InjectedPermanent"
        await write(coll, 10, 5)                               # writes are still acknowledged
        await coll.uploader.run_once()                         # a re-probe: still denied
        [entry] = coll.dlq_entries()
        assert entry.attempts == 2 and coll.stats().upload_failures == 2

        s3.faults.remove(denied)                               # the operator fixes the bucket policy
        assert await coll.uploader.run_once() >= 2             # ... and does nothing else
        assert coll.dlq_entries() == [] and coll.state == "ready"
        stats = coll.stats()
        assert stats.upload_lag_secs == 0 and stats.upload_failures == 0
    finally:
        await engine.close()
    fresh_settings = msgspec.structs.replace(
        settings_for(tmp_path), storage=StorageSettings(data_dir=str(tmp_path / "fresh"), tiering_policy="memory_s3")
    )
    fresh = await start(fresh_settings)                        # restored from S3 alone
    try:
        assert fresh.get_collection(NAME).count() == 15
    finally:
        await fresh.close()


async def test_failed_runs_back_off_exponentially_and_dlq_retry_skips_the_wait(tmp_path, s3):
    engine = await start(settings_for(tmp_path))
    try:
        await engine.create_collection(CollectionSpec(name=NAME, dimension=DIM))
        coll = engine.get_collection(NAME)
        clock = FakeClock()
        coll.uploader = Uploader(
            coll, engine.store, engine.remote, coll.dlq,
            os.path.join(engine.data_dir, keys.collection_prefix(NAME), STATE_FILE),
            settings=UploaderSettings(backoff_base_secs=2.0, backoff_max_secs=8.0),
            clock=clock, rng=lambda: 1.0,                      # jitter at its top: the cap itself
        )
        await write(coll, 0, 5)
        outage = s3.faults.inject("transient", ops="put")
        for expected_wait in (2.0, 4.0, 8.0, 8.0):             # doubling, capped
            puts = s3.faults.count("put")
            await coll.uploader.run_once()
            assert s3.faults.count("put") > puts
            assert coll.stats().upload_retry_in_secs == expected_wait
            puts = s3.faults.count("put")
            clock.now += expected_wait - 0.5
            assert await coll.uploader.run_once() == 0         # still waiting: no request at all
            assert s3.faults.count("put") == puts
            clock.now += 0.5
        assert coll.dlq_entries() == []

        s3.faults.remove(outage)
        s3.faults.inject("permanent", ops="put", times=1)
        clock.now += 8.0
        await coll.uploader.run_once()
        assert len(coll.dlq_entries()) == 1
        assert await coll.uploader.run_once() == 0             # within the backoff
        assert await coll.dlq_retry() == 1                     # the operator forces an attempt
        assert await coll.uploader.run_once() == 1             # the WAL (manifest v1 went to S3 at create)
        assert coll.dlq_entries() == [] and coll.stats().upload_failures == 0
    finally:
        await engine.close()


# == item 3: the upload lag survives a restart ========================================================


async def test_upload_lag_of_writes_never_in_s3_keeps_growing_across_a_restart(tmp_path, s3):
    settings = settings_for(tmp_path)
    engine = await start(settings)
    try:
        await engine.create_collection(CollectionSpec(name=NAME, dimension=DIM))  # manifest v1 in S3
        s3.faults.inject("transient", ops="put")               # from here S3 accepts nothing
        await write(engine.get_collection(NAME), 0, 10)
        await engine.get_collection(NAME).uploader.run_once()
        before = await wait_for_lag_above(engine.get_collection(NAME), 0.5)
    finally:
        await engine.close()

    engine = await start(settings)
    try:
        coll = engine.get_collection(NAME)
        assert coll.stats().upload_lag_secs >= before, "the lag must not reset on restart"
        await coll.uploader.run_once()                         # still failing: still counted
        assert coll.stats().upload_lag_secs >= before
        s3.faults.clear()
        assert await coll.uploader.run_once() >= 1             # the WAL written before the restart
        assert coll.stats().upload_lag_secs == 0
        state_path = os.path.join(engine.data_dir, keys.collection_prefix(NAME), STATE_FILE)
        with open(state_path, "rb") as f:
            assert msgspec.json.decode(f.read(), type=UploadState).oldest_unshipped_at == 0
    finally:
        await engine.close()


async def test_replayed_writes_take_the_persisted_ack_time_and_new_writes_their_own(tmp_path, s3):
    settings = settings_for(tmp_path)
    engine = await start(settings)
    try:
        await engine.create_collection(CollectionSpec(name=NAME, dimension=DIM))
        coll = engine.get_collection(NAME)
        await coll.uploader.run_once()                         # S3 holds the empty collection
        outage = s3.faults.inject("transient", ops="put")
        await write(coll, 0, 5)
        await coll.uploader.run_once()
        before = await wait_for_lag_above(coll, 0.5)
    finally:
        await engine.close()                                   # its final drain fails too
    s3.faults.remove(outage)

    engine = await start(settings)
    try:
        coll = engine.get_collection(NAME)
        assert coll.stats().upload_lag_secs >= before
        assert await coll.uploader.run_once() >= 1            # the replayed writes reach S3
        assert coll.stats().upload_lag_secs == 0
        s3.faults.inject("transient", ops="put")
        await write(coll, 5, 5)                                # a fresh write: its own ack time
        await coll.uploader.run_once()
        assert 0 < await wait_for_lag_above(coll, 0.0) < before
    finally:
        s3.faults.clear()
        await engine.close()


# == item 11: small state files: atomic, fsynced (file and directory) when storage.fsync, off the loop ==


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(durable_file.os, "fsync", fsync)
    return synced


@pytest.mark.parametrize("fsync", [True, False])
def test_dlq_and_upload_state_fsync_file_and_directory_as_configured(tmp_path, monkeypatch, fsync):
    synced = _record_fsyncs(monkeypatch)
    dlq = DeadLetterQueue(str(tmp_path / "dlq.json"), fsync=fsync)
    dlq.add("collections/docs/wal/1.wal", "denied", code="AccessDenied", permanent=True)
    assert synced == (["file", "dir"] if fsync else [])
    synced.clear()
    save_state(str(tmp_path / STATE_FILE), UploadState(shipped_seq=7), fsync=fsync)
    assert synced == (["file", "dir"] if fsync else [])
    assert DeadLetterQueue(str(tmp_path / "dlq.json")).entries()[0].code == "AccessDenied"
    assert sorted(os.listdir(tmp_path)) == ["dlq.json", STATE_FILE]   # no temporary file left


async def test_engine_passes_storage_fsync_to_the_state_files(tmp_path, s3):
    engine = await start(settings_for(tmp_path, fsync=False))
    try:
        await engine.create_collection(CollectionSpec(name=NAME, dimension=DIM))
        coll = engine.get_collection(NAME)
        assert coll.dlq.fsync is False and coll.uploader.fsync is False
    finally:
        await engine.close()


async def test_uploader_writes_the_dlq_and_its_state_off_the_event_loop(tmp_path, s3, monkeypatch):
    loop_thread = threading.get_ident()
    writers: list[tuple[str, int]] = []
    for cls, name in ((DeadLetterQueue, "dlq"), (Uploader, "state")):
        real = cls._save

        def recording(self, _real=real, _name=name) -> None:
            writers.append((_name, threading.get_ident()))
            _real(self)

        monkeypatch.setattr(cls, "_save", recording)
    engine = await start(settings_for(tmp_path))
    try:
        await engine.create_collection(CollectionSpec(name=NAME, dimension=DIM))
        coll = engine.get_collection(NAME)
        await write(coll, 0, 3)
        s3.faults.inject("permanent", ops="put", times=1)
        await coll.uploader.run_once()                         # a DLQ entry
        assert [w for w in writers if w[1] == loop_thread] == [], "the DLQ must be written in a worker thread"
        await coll.uploader.run_once()                         # resolved; the state saved
        assert coll.dlq_entries() == []
    finally:
        await engine.close()
    assert {name for name, _ in writers} == {"dlq", "state"}
    assert [w for w in writers if w[1] == loop_thread] == [], "state files must be written in a worker thread"
