"""Health probes, /metrics, request ids."""

from __future__ import annotations

import asyncio
import shutil
import time

from prometheus_client.parser import text_string_to_metric_families

from tierdb import __version__

from .conftest import Client, create, seeded, unit

PAUSE_SECS = 0.05


async def test_health_reports_ok_with_collection_states(client: Client) -> None:
    await create(client, "docs")
    started = time.perf_counter()
    response = await client.get("/health")
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ok"
    assert report["version"] == __version__
    assert report["ready"] is True
    # The uptime is seconds on a clock that moves with real time: it advances between two
    # probes by at least the pause between them and at most the time both took.
    await asyncio.sleep(PAUSE_SECS)
    later = (await client.get("/health")).json()["uptime_secs"]
    elapsed = time.perf_counter() - started
    assert report["uptime_secs"] > 0
    assert PAUSE_SECS - 0.002 <= later - report["uptime_secs"] <= elapsed + 0.002, (report["uptime_secs"], later, elapsed)
    assert report["checks"]["data_dir_writable"] is True
    assert report["checks"]["collections"] == {"docs": "ready"}


async def test_live_and_ready(client: Client) -> None:
    live = await client.get("/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    ready = await client.get("/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_health_is_503_when_the_data_dir_is_gone(client: Client, data_dir) -> None:
    shutil.rmtree(data_dir)
    response = await client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert response.json()["checks"]["data_dir_writable"] is False
    assert (await client.get("/health/live")).status_code == 200


async def test_failed_recovery_keeps_the_node_unready(open_client, monkeypatch) -> None:
    from tierdb.node import Engine

    async def failing_start(self):
        raise OSError("disk on fire")

    monkeypatch.setattr(Engine, "start", failing_start)
    async with open_client(ready=False) as client:
        for _ in range(100):
            report = (await client.get("/health")).json()
            if report["checks"]["startup_error"]:
                break
        assert report["status"] == "unhealthy"
        assert "disk on fire" in report["checks"]["startup_error"]
        ready = await client.get("/health/ready")
        assert (ready.status_code, ready.json()) == (503, {"status": "failed"})
        response = await client.get("/v1/collections")
        assert response.status_code == 503
        assert "failed to start" in response.json()["message"]


def _samples(text: str, name: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


async def test_metrics_use_route_templates_and_expose_engine_gauges(client: Client) -> None:
    await seeded(client, "secretname", n=4)
    await client.post("/v1/collections/secretname/query", json={"vector": unit(0)})
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["content-type"].count("charset") == 1
    text = response.text
    routes = {s.labels["route"] for s in _samples(text, "http_request_duration_seconds_count")}
    assert "/v1/collections/{name}/query" in routes
    assert "/v1/collections/{name}/documents" in routes
    assert not any("secretname" in route for route in routes)
    documents = {s.labels["collection"]: s.value for s in _samples(text, "storage_documents")}
    assert documents.get("secretname") == 4


async def test_every_response_carries_a_request_id(client: Client) -> None:
    for response in (await client.get("/health"), await client.get("/nope"), await client.get("/metrics")):
        assert len(response.headers["x-request-id"]) == 32
    assert (await client.get("/health", headers={"x-request-id": "abc"})).headers["x-request-id"] == "abc"
