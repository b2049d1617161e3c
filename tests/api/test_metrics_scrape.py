"""A real server, real traffic, a real scrape: every metric the alerts and dashboards read exists.

``python -m tierdb serve`` runs as a subprocess (tests/server_process.py) with one ``memory``
collection; the traffic covers create, upsert, query, get, delete, an on-demand compaction via
the admin API (with a token) and failing requests.  The scrape is parsed with prometheus_client's
own parser, so a name counts as present only if the exposition really has a sample of it.

Names are compared as Prometheus sees them: counters as ``<name>_total``, histograms as
``<name>_bucket`` (``_sum``, ``_count``), gauges bare — and each used name must belong to a
family of the matching type.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server_process import ServerProcess
from tests.unit.ops_metric_names import READER_ONLY_NAMES, metric_names_by_source, metric_names_used

DIM = 8
NAME = "scraped"
TOKEN = "metrics-scrape-admin-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}



def vec(i: int) -> list[float]:
    return [float((i * 5 + j) % 7) + 0.25 for j in range(DIM)]


@dataclass(frozen=True)
class Scrape:
    text: str
    types: dict[str, str]           # sample name -> type of its family
    samples: dict[str, list]        # sample name -> samples

    def values(self, name: str, **labels: str) -> list[float]:
        return [
            s.value for s in self.samples.get(name, [])
            if all(s.labels.get(key) == value for key, value in labels.items())
        ]


def parse(text: str) -> Scrape:
    types: dict[str, str] = {}
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            types[sample.name] = family.type
            samples.setdefault(sample.name, []).append(sample)
    return Scrape(text, types, samples)


def drive_traffic(server: ServerProcess) -> None:
    with server.client() as client:
        def ok(response, status: int = 200):
            assert response.status_code == status, response.text
            return response.json() if response.content else None

        ok(client.post("/v1/collections", json={"name": NAME, "dimension": DIM}), 201)
        documents = [{"id": f"d{i}", "vector": vec(i), "metadata": {"i": i}} for i in range(40)]
        upserted = ok(client.post(f"/v1/collections/{NAME}/documents", json={"documents": documents}))
        assert upserted == {"upserted": 40}
        for i in range(5):
            ok(client.post(f"/v1/collections/{NAME}/query", json={"vector": vec(i), "k": 3}))
        ok(client.post(f"/v1/collections/{NAME}/query", json={"vectors": [vec(1), vec(2)], "k": 2}))
        ok(client.get(f"/v1/collections/{NAME}/documents/d3"))
        ok(client.post(f"/v1/collections/{NAME}/documents/get", json={"ids": ["d1", "d2"]}))
        deleted = ok(client.post(f"/v1/collections/{NAME}/documents/delete", json={"ids": ["d0", "d1"]}))
        assert deleted == {"deleted": 2}
        compacted = ok(client.post(f"/admin/collections/{NAME}/compact", headers=AUTH))
        assert compacted["flushed_rows"] == 38
        ok(client.get(f"/admin/collections/{NAME}/status", headers=AUTH))
        ok(client.get(f"/admin/collections/{NAME}/dlq", headers=AUTH))
        ok(client.post(f"/v1/collections/{NAME}/query", json={"vector": vec(9), "k": 3}))  # from the segment
        # Failing requests: bad input, unknown collection, missing admin token.
        assert client.post(f"/v1/collections/{NAME}/query", json={"vector": [1.0, 2.0]}).status_code == 400
        assert client.get("/v1/collections/nope").status_code == 404
        assert client.post(f"/admin/collections/{NAME}/compact").status_code == 401
        ok(client.get("/health"))


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    data_dir = tmp_path_factory.mktemp("scrape") / "data"
    server = ServerProcess(data_dir, policy="memory", env={"TIERDB_ADMIN_TOKEN": TOKEN})
    with server:
        server.start()
        drive_traffic(server)
        with server.client() as client:
            response = client.get("/metrics")
        assert response.status_code == 200, response.text
        assert server.stop() == 0, server.log_tail()
    yield parse(response.text)


def _where_used(names: set[str]) -> dict[str, list[str]]:
    by_source = metric_names_by_source()
    return {name: sorted(where for where, used in by_source.items() if name in used) for name in sorted(names)}


def test_scrape_has_every_metric_used_by_alerts_and_dashboards(scrape: Scrape) -> None:
    used = metric_names_used() - READER_ONLY_NAMES  # this server is a writer
    assert used, "no metric names found in the alert rules and dashboards"
    missing = used - set(scrape.types)
    assert not missing, f"used by alerts/dashboards but not in a live scrape: {_where_used(missing)}"


def test_used_names_have_the_type_their_suffix_promises(scrape: Scrape) -> None:
    wrong = {}
    for name in metric_names_used() & set(scrape.types):
        kind = scrape.types[name]
        if name.endswith(("_bucket", "_sum", "_count")) and kind != "histogram":
            wrong[name] = kind
        elif name.endswith("_total") and kind != "counter":
            wrong[name] = kind
        elif not name.endswith(("_bucket", "_sum", "_count", "_total")) and kind != "gauge":
            wrong[name] = kind
    assert not wrong, wrong
    for name in (n for n in metric_names_used() if n.endswith("_bucket") and n in scrape.samples):
        buckets = scrape.samples[name]
        assert all("le" in s.labels for s in buckets), name
        assert any(s.labels["le"] == "+Inf" for s in buckets), name


def test_scrape_reflects_the_traffic(scrape: Scrape) -> None:
    assert scrape.values("storage_inserts_total", collection=NAME) == [40.0]
    assert scrape.values("storage_deletes_total", collection=NAME) == [2.0]
    assert scrape.values("storage_queries_total", collection=NAME)[0] >= 8
    assert scrape.values("storage_compactions_total", collection=NAME, kind="flush")[0] >= 1
    assert scrape.values("storage_segments", collection=NAME) == [1.0]
    assert scrape.values("storage_memtable_rows", collection=NAME) == [0.0]
    assert scrape.values("storage_documents", collection=NAME) == [38.0]
    assert scrape.values("storage_dlq_size", collection=NAME) == [0.0]
    assert scrape.values("storage_fenced", collection=NAME) == [0.0]
    assert scrape.values("storage_last_snapshot_timestamp_seconds", collection=NAME)[0] > 0
    # node-wide cache budgets, from the settings at start (the defaults: 512 MiB RAM, 2 GiB disk)
    assert scrape.values("tierdb_cache_budget_bytes", tier="ram") == [512 * 2**20]
    assert scrape.values("tierdb_cache_budget_bytes", tier="disk") == [2 * 2**30]
    statuses = {(s.labels["route"], s.labels["status"]) for s in scrape.samples["http_requests_total"]}
    assert ("/v1/collections/{name}/query", "400") in statuses
    assert ("/v1/collections/{name}", "404") in statuses
    assert ("/admin/collections/{name}/compact", "200") in statuses
    assert ("/admin/collections/{name}/compact", "401") in statuses
    assert scrape.values("storage_operation_duration_seconds_count", collection=NAME, op="query")[0] >= 6


def test_scrape_holds_no_secret_and_no_raw_paths(scrape: Scrape) -> None:
    assert TOKEN not in scrape.text
    routes = {s.labels.get("route", "") for s in scrape.samples["http_requests_total"]}
    assert not any(NAME in route or "nope" in route for route in routes), routes
