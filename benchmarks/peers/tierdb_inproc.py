"""TierDB in-process (the engine API, no server): ``memory``, ``memory_s3`` and ``s3_only``.

Ingest: upserts of ``job.batch`` documents (id, vector, metadata {"row": i}), then
``compact(full=True)``: the clock stops when every document is searchable through one indexed
segment.  ``memory_s3`` also reports when S3 holds everything (uploader lag back to 0).
Queries: ``collection.query(q, k=10, ef=ef)``, one at a time.  Cold: a fresh process; for
``memory`` on the same data directory, for the S3 policies a *new node with an empty data
directory* (``memory_s3`` restores from S3, ``s3_only`` starts with empty disk and RAM caches).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid

import numpy as np

from .base import (COLD_QUERIES, DEFAULT_EF, K, Job, S3Meter, cold_result, du_bytes, ef_points, job_data, job_queries,
                   log, proc_status, reset_peak_rss, run_sweep_async, spawn_cold)

NAME = "bench"
DRAIN_TIMEOUT_SECS = 300.0


class WarningLog(logging.Handler):
    """The engine's warnings and errors: any of them is a finding for the report."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        extra = {k: v for k, v in record.__dict__.items() if k in ("collection", "error", "key", "kind")}
        self.records.append(f"{record.levelname} {record.name}: {record.getMessage()} {extra or ''}".strip())


def settings(job: Job, data_dir: str, policy: str, prefix: str | None):
    from tierdb.config import S3Settings, Settings, StorageSettings

    s3 = S3Settings()
    if prefix is not None:
        assert job.s3 is not None, f"{policy} needs the S3 server"
        s3 = S3Settings(endpoint=job.s3.endpoint, bucket=job.s3.bucket, prefix=prefix, region=job.s3.region, path_style=True)
    return Settings(storage=StorageSettings(data_dir=data_dir, tiering_policy=policy), s3=s3)


def engine_s3_requests() -> dict[str, int]:
    """TierDB's own count (storage_s3_requests_total), summed over collections, by operation."""
    from prometheus_client import REGISTRY

    out: dict[str, int] = {}
    for metric in REGISTRY.collect():
        if metric.name == "storage_s3_requests":
            for s in metric.samples:
                if s.name.endswith("_total"):
                    out[s.labels["op"]] = out.get(s.labels["op"], 0) + int(s.value)
    return out


def _delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    d = {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
    return {k: v for k, v in sorted(d.items()) if v}


async def _until_quiet(coll) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECS
    while (coll.frozen or coll._maintenance.locked()) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def _until_uploaded(coll) -> float | None:
    t = time.perf_counter()
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECS
    while time.monotonic() < deadline:
        st = coll.stats()
        if (st.upload_lag_secs == 0 and st.upload_queue_size == 0 and not coll.frozen
                and not coll._maintenance.locked() and not coll.uploader._lock.locked()):
            return time.perf_counter() - t
        await asyncio.sleep(0.02)
    return None


def run(job: Job, policy: str) -> dict:
    return asyncio.run(_run(job, policy))


async def _run(job: Job, policy: str) -> dict:
    warnings = WarningLog()
    logging.getLogger().addHandler(warnings)
    base, queries, gt = job_data(job)
    rss0 = proc_status()["VmRSS"]
    reset_peak_rss()
    from tierdb.node import Engine
    from tierdb.models import CollectionSpec

    uses_s3 = policy != "memory"
    prefix = f"compare/{policy}-{uuid.uuid4().hex[:8]}" if uses_s3 else None
    data_dir = str(job.dir(f"tierdb_{policy}") / "node-a")
    engine = Engine(settings(job, data_dir, policy, prefix))
    await engine.start()
    await engine.create_collection(CollectionSpec(name=NAME, dimension=int(base.shape[1]), metric="cosine", tiering_policy=policy))
    coll = engine.get_collection(NAME)

    meter = S3Meter(job.s3 if uses_s3 else None)
    eng0 = engine_s3_requests()
    ids = [str(i) for i in range(len(base))]
    t = time.perf_counter()
    for s in range(0, len(base), job.batch):
        e = min(s + job.batch, len(base))
        await coll.upsert(ids[s:e], base[s:e], [{"row": i} for i in range(s, e)])
    ack = time.perf_counter() - t
    rss_upserts = proc_status()["VmRSS"]
    await _until_quiet(coll)
    compaction = await coll.compact(full=True)
    indexed = time.perf_counter() - t
    ingest = {"secs": round(indexed, 3), "docs_per_sec": round(len(base) / indexed, 1),
              "ack_secs": round(ack, 3), "ack_docs_per_sec": round(len(base) / ack, 1),
              "batch": job.batch, "what": "upserts + compact(full=True): one indexed segment",
              "segments": len(coll.segments), "compaction": compaction}
    if policy == "memory_s3":
        drained = await _until_uploaded(coll)
        ingest["secs_until_all_in_s3"] = round(time.perf_counter() - t, 3) if drained is not None else None
    s3 = {"prefix": prefix, "ingest": {"server": meter.mark("ingest"), "engine": _delta(eng0, engine_s3_requests())}}
    rss_ingest = proc_status()["VmHWM"]
    log(f"  ingest {ingest['docs_per_sec']} docs/s (ack {ingest['ack_docs_per_sec']}), {ingest['secs']} s")

    async def search(q: np.ndarray, knobs: dict) -> list[int]:
        hits = await coll.query(q, k=K, ef=knobs["ef"])
        return [int(h.id) for h in hits[0]]

    eng1 = engine_s3_requests()
    sweep = await run_sweep_async(ef_points(), search, queries, gt, log=log)
    n_timed = sum(p["queries"] for p in sweep)
    s3["queries"] = {"server": meter.mark("queries"), "engine": _delta(eng1, engine_s3_requests()),
                     "queries": n_timed + len(sweep) * min(len(queries), 20)}
    if uses_s3:
        from tierdb import keys
        # What the current manifest needs; the rest (superseded segments, WAL objects already in a
        # segment, old manifests) is garbage the GC deletes after gc.grace_secs (600 s by default).
        s3["live_keys"] = [keys.segment_key(NAME, ref.id) for ref in coll.manifest.segments] + \
            [keys.manifest_key(NAME, coll.manifest.version)]
    breakdown = await _overhead_breakdown(coll, queries)
    rss_peak = proc_status()["VmHWM"]
    stats = coll.stats()
    await engine.close()
    disk = du_bytes(data_dir)

    if policy == "memory":
        state = {"policy": policy, "data_dir": data_dir, "prefix": None, "fresh_node": False}
    else:
        state = {"policy": policy, "data_dir": str(job.dir(f"tierdb_{policy}") / "node-cold"), "prefix": prefix, "fresh_node": True}
    cold = spawn_cold(job, f"tierdb_{policy}", state)
    logging.getLogger().removeHandler(warnings)
    return {
        "params": {"M": coll.hnsw.m, "ef_construction": coll.hnsw.ef_construction, "ef_search_default": coll.hnsw.ef_search,
                   "policy": policy, "metric": "cosine"},
        "default_knob": f"ef={DEFAULT_EF}",
        "ingest": ingest,
        "sweep": sweep,
        "overhead_breakdown": breakdown,
        "rss": {"baseline_bytes": rss0, "after_upserts_bytes": rss_upserts, "after_ingest_peak_bytes": rss_ingest,
                "peak_bytes": rss_peak},
        "disk_bytes": disk,
        "disk_what": "data directory (WAL, segments, manifests; s3_only: the disk cache)",
        "s3": s3 if uses_s3 else None,
        "cache": {"ram_bytes": stats.cache_bytes_ram} if policy == "s3_only" else None,
        "cold": cold,
        "warnings": warnings.records,
    }


async def _overhead_breakdown(coll, queries: np.ndarray) -> dict:
    """Where a query's time goes at the default ef: hnswlib on the segment alone (same thread),
    one asyncio.to_thread round trip (how the engine leaves the event loop), the full query."""
    from tierdb.engine.vectors import as_matrix

    seg = coll.segments[0] if coll.segments else None
    qs = queries[: min(len(queries), 500)]
    out: dict = {"queries": len(qs)}
    if seg is not None:
        lat = []
        for q in qs:
            m = as_matrix(q, coll.spec.dimension, what="q")
            t = time.perf_counter()
            seg.search(m, K, DEFAULT_EF, None)
            lat.append(time.perf_counter() - t)
        out["segment_search_p50_ms"] = round(float(np.percentile(lat, 50)) * 1000, 4)
    lat = []
    for _ in qs:
        t = time.perf_counter()
        await asyncio.to_thread(lambda: None)
        lat.append(time.perf_counter() - t)
    out["to_thread_hop_p50_ms"] = round(float(np.percentile(lat, 50)) * 1000, 4)
    lat = []
    for q in qs:
        t = time.perf_counter()
        await coll.query(q, k=K)
        lat.append(time.perf_counter() - t)
    out["collection_query_p50_ms"] = round(float(np.percentile(lat, 50)) * 1000, 4)
    return out


def cold(job: Job, state: dict) -> dict:
    return asyncio.run(_cold(job, state))


async def _cold(job: Job, state: dict) -> dict:
    t = time.perf_counter()
    from tierdb.node import Engine
    import_secs = time.perf_counter() - t
    queries, gt = job_queries(job)
    policy = state["policy"]
    if state["fresh_node"]:
        shutil.rmtree(state["data_dir"], ignore_errors=True)
        os.makedirs(state["data_dir"])
    meter = S3Meter(job.s3 if policy != "memory" else None)
    eng0 = engine_s3_requests()
    t = time.perf_counter()
    engine = Engine(settings(job, state["data_dir"], policy, state["prefix"]))
    await engine.start()
    coll = engine.get_collection(NAME)
    open_secs = time.perf_counter() - t
    t = time.perf_counter()
    hits = await coll.query(queries[0], k=K)
    first = time.perf_counter() - t
    first_unix = time.time()
    s3_open = {"server": meter.mark("open_and_first_query"), "engine": _delta(eng0, engine_s3_requests())}
    found, lat = [], []
    for q in queries[1 : COLD_QUERIES + 1]:
        t = time.perf_counter()
        h = await coll.query(q, k=K)
        lat.append(time.perf_counter() - t)
        found.append([int(x.id) for x in h[0]])
    count = coll.count()
    await engine.close()
    return cold_result(first_unix, import_secs, open_secs, first, [int(x.id) for x in hits[0]], lat, found, gt,
                       what=("new node, empty data directory (restore / caches from S3)" if state["fresh_node"]
                             else "fresh process, existing data directory"),
                       count=count, s3=s3_open if policy != "memory" else None,
                       node_disk_bytes_after=du_bytes(state["data_dir"]))
