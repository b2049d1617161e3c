"""Read replicas over a real S3 server, with real server processes: one writer and two readers
(``--role reader``) on loopback."""

from __future__ import annotations

import re
import statistics
import threading
import time

import httpx
import pytest

from tests.server_process import ServerProcess

pytestmark = [pytest.mark.s3]

DIM = 4
DEADLINE = 30.0      # generous: a busy 2-core machine


def node_env(s3_server, settings, **extra: str) -> dict[str, str]:
    return {
        "TIERDB_S3_ENDPOINT": settings.endpoint,
        "TIERDB_S3_BUCKET": settings.bucket,
        "TIERDB_S3_PREFIX": settings.prefix,
        "TIERDB_S3_REGION": settings.region,
        "AWS_ACCESS_KEY_ID": s3_server.access_key or "",
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key or "",
        "TIERDB_COMPACTION_THRESHOLD_OPS": "40",
        "TIERDB_COMPACTION_INTERVAL_SECS": "0.2",
        "TIERDB_UPLOADER_INTERVAL_SECS": "0.2",
        "TIERDB_INDEX_THRESHOLD": "50",
        "TIERDB_NODE_DISCOVER_INTERVAL_SECS": "0.5",
        "TIERDB_NODE_POLL_MAX_SECS": "2",
        "TIERDB_NODE_BUSY_WINDOW_SECS": "2",
        "TIERDB_LOG_LEVEL": "WARNING",
        **extra,
    }


def reader(tmp_path, env, name: str, **extra: str) -> ServerProcess:
    return ServerProcess(tmp_path / name, env={**env, **extra}, extra_args=["--role", "reader",
                                                                              "--writer-url", "http://writer:8080"])


def docs(start: int, n: int) -> list[dict]:
    return [{"id": f"d{i}", "vector": [float(i % 7), float(i % 5), float(i % 3), 1.0 + i / 100],
             "metadata": {"i": i}} for i in range(start, start + n)]


def wait_for(predicate, what: str, deadline: float = DEADLINE):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {deadline} s waiting for {what}")


def query(client: httpx.Client, vector: list[float], **body) -> list[tuple[str, float]]:
    r = client.post("/v1/collections/c/query", json={"vector": vector, "k": 10, **body})
    assert r.status_code == 200, r.text
    return [(h["id"], round(h["distance"], 5)) for h in r.json()["results"]]


def count(client: httpx.Client) -> int | None:
    r = client.get("/v1/collections/c")
    return r.json()["count"] if r.status_code == 200 else None


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m[1] for k, v in labels.items()):
            total += float(m[2])
    assert want is not None
    return total


@pytest.mark.parametrize("policy", ["s3_only", "memory_s3"])
def test_two_readers_answer_exactly_like_the_writer_and_refuse_writes(tmp_path, s3_server, s3_settings_factory, policy):
    env = node_env(s3_server, s3_settings_factory())
    with ServerProcess(tmp_path / "writer", policy=policy, env=env) as writer, \
            reader(tmp_path, env, "r1") as r1, reader(tmp_path, env, "r2") as r2:
        writer.start()
        w = writer.client()
        assert w.post("/v1/collections", json={"name": "c", "dimension": DIM, "tiering_policy": policy}).status_code == 201
        for start in range(0, 300, 30):   # several WAL objects, flushes and manifests
            assert w.post("/v1/collections/c/documents", json={"documents": docs(start, 30)}).status_code == 200
        assert w.post("/v1/collections/c/documents/delete", json={"ids": ["d3", "d4"]}).status_code == 200
        if policy == "memory_s3":
            assert w.post("/admin/collections/c/compact", json={}).status_code == 200   # flush: shipped manifest
        r1.start()
        r2.start()
        clients = [r1.client(), r2.client()]
        expected_count = count(w)
        assert expected_count == 298
        for c in clients:
            wait_for(lambda: count(c) == expected_count, f"{policy} reader to reach {expected_count} documents")
        probes = [[1.0, 2.0, 0.0, 1.5], [6.0, 4.0, 2.0, 3.0], [0.0, 0.0, 1.0, 1.0]]
        for vector in probes:
            expected = query(w, vector, include=["metadata"])
            for c in clients:
                assert query(c, vector, include=["metadata"]) == expected
        for c in clients:
            assert c.post("/v1/collections/c/documents/get", json={"ids": ["d3", "d10"]}).json()["documents"][0]["id"] == "d10"

        # every mutating route answers 403 read_only, naming the writer, and changes nothing
        mutations = [
            ("post", "/v1/collections", {"name": "x", "dimension": DIM}),
            ("delete", "/v1/collections/c", None),
            ("post", "/v1/collections/c/documents", {"documents": docs(1000, 1)}),
            ("post", "/v1/collections/c/documents/delete", {"ids": ["d10"]}),
            ("post", "/admin/collections/c/compact", {}),
            ("post", "/admin/collections/c/dlq/retry", None),
            ("delete", "/admin/collections/c/dlq", None),
        ]
        for c in clients:
            for method, path, body in mutations:
                r = c.request(method.upper(), path, json=body)
                assert r.status_code == 403, (path, r.text)
                assert r.json()["error"] == "read_only", r.text
                assert "http://writer:8080" in r.json()["message"]
                assert r.json()["writer_url"] == "http://writer:8080"
            assert count(c) == expected_count
            assert c.get("/v1/collections").json()["collections"][0]["name"] == "c"
            assert c.get("/health").json()["role"] == "reader"
            status = c.get("/admin/collections/c/status").json()
            assert status["role"] == "reader" and status["wal_seq"] >= 1
            # a reader never sends a PUT or DELETE to S3
            assert metric(c, "storage_s3_requests_total", op="put") == 0
            assert metric(c, "storage_s3_requests_total", op="delete") == 0
            assert metric(c, "replica_applied_wal_seq", collection="c") == status["wal_seq"]
        assert query(w, probes[0]) == query(clients[0], probes[0])


def test_s3_only_write_visible_within_a_second_and_strong_reads_see_it_at_once(tmp_path, s3_server, s3_settings_factory):
    env = node_env(s3_server, s3_settings_factory())
    with ServerProcess(tmp_path / "writer", policy="s3_only", env=env) as writer, reader(tmp_path, env, "r1") as r1:
        writer.start()
        w = writer.client()
        assert w.post("/v1/collections", json={"name": "c", "dimension": DIM}).status_code == 201
        r1.start()
        r = r1.client()
        wait_for(lambda: count(r) == 0, "the reader to discover the collection")

        # strong reads: the acknowledged write is there on the very next request
        for i in range(10):
            assert w.post("/v1/collections/c/documents", json={"documents": docs(i, 1)}).status_code == 200
            got = r.post("/v1/collections/c/documents/get", json={"ids": [f"d{i}"], "consistency": "strong"})
            assert [d["id"] for d in got.json()["documents"]] == [f"d{i}"], got.text
            assert r.get(f"/v1/collections/c/documents/d{i}", headers={"X-TierDB-Consistency": "strong"}).status_code == 200
            hits = query(r, docs(i, 1)[0]["vector"], consistency="strong")
            assert f"d{i}" in [h for h, _ in hits]
        assert r.get("/v1/collections/c/documents/d0", headers={"X-TierDB-Consistency": "always"}).status_code == 400

        # default freshness: time from the writer's acknowledgement to visibility on the reader
        lags = []
        for i in range(100, 140):
            assert w.post("/v1/collections/c/documents", json={"documents": docs(i, 1)}).status_code == 200
            acked = time.monotonic()
            wait_for(lambda: r.get(f"/v1/collections/c/documents/d{i}").status_code == 200, f"d{i} on the reader")
            lags.append(time.monotonic() - acked)
            time.sleep(0.1)
        lags.sort()
        p50, p99 = statistics.median(lags), lags[int(0.99 * (len(lags) - 1))]
        print(f"\nreplica visibility lag over {len(lags)} writes: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
              f"max {lags[-1] * 1000:.0f} ms")
        assert p99 <= 1.0, lags
        status = r.get("/admin/collections/c/status").json()
        assert status["replica_lag_secs"] < 5


def test_readers_survive_a_killed_writer_and_an_s3_outage_then_catch_up(tmp_path, s3_server, s3_settings_factory):
    env = node_env(s3_server, s3_settings_factory())
    with ServerProcess(tmp_path / "writer", policy="s3_only", env=env) as writer, reader(tmp_path, env, "r1") as r1:
        writer.start()
        w = writer.client()
        assert w.post("/v1/collections", json={"name": "c", "dimension": DIM}).status_code == 201
        assert w.post("/v1/collections/c/documents", json={"documents": docs(0, 50)}).status_code == 200
        r1.start()
        r = r1.client()
        wait_for(lambda: count(r) == 50, "the reader to catch up")
        expected = query(w, [1.0, 1.0, 1.0, 1.0])

        writer.kill()   # kill -9: readers keep answering
        assert query(r, [1.0, 1.0, 1.0, 1.0]) == expected
        assert count(r) == 50

        s3_server.stop()
        try:
            lag_before = r.get("/admin/collections/c/status").json()["replica_lag_secs"]
            assert query(r, [1.0, 1.0, 1.0, 1.0]) == expected          # served from memory and cache
            wait_for(lambda: r.get("/admin/collections/c/status").json()["replica_lag_secs"] > lag_before + 2,
                     "the lag to grow while S3 is down")
            assert metric(r, "replica_lag_seconds", collection="c") > 2
            strong = r.post("/v1/collections/c/query", json={"vector": [1.0, 1.0, 1.0, 1.0], "consistency": "strong"})
            assert strong.status_code == 503, strong.text     # cannot promise read-your-writes now
        finally:
            s3_server.start()

        writer.start()   # the writer comes back and writes more; the reader catches up
        assert w.post("/v1/collections/c/documents", json={"documents": docs(50, 10)}).status_code == 200
        wait_for(lambda: count(r) == 60, "the reader to catch up after the outage")
        wait_for(lambda: r.get("/admin/collections/c/status").json()["replica_lag_secs"] < 5, "the lag to fall")
        assert query(r, [1.0, 1.0, 1.0, 1.0]) == query(w, [1.0, 1.0, 1.0, 1.0])


def test_idle_reader_backs_off_and_discovers_new_and_dropped_collections(tmp_path, s3_server, s3_settings_factory):
    env = node_env(s3_server, s3_settings_factory(), TIERDB_NODE_POLL_MAX_SECS="4", TIERDB_NODE_BUSY_WINDOW_SECS="1")
    with ServerProcess(tmp_path / "writer", policy="s3_only", env=env) as writer, reader(tmp_path, env, "r1") as r1:
        writer.start()
        w = writer.client()
        assert w.post("/v1/collections", json={"name": "c", "dimension": DIM}).status_code == 201
        assert w.post("/v1/collections/c/documents", json={"documents": docs(0, 5)}).status_code == 200
        r1.start()
        r = r1.client()
        wait_for(lambda: count(r) == 5, "the reader to open the collection")

        def polls() -> float:
            return metric(r, "replica_poll_requests_total", collection="c")

        time.sleep(1.5)
        first_start, t0 = polls(), time.monotonic()
        time.sleep(3)
        first_rate = (polls() - first_start) / (time.monotonic() - t0)
        time.sleep(6)      # backed off to the maximum interval by now
        late_start, t1 = polls(), time.monotonic()
        time.sleep(8)
        late_rate = (polls() - late_start) / (time.monotonic() - t1)
        print(f"\nidle reader polls: {first_rate * 3600:.0f} requests/hour right after the busy window, "
              f"{late_rate * 3600:.0f} requests/hour backed off (poll_max_secs=4; the default 25 s gives 288/hour)")
        assert late_rate < first_rate / 2, (first_rate, late_rate)
        assert late_rate <= 2 / 4 * 1.5     # 2 requests per poll_max_secs, with slack

        # new collections appear, dropped ones go (discovery LIST)
        assert w.post("/v1/collections", json={"name": "fresh", "dimension": DIM}).status_code == 201
        wait_for(lambda: r.get("/v1/collections/fresh").status_code == 200, "the new collection on the reader")
        assert w.delete("/v1/collections/fresh").status_code in (200, 204)
        wait_for(lambda: r.get("/v1/collections/fresh").status_code == 404, "the dropped collection to go")
