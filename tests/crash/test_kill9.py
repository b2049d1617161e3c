"""kill -9 a real server at random instants under concurrent upserts, updates and deletes.

After every restart: every acknowledged write is present (and every acknowledged delete absent),
an unacknowledged batch is wholly applied or wholly absent, and the server starts cleanly.
Small thresholds make flushes and merges happen while the server is being killed.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from tests.server_process import ServerProcess

pytestmark = pytest.mark.crash

DIM = 8
KILLS = 6
WRITERS = 4
ENV = {
    "TIERDB_COMPACTION_THRESHOLD_OPS": "40",
    "TIERDB_COMPACTION_INTERVAL_SECS": "0.2",
    "TIERDB_COMPACTION_MERGE_MIN_SEGMENTS": "3",
    "TIERDB_INDEX_THRESHOLD": "50",
    "TIERDB_LOG_LEVEL": "WARNING",
}


@dataclass
class Truth:
    """What the client knows: the last acknowledged outcome per id, and outcomes in flight."""

    acked: dict[str, int | None] = field(default_factory=dict)        # id -> version, None = deleted
    in_flight: dict[str, list[int | None]] = field(default_factory=dict)
    unacked_batches: list[list[str]] = field(default_factory=list)    # new-id batches in flight at the kill
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    def next_version(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter


def vector(version: int) -> list[float]:
    rng = random.Random(version)
    return [rng.uniform(-1, 1) for _ in range(DIM)]


def writer(url: str, wid: int, truth: Truth, stop: threading.Event) -> None:
    rng = random.Random(wid * 7919 + int(time.time()))
    client = httpx.Client(base_url=url, timeout=10)
    n = 0
    try:
        while not stop.is_set():
            n += 1
            with truth.lock:
                known = [i for i, v in truth.acked.items() if v is not None and i.startswith(f"w{wid}-")]
            roll = rng.random()
            if roll < 0.6 or len(known) < 5:
                ids = [f"w{wid}-{time.time_ns()}-{j}" for j in range(rng.randint(1, 6))]
                outcome: dict[str, int | None] = {i: truth.next_version() for i in ids}
                body = {"documents": [{"id": i, "vector": vector(v), "metadata": {"v": v}} for i, v in outcome.items()]}
                path, new_batch = "/v1/collections/crash/documents", True
            elif roll < 0.8:
                ids = rng.sample(known, min(len(known), rng.randint(1, 4)))
                outcome = {i: truth.next_version() for i in ids}
                body = {"documents": [{"id": i, "vector": vector(v), "metadata": {"v": v}} for i, v in outcome.items()]}
                path, new_batch = "/v1/collections/crash/documents", False
            else:
                ids = rng.sample(known, min(len(known), rng.randint(1, 3)))
                outcome = {i: None for i in ids}
                body = {"ids": ids}
                path, new_batch = "/v1/collections/crash/documents/delete", False
            with truth.lock:
                for i, v in outcome.items():
                    truth.in_flight.setdefault(i, []).append(v)
            try:
                response = client.post(path, json=body)
                acknowledged = response.status_code == 200
            except httpx.HTTPError:
                acknowledged = False
            with truth.lock:
                for i, v in outcome.items():
                    if acknowledged:
                        truth.in_flight[i].remove(v)
                        truth.acked[i] = v
                if not acknowledged and new_batch:
                    truth.unacked_batches.append(list(outcome))
            if not acknowledged:
                return  # the server is gone; the state of this op is decided at the next check
    finally:
        client.close()


def observed_versions(url: str, ids: list[str]) -> dict[str, int | None]:
    found: dict[str, int | None] = dict.fromkeys(ids)
    with httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            response = client.post("/v1/collections/crash/documents/get", json={"ids": chunk})
            assert response.status_code == 200, response.text
            for doc in response.json()["documents"]:
                found[doc["id"]] = doc["metadata"]["v"]
    return found


def check_and_settle(url: str, truth: Truth) -> None:
    ids = sorted(set(truth.acked) | set(truth.in_flight))
    seen = observed_versions(url, ids)
    for doc_id in ids:
        allowed = {truth.acked.get(doc_id)} | set(truth.in_flight.get(doc_id, []))
        assert seen[doc_id] in allowed, (
            f"{doc_id}: found version {seen[doc_id]}, acknowledged {truth.acked.get(doc_id)}, "
            f"in flight {truth.in_flight.get(doc_id)}"
        )
    for batch in truth.unacked_batches:
        present = {doc_id for doc_id in batch if seen[doc_id] is not None}
        assert present in (set(), set(batch)), f"batch half-applied: {sorted(present)} of {batch}"
    # What survived the crash is durable now: it becomes the acknowledged truth.
    truth.acked = {i: v for i, v in seen.items()}
    truth.in_flight.clear()
    truth.unacked_batches.clear()


def test_kill9_loses_no_acknowledged_write(tmp_path):
    truth = Truth()
    rng = random.Random()
    with ServerProcess(tmp_path / "data", env=ENV) as server:
        server.start()
        with server.client() as client:
            r = client.post("/v1/collections", json={"name": "crash", "dimension": DIM, "metric": "l2"})
            assert r.status_code == 201, r.text
        for round_no in range(KILLS):
            stop = threading.Event()
            threads = [threading.Thread(target=writer, args=(server.url, w, truth, stop)) for w in range(WRITERS)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.3, 1.5))
            server.kill()
            stop.set()
            for t in threads:
                t.join(timeout=30)
            server.start()
            check_and_settle(server.url, truth)
        live = sum(1 for v in truth.acked.values() if v is not None)
        assert live > 50, "the writers did too little work for the test to mean anything"
        with server.client() as client:
            info = client.get("/v1/collections/crash").json()
            assert info["count"] == live
            assert info["manifest_version"] > 3, "no flush or merge happened during the test"
            hits = client.post("/v1/collections/crash/query", json={"vector": [0.0] * DIM, "k": 10}).json()["results"]
            assert len(hits) == 10
        assert server.stop() == 0, server.log_tail()
