"""kill -9 inside a flush or a merge of partitioned segments (s3_only, real S3) loses nothing.

A real process writes a collection and SIGKILLs itself at a named step of the flush or merge
(``TIERDB_TEST_CRASH_AT``): after the new segment object is stored, and after the new manifest
is published but before it is installed.  A new node with empty caches on the same prefix then
serves every acknowledged document with its vector and metadata, none of the deleted ones, and
the next merge completes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import msgspec
import numpy as np
import pytest

from tierdb.config import PartitionsSettings
from tierdb.crashpoints import ENV_VAR
from tierdb.engine.maintenance import MAINTENANCE_STEPS
from tierdb.models import CollectionSpec
from tierdb.node import Engine
from tierdb.testing.settings import engine_settings

pytestmark = [pytest.mark.s3, pytest.mark.crash]

DIM = 16
DELETED = ["d3", "d250", "d330"]
PARTITIONS = PartitionsSettings(rows_per_partition=25)

CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    import numpy as np
    from tierdb.config import PartitionsSettings
    from tierdb.models import CollectionSpec
    from tierdb.node import Engine
    from tierdb.testing.settings import engine_settings, s3_settings

    data_dir, endpoint, bucket, prefix, region, operation, step, env_var = sys.argv[1:]

    async def run():
        s3 = s3_settings(endpoint=endpoint, bucket=bucket, prefix=prefix, region=region)
        engine = Engine(engine_settings(data_dir, s3, "s3_only", partitions=PartitionsSettings(rows_per_partition=25)))
        await engine.start()
        await engine.create_collection(CollectionSpec(name="docs", dimension=%(dim)d, tiering_policy="s3_only"))
        coll = engine.get_collection("docs")
        vectors = np.random.default_rng(0).standard_normal((400, %(dim)d)).astype(np.float32)
        await coll.upsert([f"d{i}" for i in range(300)], vectors[:300], [{"i": i} for i in range(300)])
        await coll.flush(force=True)
        await coll.upsert([f"d{i}" for i in range(300, 400)], vectors[300:], [{"i": i} for i in range(300, 400)])
        await coll.delete(%(deleted)r)
        if operation == "merge":
            await coll.flush(force=True)
            assert len(coll.segments) == 2
        os.environ[env_var] = step
        if operation == "merge":
            await coll.merge(full=True)
        else:
            await coll.flush(force=True)
        print("crash point not reached", flush=True)

    asyncio.run(run())
    """
) % {"dim": DIM, "deleted": DELETED}


@pytest.mark.parametrize("operation", ["merge", "flush"])
@pytest.mark.parametrize("step", MAINTENANCE_STEPS)
async def test_kill9_in_a_partitioned_flush_or_merge_loses_nothing(tmp_path, s3_env, s3_settings_factory, operation, step):
    s3 = s3_settings_factory()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CHILD, str(tmp_path / "writer"), s3.endpoint, s3.bucket, s3.prefix, s3.region,
         operation, step, ENV_VAR],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert f"crash point {step!r} reached" in proc.stderr

    vectors = np.random.default_rng(0).standard_normal((400, DIM)).astype(np.float32)
    live = [f"d{i}" for i in range(400) if f"d{i}" not in DELETED]
    for attempt in range(2):  # a new node with empty caches, then again after a merge completes
        engine = Engine(engine_settings(str(tmp_path / f"fresh{attempt}"), s3, "s3_only", partitions=PARTITIONS))
        await engine.start()
        try:
            coll = engine.get_collection("docs")
            assert coll.count() == len(live)
            assert sorted(await coll.live_ids(), key=lambda i: int(i[1:])) == live
            docs = await coll.get(live)
            assert sorted((d.id for d in docs), key=lambda i: int(i[1:])) == live
            for doc in docs:
                np.testing.assert_array_equal(doc.vector, vectors[int(doc.id[1:])])
                assert doc.metadata == {"i": int(doc.id[1:])}
            assert await coll.get(DELETED) == []
            hits = await coll.query(vectors[[3, 250, 330, 10, 350]], k=5, nprobe=4096)
            for row in hits:
                assert not {h.id for h in row} & set(DELETED)
            assert hits[3][0].id == "d10" and hits[4][0].id == "d350"
            await coll.compact(full=True)
            assert len(coll.manifest.segments) == 1 and coll.manifest.segments[0].rows == len(live)
        finally:
            await engine.close()


MULTIPART_CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    import numpy as np
    from tierdb.config import PartitionsSettings
    from tierdb.models import CollectionSpec
    from tierdb.node import Engine
    from tierdb.testing.settings import engine_settings, s3_settings

    data_dir, endpoint, bucket, prefix, region, env_var = sys.argv[1:]

    async def run():
        s3 = s3_settings(endpoint=endpoint, bucket=bucket, prefix=prefix, region=region,
                         multipart_part_bytes=5 * 1024 * 1024)
        engine = Engine(engine_settings(data_dir, s3, "s3_only", partitions=PartitionsSettings(rows_per_partition=200)))
        await engine.start()
        await engine.create_collection(CollectionSpec(name="docs", dimension=%(dim)d, tiering_policy="s3_only"))
        coll = engine.get_collection("docs")
        vectors = np.random.default_rng(1).standard_normal((%(rows)d, %(dim)d)).astype(np.float32)
        await coll.upsert([f"m{i}" for i in range(%(rows)d)], vectors, [{"i": i} for i in range(%(rows)d)])
        os.environ[env_var] = "s3:multipart_part_uploaded"   # the segment (> 2 parts) is half uploaded
        await coll.flush(force=True)
        print("crash point not reached", flush=True)

    asyncio.run(run())
    """
)
MULTIPART_DIM, MULTIPART_ROWS = 384, 6000   # ~9.6 MB of vectors: a segment of two 5 MiB parts


async def test_kill9_between_the_parts_of_a_segment_upload_loses_nothing(tmp_path, s3_env, s3_settings_factory):
    """The flush's segment goes up as a multipart upload; the writer is killed after its first
    part.  Nothing was published, so a new node serves every acknowledged document (from the
    WAL), and the restarted writer empties its scratch directory and flushes again."""
    s3 = s3_settings_factory()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    child = MULTIPART_CHILD % {"dim": MULTIPART_DIM, "rows": MULTIPART_ROWS}
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", child, str(tmp_path / "writer"), s3.endpoint, s3.bucket, s3.prefix, s3.region, ENV_VAR],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert "crash point 's3:multipart_part_uploaded' reached" in proc.stderr
    scratch = tmp_path / "writer" / "scratch"
    assert any(scratch.iterdir()), "the half-uploaded segment's file should be left by the kill"

    vectors = np.random.default_rng(1).standard_normal((MULTIPART_ROWS, MULTIPART_DIM)).astype(np.float32)
    ids = [f"m{i}" for i in range(MULTIPART_ROWS)]
    settings = engine_settings(str(tmp_path / "writer"), s3, "s3_only", partitions=PartitionsSettings(rows_per_partition=200))
    for data_dir in ("writer", "fresh"):   # the restarted writer, then a new node after its flush
        engine = Engine(msgspec.structs.replace(settings, storage=msgspec.structs.replace(
            settings.storage, data_dir=str(tmp_path / data_dir))))
        await engine.start()
        try:
            assert not any(scratch.iterdir())
            coll = engine.get_collection("docs")
            assert coll.count() == MULTIPART_ROWS
            docs = await coll.get(ids[::500])
            assert [d.id for d in docs] == ids[::500]
            for doc in docs:
                np.testing.assert_array_equal(doc.vector, vectors[int(doc.id[1:])])
            if data_dir == "writer":
                await coll.flush(force=True)   # the segment upload, whole this time
                assert len(coll.manifest.segments) == 1 and coll.manifest.segments[0].rows == MULTIPART_ROWS
            else:
                assert [r.rows for r in coll.manifest.segments] == [MULTIPART_ROWS]
        finally:
            await engine.close()
