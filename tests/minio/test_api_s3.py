"""The HTTP API over S3 policies: health reports S3 reachability, policies are per collection."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from tierdb.api.app import create_app
from tierdb.config import NodeSettings

pytestmark = pytest.mark.s3


@pytest.fixture
def app_factory(make_settings):
    def make(node: str = "a"):
        return create_app(make_settings(node))

    return make


async def wait_ready(client) -> None:
    for _ in range(200):
        if (await client.get("/health/ready")).status_code == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not ready")


async def test_health_reports_s3_reachability_and_policies_per_collection(app_factory, s3_server):
    async with AsyncTestClient(app_factory()) as client:
        await wait_ready(client)
        health = (await client.get("/health")).json()
        assert health["status"] == "ok"
        assert health["checks"]["s3"]["reachable"] is True and health["checks"]["s3"]["latency_ms"] > 0
        assert health["checks"]["scheduler_running"] is True
        for name, policy in (("local", "memory"), ("shipped", "memory_s3"), ("remote", "S3Only")):
            r = await client.post("/v1/collections", json={"name": name, "dimension": 2, "tiering_policy": policy})
            assert r.status_code == 201, r.text
        policies = {c["name"]: c["tiering_policy"] for c in (await client.get("/v1/collections")).json()["collections"]}
        assert policies == {"local": "memory", "shipped": "memory_s3", "remote": "s3_only"}
        r = await client.post("/v1/collections/remote/documents", json={"documents": [{"id": "a", "vector": [1, 0]}]})
        assert r.status_code == 200
        if not s3_server.controllable:
            return
        s3_server.stop()
        try:
            health = await client.get("/health")
            assert health.status_code == 200 and health.json()["status"] == "degraded"
            assert health.json()["checks"]["s3"]["reachable"] is False
            r = await client.post("/v1/collections/remote/documents", json={"documents": [{"id": "b", "vector": [0, 1]}]})
            assert r.status_code == 503, r.text       # s3_only cannot acknowledge without S3
            r = await client.post("/v1/collections/shipped/documents", json={"documents": [{"id": "b", "vector": [0, 1]}]})
            assert r.status_code == 200               # memory_s3 acknowledges locally
        finally:
            s3_server.start()
        r = await client.post("/v1/collections/remote/documents", json={"documents": [{"id": "c", "vector": [0, 1]}]})
        assert r.status_code == 200, r.text
        got = (await client.post("/v1/collections/remote/documents/get", json={"ids": ["a", "b", "c"]})).json()
        assert {d["id"] for d in got["documents"]} <= {"a", "b", "c"} and {"a", "c"} <= {d["id"] for d in got["documents"]}


async def _warmed(client, name: str) -> dict:
    """POST warm (202), then the node's status until the warm has finished."""
    response = await client.post(f"/admin/collections/{name}/warm")
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "running"
    deadline = asyncio.get_running_loop().time() + 120
    while (warm := (await client.get(f"/admin/collections/{name}/status")).json()["warm"])["state"] == "running":
        assert asyncio.get_running_loop().time() < deadline, warm
        await asyncio.sleep(0.05)
    return warm


async def test_warm_over_the_api_on_a_writer_and_on_a_read_replica(make_settings, s3_server):
    """s3_only segments on a real S3 server: the writer and a reader (which writes nothing to S3)
    both accept a warm and report it done with every segment byte fetched."""
    writer_settings = make_settings("w", policy="s3_only")
    reader_settings = msgspec.structs.replace(
        make_settings("r", policy="s3_only"),
        node=NodeSettings(role="reader", writer_url="http://writer", discover_interval_secs=0.2, poll_max_secs=0.5),
    )
    async with AsyncTestClient(create_app(writer_settings)) as writer:
        await wait_ready(writer)
        r = await writer.post("/v1/collections", json={"name": "big", "dimension": 2, "tiering_policy": "s3_only"})
        assert r.status_code == 201, r.text
        for part in range(3):
            documents = [{"id": f"d{part}-{i}", "vector": [float(i), float(part)]} for i in range(50)]
            assert (await writer.post("/v1/collections/big/documents", json={"documents": documents})).status_code == 200
            assert (await writer.post("/admin/collections/big/compact")).status_code == 200
        status = (await writer.get("/admin/collections/big/status")).json()
        assert status["segments"] == 3
        warm = await _warmed(writer, "big")
        assert (warm["state"], warm["error"], warm["segments_done"], warm["segments_total"]) == ("done", "", 3, 3)
        assert warm["bytes_fetched"] == warm["bytes_total"] > 0
        assert (await writer.post("/admin/collections/nope/warm")).status_code == 404

        async with AsyncTestClient(create_app(reader_settings)) as reader:
            await wait_ready(reader)
            deadline = asyncio.get_running_loop().time() + 60
            while (await reader.get("/v1/collections/big")).status_code != 200:
                assert asyncio.get_running_loop().time() < deadline, "the reader never opened the collection"
                await asyncio.sleep(0.05)
            replica = await _warmed(reader, "big")
            assert (replica["state"], replica["error"], replica["segments_done"]) == ("done", "", 3)
            assert replica["bytes_fetched"] == replica["bytes_total"] == warm["bytes_total"]
            assert (await reader.get("/admin/collections/big/status")).json()["role"] == "reader"
            assert (await reader.post("/admin/collections/nope/warm")).status_code == 404
