"""The HTTP API over S3 policies: health reports S3 reachability, policies are per collection."""

from __future__ import annotations

import asyncio

import pytest
from litestar.testing import AsyncTestClient

from tierdb.api.app import create_app

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
