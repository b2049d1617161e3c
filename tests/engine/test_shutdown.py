"""Engine shutdown and the background jobs: busy ticks are skipped quietly, a job running at
close() ends without an ERROR, an index build in progress is abandoned (its rows are in the WAL)."""

from __future__ import annotations

import asyncio
import logging

import msgspec
import pytest

import tierdb.node.engine as engine_module
from tierdb.config import ServerSettings
from tierdb.node import Engine
from tierdb.errors import ErrorKind, TierDBError

from .conftest import make_settings, random_vectors, spec


def _problems(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= level]


async def test_busy_job_ticks_are_skipped_without_warnings(tmp_path, monkeypatch, caplog):
    """A compaction run longer than the interval (a bulk import) must not make APScheduler log
    "maximum number of running instances reached" at every tick; runs never overlap."""
    running = 0
    overlap = False
    runs = 0

    async def slow_compaction(_engine: Engine) -> None:
        nonlocal running, overlap, runs
        running += 1
        overlap = overlap or running > 1
        runs += 1
        await asyncio.sleep(0.5)
        running -= 1

    monkeypatch.setattr(engine_module, "run_compaction", slow_compaction)
    caplog.set_level(logging.DEBUG)
    eng = Engine(make_settings(tmp_path / "data", interval=0.05))
    await eng.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while runs < 3 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert runs >= 3
    finally:
        await eng.close()
    assert not overlap
    assert _problems(caplog, logging.WARNING) == []


async def test_close_while_a_job_runs_logs_no_error(tmp_path, monkeypatch, caplog):
    """A job still running after the shutdown budget is cancelled with an INFO line, not
    APScheduler's ERROR traceback ("Job ... raised an exception ... CancelledError")."""
    started = asyncio.Event()

    async def stuck_compaction(_engine: Engine) -> None:
        started.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(engine_module, "run_compaction", stuck_compaction)
    caplog.set_level(logging.INFO)
    settings = msgspec.structs.replace(
        make_settings(tmp_path / "data", interval=0.05), server=ServerSettings(shutdown_timeout_secs=0.2)
    )
    eng = Engine(settings)
    await eng.start()
    await asyncio.wait_for(started.wait(), 60)
    await asyncio.wait_for(eng.close(), 60)
    assert _problems(caplog, logging.WARNING) == []
    assert any("cancelled by shutdown" in r.getMessage() for r in caplog.records)


async def test_close_abandons_an_index_build_and_the_wal_keeps_the_rows(tmp_path, caplog):
    """close() during a big flush does not wait for the HNSW build: the flush is abandoned,
    no manifest is published, and the next start has every row (replayed from the WAL)."""
    settings = make_settings(tmp_path / "data", threshold=1000, threshold_ops=10_000_000)
    settings = msgspec.structs.replace(settings, index=msgspec.structs.replace(settings.index, ef_construction=400))
    eng = Engine(settings)
    await eng.start()
    await eng.create_collection(spec(dimension=48))
    coll = eng.get_collection("docs")
    rows = 40_000
    for start in range(0, rows, 5000):
        await coll.upsert([str(i) for i in range(start, start + 5000)], random_vectors(5000, 48, seed=start))
    version = coll.manifest.version
    caplog.set_level(logging.INFO)

    compaction = asyncio.create_task(coll.compact())
    await asyncio.sleep(0.5)                     # the build of 40k rows is well under way
    assert not compaction.done()
    await eng.close()
    with pytest.raises(TierDBError) as info:
        await compaction
    assert info.value.kind is ErrorKind.UNAVAILABLE and "abandoned" in info.value.message
    assert _problems(caplog, logging.ERROR) == []

    fresh = Engine(settings)
    await fresh.start()
    try:
        again = fresh.get_collection("docs")
        assert again.manifest.version == version  # nothing was published by the abandoned flush
        assert again.count() == rows
        got = await again.get(["0", str(rows - 1)])
        assert [d.id for d in got] == ["0", str(rows - 1)]
    finally:
        await fresh.close()


async def test_closed_collection_refuses_reads_and_holds_no_data(engine):
    await engine.create_collection(spec())
    coll = engine.get_collection("docs")
    await coll.upsert(["a", "b"], random_vectors(2, 8))
    await coll.compact()
    await engine.close()
    assert coll.segments == [] and coll.count() == 0 and coll.memtable.size() == 0
    with pytest.raises(TierDBError) as info:
        await coll.query(random_vectors(1, 8), k=1)
    assert info.value.kind is ErrorKind.UNAVAILABLE
    assert engine.open_collections() == []
