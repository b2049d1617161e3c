"""Benchmark of the `memory` policy against raw hnswlib, in one run, on the shared dataset.

    python benchmarks/bench_memory.py [--n 50000] [--queries 1000] [--restart-rows 500000]
    python benchmarks/bench_memory.py --footprint-only [--n 50000] [--restart-rows 500000]
    python benchmarks/bench_memory.py --data ../synth-1m --n 500000 [--queries 1000] [--http-ingest-docs 50000]

Measures recall@10, query latency (in-process and over HTTP, with the HTTP floor of
benchmarks/floor_app.py), ingest until indexed (raw add_items against upserts +
compact(full=True)), HTTP ingest throughput (JSON, msgpack), restart to ready over HTTP (the
server opens the stored collection) and in-process close() + reopen + first query, and prints
ratios against raw hnswlib with the same M / ef_construction / ef.  The footprint part (alone
with --footprint-only) opens the stored collection in a fresh process and reports its RSS
growth, the RSS left after close(), in-process open-to-ready seconds and the segment bytes on
disk, each against the bare hnswlib index of the same rows (its saved file and its RSS when
loaded).  Results go to benchmarks/results/memory.{json,md} (footprint-only:
memory_footprint.{json,md}).

--data takes a `../shared/datasets/synth.py` directory: the first --n rows, their exact top-10
recomputed; HTTP ingest then goes into fresh collections and is capped (--http-ingest-docs,
default 50000).  Results go to memory_<n/1000>k.{json,md}, and the run's duration at
--estimate-n rows (default 500000) is estimated from its phase times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec
import numpy as np
from common import (
    DATASET_DIR,
    ROOT,
    build_raw_hnswlib,
    gt_base_rows,
    latency_summary,
    load_dataset,
    machine,
    markdown_table,
    recall_at_k,
    save_results,
    start_server,
)

from tierdb.config import CompactionSettings, IndexSettings, Settings, StorageSettings
from tierdb.models import CollectionSpec
from tierdb.node import Engine

K = 10
BATCH = 1000
EF_SWEEP = (16, 32, 64, 128, 256, 512)   # "no recall loss at every ef"
INDEX = IndexSettings()


def bench_raw_hnswlib(base: np.ndarray, queries: np.ndarray, gt: np.ndarray, save_to: str | None = None) -> dict:
    """Raw hnswlib build and queries; with ``save_to`` the index is also saved there (the
    footprint comparison loads it instead of building a second one)."""
    index, stats = build_raw_hnswlib(base, queries, gt, m=INDEX.m, ef_construction=INDEX.ef_construction,
                                     ef=INDEX.ef_search, k=K)
    stats["recall_by_ef"] = {}
    for ef in EF_SWEEP:
        index.set_ef(ef)
        labels, _ = index.knn_query(queries, k=K)
        stats["recall_by_ef"][str(ef)] = round(recall_at_k(labels.tolist(), gt, K), 4)
    index.set_ef(INDEX.ef_search)
    if save_to:
        index.save_index(save_to)
    return stats


def process_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def engine_settings(data_dir: str) -> Settings:
    # Flush at the default threshold; the benchmark then compacts to one segment, the state a
    # collection reaches once the compaction worker has caught up.
    return Settings(storage=StorageSettings(data_dir=data_dir), index=INDEX, compaction=CompactionSettings(interval_secs=3600))


async def bench_in_process(data_dir: str, base: np.ndarray, queries: np.ndarray, gt: np.ndarray) -> dict:
    engine = Engine(engine_settings(data_dir))
    await engine.start()
    await engine.create_collection(CollectionSpec(name="bench", dimension=base.shape[1], metric="cosine"))
    coll = engine.get_collection("bench")
    ids = [str(i) for i in range(len(base))]
    started = time.perf_counter()
    for s in range(0, len(base), BATCH):
        await coll.upsert(ids[s : s + BATCH], base[s : s + BATCH], [{"row": i} for i in range(s, min(s + BATCH, len(base)))])
    acked = time.perf_counter() - started
    while coll.frozen or coll._maintenance.locked():  # a threshold flush may still be running
        await asyncio.sleep(0.05)
    await coll.compact(full=True)
    indexed = time.perf_counter() - started
    found, lat = [], []
    for q in queries:
        t = time.perf_counter()
        hits = await coll.query(q, k=K)
        lat.append(time.perf_counter() - t)
        found.append([int(h.id) for h in hits[0]])
    recall_by_ef = {}
    for ef in EF_SWEEP:  # the whole query set per call, as raw hnswlib's sweep does
        hits = await coll.query(queries, k=K, ef=ef)
        recall_by_ef[str(ef)] = round(recall_at_k([[int(h.id) for h in per] for per in hits], gt, K), 4)
    reopen = await close_and_reopen(engine, data_dir, queries[0])
    return {
        "recall_by_ef": recall_by_ef,
        "ack_docs_per_sec": round(len(base) / acked, 1),
        "ingest_docs_per_sec": round(len(base) / indexed, 1),
        "indexed_secs": round(indexed, 3),
        "query": latency_summary(lat),
        "recall_at_10": round(recall_at_k(found, gt, K), 4),
        **reopen,
    }


def ef_sweep_rows(raw: dict, inproc: dict) -> list[list[object]]:
    """Recall@10 at each swept ef, raw hnswlib against TierDB in-process, and the largest loss."""
    if "recall_by_ef" not in raw or "recall_by_ef" not in inproc:
        return []
    rows: list[list[object]] = [[f"recall@10 at ef {ef}", raw["recall_by_ef"][ef], inproc["recall_by_ef"][ef], "", ""]
                                for ef in raw["recall_by_ef"]]
    worst = max(raw["recall_by_ef"][ef] - inproc["recall_by_ef"][ef] for ef in raw["recall_by_ef"])
    rows.append(["largest recall loss over the ef sweep", "", round(worst, 4), "", "≤ 0.002"])
    return rows


async def close_and_reopen(engine: Engine, data_dir: str, query: np.ndarray) -> dict:
    """close(), then a new Engine on the same data dir until its first query answers, in this
    process; the process RSS before and after close() shows whether close() released the data."""
    gc.collect()
    rss_open = process_rss()
    started = time.perf_counter()
    await engine.close()
    closed = time.perf_counter() - started
    gc.collect()
    rss_closed = process_rss()
    started = time.perf_counter()
    engine = Engine(engine_settings(data_dir))
    await engine.start()
    await engine.get_collection("bench").query(query, k=K)
    reopened = time.perf_counter() - started
    gc.collect()
    rss_reopened = process_rss()
    await engine.close()
    return {
        "close_secs": round(closed, 3),
        "reopen_to_first_query_secs": round(reopened, 3),
        "process_rss_open_bytes": rss_open,
        "process_rss_after_close_bytes": rss_closed,
        "process_rss_after_reopen_bytes": rss_reopened,
    }


def bench_http_ingest(url: str, base: np.ndarray, fmt: str) -> float:
    name = f"ingest-{fmt}"
    with httpx.Client(base_url=url, timeout=120) as client:
        client.post("/v1/collections", json={"name": name, "dimension": base.shape[1], "metric": "cosine"}).raise_for_status()
        started = time.perf_counter()
        for s in range(0, len(base), BATCH):
            docs = [{"id": str(i), "vector": base[i].tolist(), "metadata": {"row": i}} for i in range(s, min(s + BATCH, len(base)))]
            if fmt == "msgpack":
                r = client.post(f"/v1/collections/{name}/documents", content=msgspec.msgpack.encode({"documents": docs}),
                                headers={"content-type": "application/msgpack"})
            else:
                r = client.post(f"/v1/collections/{name}/documents", content=msgspec.json.encode({"documents": docs}),
                                headers={"content-type": "application/json"})
            r.raise_for_status()
        return len(base) / (time.perf_counter() - started)


def bench_http_floor(queries: np.ndarray) -> dict:
    """Latency of benchmarks/floor_app.py (same server stack, same query bodies, no work)."""
    sys.path.insert(0, str(ROOT))
    from tests.server_process import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "floor_app.py"), "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.post(f"{url}/ready", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the floor app did not start") from None
                time.sleep(0.1)
        return {"query": _time_http_queries(url, queries)[0]}
    finally:
        proc.terminate()
        proc.wait(30)


def _time_http_queries(url: str, queries: np.ndarray) -> tuple[dict, list[list[int]]]:
    found, lat = [], []
    with httpx.Client(base_url=url, timeout=30) as client:
        bodies = [msgspec.json.encode({"vector": q.tolist(), "k": K}) for q in queries]
        for body in bodies[:50]:  # warm-up
            client.post("/v1/collections/bench/query", content=body, headers={"content-type": "application/json"})
        for body in bodies:
            t = time.perf_counter()
            r = client.post("/v1/collections/bench/query", content=body, headers={"content-type": "application/json"})
            lat.append(time.perf_counter() - t)
            r.raise_for_status()
            found.append([int(h["id"]) for h in r.json()["results"]])
    return latency_summary(lat), found


def bench_http_query(url: str, queries: np.ndarray, gt: np.ndarray) -> dict:
    summary, found = _time_http_queries(url, queries)
    return {"query": summary, "recall_at_10": round(recall_at_k(found, gt, K), 4)}


_FOOTPRINT_SCRIPT = """
import asyncio, gc, json, sys, time
import hnswlib

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

mode, path = sys.argv[1], sys.argv[2]
if mode != "hnswlib":  # imports first: only the data counts
    sys.path.insert(0, sys.argv[3])
    from bench_memory import engine_settings
    from tierdb.node import Engine
gc.collect()
before = rss()
started = time.perf_counter()
if mode == "hnswlib":
    index = hnswlib.Index(space="cosine", dim=int(sys.argv[3]))
    index.load_index(path)
    ready = time.perf_counter() - started
    loaded = rss()
    del index
else:
    async def run():
        engine = Engine(engine_settings(path))
        await engine.start()
        ready = time.perf_counter() - started
        gc.collect()
        loaded = rss()
        await engine.close()
        return ready, loaded

    ready, loaded = asyncio.run(run())
gc.collect()
print(json.dumps({"before": before, "loaded": loaded, "closed": rss(), "ready_secs": ready}))
"""


def _footprint_process(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _FOOTPRINT_SCRIPT, *args], capture_output=True, text=True,
                         check=True, timeout=3600, env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path])))
    return msgspec.json.decode(out.stdout.strip().splitlines()[-1])


def segment_bytes(data_dir: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, f))
        for root, _, files in os.walk(data_dir)
        for f in files
        if f.endswith(".seg") and os.sep + "segments" in root
    )


def bench_footprint(data_dir: str, base: np.ndarray, rows: int, raw_index: str | None = None) -> dict:
    """RSS / disk / open time of the stored collection(s) against a bare hnswlib index of
    ``rows`` vectors: the saved file ``raw_index`` if given, else one built here from copies of
    ``base`` like the restart fixture (same sizes)."""
    import hnswlib

    with tempfile.TemporaryDirectory(prefix="tierdb-raw-index-") as tmp:
        if raw_index is None:
            index = hnswlib.Index(space="cosine", dim=base.shape[1])
            index.init_index(max_elements=rows, M=INDEX.m, ef_construction=INDEX.ef_construction)
            for copy in range(rows // len(base)):
                index.add_items(base, np.arange(copy * len(base), (copy + 1) * len(base)))
            raw_index = os.path.join(tmp, "index.bin")
            index.save_index(raw_index)
            del index
        raw_file = os.path.getsize(raw_index)
        raw = _footprint_process("hnswlib", raw_index, str(base.shape[1]))
    ours = _footprint_process("tierdb", data_dir, str(ROOT / "benchmarks"))
    raw_rss = raw["loaded"] - raw["before"]
    rss = ours["loaded"] - ours["before"]
    disk = segment_bytes(data_dir)
    return {
        "rows": rows,
        "raw_index_file_bytes": raw_file,
        "raw_index_rss_bytes": raw_rss,
        "raw_index_load_secs": round(raw["ready_secs"], 3),
        "tierdb_rss_bytes": rss,
        "tierdb_rss_after_close_bytes": ours["closed"] - ours["before"],
        "tierdb_open_to_ready_secs": round(ours["ready_secs"], 3),
        "tierdb_segment_bytes": disk,
        "rss_vs_raw_index_rss": round(rss / raw_rss, 3),
        "rss_vs_raw_index_file": round(rss / raw_file, 3),
        "disk_vs_raw_index_file": round(disk / raw_file, 3),
    }


def footprint_rows(fp: dict) -> list[list]:
    mb = 1 << 20
    n = fp["rows"]
    return [
        [f"RSS of the data, {n} rows (MB)", round(fp["raw_index_rss_bytes"] / mb, 1), round(fp["tierdb_rss_bytes"] / mb, 1), "", ""],
        [f"RSS / raw index RSS (file), {n}", 1.0, f'{fp["rss_vs_raw_index_rss"]} ({fp["rss_vs_raw_index_file"]})', "", "≤ 1.3"],
        [f"RSS left after close(), {n} (MB)", "", round(fp["tierdb_rss_after_close_bytes"] / mb, 1), "", "≈ 0"],
        [f"on disk / raw index file, {n}", f'{round(fp["raw_index_file_bytes"] / mb, 1)} MB',
         f'{round(fp["tierdb_segment_bytes"] / mb, 1)} MB ({fp["disk_vs_raw_index_file"]}x)', "", "≤ 1.2"],
        [f"open to ready in-process, {n} (s)", fp["raw_index_load_secs"], fp["tierdb_open_to_ready_secs"], "", "≤ 5 at 500k"],
    ]


async def build_restart_fixture(data_dir: str, base: np.ndarray, rows: int) -> None:
    """A collection of ``rows`` vectors in segments of len(base) rows (the dataset, shifted)."""
    engine = Engine(engine_settings(data_dir))
    await engine.start()
    await engine.create_collection(CollectionSpec(name="restart", dimension=base.shape[1], metric="cosine"))
    coll = engine.get_collection("restart")
    rng = np.random.default_rng(0)
    for copy in range(rows // len(base)):
        noisy = base + rng.normal(0, 0.01, base.shape).astype(np.float32)
        for s in range(0, len(base), 5000):
            chunk = noisy[s : s + 5000]
            await coll.upsert([f"{copy}-{i}" for i in range(s, s + len(chunk))], chunk, [{"row": i} for i in range(s, s + len(chunk))])
        await coll.compact()
    await engine.close()


class Phases:
    """Wall-clock seconds per named phase of the run (for the duration estimate)."""

    def __init__(self) -> None:
        self.secs: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        print(f"{name} ...", flush=True)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.secs[name] = round(time.perf_counter() - started, 1)


def insert_cost_growth(raw: dict) -> float:
    """β in "one hnswlib insert (or search) costs ∝ size^β", from the CPU seconds of the raw
    build's two halves (less disturbed by other load than wall time): the second half inserts
    at a mean size 3× the first's.  Clamped to [0, 1]."""
    first, second = raw["build_half_cpu_secs"]
    return float(np.clip(np.log(second / first) / np.log(3), 0.0, 1.0)) if first > 0 and second > 0 else 0.0


def estimate_run_secs(results: dict, target_n: int, target_queries: int, beta: float) -> dict[str, float]:
    """Seconds the same run would take at ``target_n`` rows and ``target_queries`` queries,
    scaled phase by phase from this run, with one insert or search costing ∝ size^``beta``:
    index builds as n^(1+β), query loops per query × n^β, loading / saving / opening as n,
    the ground truth as n × queries, HTTP ingest by its capped document count."""
    n, q, phases = results["n"], results["queries"], results["phase_secs"]
    grow = target_n / n
    build, per_query = grow ** (1 + beta), target_queries / q * grow**beta
    raw, inproc = results["raw_hnswlib"], results["tierdb_in_process"]
    reopen = inproc["close_secs"] + inproc["reopen_to_first_query_secs"]
    restart = results["restart_to_ready_secs"]
    target_docs = min(target_n, results["http_ingest_cap"] or target_n)
    est = {
        "dataset": phases["dataset"] * grow * (target_queries / q if results["gt_recomputed"] else 1),
        "raw_hnswlib": raw["build_secs"] * build + (phases["raw_hnswlib"] - raw["build_secs"]) * per_query,
        "tierdb_in_process": inproc["indexed_secs"] * build + reopen * grow
        + max(phases["tierdb_in_process"] - inproc["indexed_secs"] - reopen, 0) * per_query,
        "footprint": phases["footprint"] * grow,
        "http_floor": phases["http_floor"] * target_queries / q,
        "http_restart_and_query": restart * grow + (phases["http_restart_and_query"] - restart) * per_query,
        "http_ingest": phases["http_ingest"] * target_docs / results["http_ingest_docs"],
    }
    est = {k: round(float(v), 1) for k, v in est.items()}
    est["total"] = round(sum(est.values()), 1)
    return est


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=None, help="a synth.py directory (base.npy, queries.npy, gt_cosine_top10.npy) "
                        "instead of the 50k docstrings; results go to memory_<n/1000>k.{json,md}")
    parser.add_argument("--n", type=int, default=None, help="the first N rows of base.npy (default: all of it); "
                        "the exact top-10 is recomputed for that prefix")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--http-ingest-docs", type=int, default=None,
                        help="HTTP ingest measures the first this many docs into a fresh collection "
                        "(default: all with the 50k set, 50000 with --data)")
    parser.add_argument("--restart-rows", type=int, default=0, help="also time restart with this many stored vectors")
    parser.add_argument("--footprint-only", action="store_true", help="only RSS / disk / open time (no latency runs)")
    parser.add_argument("--estimate-n", type=int, default=500_000, help="with --data: estimate the run's duration at this N")
    parser.add_argument("--estimate-queries", type=int, default=1000, help="... and this many queries")
    args = parser.parse_args()
    if args.data and (args.restart_rows or args.footprint_only):
        parser.error("--restart-rows and --footprint-only build their collections from copies of the 50k set; "
                     "with --data the stored N-row collection is itself the restart and footprint fixture")
    phases = Phases()
    with phases("dataset"):
        data = load_dataset(args.n, args.queries, args.data)
    n = len(data.base)
    print(f"dataset: {n} x {data.base.shape[1]}, {len(data.queries)} queries")
    if args.footprint_only:
        main_footprint(data.base, args.restart_rows)
        return
    http_cap = args.http_ingest_docs or (50_000 if args.data else None)
    http_docs = min(n, http_cap or n)
    tmp = tempfile.mkdtemp(prefix="tierdb-bench-")
    results: dict = {"machine": {**machine(), "loadavg_1m_at_start": round(os.getloadavg()[0], 2)},
                     "dataset": str(Path(args.data).resolve() if args.data else DATASET_DIR), "n": n, "dim": data.base.shape[1], "queries": len(data.queries), "k": K,
                     "gt_recomputed": bool(args.n and args.n < gt_base_rows(Path(args.data or DATASET_DIR))),
                     "http_ingest_cap": http_cap, "http_ingest_docs": http_docs,
                     "hnsw": {"m": INDEX.m, "ef_construction": INDEX.ef_construction, "ef_search": INDEX.ef_search}}
    try:
        raw_index = os.path.join(tmp, "raw-index.bin")
        with phases("raw_hnswlib"):
            results["raw_hnswlib"] = raw = bench_raw_hnswlib(data.base, data.queries, data.gt, save_to=raw_index)
        data_dir = os.path.join(tmp, "inproc")
        with phases("tierdb_in_process"):
            results["tierdb_in_process"] = inproc = asyncio.run(bench_in_process(data_dir, data.base, data.queries, data.gt))
        with phases("footprint"):
            results["footprint"] = bench_footprint(data_dir, data.base, n, raw_index=raw_index)
        os.remove(raw_index)
        with phases("http_floor"):
            results["http_floor"] = floor = bench_http_floor(data.queries)
        with phases("http_restart_and_query"):  # the server opens the stored collection: restart to ready at n
            server, ready_secs = start_server(data_dir)
            results["restart_to_ready_secs"] = round(ready_secs, 3)
            try:
                results["tierdb_http"] = http = bench_http_query(server.url, data.queries, data.gt)
            except BaseException:
                server.stop()
                raise
        with phases("http_ingest"):  # fresh collections next to the stored one
            try:
                http["ingest_json_docs_per_sec"] = round(bench_http_ingest(server.url, data.base[:http_docs], "json"), 1)
                http["ingest_msgpack_docs_per_sec"] = round(bench_http_ingest(server.url, data.base[:http_docs], "msgpack"), 1)
            finally:
                server.stop()
        if args.restart_rows:
            print(f"restart with {args.restart_rows} vectors ...")
            restart_dir = os.path.join(tmp, "restart")
            asyncio.run(build_restart_fixture(restart_dir, data.base, args.restart_rows))
            server, ready_secs = start_server(restart_dir)
            results[f"restart_to_ready_secs_{args.restart_rows}"] = round(ready_secs, 3)
            server.stop()
            results["footprint_restart"] = bench_footprint(restart_dir, data.base, args.restart_rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["phase_secs"] = phases.secs
    results["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)

    r = raw["ingest_docs_per_sec"]
    mb = 1 << 20
    ingest_note = f", first {http_docs} docs, fresh collection" if http_docs < n else ""
    rows = [
        ["recall@10", raw["recall_at_10"], inproc["recall_at_10"], http["recall_at_10"], "≥ 0.97"],
        ["query p50 ms", raw["query"]["p50_ms"], inproc["query"]["p50_ms"], http["query"]["p50_ms"], "HTTP ≤ floor + 1.5 × raw"],
        ["query p95 ms", raw["query"]["p95_ms"], inproc["query"]["p95_ms"], http["query"]["p95_ms"], ""],
        ["query p99 ms", raw["query"]["p99_ms"], inproc["query"]["p99_ms"], http["query"]["p99_ms"], "HTTP ≤ 3"],
        ["HTTP floor p50 / p99 ms (floor_app.py)", "", "", f'{floor["query"]["p50_ms"]} / {floor["query"]["p99_ms"]}', ""],
        ["HTTP p50 − floor, in raw p50s", "", "",
         round((http["query"]["p50_ms"] - floor["query"]["p50_ms"]) / raw["query"]["p50_ms"], 2), "≤ 1.5"],
        ["in-process query p50 / raw", 1.0, round(inproc["query"]["p50_ms"] / raw["query"]["p50_ms"], 2), "", "≤ 1.3"],
        [f"until searchable with one index, {n} (s)", raw["build_secs"], inproc["indexed_secs"], "", ""],
        ["ingest docs/s (indexed)", r, inproc["ingest_docs_per_sec"], "", ""],
        ["ingest / raw (indexed)", 1.0, round(inproc["ingest_docs_per_sec"] / r, 2), "", "≥ 0.8"],
        ["ingest docs/s (acknowledged)", "", inproc["ack_docs_per_sec"], "", ""],
        [f"HTTP ingest JSON docs/s (ack) / raw{ingest_note}", "", "",
         f'{http["ingest_json_docs_per_sec"]} ({http["ingest_json_docs_per_sec"] / r:.2f}x)', ""],
        [f"HTTP ingest msgpack docs/s (ack) / raw{ingest_note}", "", "",
         f'{http["ingest_msgpack_docs_per_sec"]} ({http["ingest_msgpack_docs_per_sec"] / r:.2f}x)', "≥ 0.6"],
        [f"restart to ready over HTTP, {n} (s)", "", "", results["restart_to_ready_secs"], "≤ 5 at 500k"],
        [f"close() + reopen + first query in-process, {n} (s)", results["footprint"]["raw_index_load_secs"],
         round(inproc["close_secs"] + inproc["reopen_to_first_query_secs"], 3), "", ""],
        ["process RSS at close() → after → reopened (MB)", "",
         " → ".join(str(round(inproc[f"process_rss_{w}_bytes"] / mb)) for w in ("open", "after_close", "after_reopen")), "", ""],
    ]
    rows += ef_sweep_rows(raw, inproc)
    rows += footprint_rows(results["footprint"])
    if args.restart_rows:
        rows.append([f"restart to ready, {args.restart_rows} (s)", "", "", results[f"restart_to_ready_secs_{args.restart_rows}"], "≤ 10"])
        rows += footprint_rows(results["footprint_restart"])
    header = ["metric", "raw hnswlib", "tierdb in-process", "tierdb HTTP", "target"]
    table = markdown_table(header, rows)
    if args.data:
        prefix = f" (first {n} rows, exact top-10 recomputed)" if results["gt_recomputed"] else ""
        table = (f"{n} × {data.base.shape[1]} from `{results['dataset']}`{prefix}, "
                 f"{len(data.queries)} queries, M={INDEX.m}, ef_c={INDEX.ef_construction}, ef={INDEX.ef_search}; "
                 f"HTTP ingest: first {http_docs} docs into fresh collections.\n\n" + table)
        beta = insert_cost_growth(raw)
        results["estimate"] = {"n": args.estimate_n, "queries": args.estimate_queries, "insert_cost_growth": round(beta, 3),
                               "secs": estimate_run_secs(results, args.estimate_n, args.estimate_queries, beta),
                               "secs_if_n_log_n": estimate_run_secs(
                                   results, args.estimate_n, args.estimate_queries,
                                   float(np.log(np.log(args.estimate_n) / np.log(n)) / np.log(args.estimate_n / n)))}
    print(table)
    print("phase seconds:", phases.secs)
    print("saved", save_results(f"memory_{n // 1000}k" if args.data else "memory", results, table))
    if args.data:
        est, low = results["estimate"]["secs"], results["estimate"]["secs_if_n_log_n"]
        print(f"ESTIMATE for --n {args.estimate_n} --queries {args.estimate_queries}: about {est['total'] / 60:.0f} min with "
              f"insert/search cost ∝ size^{beta:.2f} as measured in this run's raw build (at least "
              f"{low['total'] / 60:.0f} min if it grew only as log n); per phase, s: {est}")
        load = max(results["machine"]["loadavg_1m_at_start"], results["machine"]["loadavg_1m_at_end"])
        if load > (os.cpu_count() or 1) / 2:
            print(f"  (load average {load} on {os.cpu_count()} CPUs during this run: the estimate is inflated "
                  f"by that load; a quiet machine is faster)")


def main_footprint(base: np.ndarray, restart_rows: int) -> None:
    """--footprint-only: the footprint rows at len(base) (and restart_rows) stored vectors."""
    tmp = tempfile.mkdtemp(prefix="tierdb-bench-")
    results: dict = {"machine": {**machine(), "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}, "dim": base.shape[1], "hnsw": {"m": INDEX.m, "ef_construction": INDEX.ef_construction}}
    rows: list[list] = []
    try:
        for n in [len(base)] + ([restart_rows] if restart_rows else []):
            print(f"footprint with {n} vectors ...")
            data_dir = os.path.join(tmp, f"fp-{n}")
            started = time.perf_counter()
            asyncio.run(build_restart_fixture(data_dir, base, n))
            print(f"  built in {time.perf_counter() - started:.0f} s")
            results[f"footprint_{n}"] = fp = bench_footprint(data_dir, base, n)
            print(fp)
            rows += footprint_rows(fp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = markdown_table(["metric", "raw hnswlib", "tierdb in-process", "", "target"], rows)
    print(table)
    print("saved", save_results("memory_footprint", results, table))


if __name__ == "__main__":
    main()
