"""kill -9 inside a grow-merge or a grow-flush loses nothing.

A real process builds a collection (memory policy) and SIGKILLs itself at a named step of a
merge or flush that grows a segment's index (``TIERDB_TEST_CRASH_AT``, tierdb/crashpoints.py):
after the new segment is stored, and after the new manifest is published but before it is
installed.  Reopened on the same data directory: every acknowledged document is there with its
vector, no deleted one is, and the next merge completes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tierdb.crashpoints import ENV_VAR
from tierdb.engine.maintenance import MAINTENANCE_STEPS
from tierdb.node import Engine

from tests.engine.conftest import make_settings, random_vectors, spec

pytestmark = pytest.mark.crash

DIM = 16
DELETED = ["3", "250", "330"]

CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from tests.engine.conftest import make_settings, random_vectors, spec
    from tierdb.node import Engine

    data_dir, operation, step, env_var = sys.argv[1:]

    async def run():
        ratio = 0 if operation == "merge" else 64
        engine = Engine(make_settings(data_dir, flush_grow_ratio=ratio))
        await engine.start()
        await engine.create_collection(spec(dimension=%(dim)d))
        coll = engine.get_collection("docs")
        vectors = random_vectors(400, %(dim)d)
        await coll.upsert([str(i) for i in range(300)], vectors[:300])
        await coll.flush(force=True)
        await coll.upsert([str(i) for i in range(300, 400)], vectors[300:])
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
async def test_kill9_during_grow_loses_nothing(tmp_path, operation, step):
    data_dir = str(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CHILD, data_dir, operation, step, ENV_VAR],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert f"crash point {step!r} reached" in proc.stderr

    vectors = random_vectors(400, DIM)
    live = [str(i) for i in range(400) if str(i) not in DELETED]
    for _ in range(2):  # after the crash, then after a merge that completes
        engine = Engine(make_settings(data_dir, flush_grow_ratio=0))
        await engine.start()
        coll = engine.get_collection("docs")
        assert sorted(coll.ids(), key=int) == live
        docs = await coll.get(live)
        assert sorted((d.id for d in docs), key=int) == live
        for doc in docs:
            np.testing.assert_allclose(doc.vector, vectors[int(doc.id)], rtol=1e-6)
        assert await coll.get(DELETED) == []
        hits = await coll.query(vectors[[3, 250, 330, 10, 350]], k=5)
        for row in hits:
            assert not {h.id for h in row} & set(DELETED)
        assert hits[3][0].id == "10" and hits[4][0].id == "350"
        await coll.compact(full=True)
        assert sum(s.live_count() for s in coll.segments) == len(live)
        await engine.close()

