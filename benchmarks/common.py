"""Shared helpers for the benchmarks: dataset loading, timing statistics, result files."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATASET_DIR = Path(os.environ.get("TIERDB_DATASET_DIR", ROOT.parent / "shared" / "datasets" / "docstrings-50k"))
RESULTS_DIR = ROOT / "benchmarks" / "results"
GT_FILES = ("gt_cosine_top100.npy", "gt_cosine_top10.npy")  # docstrings-50k, synth.py sets


class Dataset:
    def __init__(self, base: np.ndarray, queries: np.ndarray, gt: np.ndarray) -> None:
        self.base, self.queries, self.gt = base, queries, gt


def load_dataset(n: int | None = None, n_queries: int | None = None, directory: str | os.PathLike | None = None) -> Dataset:
    """base.npy, queries.npy and the exact top-k file (gt_cosine_top100.npy, or the synthetic
    sets' gt_cosine_top10.npy) from ``directory`` (default DATASET_DIR); with ``n`` below the base
    size, the first ``n`` rows (only those are read from the memory map) and the ground truth
    recomputed for that prefix at the stored k."""
    root = Path(directory) if directory is not None else DATASET_DIR
    if not (root / "base.npy").exists():
        sys.exit(f"dataset not found at {root} (set TIERDB_DATASET_DIR or pass a dataset directory)")
    gt_path = next((root / f for f in GT_FILES if (root / f).exists()), None)
    if gt_path is None:
        sys.exit(f"no ground truth ({' or '.join(GT_FILES)}) in {root}")
    base = np.load(root / "base.npy", mmap_mode="r")
    base = np.array(base[:n] if n else base, dtype=np.float32)  # a copy in RAM, not the memory map
    queries = np.load(root / "queries.npy").astype(np.float32)
    gt = np.load(gt_path)
    if n_queries:
        queries, gt = queries[:n_queries], gt[:n_queries]
    if n and n < gt_base_rows(root):
        gt = exact_top_cosine(base, queries, gt.shape[1])
    return Dataset(base, queries, gt)


def exact_top_cosine(base: np.ndarray, queries: np.ndarray, k: int, block_cells: int = 1 << 24) -> np.ndarray:
    """Brute-force top-k rows of ``base`` by cosine similarity, best first (int32).  Scans
    ``base`` in blocks of rows so that one queries x block float32 matrix of about
    ``block_cells`` cells is held at a time, never queries x all rows."""
    def unit(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-30)

    q = unit(queries)
    block = max(k + 1, block_cells // max(len(q), 1))
    best_ids = np.empty((len(q), 0), dtype=np.int64)
    best_sims = np.empty((len(q), 0), dtype=np.float32)
    for start in range(0, len(base), block):
        chunk = base[start : start + block]
        sims = np.concatenate([best_sims, q @ unit(chunk).T], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(np.arange(start, start + len(chunk)), (len(q), len(chunk)))], axis=1)
        if sims.shape[1] > k:
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            sims, ids = np.take_along_axis(sims, top, axis=1), np.take_along_axis(ids, top, axis=1)
        best_sims, best_ids = sims, ids
    order = np.argsort(-best_sims, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, axis=1).astype(np.int32)


def exact_top_cosine_chunked(base: np.ndarray, queries: np.ndarray, k: int, chunk_rows: int = 100_000) -> np.ndarray:
    """``exact_top_cosine`` over ``base`` in chunks of rows (a memory map works): memory stays at
    queries x chunk_rows similarities, whatever the base size."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-30)
    best_sims = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(q), 0), dtype=np.int64)
    for start in range(0, len(base), chunk_rows):
        chunk = np.asarray(base[start : start + chunk_rows], dtype=np.float32)
        chunk = chunk / np.maximum(np.linalg.norm(chunk, axis=1, keepdims=True), 1e-30)
        sims = np.concatenate([best_sims, q @ chunk.T], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(np.arange(start, start + len(chunk)), (len(q), len(chunk)))], axis=1)
        top = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k]
        best_sims, best_ids = np.take_along_axis(sims, top, axis=1), np.take_along_axis(ids, top, axis=1)
    order = np.argsort(-best_sims, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, axis=1).astype(np.int32)


def gt_base_rows(root: Path) -> int:
    """Rows in ``root``/base.npy, read from the header only."""
    return int(np.load(root / "base.npy", mmap_mode="r").shape[0])


def recall_at_k(found: list[list[int]], gt: np.ndarray, k: int) -> float:
    hits = sum(len(set(f[:k]) & set(gt[i, :k].tolist())) for i, f in enumerate(found))
    return hits / (k * len(found))


def latency_summary(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def machine() -> dict[str, object]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def save_results(name: str, results: dict, table: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True))
    (RESULTS_DIR / f"{name}.md").write_text(table)
    return path


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"



def start_server(data_dir: str, timeout: float = 600.0):
    """A real ``python -m tierdb serve`` process (tests/server_process.py) and its seconds to ready."""
    sys.path.insert(0, str(ROOT))
    from tests.server_process import ServerProcess

    server = ServerProcess(data_dir, env={"TIERDB_LOG_LEVEL": "WARNING"})
    started = time.perf_counter()
    server.start(timeout=timeout)
    return server, time.perf_counter() - started


def build_raw_hnswlib(base, queries, gt, *, m: int, ef_construction: int, ef: int, k: int = 10):
    """The raw hnswlib baseline: build, then single sequential queries. Returns (index, stats);
    the index is kept so a caller can also time it interleaved with TierDB under the same load."""
    import hnswlib

    index = hnswlib.Index(space="cosine", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=m, ef_construction=ef_construction)
    half = len(base) // 2  # two calls (the same inserts) to see how insert cost grows with size
    started, cpu_started = time.perf_counter(), time.process_time()
    index.add_items(base[:half], np.arange(half))
    first_half, first_half_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    index.add_items(base[half:], np.arange(half, len(base)))
    build, build_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    index.set_ef(ef)
    found, lat = [], []
    for q in queries:
        t = time.perf_counter()
        labels, _ = index.knn_query(q, k=k, num_threads=1)
        lat.append(time.perf_counter() - t)
        found.append(labels[0].tolist())
    return index, {
        "build_secs": round(build, 3),
        "build_half_secs": [round(first_half, 3), round(build - first_half, 3)],
        "build_half_cpu_secs": [round(first_half_cpu, 3), round(build_cpu - first_half_cpu, 3)],
        "ingest_docs_per_sec": round(len(base) / build, 1),
        "query": latency_summary(lat),
        "recall_at_10": round(recall_at_k(found, gt, k), 4),
    }
