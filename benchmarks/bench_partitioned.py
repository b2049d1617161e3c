"""Partitioned (IVF) segments: recall@10 vs nprobe, bytes fetched and scan time per query,
build time and build memory.

    python benchmarks/bench_partitioned.py                       # docstrings-50k
    python benchmarks/bench_partitioned.py --synth /work/synth-1m  # + a synth.py set (1M)

The segment is built from a memory map of base.npy into a temporary file (the streaming
path), then opened by header and searched one query at a time through ``fetch`` over a
memory map of that file.  "cold" = every probed partition is fetched and its sha256 verified
per query (what a node with empty caches pays, minus the network); "warm" = partitions
already decoded in RAM (scan only).
"""

from __future__ import annotations

import argparse
import mmap
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    DATASET_DIR,
    machine,
    markdown_table,
    recall_at_k,
    save_results,
)
from tierdb.engine import partitioned as pt

NPROBES = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128]
COLD_QUERIES = 30  # cold runs verify every probed byte: a few queries give the mean


def run(name: str, base_path: Path, queries: np.ndarray, gt: np.ndarray, n_queries: int, settings: pt.PartitionSettings) -> dict:
    base = np.load(base_path, mmap_mode="r")
    n = len(base)
    ids = [str(i) for i in range(n)]
    queries, gt = queries[:n_queries], gt[:n_queries]
    with tempfile.TemporaryDirectory(prefix="bench-ivf-") as tmp:
        path = os.path.join(tmp, "segment.ivf")
        tracemalloc.start()
        started = time.perf_counter()
        with open(path, "wb") as out:
            stats = pt.build(out, ids, base, None, "cosine", settings)
        build_secs = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"[{name}] built {n} rows into {stats.nlist} partitions in {build_secs:.1f}s, "
              f"peak traced memory {peak / 2**20:.0f} MiB, {stats.total_bytes / 2**20:.0f} MiB file", flush=True)
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mapped)
        fetched = {"calls": 0, "bytes": 0}

        def fetch(ranges: list[tuple[int, int]]) -> list[memoryview]:
            fetched["calls"] += 1
            fetched["bytes"] += sum(length for _, length in ranges)
            return [view[offset : offset + length] for offset, length in ranges]

        seg = pt.open_segment(fetch, name)
        open_calls, open_bytes = fetched["calls"], fetched["bytes"]
        decoded = dict(zip(range(seg.nlist), seg.loader(fetch)(list(range(seg.nlist)))))

        def warm(parts):
            return [decoded[p] for p in parts]

        rows_out = []
        for nprobe in NPROBES:
            if nprobe > seg.nlist:
                break
            found, warm_lat = [], []
            for q in queries:
                t = time.perf_counter()
                rows, _ = seg.search_partitions(q, 10, nprobe, warm)
                warm_lat.append(time.perf_counter() - t)
                found.append(rows[0][rows[0] >= 0])
            # global rows -> document ids (the input row numbers), outside the timed part
            found = [[int(i) for i in seg.documents(r, warm)[0]] for r in found]
            fetched.update(calls=0, bytes=0)
            cold_queries = queries[:COLD_QUERIES]
            cold_lat = []
            for q in cold_queries:
                t = time.perf_counter()
                seg.search(q, 10, nprobe, fetch)
                cold_lat.append(time.perf_counter() - t)
            rows_out.append({
                "nprobe": nprobe,
                "recall_at_10": round(recall_at_k(found, gt, 10), 4),
                "bytes_per_query": int(fetched["bytes"] / len(cold_queries)),
                "fetch_calls_per_query": fetched["calls"] / len(cold_queries),
                "cold_ms_per_query": round(1000 * float(np.mean(cold_lat)), 3),
                "warm_ms_per_query": round(1000 * float(np.mean(warm_lat)), 3),
            })
            print(f"[{name}] {rows_out[-1]}", flush=True)
        decoded.clear()
        view.release()
        mapped.close()
    sizes = np.diff(seg.starts)
    return {
        "rows": n,
        "dimension": int(base.shape[1]),
        "queries": len(queries),
        "nlist": stats.nlist,
        "partition_rows": {"min": int(sizes.min()), "median": int(np.median(sizes)), "max": int(sizes.max())},
        "header_bytes": stats.header_bytes,
        "file_bytes": stats.total_bytes,
        "open_fetch_calls": open_calls,
        "open_bytes": open_bytes,
        "build_secs": round(build_secs, 2),
        "build_peak_traced_mib": round(peak / 2**20, 1),
        "build_chunk_rows": stats.chunk_rows,
        "build_memory_bytes": settings.build_memory_bytes,
        "sweep": rows_out,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default=str(DATASET_DIR))
    parser.add_argument("--synth", help="a directory written by shared/datasets/synth.py")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rows-per-partition", type=int, default=pt.PartitionSettings().rows_per_partition)
    args = parser.parse_args()
    settings = pt.PartitionSettings(rows_per_partition=args.rows_per_partition)
    results: dict = {"machine": machine(), "default_nprobe": pt.DEFAULT_NPROBE, "rows_per_partition": settings.rows_per_partition}
    data = Path(args.dataset)
    if not (data / "base.npy").exists():
        sys.exit(f"dataset not found at {data}")
    results["docstrings"] = run("docstrings", data / "base.npy", np.load(data / "queries.npy"), np.load(data / "gt_cosine_top100.npy"), args.queries, settings)
    if args.synth:
        synth = Path(args.synth)
        results["synth"] = run("synth", synth / "base.npy", np.load(synth / "queries.npy"), np.load(synth / "gt_cosine_top10.npy"), args.queries, settings)
    results["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    table = "# Partitioned segments (IVF)\n\n"
    for key in ("docstrings", "synth"):
        if key not in results:
            continue
        r = results[key]
        table += (
            f"## {key}: {r['rows']:,} × {r['dimension']}, nlist {r['nlist']} (partition rows "
            f"{r['partition_rows']['min']}/{r['partition_rows']['median']}/{r['partition_rows']['max']} min/median/max)\n\n"
            f"build {r['build_secs']} s, peak traced build memory {r['build_peak_traced_mib']} MiB "
            f"(budget {r['build_memory_bytes'] // 2**20} MiB), header {r['header_bytes']:,} B, "
            f"open = {r['open_fetch_calls']} fetch calls / {r['open_bytes']:,} B\n\n"
        )
        table += markdown_table(
            ["nprobe", "recall@10", "bytes/query", "cold ms/query", "warm ms/query"],
            [[s["nprobe"], s["recall_at_10"], f"{s['bytes_per_query']:,}", s["cold_ms_per_query"], s["warm_ms_per_query"]] for s in r["sweep"]],
        ) + "\n"
    table += f"{args.queries} queries, one at a time; recall and warm from all queries, cold from the first {COLD_QUERIES}; cold = fetch + sha256 + scan from a page-cached file, warm = scan of decoded partitions. Machine: {results['machine']}\n"
    print(table)
    save_results("partitioned", results, table)


if __name__ == "__main__":
    main()
