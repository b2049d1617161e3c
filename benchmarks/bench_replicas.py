"""Benchmark of read replicas: one `s3_only` writer process and 1, 2, 3 reader processes.

    python benchmarks/bench_replicas.py [--n 20000] [--clients 8] [--query-secs 20]
                                        [--rate 500] [--ingest-secs 30] [--idle-secs 60] [--poll-max 5]

Starts a local S3 server (tierdb/testing/s3_server.py, as bench_s3.py does), a writer
(`tierdb serve`, policy `s3_only`) and three readers (`tierdb serve --role reader`), all real
processes on loopback (tests/server_process.py), loads ``--n`` documents of the dataset, then:

throughput
    ``--clients`` threads share one client with ``read_urls`` = the first N readers (N = 1, 2, 3;
    reads go round-robin) for ``--query-secs`` each: QPS, p50/p99, CPU seconds per node.  The
    readers not in use stay up (idle polling), so every N runs on the same machine load.  On a
    machine with fewer cores than processes throughput cannot scale with N: the CPU count is
    reported with the numbers.
lag
    the writer ingests at ``--rate`` docs/s (batches every 0.1 s) for ``--ingest-secs``; for
    every other batch, the time from the writer's acknowledgement until its first document
    is returned by a get-by-id on every reader (polled every 20 ms): p50/p99/max.  Target: p99
    ≤ 1 s.
requests per hour
    ``replica_poll_requests_total`` of each reader during the ingest (busy) and, after a quiet
    spell long enough for the poll backoff to reach ``node.poll_max_secs`` (``--poll-max``, low
    so the run stays short), while idle; the idle rate is also scaled to the default 25 s
    (requests per interval are the same, the interval 25/poll_max longer).  Dollars per reader per
    collection per month at AWS S3 list prices (GET/HEAD $0.0004 per 1,000, LIST $0.005 per
    1,000); the discovery LIST (per reader, not per collection) is stated apart.  Target: idle
    ≤ $0.10 per collection per month.

Results go to benchmarks/results/replicas.{json,md}.  Loopback S3: no network latency, so real
lags are higher by about two S3 round trips.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from common import DATASET_DIR, ROOT, latency_summary, load_dataset, machine, markdown_table, recall_at_k, save_results
from bench_s3 import start_s3_server

sys.path.insert(0, str(ROOT))
from tests.server_process import ServerProcess  # noqa: E402

import tierdb  # noqa: E402

COLLECTION = "docs"
K = 10
READERS = 3
LOAD_BATCH = 1000
INGEST_TICK_SECS = 0.1        # the writer sends one batch per tick during the lag phase
PROBE_EVERY = 2               # lag sample: the first document of every 2nd batch
PROBE_INTERVAL_SECS = 0.02    # get-by-id poll period per reader while waiting for a sample
VISIBLE_DEADLINE_SECS = 60.0
DEFAULT_POLL_MAX_SECS = 25.0  # node.poll_max_secs default (tierdb/config.py)
DEFAULT_DISCOVER_SECS = 300.0  # node.discover_interval_secs default
GET_PRICE = 0.0004 / 1000      # AWS S3 standard, us-east-1: GET/HEAD per request
LIST_PRICE = 0.005 / 1000      # LIST (and PUT) per request
HOURS_PER_MONTH = 730
TICKS = os.sysconf("SC_CLK_TCK")


# -- processes ---------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def node_env(server, prefix: str, poll_max: float, log_level: str) -> dict[str, str]:
    return {**server.server_env(prefix), "TIERDB_LOG_LEVEL": log_level,
            "TIERDB_NODE_POLL_MAX_SECS": str(poll_max)}


def start_nodes(tmp: Path, server, poll_max: float, log_level: str) -> tuple[ServerProcess, list[ServerProcess]]:
    env = node_env(server, f"bench-replicas-{os.getpid()}", poll_max, log_level)
    writer = ServerProcess(tmp / "writer", policy="s3_only", env=env)
    readers = [ServerProcess(tmp / f"reader{i + 1}", env=env,
                             extra_args=["--role", "reader", "--writer-url", writer.url]) for i in range(READERS)]
    return writer, readers


def counter_samples(url: str, family_name: str) -> list[tuple[dict[str, str], float]]:
    """The ``_total`` samples of one counter family on a node's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return [(sample.labels, sample.value) for family in text_string_to_metric_families(text)
            if family.name == family_name for sample in family.samples if sample.name.endswith("_total")]


def poll_requests(url: str) -> dict[str, float]:
    """replica_poll_requests_total of one reader by kind (wal, manifest: this collection; list: discovery)."""
    counts = {"wal": 0.0, "manifest": 0.0, "list": 0.0}
    for labels, value in counter_samples(url, "replica_poll_requests"):
        if labels.get("collection") in (COLLECTION, ""):
            counts[labels["kind"]] = counts.get(labels["kind"], 0.0) + value
    return counts


def compactions(url: str) -> int:
    """The writer's flushes and merges of the collection so far (each publishes a new manifest,
    which every reader takes by reopening the collection)."""
    return int(sum(v for labels, v in counter_samples(url, "storage_compactions") if labels.get("collection") == COLLECTION))


def wait_for(predicate, what: str, deadline: float = 600.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    sys.exit(f"timed out after {deadline} s waiting for {what}")


def reader_count(url: str) -> int | None:
    r = httpx.get(f"{url}/v1/collections/{COLLECTION}", timeout=30)
    return r.json()["count"] if r.status_code == 200 else None


# -- phases ------------------------------------------------------------------------------------------


def load(writer: ServerProcess, base: np.ndarray) -> dict:
    ids = [f"d{i}" for i in range(len(base))]
    with tierdb.TierDB(writer.url, timeout=120) as client:
        client.create_collection(COLLECTION, base.shape[1], tiering_policy="s3_only")
        started = time.perf_counter()
        client.upsert(COLLECTION, ids, base, batch_size=LOAD_BATCH)
        secs = time.perf_counter() - started
    return {"docs": len(base), "secs": round(secs, 2), "docs_per_sec": round(len(base) / secs, 1)}


def throughput(writer: ServerProcess, readers: list[ServerProcess], n_readers: int, queries: np.ndarray,
               gt: np.ndarray, clients: int, secs: float) -> dict:
    nodes = [writer, *readers]
    cpu_before = [cpu_seconds(n.process.pid) for n in nodes]
    own_before = time.process_time()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    with tierdb.TierDB(writer.url, read_urls=[r.url for r in readers[:n_readers]], timeout=60) as client:
        # correctness first: the replicas' answers for the first 100 queries, against exact top-10
        found = [[int(h.id[1:]) for h in client.query(COLLECTION, q, k=K, include=())] for q in queries[:100]]
        recall = recall_at_k(found, gt[:100], K)
        stop_at = time.perf_counter() + secs

        def run(worker: int) -> None:
            i = worker
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                try:
                    client.query(COLLECTION, queries[i % len(queries)], k=K, include=())
                    latencies[worker].append(time.perf_counter() - t)
                except tierdb.TierDBClientError:
                    errors[worker] += 1
                i += clients

        started = time.perf_counter()
        threads = [threading.Thread(target=run, args=(w,)) for w in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    all_lat = [x for per in latencies for x in per]
    cpu = [round(cpu_seconds(n.process.pid) - b, 2) for n, b in zip(nodes, cpu_before)]
    readers_cpu = sum(cpu[1:n_readers + 1])
    return {
        "readers": n_readers,
        "clients": clients,
        "secs": round(elapsed, 2),
        "queries": len(all_lat),
        "errors": sum(errors),
        "qps": round(len(all_lat) / elapsed, 1),
        "latency": latency_summary(all_lat),
        "recall_at_10_first_100": round(recall, 4),
        "reader_cpu_ms_per_query": round(readers_cpu / max(1, len(all_lat)) * 1000, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "cpu_secs": {"writer": cpu[0], **{f"reader{i + 1}": c for i, c in enumerate(cpu[1:])},
                     "bench_client": round(time.process_time() - own_before, 2)},
    }


def visible_everywhere(probes: list[httpx.Client], doc_id: str, acked: float) -> float:
    """Seconds from ``acked`` until every reader returns ``doc_id`` (readers checked in turn:
    the last one to show it decides)."""
    end = acked + VISIBLE_DEADLINE_SECS
    for probe in probes:
        while probe.get(f"/v1/collections/{COLLECTION}/documents/{doc_id}").status_code != 200:
            if time.monotonic() > end:
                raise RuntimeError(f"{doc_id} not visible on {probe.base_url} after {VISIBLE_DEADLINE_SECS} s")
            time.sleep(PROBE_INTERVAL_SECS)
    return time.monotonic() - acked


def ingest_and_lag(writer: ServerProcess, readers: list[ServerProcess], vectors: np.ndarray, rate: float,
                   secs: float) -> dict:
    """Paced ingest on the writer while probe threads measure ack-to-visible on every reader."""
    batch = max(1, round(rate * INGEST_TICK_SECS))
    batches = int(secs / INGEST_TICK_SECS)
    polls_before = [poll_requests(r.url) for r in readers]
    cpu_before = [cpu_seconds(n.process.pid) for n in [writer, *readers]]
    samples: queue.Queue = queue.Queue()
    lags: list[float] = []
    sample_offsets: list[float] = []    # seconds into the ingest at which each sample was acknowledged
    ack_ms: list[float] = []
    probes = [httpx.Client(base_url=r.url, timeout=30) for r in readers]

    def probe_all() -> None:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = []
            while (item := samples.get()) is not None:
                futures.append(pool.submit(visible_everywhere, probes, *item))
            lags.extend(f.result() for f in futures)

    # The readers have backed off during the query phase: the first write is seen within one idle
    # interval (the documented price of the backoff), measured apart from the steady state.
    with tierdb.TierDB(writer.url, timeout=60) as client:
        client.upsert(COLLECTION, ["warmup"], vectors[:1])
        acked = time.monotonic()
    first_after_idle = visible_everywhere(probes, "warmup", acked)

    prober = threading.Thread(target=probe_all)
    prober.start()
    started = time.perf_counter()
    next_tick = time.monotonic()
    sent = 0
    try:
        with tierdb.TierDB(writer.url, timeout=60) as client:
            for b in range(batches):
                ids = [f"live{b}-{j}" for j in range(batch)]
                rows = vectors[np.arange(sent, sent + batch) % len(vectors)]
                t = time.perf_counter()
                client.upsert(COLLECTION, ids, rows, batch_size=batch)
                acked = time.monotonic()
                ack_ms.append(time.perf_counter() - t)
                sent += batch
                if b % PROBE_EVERY == 0:
                    samples.put((ids[0], acked))
                    sample_offsets.append(round(time.perf_counter() - started, 2))
                next_tick += INGEST_TICK_SECS
                time.sleep(max(0.0, next_tick - time.monotonic()))
        ingest_secs = time.perf_counter() - started
        polls_after = [poll_requests(r.url) for r in readers]   # before the probes drain: ingest only
    finally:
        samples.put(None)
        prober.join()
        for p in probes:
            p.close()
    cpu = [round(cpu_seconds(n.process.pid) - b, 2) for n, b in zip([writer, *readers], cpu_before)]
    lag_ms = np.asarray(lags) * 1000
    third = max(1, len(lag_ms) // 3)
    return {
        "target_docs_per_sec": rate,
        "batch": batch,
        "docs": sent,
        "secs": round(ingest_secs, 2),
        "docs_per_sec": round(sent / ingest_secs, 1),
        "write_ack": latency_summary(ack_ms),
        "lag_samples": len(lags),
        "lag_ms": {"p50": round(float(np.percentile(lag_ms, 50)), 1),
                   "p90": round(float(np.percentile(lag_ms, 90)), 1),
                   "p99": round(float(np.percentile(lag_ms, 99)), 1),
                   "max": round(float(lag_ms.max()), 1),
                   "p50_first_third": round(float(np.percentile(lag_ms[:third], 50)), 1),
                   "p50_last_third": round(float(np.percentile(lag_ms[-third:], 50)), 1)},
        "first_write_after_idle_ms": round(first_after_idle * 1000, 1),
        "samples_over_500ms_at_secs": [t for t, lag in zip(sample_offsets, lags) if lag > 0.5],
        "samples": [[t, round(lag * 1000, 1)] for t, lag in zip(sample_offsets, lags)],
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "cpu_secs": {"writer": cpu[0], **{f"reader{i + 1}": c for i, c in enumerate(cpu[1:])}},
        "busy_polls": poll_rates(polls_before, polls_after, ingest_secs),
    }


def poll_rates(before: list[dict], after: list[dict], secs: float) -> dict:
    """Per reader: the collection's GET (wal) + HEAD (manifest) requests and discovery LISTs per hour."""
    per_reader = []
    for b, a in zip(before, after):
        per_reader.append({kind: round((a[kind] - b[kind]) / secs * 3600, 1) for kind in ("wal", "manifest", "list")})
    get_head = [r["wal"] + r["manifest"] for r in per_reader]
    return {"secs": round(secs, 1), "per_reader_per_hour": per_reader,
            "get_head_per_hour_mean": round(float(np.mean(get_head)), 1)}


def idle(readers: list[ServerProcess], quiet_secs: float, secs: float) -> dict:
    time.sleep(quiet_secs)
    before = [poll_requests(r.url) for r in readers]
    cpu_before = [cpu_seconds(r.process.pid) for r in readers]
    started = time.perf_counter()
    time.sleep(secs)
    elapsed = time.perf_counter() - started
    after = [poll_requests(r.url) for r in readers]
    rates = poll_rates(before, after, elapsed)
    rates["cpu_secs_per_hour"] = [round((cpu_seconds(r.process.pid) - c) / elapsed * 3600, 1)
                                  for r, c in zip(readers, cpu_before)]
    rates["rss_mb"] = [rss_mb(r.process.pid) for r in readers]
    return rates


def dollars_per_month(get_head_per_hour: float) -> float:
    return round(get_head_per_hour * HOURS_PER_MONTH * GET_PRICE, 4)


# -- report ------------------------------------------------------------------------------------------


def report(results: dict) -> str:
    m = results["machine"]
    lines = [f"# Read replicas: 1 `s3_only` writer + 1/2/3 readers ({results['n']} docs x {results['dim']}, "
             f"{m['cpus']} CPUs for everything: S3 server, writer, readers and the client threads)", ""]
    rows = []
    for t in results["throughput"]:
        cpu = t["cpu_secs"]
        readers_cpu = " / ".join(str(cpu[f"reader{i + 1}"]) for i in range(READERS))
        rows.append([t["readers"], t["clients"], t["qps"], t["latency"]["p50_ms"], t["latency"]["p99_ms"],
                     t["errors"], t["recall_at_10_first_100"], t["reader_cpu_ms_per_query"], readers_cpu,
                     cpu["writer"], cpu["bench_client"], t["loadavg_1m_after"]])
    lines.append(markdown_table(
        ["readers", "client threads", "QPS", "p50 ms", "p99 ms", "errors", "recall@10 (100 q)",
         "reader CPU ms / query", "CPU s reader1/2/3", "CPU s writer", "CPU s client", "load avg 1m"], rows))
    lines.append(f"Throughput cannot scale with readers here: {m['cpus']} cores run every process (and the "
                 f"machine was shared: 1-minute load average {m['loadavg_1m_at_start']} at the start), so QPS "
                 "differences between the rows are mostly noise. The per-node cost that carries over to real "
                 "deployments is the reader CPU per query: on machines with a free core per reader, QPS grows "
                 "by about 1000 / (that number) per reader.\n")
    lag = results["lag"]
    lines.append(markdown_table(
        ["ingest", "docs/s achieved", "write ack p50 / p99 ms", "lag samples", "visible on every reader p50 / p90 / p99 / max ms", "target"],
        [[f"{lag['target_docs_per_sec']:g} docs/s x {lag['secs']} s (batches of {lag['batch']})", lag["docs_per_sec"],
          f"{lag['write_ack']['p50_ms']} / {lag['write_ack']['p99_ms']}", lag["lag_samples"],
          " / ".join(str(lag["lag_ms"][k]) for k in ("p50", "p90", "p99", "max")),
          f"p99 ≤ 1000 ms: {'met' if lag['lag_ms']['p99'] <= 1000 else 'MISSED'}"]]))
    lines.append(f"Lag includes the probe's {PROBE_INTERVAL_SECS * 1000:.0f} ms polling period (upper bound). "
                 f"p50 in the first / last third of the ingest: {lag['lag_ms']['p50_first_third']} / "
                 f"{lag['lag_ms']['p50_last_third']} ms (a reader falling behind shows as growth). The first write "
                 f"after the idle query phase (readers backed off to poll_max_secs = {results['poll_max_secs']:g} s) "
                 f"was visible everywhere after {lag['first_write_after_idle_ms']} ms: within one idle interval, "
                 f"by design. The writer finished {lag['writer_compactions_ingest_to_idle_end']} flush(es)/merge(s) "
                 f"between the start of the ingest and the end of the idle phase (each publishes a new manifest "
                 f"that every reader reopens from, decoding the segments again; a flush also builds an HNSW "
                 f"segment on the writer, seconds of CPU on this shared machine); samples "
                 f"over 500 ms were acknowledged at {lag['samples_over_500ms_at_secs']} s into the ingest. 1-minute "
                 f"load average after the ingest: {lag['loadavg_1m_after']}.\n")
    c = results["cost"]
    lines.append(markdown_table(
        ["per reader, per collection", "GET+HEAD / hour", "$ / month (GET/HEAD)", "note"],
        [["busy (during the ingest, measured)", c["busy_get_head_per_hour"], c["busy_dollars_per_month"],
          "poll every node.poll_min_secs while objects arrive"],
         [f"idle, poll_max_secs = {c['poll_max_secs_run']:g} (measured)", c["idle_get_head_per_hour_run"],
          c["idle_dollars_per_month_run"], f"{c['idle_secs']} s after a {c['quiet_secs']} s quiet spell"],
         [f"idle, poll_max_secs = {DEFAULT_POLL_MAX_SECS:g} (default; scaled)", c["idle_get_head_per_hour_default"],
          c["idle_dollars_per_month_default"],
          f"target ≤ $0.10: {'met' if c['idle_dollars_per_month_default'] <= 0.10 else 'MISSED'}"],
         ["+ discovery LIST, per reader (not per collection)", f"{c['discovery_lists_per_hour']} LIST",
          c["discovery_dollars_per_month"], f"one LIST per node.discover_interval_secs ({DEFAULT_DISCOVER_SECS:g} s)"]]))
    lines.append(f"AWS S3 list prices: GET/HEAD ${GET_PRICE * 1000:g} per 1,000, LIST ${LIST_PRICE * 1000:g} per 1,000, "
                 f"{HOURS_PER_MONTH} hours per month. Idle reader RSS MB: {c['idle_rss_mb']}; idle CPU s/hour: "
                 f"{c['idle_cpu_secs_per_hour']}. Total run {results['run_secs']} s.\n")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000, help="documents loaded before the measurements")
    parser.add_argument("--clients", type=int, default=8, help="concurrent query threads")
    parser.add_argument("--query-secs", type=float, default=20.0, help="query phase length per reader count (0: skip)")
    parser.add_argument("--rate", type=float, default=500.0, help="docs/s written during the lag phase")
    parser.add_argument("--ingest-secs", type=float, default=30.0)
    parser.add_argument("--idle-secs", type=float, default=60.0, help="idle poll measurement length")
    parser.add_argument("--poll-max", type=float, default=5.0, help="node.poll_max_secs of the readers for this run")
    parser.add_argument("--log-dir", default=None, help="keep the nodes' logs (at INFO) in this directory")
    parser.add_argument("--dataset", default=None, help="dataset directory (default: docstrings-50k)")
    args = parser.parse_args()

    data = load_dataset(args.n, directory=args.dataset)
    extra = np.load(Path(args.dataset or DATASET_DIR) / "base.npy", mmap_mode="r")
    live_vectors = np.array(extra[args.n:] if len(extra) > args.n else extra, dtype=np.float32)
    print(f"dataset: {data.base.shape[0]} x {data.base.shape[1]}, {len(data.queries)} queries, {os.cpu_count()} CPUs")
    tmp = Path(tempfile.mkdtemp(prefix="tierdb-bench-replicas-"))
    results: dict = {"machine": {**machine(), "loadavg_1m_at_start": round(os.getloadavg()[0], 2)},
                     "n": len(data.base), "dim": int(data.base.shape[1]), "k": K, "poll_max_secs": args.poll_max}
    run_started = time.perf_counter()
    server = writer = None
    readers: list[ServerProcess] = []
    try:
        print("starting S3 server and the writer ...")
        server = start_s3_server(tmp)
        results["s3_server"] = {"kind": server.kind, "endpoint": server.endpoint}
        writer, readers = start_nodes(tmp, server, args.poll_max, "INFO" if args.log_dir else "WARNING")
        writer.start(timeout=120)
        print(f"loading {args.n} documents (s3_only) ...")
        results["load"] = load(writer, data.base)
        print(f"  {results['load']}")
        print(f"starting {READERS} readers ...")
        t = time.perf_counter()
        for r in readers:
            r.start(timeout=300)
        for r in readers:
            wait_for(lambda: reader_count(r.url) == args.n, f"{r.url} to reach {args.n} documents")
        results["readers_ready_secs"] = round(time.perf_counter() - t, 2)

        results["throughput"] = []
        for n_readers in range(1, READERS + 1) if args.query_secs > 0 else ():
            print(f"queries: {args.clients} threads over {n_readers} reader(s) for {args.query_secs:g} s ...")
            results["throughput"].append(throughput(writer, readers, n_readers, data.queries, data.gt,
                                                    args.clients, args.query_secs))
            print(f"  {results['throughput'][-1]['qps']} QPS, {results['throughput'][-1]['latency']}")

        print(f"ingest {args.rate:g} docs/s for {args.ingest_secs:g} s, lag on every reader ...")
        compactions_before = compactions(writer.url)
        results["lag"] = ingest_and_lag(writer, readers, live_vectors, args.rate, args.ingest_secs)
        print(f"  {results['lag']['lag_ms']} ({results['lag']['lag_samples']} samples, "
              f"{results['lag']['docs_per_sec']} docs/s)")

        # quiet spell: the busy window (10 s) plus the doubling from 0.1 s to poll_max, with slack
        quiet = 10.0 + 2 * args.poll_max + 10.0
        print(f"idle: {quiet:g} s quiet, then {args.idle_secs:g} s of polls ...")
        idle_rates = idle(readers, quiet, args.idle_secs)
        results["idle_polls"] = idle_rates
        # a flush started during the ingest may finish (and be counted) well after it
        results["lag"]["writer_compactions_ingest_to_idle_end"] = compactions(writer.url) - compactions_before
        busy = results["lag"]["busy_polls"]["get_head_per_hour_mean"]
        idle_run = idle_rates["get_head_per_hour_mean"]
        idle_default = round(idle_run * args.poll_max / DEFAULT_POLL_MAX_SECS, 1)
        lists_per_hour = 3600 / DEFAULT_DISCOVER_SECS
        results["cost"] = {
            "busy_get_head_per_hour": busy,
            "busy_dollars_per_month": dollars_per_month(busy),
            "poll_max_secs_run": args.poll_max,
            "quiet_secs": quiet,
            "idle_secs": args.idle_secs,
            "idle_get_head_per_hour_run": idle_run,
            "idle_dollars_per_month_run": dollars_per_month(idle_run),
            "idle_get_head_per_hour_default": idle_default,
            "idle_dollars_per_month_default": dollars_per_month(idle_default),
            "discovery_lists_per_hour": lists_per_hour,
            "discovery_dollars_per_month": round(lists_per_hour * HOURS_PER_MONTH * LIST_PRICE, 4),
            "idle_rss_mb": idle_rates["rss_mb"],
            "idle_cpu_secs_per_hour": idle_rates["cpu_secs_per_hour"],
        }
        print(f"  {results['cost']}")
    finally:
        for node in [*readers, writer]:
            if node is not None and node.running:
                node.stop()
        if server is not None and server.controllable:
            server.stop()
        if args.log_dir:
            Path(args.log_dir).mkdir(parents=True, exist_ok=True)
            for node in [writer, *readers]:
                if node is not None and node.log_path.exists():
                    shutil.copy(node.log_path, Path(args.log_dir) / node.log_path.name)
        shutil.rmtree(tmp, ignore_errors=True)
    results["run_secs"] = round(time.perf_counter() - run_started, 1)
    table = report(results)
    path = save_results("replicas", results, table)
    print(table)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
