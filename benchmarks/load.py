"""Load test: N concurrent HTTP clients, mixed queries and upserts, for a bounded time.

    python benchmarks/load.py                      # 32 clients, 80 % query / 20 % upsert, 5 min
    python benchmarks/load.py --duration 60        # shorter
    python benchmarks/load.py --url http://127.0.0.1:8080 --pid 1234   # an already running server

Plain asyncio + httpx, loopback only, bounded in count (``--max-ops``) and time (``--duration``).
Without ``--url`` it starts its own server (tests/server_process.py, memory policy, a temporary
data directory) and loads 100k documents: the shared dataset's ``base.npy`` (50k x 384) twice,
the second copy with ids offset by 50k and small Gaussian noise.  Then it compacts (so queries
use the HNSW index) and runs the mixed load: a query is k=10 for a dataset query vector or a
noisy base vector; an upsert rewrites ``--upsert-batch`` existing documents (so the count must
stay exactly 100k).  Bodies and responses are msgpack.

Reported: ingest rate, throughput overall and per op, p50/p95/p99 per op, errors by status,
server RSS sampled from /proc/PID/status every ``--rss-interval`` seconds, and its growth after
the warm-up (first ``--warmup`` seconds of the mixed load): last minus first post-warm-up sample
and the least-squares slope.  Saved to benchmarks/results/load.{json,md}.  Not part of the test
suite (it runs for minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import DATASET_DIR, RESULTS_DIR, machine, markdown_table  # noqa: E402

COLLECTION = "load"
MSGPACK = "application/msgpack"
HEADERS = {"content-type": MSGPACK, "accept": MSGPACK}
_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.decode


# == the data ======================================================================================


class Data:
    """100k documents from the 50k shared dataset: copy 0 as is, copy 1 offset by 50k + noise."""

    def __init__(self, dataset_dir: Path, copies: int, noise: float, seed: int = 0) -> None:
        base = np.load(dataset_dir / "base.npy").astype(np.float32)
        self.queries = np.load(dataset_dir / "queries.npy").astype(np.float32)
        self.n_base = len(base)
        rng = np.random.default_rng(seed)
        parts = [base]
        for _ in range(1, copies):
            parts.append(base + rng.normal(0, noise, base.shape).astype(np.float32))
        self.vectors = np.concatenate(parts)
        self.noise = noise
        self.dim = base.shape[1]

    def __len__(self) -> int:
        return len(self.vectors)

    @staticmethod
    def doc_id(i: int) -> str:
        return f"doc-{i}"

    def document(self, i: int, version: int, vector: np.ndarray | None = None) -> dict[str, Any]:
        v = self.vectors[i] if vector is None else vector
        return {"id": self.doc_id(i), "vector": v.tolist(),
                "metadata": {"copy": i // self.n_base, "row": i % self.n_base, "v": version}}


# == the server ====================================================================================


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    def __init__(self, pid: int | None, interval: float) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[dict[str, Any]] = []
        self.phase = "start"
        self.t0 = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        if self.pid is None:
            return
        value = rss_mb(self.pid)
        if value is not None:
            self.samples.append({"t": round(time.monotonic() - self.t0, 2), "rss_mb": round(value, 1), "phase": self.phase})

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self.sample()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


def start_server(args: argparse.Namespace, data_dir: str) -> Any:
    from tests.server_process import ServerProcess

    env = {"TIERDB_LOG_LEVEL": "WARNING", "TIERDB_LOG_ACCESS_LOG": "false"}
    # ServerProcess drops the parent's TIERDB_* variables; forward the S3 ones for S3 policies.
    env.update({k: v for k, v in os.environ.items() if k.startswith(("TIERDB_S3_", "TIERDB_CACHE_", "AWS_"))})
    server = ServerProcess(data_dir, policy=args.policy, env=env, log_path=Path(data_dir).parent / "server.log")
    server.start(timeout=600)
    return server


# == phases ========================================================================================


async def ingest(client: httpx.AsyncClient, data: Data, batch: int, concurrency: int) -> dict[str, Any]:
    response = await client.post("/v1/collections", json={"name": COLLECTION, "dimension": data.dim, "metric": "cosine"})
    if response.status_code == 409:
        raise SystemExit(f"collection {COLLECTION!r} already exists on this server; use a fresh server")
    response.raise_for_status()
    started = time.perf_counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for start in range(0, len(data), batch):
        queue.put_nowait(start)

    async def worker() -> None:
        while not queue.empty():
            start = queue.get_nowait()
            docs = [data.document(i, 0) for i in range(start, min(start + batch, len(data)))]
            r = await client.post(f"/v1/collections/{COLLECTION}/documents", content=_encode({"documents": docs}), headers=HEADERS)
            if r.status_code != 200:
                raise RuntimeError(f"ingest failed: {r.status_code} {r.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return {"documents": len(data), "seconds": round(seconds, 2), "docs_per_sec": round(len(data) / seconds, 1)}


async def compact(client: httpx.AsyncClient) -> dict[str, Any]:
    started = time.perf_counter()
    r = await client.post(f"/admin/collections/{COLLECTION}/compact", json={"full": True}, timeout=1800)
    seconds = time.perf_counter() - started
    return {"status": r.status_code, "seconds": round(seconds, 2), "result": r.json() if r.status_code == 200 else r.text[:300]}


class Recorder:
    def __init__(self, t0: float, bucket_secs: float) -> None:
        self.t0, self.bucket = t0, bucket_secs
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()
        self.buckets: dict[int, Counter[str]] = defaultdict(Counter)
        self.ops = 0

    def record(self, op: str, seconds: float, ok: bool, what: str = "") -> None:
        self.ops += 1
        now = time.monotonic()
        self.buckets[int((now - self.t0) // self.bucket)][op] += 1
        if ok:
            self.latencies[op].append(seconds)
        else:
            self.errors[f"{op}:{what}"] += 1


async def client_loop(cid: int, url: str, data: Data, args: argparse.Namespace, rec: Recorder,
                      deadline: float, budget: list[int], versions: Counter[int]) -> None:
    rng = random.Random(args.seed * 1000 + cid)
    nprng = np.random.default_rng(args.seed * 1000 + cid)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, headers=HEADERS) as client:
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            if rng.random() < args.query_ratio:
                op = "query"
                if rng.random() < 0.5:
                    vector = data.queries[rng.randrange(len(data.queries))]
                else:
                    vector = data.vectors[rng.randrange(len(data))] + nprng.normal(0, 0.01, data.dim).astype(np.float32)
                body = {"vector": vector.tolist(), "k": args.k}
                path = f"/v1/collections/{COLLECTION}/query"
            else:
                op = "upsert"
                docs = []
                for i in rng.sample(range(len(data)), args.upsert_batch):
                    versions[i] += 1
                    noisy = data.vectors[i] + nprng.normal(0, data.noise, data.dim).astype(np.float32)
                    docs.append(data.document(i, versions[i], noisy))
                body = {"documents": docs}
                path = f"/v1/collections/{COLLECTION}/documents"
            payload = _encode(body)
            started = time.perf_counter()
            try:
                response = await client.post(path, content=payload)
                elapsed = time.perf_counter() - started
                ok = response.status_code == 200
                if ok and op == "query":
                    ok = len(_decode(response.content)["results"]) == args.k
                    what = "short result" if not ok else ""
                else:
                    what = str(response.status_code)
                rec.record(op, elapsed, ok, what)
            except httpx.HTTPError as exc:
                rec.record(op, time.perf_counter() - started, False, type(exc).__name__)


def summarize(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ms = np.asarray(seconds) * 1000
    return {f"p{p}_ms": round(float(np.percentile(ms, p)), 2) for p in (50, 95, 99)} | {
        "mean_ms": round(float(ms.mean()), 2), "max_ms": round(float(ms.max()), 2)}


def rss_report(samples: list[dict[str, Any]]) -> dict[str, Any]:
    after = [s for s in samples if s["phase"] == "load"]
    if len(after) < 2:
        return {"samples_after_warmup": len(after)}
    t = np.array([s["t"] for s in after])
    r = np.array([s["rss_mb"] for s in after])
    slope = float(np.polyfit(t, r, 1)[0]) * 60 if len(after) >= 3 else 0.0
    by_phase: dict[str, float] = {}
    for s in samples:
        by_phase[s["phase"]] = s["rss_mb"]          # last sample of each phase
    return {
        "samples_after_warmup": len(after),
        "first_after_warmup_mb": after[0]["rss_mb"],
        "last_mb": after[-1]["rss_mb"],
        "max_mb": max(s["rss_mb"] for s in samples),
        "growth_after_warmup_mb": round(after[-1]["rss_mb"] - after[0]["rss_mb"], 1),
        "growth_after_warmup_pct": round(100 * (after[-1]["rss_mb"] - after[0]["rss_mb"]) / after[0]["rss_mb"], 2),
        "slope_after_warmup_mb_per_min": round(slope, 2),
        "last_by_phase_mb": by_phase,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Data(Path(args.dataset), args.copies, args.noise, args.seed)
    server = None
    tmp = None
    pid = args.pid
    url = args.url
    results: dict[str, Any] = {"config": {k: v for k, v in vars(args).items()}, "machine": machine()}
    try:
        if url is None:
            tmp = tempfile.TemporaryDirectory(prefix="tierdb-load-")
            started = time.perf_counter()
            server = start_server(args, os.path.join(tmp.name, "data"))
            results["server_start_secs"] = round(time.perf_counter() - started, 2)
            url, pid = server.url, server.process.pid
        sampler = RssSampler(pid, args.rss_interval)
        sampler.start()
        async with httpx.AsyncClient(base_url=url, timeout=600) as admin:
            if not args.no_ingest:
                sampler.phase = "ingest"
                print(f"ingesting {len(data)} documents of dimension {data.dim} ...", flush=True)
                results["ingest"] = await ingest(admin, data, args.ingest_batch, args.ingest_concurrency)
                print(f"  {results['ingest']}", flush=True)
                sampler.phase = "compact"
                results["compact"] = await compact(admin)
                print(f"  compaction: {results['compact']['status']} in {results['compact']['seconds']} s", flush=True)

            sampler.phase = "warmup"
            t0 = time.monotonic()
            deadline = t0 + args.duration
            rec = Recorder(t0, args.bucket)
            budget = [args.max_ops]
            versions: Counter[int] = Counter()

            async def switch_phase() -> None:
                await asyncio.sleep(args.warmup)
                sampler.phase = "load"
                sampler.sample()

            switcher = asyncio.get_running_loop().create_task(switch_phase())
            print(f"mixed load: {args.clients} clients, {args.query_ratio:.0%} query, {args.duration} s ...", flush=True)
            await asyncio.gather(*(client_loop(c, url, data, args, rec, deadline, budget, versions)
                                   for c in range(args.clients)))
            elapsed = time.monotonic() - t0
            switcher.cancel()
            await sampler.stop()

            info = (await admin.get(f"/v1/collections/{COLLECTION}")).json()
            health = (await admin.get("/health")).json()

        total_ok = sum(len(v) for v in rec.latencies.values())
        results["load"] = {
            "seconds": round(elapsed, 1),
            "ops": rec.ops,
            "ops_ok": total_ok,
            "throughput_ops_per_sec": round(total_ok / elapsed, 1),
            "per_op": {op: {"count": len(lat), "ops_per_sec": round(len(lat) / elapsed, 1), **summarize(lat)}
                       for op, lat in sorted(rec.latencies.items())},
            "errors": dict(rec.errors),
            "error_count": sum(rec.errors.values()),
            "timeline": [{"t": b * args.bucket, **dict(c)} for b, c in sorted(rec.buckets.items())],
        }
        results["final"] = {"count": info.get("count"), "expected_count": len(data) if not args.no_ingest else None,
                            "segments": info.get("segments"), "manifest_version": info.get("manifest_version"),
                            "health": health.get("status")}
        results["rss"] = {"interval_secs": args.rss_interval, "pid": pid, "report": rss_report(sampler.samples),
                          "samples": sampler.samples}
    finally:
        if server is not None:
            results["server_exit_code"] = server.stop()
        if tmp is not None:
            tmp.cleanup()
    return results


def markdown(results: dict[str, Any]) -> str:
    cfg, load, rss = results["config"], results["load"], results["rss"]["report"]
    lines = [
        "# TierDB load test",
        "",
        f"{cfg['clients']} concurrent HTTP clients (asyncio + httpx, msgpack bodies, loopback), "
        f"{cfg['query_ratio']:.0%} query (k={cfg['k']}) / {1 - cfg['query_ratio']:.0%} upsert "
        f"({cfg['upsert_batch']} existing doc(s) rewritten per upsert) on {results['final']['expected_count'] or '?'} "
        f"documents, {load['seconds']} s after {cfg['warmup']} s counted as warm-up for RSS; "
        f"policy {cfg['policy']}; machine: {results['machine']}.",
        "",
    ]
    if "ingest" in results:
        lines += [f"Ingest: {results['ingest']['documents']} docs in {results['ingest']['seconds']} s "
                  f"({results['ingest']['docs_per_sec']} docs/s, acknowledged); full compaction (index build) "
                  f"{results['compact']['seconds']} s.", ""]
    rows = [["all", load["ops_ok"], load["throughput_ops_per_sec"], "", "", "", ""]]
    for op, s in load["per_op"].items():
        rows.append([op, s["count"], s["ops_per_sec"], s.get("p50_ms"), s.get("p95_ms"), s.get("p99_ms"), s.get("max_ms")])
    lines.append(markdown_table(["op", "ok", "ops/s", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows))
    lines += [f"Errors: {load['error_count']} {load['errors'] or ''}", ""]
    lines += [f"Final: count {results['final']['count']} (expected {results['final']['expected_count']}), "
              f"{results['final']['segments']} segments, manifest v{results['final']['manifest_version']}, "
              f"health {results['final']['health']}.", ""]
    if rss.get("samples_after_warmup", 0) >= 2:
        lines.append(markdown_table(
            ["server RSS", "MB"],
            [["after ingest+compaction (end of each phase)", json.dumps(rss["last_by_phase_mb"])],
             ["first sample after warm-up", rss["first_after_warmup_mb"]],
             ["last sample", rss["last_mb"]],
             ["max", rss["max_mb"]],
             ["growth after warm-up", f"{rss['growth_after_warmup_mb']} MB ({rss['growth_after_warmup_pct']} %)"],
             ["least-squares slope after warm-up", f"{rss['slope_after_warmup_mb_per_min']} MB/min"]]))
    samples = results["rss"]["samples"]
    if samples:
        lines += ["RSS over time (s: MB): " + ", ".join(f"{s['t']:.0f}: {s['rss_mb']:.0f}" for s in samples), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="an already running server (loopback); default: start one")
    p.add_argument("--pid", type=int, help="PID of the server given by --url, for RSS sampling")
    p.add_argument("--policy", default="memory", help="tiering policy of the started server (S3 ones need TIERDB_S3_*)")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of mixed load (default 300)")
    p.add_argument("--warmup", type=float, default=None, help="seconds of the mixed load counted as warm-up (default: 20%%, at most 60)")
    p.add_argument("--max-ops", type=int, default=10_000_000, help="stop after this many operations")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--query-ratio", type=float, default=0.8)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--upsert-batch", type=int, default=1, help="documents per upsert request")
    p.add_argument("--copies", type=int, default=2, help="copies of the 50k dataset (2 = 100k documents)")
    p.add_argument("--noise", type=float, default=0.01, help="std of the noise added to copies and upserts")
    p.add_argument("--dataset", default=str(DATASET_DIR))
    p.add_argument("--ingest-batch", type=int, default=1000)
    p.add_argument("--ingest-concurrency", type=int, default=2)
    p.add_argument("--no-ingest", action="store_true", help="with --url: the collection is already loaded")
    p.add_argument("--rss-interval", type=float, default=5.0)
    p.add_argument("--bucket", type=float, default=10.0, help="seconds per throughput timeline bucket")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--output", default="load", help="results file name under benchmarks/results/")
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(60.0, args.duration / 5)
    if args.url and not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        p.error("--url must be a loopback address")

    results = asyncio.run(run(args))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{args.output}.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (RESULTS_DIR / f"{args.output}.md").write_text(table)
    print(table)
    print(f"saved {RESULTS_DIR / args.output}.json and .md")
    bad = results["load"]["error_count"] or (
        results["final"]["expected_count"] is not None and results["final"]["count"] != results["final"]["expected_count"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
