"""LanceDB (PyPI ``lancedb``, embedded OSS library) on local disk and on the S3 server TierDB uses.

Table: ``id`` int64, ``row`` int64 (the metadata every system stores), ``vector``
fixed_size_list<float32>.  Ingest: ``table.add`` of ``job.batch`` rows at a time (one Lance
fragment and one commit each), then the vector index is built and the clock stops.

Index: IVF_HNSW_SQ (``lancedb.index.HnswSq``) with **one** IVF partition, HNSW m=16,
ef_construction=200, cosine: a single HNSW graph over 8-bit scalar-quantised vectors, the closest
structure to TierDB's one-segment hnswlib index.  (IVF_PQ was tried first: 162 s to build on 50k
x 384 on this machine and recall@10 0.955 at nprobes=40 / refine_factor=10 with 7-11 ms per query,
so it is neither faster nor more accurate here; with more IVF partitions IVF_HNSW_SQ needs more
nprobes for the same recall.)  Sweep: ``ef`` in EF_SWEEP with no refine, then ``ef`` 64 / 128 /
256 with ``refine_factor=2`` (re-ranks 2k SQ candidates with the full float32 vectors — the SQ
error caps recall near 0.98 without it).  Lance requires ef >= k * refine_factor.
"""

from __future__ import annotations

import time
import uuid

import numpy as np

from .base import (COLD_QUERIES, EF_SWEEP, K, Job, S3Meter, cold_result, du_bytes, job_data, job_queries, log,
                   proc_status, reset_peak_rss, run_sweep, spawn_cold)

TABLE = "bench"
INDEX = {"index": "IVF_HNSW_SQ", "num_partitions": 1, "m": 16, "ef_construction": 200, "distance_type": "cosine",
         "nprobes": 1}


def points() -> list[tuple[str, dict]]:
    pts = [(f"ef={ef}", {"ef": ef, "refine": 1}) for ef in EF_SWEEP]
    pts += [(f"ef={ef},rf=2", {"ef": ef, "refine": 2}) for ef in (64, 128, 256)]
    return pts


def storage_options(job: Job) -> dict[str, str]:
    assert job.s3 is not None
    return {
        "aws_endpoint": job.s3.endpoint,
        "aws_access_key_id": job.s3.access_key or "",
        "aws_secret_access_key": job.s3.secret_key or "",
        "aws_region": job.s3.region,
        "allow_http": "true",
        "aws_virtual_hosted_style_request": "false",
    }


def _connect(job: Job, state: dict):
    import lancedb

    if state["on_s3"]:
        return lancedb.connect(state["uri"], storage_options=storage_options(job))
    return lancedb.connect(state["uri"])


def _search(tbl, q: np.ndarray, knobs: dict) -> list[int]:
    b = tbl.search(q, vector_column_name="vector").distance_type("cosine").limit(K).nprobes(INDEX["nprobes"]).ef(knobs["ef"])
    if knobs["refine"] > 1:
        b = b.refine_factor(knobs["refine"])
    return b.select(["id", "_distance"]).to_arrow().column("id").to_pylist()


def run(job: Job, on_s3: bool) -> dict:
    base, queries, gt = job_data(job)
    rss0 = proc_status()["VmRSS"]
    reset_peak_rss()
    import pyarrow as pa
    from lancedb.index import HnswSq

    system = "lancedb_s3" if on_s3 else "lancedb_local"
    if on_s3:
        prefix = f"compare/lancedb-{uuid.uuid4().hex[:8]}"
        uri = f"s3://{job.s3.bucket}/{prefix}"
        local_dir = None
    else:
        prefix = None
        local_dir = job.dir(system) / "db"
        uri = str(local_dir)
    state = {"on_s3": on_s3, "uri": uri}
    db = _connect(job, state)
    dim = int(base.shape[1])
    schema = pa.schema([("id", pa.int64()), ("row", pa.int64()), ("vector", pa.list_(pa.float32(), dim))])

    meter = S3Meter(job.s3 if on_s3 else None)
    t = time.perf_counter()
    tbl = db.create_table(TABLE, schema=schema)
    for s in range(0, len(base), job.batch):
        e = min(s + job.batch, len(base))
        rows = np.arange(s, e)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(base[s:e].ravel()), dim)
        tbl.add(pa.table({"id": rows, "row": rows, "vector": vectors}, schema=schema))
    ack = time.perf_counter() - t
    tbl.create_index("vector", config=HnswSq(
        distance_type="cosine", num_partitions=INDEX["num_partitions"], m=INDEX["m"], ef_construction=INDEX["ef_construction"]))
    indexed = time.perf_counter() - t
    s3 = {"prefix": prefix, "ingest": {"server": meter.mark("ingest")}} if on_s3 else None
    idx = tbl.list_indices()
    rss_ingest = proc_status()["VmHWM"]
    log(f"  ingest {len(base) / indexed:.1f} docs/s (adds {len(base) / ack:.1f}), index {idx[0].index_type if idx else None}")

    sweep = run_sweep(points(), lambda q, kn: _search(tbl, q, kn), queries, gt, log=log)
    if on_s3:
        n_timed = sum(p["queries"] for p in sweep)
        s3["queries"] = {"server": meter.mark("queries"), "queries": n_timed + len(sweep) * min(len(queries), 20)}
    rss_peak = proc_status()["VmHWM"]
    versions = len(tbl.list_versions())
    tbl = db = None  # noqa: F841 - release the table before the cold process runs
    cold = spawn_cold(job, system, state)
    return {
        "params": {**INDEX, "storage": "s3 (object_store)" if on_s3 else "local disk", "table_versions": versions},
        "ingest": {"secs": round(indexed, 3), "docs_per_sec": round(len(base) / indexed, 1), "ack_secs": round(ack, 3),
                   "ack_docs_per_sec": round(len(base) / ack, 1), "batch": job.batch,
                   "what": "table.add per batch + create_index (IVF_HNSW_SQ)"},
        "sweep": sweep,
        "rss": {"baseline_bytes": rss0, "after_ingest_peak_bytes": rss_ingest, "peak_bytes": rss_peak},
        "disk_bytes": du_bytes(local_dir) if local_dir else 0,
        "disk_what": "database directory (all table versions kept)" if local_dir else "nothing local (all in S3)",
        "s3": s3,
        "cold": cold,
    }


def cold(job: Job, state: dict) -> dict:
    t = time.perf_counter()
    import lancedb  # noqa: F401
    import_secs = time.perf_counter() - t
    queries, gt = job_queries(job)
    meter = S3Meter(job.s3 if state["on_s3"] else None)
    t = time.perf_counter()
    tbl = _connect(job, state).open_table(TABLE)
    open_secs = time.perf_counter() - t
    knobs = {"ef": 128, "refine": 2}
    t = time.perf_counter()
    first_ids = _search(tbl, queries[0], knobs)
    first = time.perf_counter() - t
    first_unix = time.time()
    s3_open = meter.mark("open_and_first_query")
    lat, found = [], []
    for q in queries[1 : COLD_QUERIES + 1]:
        t = time.perf_counter()
        found.append(_search(tbl, q, knobs))
        lat.append(time.perf_counter() - t)
    return cold_result(first_unix, import_secs, open_secs, first, first_ids, lat, found, gt,
                       what="fresh process: connect, open_table, first query (ef=128, refine_factor=2)",
                       s3={"server": s3_open} if state["on_s3"] else None)
