"""tierdb.metrics: scrape-time gauges, idempotent registration, exposition."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tierdb import metrics
from tierdb.models import CollectionStats

GAUGES = {
    "storage_s3_upload_queue_size",
    "storage_s3_upload_lag_seconds",
    "storage_s3_upload_failed_runs",
    "storage_last_snapshot_timestamp_seconds",
    "storage_segments",
    "storage_wal_bytes",
    "storage_cache_bytes",
    "storage_dlq_size",
    "storage_fenced",
    "storage_documents",
    "storage_memtable_rows",
}


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render_latest(registry)
    assert content_type.startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _stats(name: str, **kw) -> CollectionStats:
    return CollectionStats(name=name, policy="memory_s3", **kw)


def test_collector_yields_current_values_at_scrape_time():
    registry = CollectorRegistry()
    current = [_stats("a", count=3, segments=2, wal_bytes=100, fenced=False, cache_bytes_ram=7, cache_bytes_disk=9)]
    metrics.register_engine_collector(lambda: current, registry)
    try:
        s = _samples(registry)
        assert s[("storage_documents", (("collection", "a"),))] == 3
        assert s[("storage_segments", (("collection", "a"),))] == 2
        assert s[("storage_wal_bytes", (("collection", "a"),))] == 100
        assert s[("storage_fenced", (("collection", "a"),))] == 0
        assert s[("storage_cache_bytes", (("collection", "a"), ("tier", "ram")))] == 7
        assert s[("storage_cache_bytes", (("collection", "a"), ("tier", "disk")))] == 9

        # Values change between scrapes with no job in between: the callback is read each time.
        current[:] = [
            _stats(
                "a", count=4, upload_queue_size=5, upload_lag_secs=1.5, last_snapshot_ts=1_700_000_000.0,
                dlq_size=2, fenced=True, memtable_rows=11, upload_failures=3,
            ),
            _stats("b", count=1),
        ]
        s = _samples(registry)
        a = (("collection", "a"),)
        assert s[("storage_documents", a)] == 4
        assert s[("storage_s3_upload_queue_size", a)] == 5
        assert s[("storage_s3_upload_lag_seconds", a)] == 1.5
        assert s[("storage_last_snapshot_timestamp_seconds", a)] == 1_700_000_000.0
        assert s[("storage_dlq_size", a)] == 2
        assert s[("storage_s3_upload_failed_runs", a)] == 3
        assert s[("storage_fenced", a)] == 1
        assert s[("storage_memtable_rows", a)] == 11
        assert s[("storage_documents", (("collection", "b"),))] == 1
        assert {name for name, _ in s} == GAUGES

        # A collection that disappears is no longer exported.
        current[:] = []
        assert _samples(registry) == {}
    finally:
        metrics.unregister_engine_collector(registry)


def test_registration_does_not_call_the_callback():
    registry = CollectorRegistry()
    calls = []
    metrics.register_engine_collector(lambda: calls.append(1) or [], registry)
    try:
        assert calls == []
        _samples(registry)
        assert calls == [1]
    finally:
        metrics.unregister_engine_collector(registry)


def test_re_registration_replaces_the_previous_collector():
    registry = CollectorRegistry()
    metrics.register_engine_collector(lambda: [_stats("old", count=1)], registry)
    metrics.register_engine_collector(lambda: [_stats("new", count=2)], registry)  # no "Duplicated timeseries"
    try:
        s = _samples(registry)
        assert {dict(labels)["collection"] for _, labels in s} == {"new"}
        assert s[("storage_documents", (("collection", "new"),))] == 2
    finally:
        metrics.unregister_engine_collector(registry)
    assert _samples(registry) == {}
    metrics.unregister_engine_collector(registry)  # no-op when nothing is registered


def test_default_registry_has_process_and_engine_metrics():
    metrics.register_engine_collector(lambda: [_stats("dflt", count=5)])
    metrics.register_engine_collector(lambda: [_stats("dflt", count=6)])  # second app in the process
    try:
        body, _ = metrics.render_latest()
        text = body.decode()
        assert 'storage_documents{collection="dflt"} 6.0' in text
        assert "process_cpu_seconds_total" in text or "python_info" in text
    finally:
        metrics.unregister_engine_collector()


def test_failing_callback_does_not_break_the_scrape(caplog):
    registry = CollectorRegistry()

    def boom():
        raise RuntimeError("engine closed")

    metrics.register_engine_collector(boom, registry)
    try:
        assert _samples(registry) == {}
        assert "engine stats callback failed" in caplog.text
    finally:
        metrics.unregister_engine_collector(registry)


def test_registration_is_thread_safe():
    registry = CollectorRegistry()
    errors = []

    def register(i: int) -> None:
        try:
            metrics.register_engine_collector(lambda: [_stats(f"c{i}")], registry)
        except Exception as exc:  # pragma: no cover - the failure we test for
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        collections = {dict(labels)["collection"] for _, labels in _samples(registry)}
        assert len(collections) == 1  # exactly one collector survived
    finally:
        metrics.unregister_engine_collector(registry)


def test_observe_request_counts_and_times():
    labels = {"method": "GET", "route": "/test/{x}", "status": "503"}
    before = metrics.HTTP_REQUESTS.labels(**labels)._value.get()
    metrics.observe_request("GET", "/test/{x}", 503, 0.02)
    assert metrics.HTTP_REQUESTS.labels(**labels)._value.get() == before + 1
    body, _ = metrics.render_latest()
    assert 'http_request_duration_seconds_count{method="GET",route="/test/{x}",status="503"}' in body.decode()


@pytest.mark.parametrize(
    "name",
    [
        "storage_inserts_total", "storage_deletes_total", "storage_queries_total", "storage_compactions_total",
        "storage_s3_uploads_total", "storage_s3_retries_total", "storage_s3_permanent_failures_total",
        "storage_s3_requests_total", "storage_cache_hits_total", "storage_cache_misses_total",
        "storage_cache_evictions_total", "http_requests_total", "storage_operation_duration_seconds_bucket",
        "http_request_duration_seconds_bucket", *sorted(GAUGES),
    ],
)
def test_exposed_metric_names(name):
    assert name in metrics.exposed_metric_names()


def _series(collection: str) -> set[str]:
    body, _ = metrics.render_latest()
    out = set()
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.labels.get("collection") == collection and not s.name.endswith("_created"):
                out.add(s.name)
    return out


def test_init_collection_exports_zero_series_and_forget_removes_them():
    name = "init-forget-test"
    assert _series(name) == set()
    metrics.init_collection(name)
    metrics.init_collection(name)  # idempotent
    names = _series(name)
    for expected in (
        "storage_inserts_total", "storage_s3_permanent_failures_total", "storage_s3_retries_total",
        "storage_compactions_total", "storage_cache_misses_total", "storage_operation_duration_seconds_bucket",
        "tierdb_query_partitions_probed_bucket",
    ):
        assert expected in names
    body, _ = metrics.render_latest()
    assert f'storage_s3_permanent_failures_total{{collection="{name}"}} 0.0' in body.decode()

    metrics.S3_REQUESTS.labels(collection=name, op="put").inc()
    metrics.init_collection("other-collection")
    metrics.forget_collection(name)
    assert _series(name) == set()
    assert "storage_inserts_total" in _series("other-collection")  # others untouched
    metrics.forget_collection("other-collection")
    metrics.forget_collection("never-existed")  # no-op


def test_partitions_probed_buckets_double_up_to_the_nprobe_cap():
    from tierdb.service.limits import MAX_NPROBE

    metrics.init_collection("probed-test")
    metrics.PARTITIONS_PROBED.labels(collection="probed-test").observe(24)
    body, _ = metrics.render_latest()
    text = body.decode()
    assert f'tierdb_query_partitions_probed_bucket{{collection="probed-test",le="16.0"}} 0.0' in text
    assert f'tierdb_query_partitions_probed_bucket{{collection="probed-test",le="32.0"}} 1.0' in text
    assert f'tierdb_query_partitions_probed_bucket{{collection="probed-test",le="{float(MAX_NPROBE)}"}} 1.0' in text
    metrics.forget_collection("probed-test")
    assert "probed-test" not in metrics.render_latest()[0].decode()


def test_cache_budgets_are_exported_per_tier_with_their_resident_series():
    metrics.set_cache_budgets(ram_bytes=256 << 20, disk_bytes=4 << 30)
    samples = {
        (s.name, s.labels.get("tier")): s.value
        for fam in text_string_to_metric_families(metrics.render_latest()[0].decode())
        for s in fam.samples
    }
    assert samples[("tierdb_cache_budget_bytes", "ram")] == 256 << 20
    assert samples[("tierdb_cache_budget_bytes", "disk")] == 4 << 30
    assert ("tierdb_cache_resident_bytes", "ram") in samples and ("tierdb_cache_resident_bytes", "disk") in samples
