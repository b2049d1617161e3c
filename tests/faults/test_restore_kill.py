"""Kill during restore at every step → all collections back.

A real ``tierdb serve`` process restores two memory_s3 collections from the real S3 server into
an empty data directory and SIGKILLs itself at one named step of the restore
(``TIERDB_TEST_CRASH_AT=restore:<step>``, see tierdb/crashpoints.py).  Restarted on the same data
directory, it must serve every collection with every acknowledged document, report ``ok``, and
accept writes; S3 must be untouched by the crash.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.server_process import ServerProcess
from tierdb.config import IndexSettings
from tierdb.crashpoints import ENV_VAR
from tierdb.engine import manifest as manifests
from tierdb.engine.restore import RESTORE_STEPS
from tierdb.models import CollectionSpec

from .conftest import plain_store, started

pytestmark = [pytest.mark.s3, pytest.mark.crash]

DIM = 8
# rows per collection: the first batch goes into segments, the rest stays in WAL objects
COLLECTIONS = {"alpha": (120, 37), "beta": (90, 11)}


def _ids(name: str, start: int, n: int) -> list[str]:
    return [f"{name}-{i}" for i in range(start, start + n)]


async def _seed_s3(settings) -> dict[str, set[str]]:
    """Node A: each collection gets two segments and a WAL tail, all shipped to S3."""
    node = await started(settings)
    acked: dict[str, set[str]] = {}
    rng = np.random.default_rng(7)
    for name, (in_segments, in_wal) in COLLECTIONS.items():
        await node.create_collection(CollectionSpec(name=name, dimension=DIM, tiering_policy="memory_s3"))
        coll = node.get_collection(name)
        half = in_segments // 2
        for start, n in ((0, half), (half, in_segments - half)):
            await coll.upsert(_ids(name, start, n), rng.standard_normal((n, DIM)).astype(np.float32))
            await coll.flush(force=True)
        await coll.upsert(_ids(name, in_segments, in_wal), rng.standard_normal((in_wal, DIM)).astype(np.float32))
        await coll.uploader.run_once()
        assert coll.uploader.shipped_seq() >= coll.last_seq
        assert len(coll.manifest.segments) == 2
        acked[name] = set(coll.ids())
    await node.close()
    return acked


def _server_env(settings) -> dict[str, str]:
    s3 = settings.s3
    return {
        "TIERDB_S3_ENDPOINT": s3.endpoint,
        "TIERDB_S3_BUCKET": s3.bucket,
        "TIERDB_S3_PREFIX": s3.prefix,
        "TIERDB_S3_REGION": s3.region,
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        "TIERDB_LOG_LEVEL": "WARNING",
    }


def _served_ids(client, name: str, expected: set[str]) -> set[str]:
    r = client.post(f"/v1/collections/{name}/documents/get", json={"ids": sorted(expected)})
    assert r.status_code == 200, r.text
    return {d["id"] for d in r.json()["documents"]}


@pytest.mark.parametrize("step", RESTORE_STEPS)
async def test_kill_during_restore_at_every_step_all_collections_back(step, tmp_path, make_settings, s3_env):
    settings = make_settings("a", index=IndexSettings(threshold=32, ef_construction=50, ef_search=32))
    acked = await _seed_s3(settings)
    remote = plain_store(settings, s3_env)
    before = {name: await manifests.versions(remote, name) for name in COLLECTIONS}

    env = _server_env(settings)
    with ServerProcess(tmp_path / "b", policy="memory_s3", env=env | {ENV_VAR: f"restore:{step}"}) as node:
        node.start(wait=False)
        code = node.process.wait(120)
        assert code == -9, f"expected the crash point restore:{step} to SIGKILL the server\n{node.log_tail()}"
    assert {name: await manifests.versions(remote, name) for name in COLLECTIONS} == before  # S3 untouched

    with ServerProcess(tmp_path / "b", policy="memory_s3", env=env) as node:
        node.start()
        with node.client() as client:
            health = client.get("/health").json()
            assert health["status"] == "ok", health
            for name, ids in acked.items():
                assert client.get(f"/v1/collections/{name}").json()["count"] == len(ids)
                assert _served_ids(client, name, ids) == ids
            r = client.post("/v1/collections/alpha/documents",
                            json={"documents": [{"id": "after", "vector": [0.5] * DIM}]})
            assert r.status_code == 200, r.text
        assert node.stop() == 0, node.log_tail()
    leftovers = [e for e in os.listdir(tmp_path / "b" / "collections") if e.startswith(".")]
    assert leftovers == []
    await remote.close()
