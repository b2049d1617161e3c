"""Raw hnswlib with TierDB's index parameters: the floor (no ids, metadata, durability or server)."""

from __future__ import annotations

import time

import numpy as np

from tierdb.config import IndexSettings

from .base import (COLD_QUERIES, DEFAULT_EF, K, Job, cold_result, du_bytes, ef_points, job_data, job_queries, log,
                   proc_status, reset_peak_rss, run_sweep, spawn_cold)

INDEX = IndexSettings()


def run(job: Job) -> dict:
    import hnswlib

    base, queries, gt = job_data(job)
    rss0 = proc_status()["VmRSS"]
    reset_peak_rss()
    index = hnswlib.Index(space="cosine", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=INDEX.m, ef_construction=INDEX.ef_construction)
    t = time.perf_counter()
    index.add_items(base, np.arange(len(base)))           # all cores, as TierDB's build_threads=0
    build = time.perf_counter() - t
    rss_ingest = proc_status()["VmHWM"]
    log(f"  built in {build:.1f} s")

    def search(q: np.ndarray, knobs: dict) -> list[int]:
        labels, _ = index.knn_query(q, k=K, num_threads=1)
        return labels[0].tolist()

    sweep = run_sweep(ef_points(), search, queries, gt, prepare=lambda kn: index.set_ef(kn["ef"]), log=log)
    rss_peak = proc_status()["VmHWM"]
    path = job.dir("hnswlib") / "index.bin"
    index.save_index(str(path))
    index = None  # free it before the cold process runs
    cold = spawn_cold(job, "hnswlib", {"path": str(path), "dim": int(base.shape[1])})
    return {
        "params": {"M": INDEX.m, "ef_construction": INDEX.ef_construction, "space": "cosine"},
        "default_knob": f"ef={DEFAULT_EF}",
        "ingest": {"secs": round(build, 3), "docs_per_sec": round(len(base) / build, 1), "what": "add_items (index built)"},
        "sweep": sweep,
        "rss": {"baseline_bytes": rss0, "after_ingest_peak_bytes": rss_ingest, "peak_bytes": rss_peak},
        "disk_bytes": du_bytes(path.parent),
        "disk_what": "hnswlib save_index file (the floor keeps nothing else)",
        "cold": cold,
    }


def cold(job: Job, state: dict) -> dict:
    t = time.perf_counter()
    import hnswlib
    import_secs = time.perf_counter() - t
    queries, gt = job_queries(job)
    t = time.perf_counter()
    index = hnswlib.Index(space="cosine", dim=state["dim"])
    index.load_index(state["path"])
    index.set_ef(DEFAULT_EF)
    open_secs = time.perf_counter() - t
    t = time.perf_counter()
    labels, _ = index.knn_query(queries[0], k=K, num_threads=1)
    first = time.perf_counter() - t
    first_unix = time.time()
    found, lat = [], []
    for q in queries[1 : COLD_QUERIES + 1]:
        t = time.perf_counter()
        lab, _ = index.knn_query(q, k=K, num_threads=1)
        lat.append(time.perf_counter() - t)
        found.append(lab[0].tolist())
    return cold_result(first_unix, import_secs, open_secs, first, labels[0].tolist(), lat, found, gt,
                       what="fresh process: load_index from file, first query")
