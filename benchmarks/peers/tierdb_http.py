"""TierDB ``memory`` over HTTP: a real ``python -m tierdb serve`` process (tests/server_process.py).

Ingest: msgpack upserts of ``job.batch`` documents, then ``POST /admin/collections/bench/compact
{"full": true}`` (loopback: the admin API needs no token).  Queries: JSON ``{"vector", "k",
"ef"}`` on one keep-alive httpx client, one at a time; the time is the client's round trip
(request encoded beforehand, response decoded afterwards, as in bench_memory.py).  RSS is the
server process's.  Cold: stop the server, start it again on the same data directory, time until
the first query answers.
"""

from __future__ import annotations

import sys
import time

import httpx
import msgspec
import numpy as np

from common import ROOT, latency_summary, recall_at_k
from tierdb.config import IndexSettings

from .base import (COLD_QUERIES, DEFAULT_EF, K, POINT_BUDGET_SECS, POINT_MIN_QUERIES, WARMUP_QUERIES, Job, du_bytes,
                   ef_points, job_data, log, proc_status, sweep_point)

NAME = "bench"
JSON = {"content-type": "application/json"}


def run(job: Job) -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.server_process import ServerProcess

    base, queries, gt = job_data(job)
    data_dir = job.dir("tierdb_http") / "data"
    server = ServerProcess(data_dir, policy="memory", env={"TIERDB_LOG_LEVEL": "WARNING"},
                           log_path=job.dir("tierdb_http") / "server.log")
    server.start(timeout=120)
    try:
        pid = server.process.pid
        rss0 = proc_status(pid)["VmRSS"]
        with httpx.Client(base_url=server.url, timeout=600) as client:
            client.post("/v1/collections", json={"name": NAME, "dimension": int(base.shape[1]), "metric": "cosine"}).raise_for_status()
            t = time.perf_counter()
            for s in range(0, len(base), job.batch):
                e = min(s + job.batch, len(base))
                docs = [{"id": str(i), "vector": base[i].tolist(), "metadata": {"row": i}} for i in range(s, e)]
                client.post(f"/v1/collections/{NAME}/documents", content=msgspec.msgpack.encode({"documents": docs}),
                            headers={"content-type": "application/msgpack"}).raise_for_status()
            ack = time.perf_counter() - t
            r = client.post(f"/admin/collections/{NAME}/compact", json={"full": True})
            r.raise_for_status()
            indexed = time.perf_counter() - t
            compaction = r.json()
        rss_ingest = proc_status(pid)["VmHWM"]
        log(f"  ingest {len(base) / indexed:.1f} docs/s (ack {len(base) / ack:.1f})")
        sweep = _sweep(server.url, queries, gt)
        rss_peak = proc_status(pid)["VmHWM"]
        server.stop()
        disk = du_bytes(data_dir)
        cold = _cold(server, queries, gt)
    finally:
        if server.running:
            server.kill()
    return {
        "params": {"M": IndexSettings().m, "ef_construction": IndexSettings().ef_construction, "policy": "memory", "transport": "HTTP/1.1 keep-alive, msgpack ingest, JSON query"},
        "default_knob": f"ef={DEFAULT_EF}",
        "ingest": {"secs": round(indexed, 3), "docs_per_sec": round(len(base) / indexed, 1), "ack_secs": round(ack, 3),
                   "ack_docs_per_sec": round(len(base) / ack, 1), "batch": job.batch,
                   "what": "msgpack upserts + POST /admin/.../compact {full: true}", "compaction": compaction},
        "sweep": sweep,
        "rss": {"baseline_bytes": rss0, "after_ingest_peak_bytes": rss_ingest, "peak_bytes": rss_peak,
                "what": "the server process (empty server at baseline)"},
        "disk_bytes": disk,
        "disk_what": "server data directory",
        "cold": cold,
        "server_log_tail": server.log_tail(20) if "ERROR" in server.log_tail(200) else "",
    }


def _bodies(queries: np.ndarray, ef: int | None) -> list[bytes]:
    return [msgspec.json.encode({"vector": q.tolist(), "k": K, **({"ef": ef} if ef else {})}) for q in queries]


def _sweep(url: str, queries: np.ndarray, gt: np.ndarray) -> list[dict]:
    out = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for label, knobs in ef_points():
            bodies = _bodies(queries, knobs["ef"])
            for body in bodies[:WARMUP_QUERIES]:
                client.post(f"/v1/collections/{NAME}/query", content=body, headers=JSON)
            lat, responses = [], []
            for body in bodies:
                t = time.perf_counter()
                r = client.post(f"/v1/collections/{NAME}/query", content=body, headers=JSON)
                lat.append(time.perf_counter() - t)
                responses.append(r)
                if len(lat) >= POINT_MIN_QUERIES and sum(lat) > POINT_BUDGET_SECS:
                    break
            found = []
            for r in responses:
                r.raise_for_status()
                found.append([int(h["id"]) for h in r.json()["results"]])
            out.append(sweep_point(label, knobs, lat, found, gt))
            log(f"    {label:<16} p50 {out[-1]['p50_ms']:>8.3f} ms  recall@10 {out[-1]['recall_at_10']}")
    return out


def _cold(server, queries: np.ndarray, gt: np.ndarray) -> dict:
    bodies = _bodies(queries[: COLD_QUERIES + 1], None)
    t0 = time.perf_counter()
    server.start(timeout=120)
    ready = time.perf_counter() - t0
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            t = time.perf_counter()
            r = client.post(f"/v1/collections/{NAME}/query", content=bodies[0], headers=JSON)
            first = time.perf_counter() - t
            total = time.perf_counter() - t0
            r.raise_for_status()
            first_ids = [int(h["id"]) for h in r.json()["results"]]
            lat, found = [], []
            for body in bodies[1:]:
                t = time.perf_counter()
                r = client.post(f"/v1/collections/{NAME}/query", content=body, headers=JSON)
                lat.append(time.perf_counter() - t)
                found.append([int(h["id"]) for h in r.json()["results"]])
        serve = proc_status(server.process.pid)
    finally:
        server.stop()
    return {
        "ok": True,
        "what": "server restart on the same data directory: spawn -> /health/ready 200 -> first query answered",
        "open_secs": round(ready, 3),
        "first_query_ms": round(first * 1000, 3),
        "open_plus_first_query_ms": round(total * 1000, 1),
        "spawn_to_first_result_secs": round(total, 3),
        "next_queries": latency_summary(lat),
        "recall_at_10_next_queries": round(recall_at_k([first_ids] + found, gt[: len(found) + 1], K), 4),
        "serve_peak_rss_bytes": serve["VmHWM"],
        "serve_rss_bytes": serve["VmRSS"],
    }
