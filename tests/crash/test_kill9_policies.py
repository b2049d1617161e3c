"""kill -9 a real server at random instants under concurrent upserts and deletes, for each
tiering policy (memory, memory_s3, s3_only; the S3 ones against the real S3 server of the
session, see tests/conftest.py).

Every round: 4 writer threads (each owning its own ids) send new-id upserts, updates, mixed
batches, deletes by id and deletes by filter; the server gets SIGKILL after a random 0.3-1.5 s;
it is restarted on the same data directory and S3 prefix and checked:

- every restart succeeds (ready, /health "ok", the collection "ready": nothing corrupted);
- every acknowledged write is there (and every acknowledged delete absent), with the vector
  and metadata of exactly that version;
- an unacknowledged batch is wholly applied or wholly absent, never half;
- acknowledged responses counted right (``upserted``, ``deleted``);
- count and a k-NN query agree with what survived.

Small thresholds make flushes, merges, uploads and GC happen while the server is killed.
memory_s3, after the last kill: once the uploader has caught up and the node stopped
gracefully, a FRESH node (new data directory, same S3 prefix) restores a state that is a
consistent prefix of every writer's history (every version it returns was really written,
no batch half-applied) and, the upload having caught up, exactly the final state.

5 kills per policy here + 6 in test_kill9.py = 21 per run.  ``TIERDB_SOAK=1`` runs the soak
variant (``TIERDB_SOAK_KILLS`` kills per policy, default 40).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import pytest

from tests.server_process import ServerProcess

pytestmark = pytest.mark.crash

DIM = 8
COLLECTION = "crash"
WRITERS = 4
KILLS = 5
SOAK_KILLS = int(os.environ.get("TIERDB_SOAK_KILLS", "40"))
SOAK = os.environ.get("TIERDB_SOAK") == "1"
POLICIES = ["memory", "memory_s3", "s3_only"]
# s3_only acknowledges after an S3 PUT per commit batch: far fewer ops per second, so it gets a
# longer window before each kill and a lower flush threshold.
WINDOW_SECS = {"memory": (0.3, 1.5), "memory_s3": (0.3, 1.5), "s3_only": (0.8, 2.0)}
POLICY_ENV = {"s3_only": {"TIERDB_COMPACTION_THRESHOLD_OPS": "15"}}

BASE_ENV = {
    "TIERDB_COMPACTION_THRESHOLD_OPS": "40",
    "TIERDB_COMPACTION_INTERVAL_SECS": "0.2",
    "TIERDB_COMPACTION_MERGE_MIN_SEGMENTS": "3",
    "TIERDB_INDEX_THRESHOLD": "50",
    "TIERDB_LOG_LEVEL": "WARNING",
}
S3_ENV = {
    "TIERDB_RETRY_MAX_RETRIES": "4",
    "TIERDB_RETRY_BASE_BACKOFF_SECS": "0.05",
    "TIERDB_RETRY_MAX_BACKOFF_SECS": "0.5",
    "TIERDB_UPLOADER_INTERVAL_SECS": "0.2",
    "TIERDB_GC_INTERVAL_SECS": "0.5",
    "TIERDB_GC_GRACE_SECS": "2",
    "TIERDB_GC_KEEP_MANIFESTS": "2",
    "TIERDB_S3_CONNECT_TIMEOUT_SECS": "2",
    "TIERDB_S3_READ_TIMEOUT_SECS": "10",
}


# A known bug this test hits at random (when a kill lands between the uploader's manifest PUT and
# its state save); shown deterministically, xfail(strict), by the test named here.  Remove this
# once that test passes.


def vector(version: int) -> list[float]:
    rng = random.Random(version)
    return [rng.uniform(-1, 1) for _ in range(DIM)]


def owner(doc_id: str) -> int:
    return int(doc_id.split("-", 1)[0][1:])


@dataclass
class Op:
    wid: int
    outcome: dict[str, int | None]          # id -> version written, None = deleted
    before: dict[str, int | None]           # id -> acknowledged state before the op


@dataclass
class History:
    """What the clients know. Each writer owns its ids, and stops at its first unacknowledged op,
    so the state of a writer's ids is exactly the result of its acknowledged ops, in order."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0
    acked: dict[str, int | None] = field(default_factory=dict)
    pending: dict[int, Op] = field(default_factory=dict)          # wid -> op in flight at the kill
    log: dict[int, list[dict[str, int | None]]] = field(default_factory=dict)  # wid -> committed ops
    errors: list[str] = field(default_factory=list)
    acked_ops: int = 0

    def next_version(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter

    def live(self, wid: int) -> dict[str, int]:
        with self.lock:
            return {i: v for i, v in self.acked.items() if v is not None and owner(i) == wid}


def _new_ids(wid: int, n: int) -> list[str]:
    return [f"w{wid}-{uuid.uuid4().hex[:12]}" for _ in range(n)]


def _upsert_body(outcome: dict[str, int | None], wid: int) -> dict:
    return {
        "documents": [
            {"id": i, "vector": vector(v), "metadata": {"v": v, "w": wid}}
            for i, v in outcome.items()
            if v is not None
        ]
    }


def writer(url: str, wid: int, hist: History, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=15) as client:
        while not stop.is_set():
            live = hist.live(wid)
            roll = rng.random()
            if roll < 0.45 or len(live) < 5:
                kind = "upsert"
                ids = _new_ids(wid, rng.randint(1, 6))
                outcome = {i: hist.next_version() for i in ids}
            elif roll < 0.65:
                kind = "upsert"  # updates, sometimes mixed with a new id
                ids = rng.sample(sorted(live), min(len(live), rng.randint(1, 4))) + _new_ids(wid, rng.randint(0, 1))
                outcome = {i: hist.next_version() for i in ids}
            elif roll < 0.85:
                kind = "delete"
                ids = rng.sample(sorted(live), min(len(live), rng.randint(1, 3))) + _new_ids(wid, rng.randint(0, 1))
                outcome = dict.fromkeys(ids)
            else:
                kind = "delete_filter"  # the k oldest live versions of this writer
                k = rng.randint(1, 3)
                oldest = sorted(live.items(), key=lambda kv: kv[1])[:k]
                outcome = {i: None for i, _ in oldest}
                limit = oldest[-1][1]
            before = {i: live.get(i) for i in outcome}
            op = Op(wid, outcome, before)
            with hist.lock:
                hist.pending[wid] = op
            if kind == "upsert":
                path, body = f"/v1/collections/{COLLECTION}/documents", _upsert_body(outcome, wid)
                expected = ("upserted", len(outcome))
            elif kind == "delete":
                path, body = f"/v1/collections/{COLLECTION}/documents/delete", {"ids": list(outcome)}
                expected = ("deleted", sum(1 for v in before.values() if v is not None))
            else:
                path = f"/v1/collections/{COLLECTION}/documents/delete"
                body = {"filter": {"w": wid, "v": {"$lte": limit}}}
                expected = ("deleted", len(outcome))
            try:
                response = client.post(path, json=body)
            except httpx.HTTPError:
                return  # the server is gone; the op is decided at the next check
            if response.status_code != 200:
                if response.status_code < 500:
                    with hist.lock:
                        hist.errors.append(f"{kind} got {response.status_code}: {response.text[:300]}")
                return
            got = response.json().get(expected[0])
            with hist.lock:
                if got != expected[1]:
                    hist.errors.append(f"{kind} {body!r:.200}: {expected[0]}={got}, expected {expected[1]}")
                del hist.pending[wid]
                hist.acked.update(outcome)
                hist.log.setdefault(wid, []).append(outcome)
                hist.acked_ops += 1


def observe(url: str, ids: list[str]) -> dict[str, int | None]:
    """id -> version present (None = absent); checks that vector and metadata belong together."""
    found: dict[str, int | None] = dict.fromkeys(ids)
    problems = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, len(ids), 500):
            response = client.post(f"/v1/collections/{COLLECTION}/documents/get", json={"ids": ids[start : start + 500]})
            assert response.status_code == 200, response.text
            for doc in response.json()["documents"]:
                v = doc["metadata"]["v"]
                found[doc["id"]] = v
                if doc["metadata"]["w"] != owner(doc["id"]) or doc["vector"] != pytest.approx(vector(v), abs=1e-6):
                    problems.append(doc["id"])
    assert not problems, f"documents whose vector or metadata do not belong to their version: {problems[:10]}"
    return found


def check_node(url: str, expected_live: int) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        health = client.get("/health").json()
        assert health["status"] == "ok", health
        assert health["checks"]["collections"].get(COLLECTION) == "ready", health
        info = client.get(f"/v1/collections/{COLLECTION}").json()
        assert info["count"] == expected_live, (info, expected_live)
        hits = client.post(f"/v1/collections/{COLLECTION}/query", json={"vector": [0.1] * DIM, "k": 10}).json()
        assert len(hits["results"]) == min(10, expected_live), hits


def check_and_settle(url: str, hist: History) -> None:
    """After a restart: acknowledged outcomes present, pending ops all-or-nothing; then what
    survived becomes the acknowledged truth for the next round."""
    with hist.lock:
        assert not hist.errors, hist.errors
        ids = sorted(hist.acked.keys() | {i for op in hist.pending.values() for i in op.outcome})
    seen = observe(url, ids)
    pending_ids = {i: op for op in hist.pending.values() for i in op.outcome}
    for doc_id in ids:
        if doc_id in pending_ids:
            continue
        assert seen[doc_id] == hist.acked.get(doc_id), (
            f"{doc_id}: acknowledged version {hist.acked.get(doc_id)}, found {seen[doc_id]}"
        )
    for op in hist.pending.values():
        applied = all(seen[i] == v for i, v in op.outcome.items())
        absent = all(seen[i] == op.before[i] for i in op.outcome)
        assert applied or absent, (
            f"writer {op.wid}: batch half-applied: wrote {op.outcome}, before {op.before}, "
            f"found { {i: seen[i] for i in op.outcome} }"
        )
        if applied and not absent:
            hist.log.setdefault(op.wid, []).append(op.outcome)
    hist.pending.clear()
    hist.acked = dict(seen)
    check_node(url, sum(1 for v in seen.values() if v is not None))


def assert_prefix_of_history(hist: History, state: dict[str, int | None]) -> int:
    """``state`` restricted to each writer equals that writer's state after some prefix of its
    committed ops.  Returns how many writers are at their latest state."""
    at_latest = 0
    for wid in range(WRITERS):
        ops = hist.log.get(wid, [])
        mine = {i: v for i, v in state.items() if owner(i) == wid}
        simulated: dict[str, int | None] = {}
        mismatched = {i for i, v in mine.items() if v is not None}
        matched_at = 0 if not mismatched else None
        for n, outcome in enumerate(ops, start=1):
            for i, v in outcome.items():
                simulated[i] = v
                if simulated.get(i) == mine.get(i):
                    mismatched.discard(i)
                else:
                    mismatched.add(i)
            if not mismatched:
                matched_at = n
        assert matched_at is not None, (
            f"writer {wid}: the restored state is not the state after any prefix of its "
            f"{len(ops)} committed ops (e.g. ids {sorted(mismatched)[:5]})"
        )
        at_latest += matched_at == len(ops)
    return at_latest


def run_rounds(server: ServerProcess, hist: History, kills: int, rng: random.Random, window: tuple[float, float]) -> None:
    for round_no in range(kills):
        stop = threading.Event()
        threads = [
            threading.Thread(target=writer, args=(server.url, w, hist, stop, rng.randrange(1 << 30)), daemon=True)
            for w in range(WRITERS)
        ]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(*window))
        server.kill()
        stop.set()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive(), "a writer thread hung"
        server.start()
        check_and_settle(server.url, hist)


def wait_uploaded(url: str, timeout: float = 30.0) -> None:
    """memory_s3: until the uploader has shipped everything (admin status)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=10) as client:
        while True:
            status = client.get(f"/admin/collections/{COLLECTION}/status")
            assert status.status_code == 200, status.text
            stats = status.json()
            assert stats["dlq_size"] == 0, stats
            if stats["upload_queue_size"] == 0 and stats["upload_lag_secs"] == 0:
                return
            assert time.monotonic() < deadline, f"upload did not catch up: {stats}"
            time.sleep(0.2)


@pytest.fixture
def node_env(request: pytest.FixtureRequest, policy: str) -> dict[str, str]:
    if policy == "memory":
        return dict(BASE_ENV)
    s3_server = request.getfixturevalue("s3_server")
    s3_server.ensure_running()
    prefix = f"tests/crash-{uuid.uuid4().hex[:12]}"
    return {**BASE_ENV, **S3_ENV, **POLICY_ENV.get(policy, {}), **s3_server.server_env(prefix)}


def kill9_run(tmp_path, policy: str, env: dict[str, str], kills: int) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    hist = History()
    with ServerProcess(tmp_path / "node-a", policy=policy, env=env) as server:
        server.start()
        with server.client() as client:
            r = client.post("/v1/collections", json={"name": COLLECTION, "dimension": DIM, "metric": "l2"})
            assert r.status_code == 201, r.text
            assert r.json()["tiering_policy"] == policy
        try:
            run_rounds(server, hist, kills, rng, WINDOW_SECS[policy])
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n(seed {seed}, policy {policy})\n{server.log_tail()}") from None
        assert hist.acked_ops > 20 * kills // 5, f"the writers did too little work ({hist.acked_ops} ops)"
        assert sum(1 for v in hist.acked.values() if v is not None) > 20
        with server.client() as client:
            assert client.get(f"/v1/collections/{COLLECTION}").json()["manifest_version"] > 2, (
                "no flush happened during the test"
            )
        if policy == "memory_s3":
            wait_uploaded(server.url)
        assert server.stop() == 0, server.log_tail()

    if policy == "memory_s3":
        with ServerProcess(tmp_path / "fresh", policy=policy, env=env) as fresh:
            fresh.start()
            restored = observe(fresh.url, sorted(hist.acked))
            assert_prefix_of_history(hist, restored)
            assert restored == hist.acked, "the upload had caught up, yet the fresh node lacks writes"
            check_node(fresh.url, sum(1 for v in restored.values() if v is not None))
            assert fresh.stop() == 0, fresh.log_tail()


@pytest.mark.parametrize("policy", POLICIES)
def test_kill9_each_policy_loses_no_acknowledged_write(tmp_path, policy, node_env):
    kill9_run(tmp_path, policy, node_env, KILLS)


@pytest.mark.slow
@pytest.mark.skipif(not SOAK, reason="soak test: set TIERDB_SOAK=1 (TIERDB_SOAK_KILLS kills per policy, default 40)")
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("policy", POLICIES)
def test_kill9_soak(tmp_path, policy, node_env):
    kill9_run(tmp_path, policy, node_env, SOAK_KILLS)


def test_history_prefix_check_rejects_a_half_applied_state():
    """The checker itself: a state mixing a later op with a missing earlier one is rejected."""
    hist = History()
    hist.log[0] = [{"w0-a": 1, "w0-b": 2}, {"w0-a": 3}, {"w0-b": None}]
    for good in ({}, {"w0-a": 1, "w0-b": 2}, {"w0-a": 3, "w0-b": 2}, {"w0-a": 3, "w0-b": None}):
        assert_prefix_of_history(hist, good)
    for bad in ({"w0-a": 1}, {"w0-a": 1, "w0-b": None}, {"w0-b": 2}, {"w0-a": 2, "w0-b": 2}):
        with pytest.raises(AssertionError):
            assert_prefix_of_history(hist, bad)
