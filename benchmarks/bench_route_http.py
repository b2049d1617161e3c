"""Over HTTP, interleaved: the floor app, TierDB at a baseline commit and TierDB here, answering
the same 50k collection, one query to each in turn, so machine load hits all three alike (the
sequential phases of bench_memory.py drift apart on a busy machine).

    python benchmarks/bench_route_http.py --baseline /path/to/baseline/checkout [--n 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import INDEX, K, bench_in_process  # noqa: E402
from common import ROOT, build_raw_hnswlib, latency_summary, load_dataset  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.server_process import ServerProcess, free_port  # noqa: E402


class IsolatedServer(ServerProcess):
    """``python -P``: the working directory (this checkout) is not put on sys.path, so the
    PYTHONPATH given decides which tierdb runs."""

    def command(self) -> list[str]:
        cmd = super().command()
        return [cmd[0], "-P", *cmd[1:]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True, help="a checkout of the baseline commit")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    data = load_dataset(args.n, args.queries)
    tmp = Path(tempfile.mkdtemp(prefix="tierdb-route-"))
    servers, floor = [], None
    try:
        index, raw_stats = build_raw_hnswlib(data.base, data.queries, data.gt, m=INDEX.m,
                                             ef_construction=INDEX.ef_construction, ef=INDEX.ef_search, k=K)
        raw = raw_stats["query"]  # back to back: its graph stays in the CPU caches between queries
        inproc = asyncio.run(bench_in_process(str(tmp / "a"), data.base, data.queries, data.gt))["query"]
        shutil.copytree(tmp / "a", tmp / "b")
        port = free_port()
        floor = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "floor_app.py"), "--port", str(port)])
        env = {"TIERDB_LOG_LEVEL": "WARNING"}
        baseline = IsolatedServer(tmp / "a", env={**env, "PYTHONPATH": args.baseline})
        current = IsolatedServer(tmp / "b", env={**env, "PYTHONPATH": str(ROOT)})
        for server in (baseline, current):
            server.start(timeout=600)
            servers.append(server)
        targets = {"floor": f"http://127.0.0.1:{port}", "baseline": baseline.url, "current": current.url}
        bodies = [msgspec.json.encode({"vector": q.tolist(), "k": K}) for q in data.queries]
        clients = {name: httpx.Client(base_url=url, timeout=30) for name, url in targets.items()}
        # Raw hnswlib also takes its turn in the rotation (in this process): between its
        # queries the three servers run, as they run between each other's, so it pays the same
        # cache misses a server's search pays.  Both raw numbers are reported.
        turns = [*targets, "raw"]
        lat: dict[str, list[float]] = {name: [] for name in turns}
        headers = {"content-type": "application/json"}
        for i, (body, query) in enumerate(zip(bodies[:50] + bodies, [*data.queries[:50], *data.queries])):
            names = turns[i % len(turns):] + turns[: i % len(turns)]  # rotate who goes first
            for name in names:
                t = time.perf_counter()
                if name == "raw":
                    index.knn_query(query, k=K, num_threads=1)
                else:
                    r = clients[name].post("/v1/collections/bench/query", content=body, headers=headers)
                elapsed = time.perf_counter() - t
                if name != "raw":
                    r.raise_for_status()
                if i >= 50:
                    lat[name].append(elapsed)
        summary = {name: latency_summary(values) for name, values in lat.items()}
        interleaved = summary.pop("raw")
        print(f"raw hnswlib p50 {raw['p50_ms']} ms back to back, {interleaved['p50_ms']} ms interleaved; "
              f"in-process p50 {inproc['p50_ms']} ms")
        for name, s in summary.items():
            extra = ""
            if name != "floor":
                route = s["p50_ms"] - summary["floor"]["p50_ms"]
                extra = (f"  (p50 - floor) / raw = {route / raw['p50_ms']:.2f} back to back, "
                         f"{route / interleaved['p50_ms']:.2f} interleaved")
            print(f"{name:9s} p50 {s['p50_ms']:.3f} ms  p95 {s['p95_ms']:.3f}  p99 {s['p99_ms']:.3f}{extra}")
    finally:
        for server in servers:
            server.stop()
        if floor is not None:
            floor.terminate()
            floor.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
