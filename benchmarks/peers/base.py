"""What every system's runner shares: the job description, timing sweeps, RSS, disk and S3 metering.

A *job* (``job.json`` in the run's work directory, written by the driver) says which dataset,
how many rows and queries, the batch size and, when an S3 server runs, how to reach it and its
Prometheus metrics.  Each system runs in its own process (``compare.py --run SYSTEM``) so that
its peak RSS is its own; its cold start runs in yet another one (``compare.py --cold SYSTEM``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np

from common import latency_summary, recall_at_k

K = 10
EF_SWEEP = (16, 32, 64, 128, 256)
DEFAULT_EF = 128          # TierDB's index.ef_search default; hnswlib and Chroma use the same
WARMUP_QUERIES = 20       # untimed, before every sweep point
COLD_QUERIES = 100        # timed after the first cold query, compared with the warm run
POINT_BUDGET_SECS = 15.0  # a sweep point stops after this much query time ...
POINT_MIN_QUERIES = 200   # ... but never before this many queries (slow systems: LanceDB on S3)
COMPARE_PY = Path(__file__).resolve().parent.parent / "compare.py"


# -- the job -------------------------------------------------------------------------------------


@dataclass
class S3Env:
    kind: str
    endpoint: str
    bucket: str
    access_key: str | None
    secret_key: str | None
    region: str
    metrics_url: str | None = None   # SeaweedFS -metricsPort: server-side request and byte counts


@dataclass
class Job:
    workdir: str
    dataset: str
    n: int
    queries: int
    batch: int
    s3: S3Env | None = None
    child_timeout_secs: float = 1200.0
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Job":
        raw = json.loads(Path(path).read_text())
        s3 = S3Env(**raw.pop("s3")) if raw.get("s3") else None
        return cls(s3=s3, **raw)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @property
    def path(self) -> Path:
        return Path(self.workdir) / "job.json"

    def dir(self, name: str) -> Path:
        d = Path(self.workdir) / name
        d.mkdir(parents=True, exist_ok=True)
        return d


def job_data(job: Job) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base, queries, gt): the first ``n`` rows and the driver's ground truth for them."""
    base = np.load(Path(job.dataset) / "base.npy", mmap_mode="r")[: job.n]
    base = np.array(base, dtype=np.float32)   # in RAM (part of the baseline), not a lazily paged memory map
    queries, gt = job_queries(job)
    return base, queries, gt


def job_queries(job: Job) -> tuple[np.ndarray, np.ndarray]:
    queries = np.load(Path(job.dataset) / "queries.npy")[: job.queries].astype(np.float32)
    gt = np.load(Path(job.workdir) / "gt.npy")
    return queries, gt


# -- process memory and disk -----------------------------------------------------------------------


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) of a process, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs 5), so the dataset's ground-truth
    computation and loading transients are not charged to the system measured."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def du_bytes(path: str | os.PathLike) -> int:
    """Apparent size of every regular file under ``path`` (du -sb without directories)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            total += st.st_size
    return total


# -- S3: server-side counters --------------------------------------------------------------------------

_SAMPLE = re.compile(r'^(?P<name>[A-Za-z_:][\w:]*)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def server_counters(s3: S3Env | None) -> dict[str, Any] | None:
    """SeaweedFS's own count of S3 requests (by type) and bytes in / out for our bucket."""
    if s3 is None or not s3.metrics_url:
        return None
    text = urllib.request.urlopen(s3.metrics_url, timeout=10).read().decode()
    requests: dict[str, float] = {}
    errors = 0.0
    received = sent = 0.0
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m["labels"]))
        if labels.get("bucket") != s3.bucket:
            continue
        value = float(m["value"])
        if m["name"] == "SeaweedFS_s3_request_total":
            requests[labels.get("type", "?")] = requests.get(labels.get("type", "?"), 0.0) + value
            if not labels.get("code", "200").startswith(("2", "3")) and labels.get("code") != "404":
                errors += value
        elif m["name"] == "SeaweedFS_s3_bucket_traffic_received_bytes_total":
            received += value
        elif m["name"] == "SeaweedFS_s3_bucket_traffic_sent_bytes_total":
            sent += value
    return {"requests": requests, "error_responses": errors, "bytes_received": received, "bytes_sent": sent}


def counter_delta(before: dict | None, after: dict | None) -> dict | None:
    if before is None or after is None:
        return None
    req = {k: int(after["requests"].get(k, 0) - before["requests"].get(k, 0))
           for k in set(after["requests"]) | set(before["requests"])}
    req = {k: v for k, v in sorted(req.items()) if v}
    return {
        "requests": req,
        "total_requests": sum(req.values()),
        "error_responses": int(after["error_responses"] - before["error_responses"]),
        "bytes_uploaded": int(after["bytes_received"] - before["bytes_received"]),
        "bytes_downloaded": int(after["bytes_sent"] - before["bytes_sent"]),
    }


class S3Meter:
    """Server-side S3 traffic between ``mark()`` calls, by phase name."""

    def __init__(self, s3: S3Env | None) -> None:
        self.s3 = s3
        self.phases: dict[str, dict | None] = {}
        self._last = server_counters(s3)

    def mark(self, phase: str) -> dict | None:
        now = server_counters(self.s3)
        self.phases[phase] = counter_delta(self._last, now)
        self._last = now
        return self.phases[phase]


# -- timing ------------------------------------------------------------------------------------------


def sweep_point(label: str, knobs: dict, lat: list[float], found: list[list[int]], gt: np.ndarray) -> dict:
    return {"knob": label, "knobs": knobs, **latency_summary(lat), "recall_at_10": round(recall_at_k(found, gt, K), 4),
            "queries": len(lat)}


def run_sweep(points: list[tuple[str, dict]], search: Callable[[np.ndarray, dict], list[int]],
              queries: np.ndarray, gt: np.ndarray, prepare: Callable[[dict], None] | None = None,
              log: Callable[[str], None] | None = None) -> list[dict]:
    """Sequential single-query latency and recall@10 at every knob setting."""
    out = []
    for label, knobs in points:
        if prepare is not None:
            prepare(knobs)
        for q in queries[:WARMUP_QUERIES]:
            search(q, knobs)
        found, lat = [], []
        for q in queries:
            t = time.perf_counter()
            ids = search(q, knobs)
            lat.append(time.perf_counter() - t)
            found.append(ids)
            if len(lat) >= POINT_MIN_QUERIES and sum(lat) > POINT_BUDGET_SECS:
                break
        out.append(sweep_point(label, knobs, lat, found, gt))
        if log:
            log(f"    {label:<16} p50 {out[-1]['p50_ms']:>8.3f} ms  recall@10 {out[-1]['recall_at_10']}")
    return out


async def run_sweep_async(points: list[tuple[str, dict]], search: Callable[[np.ndarray, dict], Awaitable[list[int]]],
                          queries: np.ndarray, gt: np.ndarray, log: Callable[[str], None] | None = None) -> list[dict]:
    out = []
    for label, knobs in points:
        for q in queries[:WARMUP_QUERIES]:
            await search(q, knobs)
        found, lat = [], []
        for q in queries:
            t = time.perf_counter()
            ids = await search(q, knobs)
            lat.append(time.perf_counter() - t)
            found.append(ids)
            if len(lat) >= POINT_MIN_QUERIES and sum(lat) > POINT_BUDGET_SECS:
                break
        out.append(sweep_point(label, knobs, lat, found, gt))
        if log:
            log(f"    {label:<16} p50 {out[-1]['p50_ms']:>8.3f} ms  recall@10 {out[-1]['recall_at_10']}")
    return out


def ef_points() -> list[tuple[str, dict]]:
    return [(f"ef={ef}", {"ef": ef}) for ef in EF_SWEEP]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- cold start: a fresh process ---------------------------------------------------------------------


def spawn_cold(job: Job, system: str, state: dict, timeout: float = 600.0) -> dict:
    """Run ``compare.py --cold SYSTEM`` in a fresh interpreter: interpreter start, imports, open
    of the existing data and the first query all count.  Returns its JSON result plus
    ``spawn_to_first_result_secs``, measured from just before the process is spawned."""
    workdir = Path(job.workdir)
    state_path = workdir / f"{system}.cold-state.json"
    out = workdir / f"{system}.cold.json"
    state_path.write_text(json.dumps(state))
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(COMPARE_PY), "--cold", system, "--job", str(job.path), "--state", str(state_path),
           "--out", str(out)]
    t0 = time.time()
    proc = subprocess.run(cmd, env=child_env(), timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not out.exists():
        return {"ok": False, "error": f"cold process exited {proc.returncode}", "log_tail": proc.stdout.decode(errors="replace")[-3000:]}
    result = json.loads(out.read_text())
    result["spawn_to_first_result_secs"] = round(result.pop("first_result_unix") - t0, 3)
    return result


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LANCE_LOG", "error")            # lance's scanner warns on every query otherwise
    env.setdefault("ANONYMIZED_TELEMETRY", "False")  # chromadb
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cold_result(first_result_unix: float, import_secs: float, open_secs: float, first_query_secs: float,
                first_ids: list[int], lat: list[float], found: list[list[int]], gt: np.ndarray, **extra) -> dict:
    return {
        "ok": True,
        "first_result_unix": first_result_unix,
        "import_secs": round(import_secs, 3),
        "open_secs": round(open_secs, 3),
        "first_query_ms": round(first_query_secs * 1000, 3),
        "open_plus_first_query_ms": round((open_secs + first_query_secs) * 1000, 1),
        "next_queries": latency_summary(lat) if lat else {},
        "recall_at_10_next_queries": round(recall_at_k([first_ids] + found, gt[: len(found) + 1], K), 4),
        "serve_peak_rss_bytes": proc_status()["VmHWM"],
        "serve_rss_bytes": proc_status()["VmRSS"],
        **extra,
    }


def write_json(path: str | os.PathLike, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
