"""Every Prometheus metric TierDB exports, defined once.

Counters and histograms are updated where things happen; gauges are read from the engine
at scrape time by ``EngineCollector`` so they are never stale.

Wiring (done once by the app's lifespan)::

    from tierdb import metrics
    metrics.register_engine_collector(engine.stats)   # engine.stats() -> list[CollectionStats]
    ...
    body, content_type = metrics.render_latest()      # GET /metrics

Process metrics (``process_*``, ``python_*``) come from prometheus_client's default registry,
which is also where every metric below is registered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:  # pragma: no cover
    from tierdb.models import CollectionStats

log = logging.getLogger(__name__)

_COLL = ["collection"]

# --- counters (updated where things happen) -----------------------------------------------

INSERTS = Counter("storage_inserts", "Documents upserted", _COLL)
DELETES = Counter("storage_deletes", "Documents deleted", _COLL)
QUERIES = Counter("storage_queries", "Query vectors served", _COLL)
COMPACTIONS = Counter("storage_compactions", "Compactions (flushes and merges) finished", _COLL + ["kind"])
S3_UPLOADS = Counter("storage_s3_uploads", "Objects uploaded to S3", _COLL)
S3_RETRIES = Counter("storage_s3_retries", "S3 request retries", _COLL)
S3_PERMANENT_FAILURES = Counter(
    "storage_s3_permanent_failures", "S3 uploads that failed permanently (sent to the DLQ)", _COLL
)
S3_REQUESTS = Counter("storage_s3_requests", "S3 requests by operation", _COLL + ["op"])
S3_BYTES_FETCHED = Counter(
    "storage_s3_bytes_fetched", "Object bytes read from S3 by whole-object and range GETs", _COLL + ["op"]
)
CACHE_HITS = Counter("storage_cache_hits", "Cache hits", _COLL + ["tier"])
CACHE_MISSES = Counter("storage_cache_misses", "Cache misses", _COLL + ["tier"])
CACHE_EVICTIONS = Counter("storage_cache_evictions", "Cache evictions", _COLL + ["tier"])
REPLICA_POLL_REQUESTS = Counter(
    "replica_poll_requests",
    "S3 requests a reader made to follow the writer (kind: wal = GET of the next WAL object, "
    "manifest = HEAD of the next manifest, list = discovery LIST; collection empty for list)",
    _COLL + ["kind"],
)
HTTP_REQUESTS = Counter(
    "http_requests", "HTTP requests by method, route template and status code", ["method", "route", "status"]
)

# --- histograms ------------------------------------------------------------------------------

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)
OPERATION_SECONDS = Histogram(
    "storage_operation_duration_seconds",
    "Engine operation latency",
    _COLL + ["op"],
    buckets=_LATENCY_BUCKETS,
)
REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route and status",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
)
# Partitions a query probed, per query vector and partitioned segment (s3_only); hnswlib
# segments and the memtable are not counted.  Buckets double from 1 to 4096 (limits.MAX_NPROBE).
PARTITIONS_PROBED = Histogram(
    "tierdb_query_partitions_probed",
    "Partitions probed per query, over all partitioned segments of the collection (s3_only)",
    _COLL,
    buckets=tuple(float(2**i) for i in range(13)),
)

# --- node-wide gauges (set where the value changes) --------------------------------------------

# The node's cache budgets (cache.ram_bytes, cache.disk_bytes: shared by every collection) and
# what the caches hold now; tier = "ram" | "disk".
CACHE_TIERS = ("ram", "disk")
CACHE_BUDGET_BYTES = Gauge("tierdb_cache_budget_bytes", "Node-wide cache budget by tier (cache.ram_bytes, cache.disk_bytes)", ["tier"])
CACHE_RESIDENT_BYTES = Gauge("tierdb_cache_resident_bytes", "Bytes held in the node-wide cache by tier", ["tier"])


def set_cache_budgets(ram_bytes: int, disk_bytes: int) -> None:
    """Export the node's cache budgets, and the resident series (0 until the caches report)."""
    for tier, budget in zip(CACHE_TIERS, (ram_bytes, disk_bytes)):
        CACHE_BUDGET_BYTES.labels(tier=tier).set(budget)
        CACHE_RESIDENT_BYTES.labels(tier=tier)


def observe_request(method: str, route: str, status: int | str, seconds: float) -> None:
    """Record one finished HTTP request in both ``http_requests_total`` and the latency histogram.

    ``route`` must be the route *template* (``/collections/{name}/query``), never the raw path,
    or every collection name and id becomes a new series.
    """
    key = (method, route, str(status))
    children = _request_children.get(key)
    if children is None:
        labels = {"method": key[0], "route": key[1], "status": key[2]}
        children = _request_children[key] = (HTTP_REQUESTS.labels(**labels), REQUEST_SECONDS.labels(**labels))
    children[0].inc()
    children[1].observe(seconds)


# (method, route, status) -> the series' (counter, histogram) children: ``labels()`` validates
# and hashes its arguments on every call.  Routes are templates, so the keys stay few, and
# these series are never removed.
_request_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}


_COLLECTION_COUNTERS = (INSERTS, DELETES, QUERIES, S3_UPLOADS, S3_RETRIES, S3_PERMANENT_FAILURES)
_TIERED_COUNTERS = (CACHE_HITS, CACHE_MISSES, CACHE_EVICTIONS)
_PER_COLLECTION = (
    REPLICA_POLL_REQUESTS, *_COLLECTION_COUNTERS, COMPACTIONS, *_TIERED_COUNTERS, S3_REQUESTS, S3_BYTES_FETCHED,
    OPERATION_SECONDS, PARTITIONS_PROBED,
)


S3_OPS = ("get", "get_range", "put", "delete", "list", "head")
S3_READ_OPS = ("get", "get_range")


def init_collection(
    name: str,
    *,
    compaction_kinds: Iterable[str] = ("flush", "merge"),
    tiers: Iterable[str] = ("ram", "disk"),
    ops: Iterable[str] = ("upsert", "query"),
) -> None:
    """Create the zero-valued series of a collection when it is opened or created.

    A labelled counter only appears after its first ``inc()``; without this, a healthy node never
    exports ``storage_s3_permanent_failures_total``, and ``rate()`` misses the first failure
    (the series is born at 1, with no 0 before it). Idempotent.
    """
    for counter in _COLLECTION_COUNTERS:
        counter.labels(collection=name)
    for kind in compaction_kinds:
        COMPACTIONS.labels(collection=name, kind=kind)
    for counter in _TIERED_COUNTERS:
        for tier in tiers:
            counter.labels(collection=name, tier=tier)
    for op in ops:
        OPERATION_SECONDS.labels(collection=name, op=op)
    for op in S3_OPS:
        S3_REQUESTS.labels(collection=name, op=op)
    for op in S3_READ_OPS:
        S3_BYTES_FETCHED.labels(collection=name, op=op)
    PARTITIONS_PROBED.labels(collection=name)


def forget_collection(name: str) -> None:
    """Drop every series of a deleted collection, so dashboards stop showing it."""
    for metric in _PER_COLLECTION:
        index = metric._labelnames.index("collection")
        with metric._lock:
            stale = [values for values in metric._metrics if values[index] == name]
        for values in stale:
            try:
                metric.remove(*values)
            except KeyError:  # removed concurrently
                pass


# --- gauges, computed at scrape time ------------------------------------------------------------

# (metric name, help, CollectionStats attribute) for the one-value-per-collection gauges.
_COLLECTION_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("storage_documents", "Live documents in the collection", "count"),
    ("storage_segments", "Live segments in the collection's manifest", "segments"),
    ("storage_wal_bytes", "Bytes of WAL not yet covered by a segment", "wal_bytes"),
    ("storage_memtable_rows", "Rows in the memtable (not yet flushed to a segment)", "memtable_rows"),
    ("storage_s3_upload_queue_size", "Objects waiting to be uploaded to S3", "upload_queue_size"),
    ("storage_s3_upload_lag_seconds", "Age of the oldest acknowledged write not yet in S3", "upload_lag_secs"),
    (
        "storage_s3_upload_failed_runs",
        "Consecutive failed upload runs (retried with backoff; 0 once a run succeeds)",
        "upload_failures",
    ),
    (
        "storage_last_snapshot_timestamp_seconds",
        "Unix time the last manifest (snapshot) was published",
        "last_snapshot_ts",
    ),
    ("storage_dlq_size", "Entries in the dead-letter queue", "dlq_size"),
    ("storage_fenced", "1 when another writer took the collection (this node may no longer write)", "fenced"),
)
# Only for collections a reader follows (role "reader").
_REPLICA_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("replica_lag_seconds", "Reader: seconds since it last confirmed it had applied everything the writer "
     "acknowledged (~0 while caught up; grows while behind or while S3 does not answer)", "replica_lag_secs"),
    ("replica_applied_wal_seq", "Reader: the last WAL record applied", "wal_seq"),
)
_CACHE_BYTES = ("storage_cache_bytes", "Bytes held in a cache tier")
_CACHE_TIERS = (("ram", "cache_bytes_ram"), ("disk", "cache_bytes_disk"))


class EngineCollector(Collector):
    """Per-collection gauges read from the engine at scrape time.

    ``stats_fn`` returns the current ``CollectionStats`` of every open collection; it is called
    once per scrape (from the scraping thread), so it must be cheap and must not block on I/O.
    If it raises, the scrape still succeeds without these gauges and the error is logged.
    """

    def __init__(self, stats_fn: Callable[[], Iterable[CollectionStats]]) -> None:
        self._stats_fn = stats_fn

    @staticmethod
    def _families() -> tuple[list[GaugeMetricFamily], GaugeMetricFamily]:
        gauges = [GaugeMetricFamily(name, doc, labels=_COLL) for name, doc, _ in _COLLECTION_GAUGES + _REPLICA_GAUGES]
        cache = GaugeMetricFamily(*_CACHE_BYTES, labels=_COLL + ["tier"])
        return gauges, cache

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Lets the registry check for name clashes without calling stats_fn at registration.
        gauges, cache = self._families()
        yield from gauges
        yield cache

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauges, cache = self._families()
        try:
            stats = list(self._stats_fn())
        except Exception:  # a broken callback must not break /metrics (process metrics etc.)
            log.exception("engine stats callback failed; per-collection gauges omitted from this scrape")
            return
        for st in stats:
            for family, (_, _, attr) in zip(gauges, _COLLECTION_GAUGES):
                family.add_metric([st.name], float(getattr(st, attr)))
            if st.role == "reader":
                for family, (_, _, attr) in zip(gauges[len(_COLLECTION_GAUGES):], _REPLICA_GAUGES):
                    family.add_metric([st.name], float(getattr(st, attr)))
            for tier, attr in _CACHE_TIERS:
                cache.add_metric([st.name, tier], float(getattr(st, attr)))
        yield from gauges
        yield cache


_lock = threading.Lock()
_engine_collectors: dict[int, tuple[CollectorRegistry, EngineCollector]] = {}


def register_engine_collector(
    stats_fn: Callable[[], Iterable[CollectionStats]], registry: CollectorRegistry = REGISTRY
) -> EngineCollector:
    """Register (or replace) the engine's gauge collector in ``registry``.

    Idempotent: a collector registered earlier in the same registry is unregistered first, so
    every ``create_app()`` (tests build several apps per process) can call it.
    """
    collector = EngineCollector(stats_fn)
    with _lock:
        _unregister(registry)
        registry.register(collector)
        _engine_collectors[id(registry)] = (registry, collector)
    return collector


def unregister_engine_collector(registry: CollectorRegistry = REGISTRY) -> None:
    """Remove the engine collector from ``registry`` (no-op if none); call at app shutdown."""
    with _lock:
        _unregister(registry)


def _unregister(registry: CollectorRegistry) -> None:
    entry = _engine_collectors.pop(id(registry), None)
    if entry is not None:
        try:
            registry.unregister(entry[1])
        except KeyError:  # someone unregistered it behind our back
            pass


def render_latest(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The Prometheus text exposition of ``registry`` and its content type, for ``GET /metrics``."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def exposed_metric_names() -> set[str]:
    """Every sample name TierDB itself can expose (``_total``, ``_bucket``... included).

    Used by tests that check alert rules and dashboards only use metrics that exist.
    Process/platform metrics of prometheus_client are not included.
    """
    names: set[str] = set()
    for obj in globals().values():
        if isinstance(obj, Counter):
            for fam in obj.describe():
                names.update({f"{fam.name}_total", f"{fam.name}_created"})
        elif isinstance(obj, Gauge):
            names.update(fam.name for fam in obj.describe())
        elif isinstance(obj, Histogram):
            for fam in obj.describe():
                names.update(f"{fam.name}{s}" for s in ("_bucket", "_sum", "_count", "_created"))
    for fam in EngineCollector(lambda: []).describe():
        names.add(fam.name)
    return names
