"""s3_only over real HTTP: kill -9 a server after acknowledgements, then a new node with empty
caches (another data directory) returns every acknowledged document."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.server_process import ServerProcess

pytestmark = [pytest.mark.s3, pytest.mark.crash]

DIM = 4


def server_env(s3_server, settings) -> dict[str, str]:
    return {
        "TIERDB_S3_ENDPOINT": settings.endpoint,
        "TIERDB_S3_BUCKET": settings.bucket,
        "TIERDB_S3_PREFIX": settings.prefix,
        "TIERDB_S3_REGION": settings.region,
        "AWS_ACCESS_KEY_ID": s3_server.access_key or "",
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key or "",
        "TIERDB_COMPACTION_THRESHOLD_OPS": "25",
        "TIERDB_COMPACTION_INTERVAL_SECS": "0.2",
        "TIERDB_INDEX_THRESHOLD": "50",
        "TIERDB_LOG_LEVEL": "WARNING",
    }


def test_s3_only_kill9_then_fresh_node_serves_every_acknowledged_write(tmp_path, s3_server, s3_settings_factory):
    env = server_env(s3_server, s3_settings_factory())
    acked: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def writer(wid: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            n = 0
            while not stop.is_set():
                ids = [f"w{wid}-{n}-{j}" for j in range(3)]
                n += 1
                docs = [{"id": i, "vector": [wid, n, j, 1.0], "metadata": {"w": wid}} for j, i in enumerate(ids)]
                try:
                    ok = client.post("/v1/collections/docs/documents", json={"documents": docs}).status_code == 200
                except httpx.HTTPError:
                    return
                if not ok:
                    return
                with lock:
                    acked.update(ids)

    with ServerProcess(tmp_path / "node-a", policy="s3_only", env=env) as node_a:
        node_a.start()
        with node_a.client() as client:
            assert client.post("/v1/collections", json={"name": "docs", "dimension": DIM}).status_code == 201
        threads = [threading.Thread(target=writer, args=(w, node_a.url)) for w in range(4)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        node_a.kill()
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert len(acked) > 30

    with ServerProcess(tmp_path / "node-b", policy="s3_only", env=env) as node_b:
        node_b.start()
        with node_b.client() as client:
            ids = sorted(acked)
            found = set()
            for start in range(0, len(ids), 500):
                r = client.post("/v1/collections/docs/documents/get", json={"ids": ids[start : start + 500]})
                assert r.status_code == 200, r.text
                found |= {d["id"] for d in r.json()["documents"]}
            assert found == acked
            assert client.get("/v1/collections/docs").json()["tiering_policy"] == "s3_only"
        assert node_b.stop() == 0, node_b.log_tail()
