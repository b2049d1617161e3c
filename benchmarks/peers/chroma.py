"""Chroma (PyPI ``chromadb``), in-process ``PersistentClient``.

Collection configuration: hnsw space cosine, max_neighbors (M) 16, ef_construction 200,
ef_search 128 — TierDB's parameters.  Ingest: ``collection.add`` of ``job.batch`` documents
(ids, embeddings, metadata {"row": i}); the clock stops after the first query answers (every
add is then searchable).  Sweep: ``ef_search`` via ``collection.modify(configuration=...)``.
Chroma 1.x stores the new value but the HNSW index already loaded in the process keeps its old
ef (measured: recall stays identical), so after each modify the client's system cache is
cleared and the collection reopened from disk; the warm-up queries then reload the index.
"""

from __future__ import annotations

import time

import numpy as np

from .base import (COLD_QUERIES, DEFAULT_EF, EF_SWEEP, K, Job, cold_result, du_bytes, ef_points, job_data, job_queries,
                   log, proc_status, reset_peak_rss, run_sweep, spawn_cold)

NAME = "bench"
CONFIG = {"hnsw": {"space": "cosine", "max_neighbors": 16, "ef_construction": 200, "ef_search": DEFAULT_EF}}


def _client(path: str):
    import chromadb
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))


def _ids(res) -> list[int]:
    return [int(x) for x in res["ids"][0]]


def run(job: Job) -> dict:
    base, queries, gt = job_data(job)
    rss0 = proc_status()["VmRSS"]
    reset_peak_rss()
    from chromadb.api.client import SharedSystemClient

    path = str(job.dir("chroma") / "db")
    client = _client(path)
    col = client.create_collection(NAME, configuration=CONFIG, embedding_function=None)
    t = time.perf_counter()
    for s in range(0, len(base), job.batch):
        e = min(s + job.batch, len(base))
        col.add(ids=[str(i) for i in range(s, e)], embeddings=base[s:e], metadatas=[{"row": i} for i in range(s, e)])
    ack = time.perf_counter() - t
    col.query(query_embeddings=queries[:1], n_results=K, include=[])
    indexed = time.perf_counter() - t
    rss_ingest = proc_status()["VmHWM"]
    log(f"  ingest {len(base) / indexed:.1f} docs/s")

    holder = {"col": col}
    rss_default = {}

    def prepare(knobs: dict) -> None:
        holder["col"].modify(configuration={"hnsw": {"ef_search": knobs["ef"]}})
        if "peak" not in rss_default:
            rss_default["peak"] = proc_status()["VmHWM"]
        SharedSystemClient.clear_system_cache()
        holder["col"] = _client(path).get_collection(NAME, embedding_function=None)
        applied = holder["col"].configuration["hnsw"]["ef_search"]
        assert applied == knobs["ef"], f"ef_search {applied} != {knobs['ef']}"

    def search(q: np.ndarray, knobs: dict) -> list[int]:
        return _ids(holder["col"].query(query_embeddings=q[None, :], n_results=K, include=[]))

    sweep = run_sweep(ef_points(), search, queries, gt, prepare=prepare, log=log)
    rss_peak = proc_status()["VmHWM"]
    holder["col"].modify(configuration={"hnsw": {"ef_search": DEFAULT_EF}})
    SharedSystemClient.clear_system_cache()
    holder.clear()
    col = client = None
    cold = spawn_cold(job, "chroma", {"path": path})
    import chromadb
    return {
        "params": {**CONFIG["hnsw"], "chromadb": chromadb.__version__, "ef_sweep": list(EF_SWEEP)},
        "default_knob": f"ef={DEFAULT_EF}",
        "ingest": {"secs": round(indexed, 3), "docs_per_sec": round(len(base) / indexed, 1), "ack_secs": round(ack, 3),
                   "ack_docs_per_sec": round(len(base) / ack, 1), "batch": job.batch,
                   "what": "collection.add per batch, until the first query answers"},
        "sweep": sweep,
        "rss": {"baseline_bytes": rss0, "after_ingest_peak_bytes": rss_ingest, "peak_bytes": rss_peak,
                "peak_before_sweep_reopens_bytes": rss_default.get("peak")},
        "disk_bytes": du_bytes(path),
        "disk_what": "PersistentClient directory (sqlite log + HNSW files)",
        "cold": cold,
    }


def cold(job: Job, state: dict) -> dict:
    t = time.perf_counter()
    import chromadb  # noqa: F401
    import_secs = time.perf_counter() - t
    queries, gt = job_queries(job)
    t = time.perf_counter()
    col = _client(state["path"]).get_collection(NAME, embedding_function=None)
    open_secs = time.perf_counter() - t
    t = time.perf_counter()
    first_ids = _ids(col.query(query_embeddings=queries[:1], n_results=K, include=[]))
    first = time.perf_counter() - t
    first_unix = time.time()
    lat, found = [], []
    for q in queries[1 : COLD_QUERIES + 1]:
        t = time.perf_counter()
        found.append(_ids(col.query(query_embeddings=q[None, :], n_results=K, include=[])))
        lat.append(time.perf_counter() - t)
    return cold_result(first_unix, import_secs, open_secs, first, first_ids, lat, found, gt,
                       what="fresh process: PersistentClient, get_collection, first query")
