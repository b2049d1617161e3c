"""S3 down 60 s then back, no human action: a memory_s3 server process keeps acknowledging
writes through the outage, its uploads keep retrying (never the DLQ) while the upload lag grows,
and once the real S3 server is back the lag returns to 0 by itself and a fresh node restored
from S3 holds every acknowledged document.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.server_process import ServerProcess
from tierdb.testing.s3_server import S3Server

pytestmark = pytest.mark.s3

NAME = "docs"
DIM = 4
OUTAGE_SECS = 60.0
STATUS = f"/admin/collections/{NAME}/status"
ENV = {
    "TIERDB_UPLOADER_INTERVAL_SECS": "0.5",
    # Default uploader backoff shape (full jitter, doubling), capped low so recovery is prompt.
    "TIERDB_UPLOADER_BACKOFF_MAX_SECS": "4",
    "TIERDB_RETRY_MAX_RETRIES": "3",
    "TIERDB_RETRY_BASE_BACKOFF_SECS": "0.2",
    "TIERDB_RETRY_MAX_BACKOFF_SECS": "1",
    "TIERDB_S3_CONNECT_TIMEOUT_SECS": "1",
    "TIERDB_S3_READ_TIMEOUT_SECS": "5",
    "TIERDB_COMPACTION_INTERVAL_SECS": "2",
    "TIERDB_COMPACTION_THRESHOLD_OPS": "300",   # segments get flushed (and must ship) during the test
}


def batch(start: int, n: int) -> dict:
    return {"documents": [
        {"id": f"d{i}", "vector": [float(i % 7), float(i % 11), float(i % 13), 1.0], "metadata": {"i": i}}
        for i in range(start, start + n)
    ]}


def write(client: httpx.Client, start: int, n: int) -> list[str]:
    r = client.post(f"/v1/collections/{NAME}/documents", json=batch(start, n))
    assert r.status_code == 200, r.text
    return [f"d{i}" for i in range(start, start + n)]


def wait_caught_up(client: httpx.Client, deadline_secs: float) -> dict:
    deadline = time.monotonic() + deadline_secs
    while True:
        stats = client.get(STATUS).json()
        assert stats["dlq_size"] == 0, stats
        if stats["upload_queue_size"] == 0 and stats["upload_lag_secs"] == 0 and stats["upload_failures"] == 0:
            return stats
        assert time.monotonic() < deadline, f"uploads did not catch up by themselves: {stats}"
        time.sleep(0.25)


def test_memory_s3_s3_down_60s_then_back_heals_without_human_action(tmp_path, s3_up: S3Server, s3_prefix):
    if not s3_up.controllable:
        pytest.skip("the S3 server was given from outside; it cannot be stopped here")
    env = {**ENV, **s3_up.server_env(s3_prefix)}
    acked: list[str] = []
    with ServerProcess(tmp_path / "node-a", policy="memory_s3", env=env) as node, node.client() as client:
        node.start()
        assert client.post("/v1/collections", json={"name": NAME, "dimension": DIM}).status_code == 201
        acked += write(client, 0, 200)
        wait_caught_up(client, 60)

        s3_up.stop()
        try:
            outage_ends = time.monotonic() + OUTAGE_SECS
            while time.monotonic() < outage_ends:        # writes keep being acknowledged
                acked += write(client, len(acked), 50)
                stats = client.get(STATUS).json()
                assert stats["dlq_size"] == 0, f"a transient failure reached the DLQ: {stats}"
                time.sleep(1.0)
            stats = client.get(STATUS).json()
            assert stats["upload_failures"] > 0 and stats["upload_error"], stats
            assert stats["upload_lag_secs"] > OUTAGE_SECS / 2, f"the lag must grow during the outage: {stats}"
            assert client.get("/health").json()["checks"]["s3"]["reachable"] is False
        finally:
            s3_up.start()

        stats = wait_caught_up(client, 60)              # no dlq/retry, no restart: by itself
        assert stats["count"] == len(acked), stats
        assert client.get("/health").json()["checks"]["s3"]["reachable"] is True
        assert node.stop() == 0, node.log_tail()

    with ServerProcess(tmp_path / "fresh", policy="memory_s3", env=env) as fresh, fresh.client() as client:
        fresh.start()                                    # restored from S3 alone
        assert client.get(f"/v1/collections/{NAME}").json()["count"] == len(acked)
        r = client.post(f"/v1/collections/{NAME}/documents/get", json={"ids": acked})
        assert sorted(d["id"] for d in r.json()["documents"]) == sorted(acked)
        assert fresh.stop() == 0, fresh.log_tail()


def test_s3_only_flush_and_merge_through_an_outage_heal_without_human_action(tmp_path, s3_up: S3Server, s3_prefix):
    """s3_only, partitioned segments: S3 refuses connections while the compaction worker tries
    to flush (the segment PUT fails mid-flush).  Queries keep serving every acknowledged document
    (partitions from the disk cache, rows from the memtable), a write is refused rather than
    acknowledged, and once S3 is back the flush completes by itself: a fresh node with empty
    caches serves every acknowledged document."""
    if not s3_up.controllable:
        pytest.skip("the S3 server was given from outside; it cannot be stopped here")
    env = {**ENV, **s3_up.server_env(s3_prefix), "TIERDB_COMPACTION_INTERVAL_SECS": "0.5",
           "TIERDB_COMPACTION_THRESHOLD_OPS": "100", "TIERDB_COMPACTION_MAX_AGE_SECS": "1",
           "TIERDB_PARTITIONS_ROWS_PER_PARTITION": "20"}
    with ServerProcess(tmp_path / "node-a", policy="s3_only", env=env) as node, node.client() as client:
        node.start()
        assert client.post("/v1/collections", json={"name": NAME, "dimension": DIM}).status_code == 201
        acked = write(client, 0, 300)                  # flushed into partitioned segments
        acked += write(client, 300, 40)                # in the memtable when S3 goes
        s3_up.stop()
        try:
            time.sleep(OUTAGE_SECS / 2)                # the worker's flushes fail meanwhile
            stats = client.get(STATUS).json()
            assert stats["memtable_rows"] + stats["count"] >= len(acked), stats
            r = client.post(f"/v1/collections/{NAME}/documents/get", json={"ids": acked})
            assert sorted(d["id"] for d in r.json()["documents"]) == sorted(acked)
            hits = client.post(f"/v1/collections/{NAME}/query", json={"vector": [1.0, 2.0, 3.0, 1.0], "k": 5, "nprobe": 4096})
            assert hits.status_code == 200 and len(hits.json()["results"]) == 5, hits.text
            refused = client.post(f"/v1/collections/{NAME}/documents", json=batch(1000, 1))
            assert refused.status_code == 503, refused.text   # not acknowledged: nothing to lose
        finally:
            s3_up.start()
        deadline = time.monotonic() + 60
        while (stats := client.get(STATUS).json())["memtable_rows"] or stats["state"] != "ready":
            assert time.monotonic() < deadline, f"the flush did not complete by itself: {stats}"
            time.sleep(0.25)
        acked += write(client, 340, 10)                # writes are acknowledged again
        assert client.get(f"/v1/collections/{NAME}").json()["count"] == len(acked)
        assert node.stop() == 0, node.log_tail()

    with ServerProcess(tmp_path / "fresh", policy="s3_only", env=env) as fresh, fresh.client() as client:
        fresh.start()                                    # empty data dir and caches: S3 alone
        assert client.get(f"/v1/collections/{NAME}").json()["count"] == len(acked)
        r = client.post(f"/v1/collections/{NAME}/documents/get", json={"ids": acked})
        assert sorted(d["id"] for d in r.json()["documents"]) == sorted(acked)
        assert fresh.stop() == 0, fresh.log_tail()
