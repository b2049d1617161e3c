"""Issue 9 item 1 against the real S3 server: an interrupted memory_s3 restore never makes a
collection vanish, and no node publishes a manifest over an unrelated one in S3."""

from __future__ import annotations

import asyncio
import os
import shutil

import msgspec
import numpy as np
import pytest
from litestar.testing import AsyncTestClient

from tierdb import keys
from tierdb.cli import restore_verify as tools
from tierdb.api.app import create_app
from tierdb.engine import manifest as manifests
from tierdb.node import Engine
from tierdb.errors import ErrorKind, TierDBError
from tierdb.models import CollectionSpec, Manifest

pytestmark = pytest.mark.s3

DIM = 8


async def started(settings) -> Engine:
    engine = Engine(settings)
    await engine.start()
    return engine


async def wait_ready(client, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await client.get("/health/ready")).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, "server not ready"
        await asyncio.sleep(0.05)


async def fill(coll, start: int, n: int, *, flush: bool = False) -> None:
    rng = np.random.default_rng(start)
    await coll.upsert([f"d{i}" for i in range(start, start + n)], rng.standard_normal((n, DIM)).astype(np.float32))
    if flush:
        await coll.flush(force=True)


async def shipped_node(settings, n_segment: int = 120, n_wal: int = 40) -> set[str]:
    """A node whose collection 'docs' (two segments + a WAL tail) is entirely in S3."""
    node = await started(settings)
    await node.create_collection(CollectionSpec(name="docs", dimension=DIM))
    coll = node.get_collection("docs")
    await fill(coll, 0, n_segment // 2, flush=True)
    await fill(coll, n_segment // 2, n_segment - n_segment // 2, flush=True)
    await fill(coll, n_segment, n_wal)
    await coll.uploader.run_once()
    ids = set(coll.ids())
    await node.close()
    return ids


def interrupt_restore(data_dir: str, name: str = "docs") -> None:
    """What a kill between 'segments written' and 'manifest written' left with the old restore:
    segments, WAL and upload state in collections/<name>/, no manifest."""
    shutil.rmtree(os.path.join(data_dir, keys.manifest_prefix(name)))
    assert os.listdir(os.path.join(data_dir, keys.segment_prefix(name)))


async def s3_versions(remote, name: str = "docs") -> list[int]:
    return await manifests.versions(remote, name)


async def test_interrupted_restore_on_the_writer_node_is_redone_and_recreate_is_refused(make_settings):
    """The issue's data loss: the node lost its collection directory, the restore was killed
    before the manifest, the node restarted (collection gone, health ok), a client re-created
    the collection and the node published an empty manifest over the full one in S3."""
    settings = make_settings("a")
    acked = await shipped_node(settings)
    data_dir = settings.storage.data_dir
    shutil.rmtree(os.path.join(data_dir, "collections", "docs"))
    node = await started(settings)                      # restores from S3 (same node id)
    await node.close()
    interrupt_restore(data_dir)

    node = await started(settings)
    coll = node.get_collection("docs")                  # was 404 before the fix
    assert set(coll.ids()) == acked
    assert all(s.state == "ready" for s in node.collection_stats())
    versions = await s3_versions(node.remote)
    with pytest.raises(TierDBError) as err:
        await node.create_collection(CollectionSpec(name="docs", dimension=DIM))
    assert err.value.kind is ErrorKind.CONFLICT
    await fill(coll, 1000, 5)
    await coll.uploader.run_once()
    await node.close()
    assert (await s3_versions(node.remote))[: len(versions)] == versions

    fresh = await started(make_settings("fresh"))
    assert set(fresh.get_collection("docs").ids()) == acked | {f"d{i}" for i in range(1000, 1005)}
    await fresh.close()


async def test_cli_restore_treats_a_directory_without_manifest_as_unfinished(make_settings):
    settings = make_settings("a")
    acked = await shipped_node(settings)
    restored_dir = make_settings("b")
    rows = await tools.restore_from_s3(restored_dir, None, force=False)
    assert [r["status"] for r in rows] == ["restored"]
    interrupt_restore(restored_dir.storage.data_dir)
    rows = await tools.restore_from_s3(restored_dir, None, force=False)
    assert [r["status"] for r in rows] == ["restored"], rows      # was "skipped: exists locally"
    rows = await tools.restore_from_s3(restored_dir, None, force=False)
    assert [r["status"] for r in rows] == ["skipped"]
    node = await started(restored_dir)
    assert set(node.get_collection("docs").ids()) == acked
    await node.close()


async def test_directory_without_manifest_and_no_s3_copy_is_reported_not_hidden(make_settings):
    settings = make_settings("a")
    data_dir = settings.storage.data_dir
    ghost = os.path.join(data_dir, keys.segment_prefix("ghost"))
    os.makedirs(ghost)
    with open(os.path.join(ghost, "0" * 32 + ".seg"), "wb") as f:
        f.write(b"partial")
    os.makedirs(os.path.join(data_dir, keys.wal_prefix("emptyleft")))   # an interrupted create

    async with AsyncTestClient(create_app(settings)) as client:
        await wait_ready(client)
        health = (await client.get("/health")).json()
        assert health["status"] == "degraded" and health["checks"]["collections"] == {"ghost": "failed"}
        r = await client.get("/v1/collections/ghost")
        assert r.status_code == 503 and "has no manifest" in r.json()["message"], r.text
    assert os.path.exists(ghost)                                         # kept for the operator
    assert not os.path.exists(os.path.join(data_dir, "collections", "emptyleft"))


async def test_create_when_s3_holds_the_collection_is_409_and_s3_unchanged(make_settings):
    late = await started(make_settings("b"))             # started before the collection existed
    settings = make_settings("a")
    await shipped_node(settings)
    before = await s3_versions(late.remote)
    with pytest.raises(TierDBError) as err:
        await late.create_collection(CollectionSpec(name="docs", dimension=DIM))
    assert err.value.kind is ErrorKind.CONFLICT
    assert f"manifest version {before[-1]}" in err.value.message and "replace=true" in err.value.message
    assert "docs" not in {c.name for c in late.list_collections()}
    assert await s3_versions(late.remote) == before
    await late.close()


async def test_create_over_http_409_names_the_problem_and_replace_flag_is_validated(make_settings):
    await shipped_node(make_settings("a"))
    app_settings = make_settings("b")
    async with AsyncTestClient(create_app(app_settings)) as client:
        await wait_ready(client)
        r = await client.delete("/v1/collections/docs")             # node b had restored it: drop
        assert r.status_code == 204
        await shipped_node(make_settings("a2"))                      # S3 holds docs again
        r = await client.post("/v1/collections", json={"name": "docs", "dimension": DIM, "tiering_policy": "memory_s3"})
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "conflict" and "replace=true" in r.json()["message"]
        r = await client.post("/v1/collections", json={"name": "docs", "dimension": DIM, "replace": "yes"})
        assert r.status_code == 400, r.text
        r = await client.post("/v1/collections", json={"name": "docs", "dimension": DIM, "replace": True,
                                                       "tiering_policy": "memory_s3"})
        assert r.status_code == 201, r.text
        assert r.json()["count"] == 0


@pytest.mark.parametrize("policy", ["memory_s3", "s3_only"])
async def test_replace_takes_over_and_a_fresh_node_restores_the_new_contents(make_settings, policy):
    late = await started(make_settings("b"))
    old_writer = await started(make_settings("a"))
    await old_writer.create_collection(CollectionSpec(name="docs", dimension=DIM))
    old = old_writer.get_collection("docs")
    await fill(old, 0, 100, flush=True)
    await fill(old, 100, 20)
    await old.uploader.run_once()
    old_versions = await s3_versions(late.remote)

    await late.create_collection(CollectionSpec(name="docs", dimension=DIM, tiering_policy=policy), replace=True)
    new = late.get_collection("docs")
    assert new.count() == 0
    assert new.manifest.version > old_versions[-1]
    await fill(new, 500, 30, flush=True)
    await fill(new, 530, 7)
    if new.uploader is not None:
        await new.uploader.run_once()
    versions = await s3_versions(late.remote)
    assert versions[: len(old_versions)] == old_versions and versions[-1] > old_versions[-1]

    await fill(old, 200, 5)                                  # the old incarnation's writer is fenced
    await old.uploader.run_once()
    assert old.state == "fenced"
    await old_writer.close()
    await late.close()

    fresh = await started(make_settings("fresh"))
    assert set(await fresh.get_collection("docs").live_ids()) == {f"d{i}" for i in range(500, 537)}
    assert fresh.get_collection("docs").info().tiering_policy == policy
    await fresh.close()


async def test_uploader_never_adopts_a_manifest_of_another_incarnation(make_settings):
    """Same node id, other incarnation (a predecessor of the same name): fenced, not adopted."""
    node = await started(make_settings("a"))
    await node.create_collection(CollectionSpec(name="docs", dimension=DIM))
    coll = node.get_collection("docs")
    next_version = coll.uploader.state.s3_version + 1
    predecessor = Manifest(
        version=next_version,
        spec=msgspec.structs.replace(coll.spec, incarnation="an-older-incarnation"),
        segments=[], wal_seq=0, created_at=0.0, writer_id=node.writer_id,
    )
    await manifests.publish(node.remote, predecessor)
    await fill(coll, 0, 10, flush=True)
    await coll.uploader.run_once()
    assert coll.state == "fenced"
    assert await s3_versions(node.remote) == list(range(1, next_version + 1))
    key = keys.manifest_key("docs", next_version)
    assert manifests.decode(await node.remote.get(key), source=key).spec.incarnation == "an-older-incarnation"
    await node.close()
