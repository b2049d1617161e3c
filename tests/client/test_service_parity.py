"""The service layer's rules give the same answer over HTTP and in embedded mode.

One server process and one embedded engine share the same small limits; each case feeds both
the same input and compares what they raise: exception class, status, kind, message and the
field it names.  A rule written twice (and drifting) fails here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import numpy as np
import pytest

import tierdb
from tierdb.client import CompactResult, TierDB, TierDBClientError
from tierdb.models import CompactResult as EngineCompactResult
from tests.client.support import DIM, dataset, unique
from tests.server_process import ServerProcess

MAX_K = 20
MAX_BATCH = 10
MAX_QUERY_VECTORS = 3
MAX_DIMENSION = 64

SETTINGS = {
    "server.max_k": MAX_K,
    "server.max_batch": MAX_BATCH,
    "server.max_query_vectors": MAX_QUERY_VECTORS,
    "server.max_dimension": MAX_DIMENSION,
}


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"TIERDB_" + key.replace(".", "_").upper(): str(value) for key, value in SETTINGS.items()}
    with ServerProcess(tmp_path_factory.mktemp("limited") / "data", env=env) as process:
        process.start()
        yield process


@pytest.fixture(scope="module")
def both(limited_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The HTTP client and the embedded engine, each with a collection ``docs`` of 5 documents."""
    embedded_settings = {key.replace(".", "_"): value for key, value in SETTINGS.items()}
    with TierDB(limited_server.url) as remote, tierdb.open(
        tmp_path_factory.mktemp("embedded") / "data", **embedded_settings
    ) as local:
        ids, vectors, metas = dataset(5)
        for db in (remote, local):
            db.create_collection("docs", DIM)
            db.upsert("docs", ids, vectors, metas)
        yield {"http": remote, "embedded": local}


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What a call raised, in the terms a caller can observe."""
    try:
        call()
    except TierDBClientError as exc:
        return (type(exc).__name__, exc.status, exc.kind, exc.message, exc.details.get("field"))
    except (ValueError, TypeError) as exc:
        return (type(exc).__name__, str(exc))
    return ("no error",)


def vec(seed: int = 0) -> list[float]:
    return np.random.default_rng(seed).random(DIM).tolist()


def batch(n: int) -> tuple[list[str], list[list[float]]]:
    return [f"new{i}" for i in range(n)], [vec(i) for i in range(n)]


CASES: dict[str, Callable[[Any], Any]] = {
    # limits (server.max_k, ef cap, server.max_query_vectors, server.max_batch)
    "k_zero": lambda db: db.query("docs", vector=vec(), k=0),
    "k_over_max": lambda db: db.query("docs", vector=vec(), k=MAX_K + 1),
    "ef_zero": lambda db: db.query("docs", vector=vec(), k=1, ef=0),
    "ef_over_max": lambda db: db.query("docs", vector=vec(), k=1, ef=4097),
    "nprobe_zero": lambda db: db.query("docs", vector=vec(), k=1, nprobe=0),
    "nprobe_negative": lambda db: db.query("docs", vector=vec(), k=1, nprobe=-1),
    "nprobe_over_max": lambda db: db.query("docs", vector=vec(), k=1, nprobe=4097),
    "ef_before_nprobe": lambda db: db.query("docs", vector=vec(), k=1, ef=0, nprobe=0),
    "too_many_query_vectors": lambda db: db.query("docs", vectors=[vec(i) for i in range(MAX_QUERY_VECTORS + 1)]),
    "upsert_over_max_batch": lambda db: db.upsert("docs", *batch(MAX_BATCH + 1), batch_size=MAX_BATCH + 1),
    "get_over_max_batch": lambda db: db.get("docs", [f"d{i}" for i in range(MAX_BATCH + 1)], batch_size=100),
    "delete_over_max_batch": lambda db: db.delete("docs", ids=[f"x{i}" for i in range(MAX_BATCH + 1)], batch_size=100),
    # argument rules
    "delete_without_ids_or_filter": lambda db: db.delete("docs"),
    "vector_and_vectors": lambda db: db.query("docs", vector=vec(), vectors=[vec()]),
    "bad_include": lambda db: db.query("docs", vector=vec(), include=["distance"]),
    # spec completion
    "dimension_over_server_max": lambda db: db.create_collection(unique(), MAX_DIMENSION + 1),
    "dimension_over_absolute_max": lambda db: db.create_collection(unique(), 5000),
    "unknown_policy": lambda db: db.create_collection(unique(), DIM, tiering_policy="disk"),
    "s3_policy_without_bucket": lambda db: db.create_collection(unique(), DIM, tiering_policy="S3Only"),
    "bad_metric": lambda db: db.create_collection(unique(), DIM, metric="hamming"),
    "bad_hnsw_m": lambda db: db.create_collection(unique(), DIM, hnsw={"m": 1}),
    "bad_hnsw_ef_search": lambda db: db.create_collection(unique(), DIM, hnsw={"ef_search": 5000}),
    "bad_name": lambda db: db.create_collection("Bad Name", DIM),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_input_same_error_over_http_and_embedded(both: dict[str, Any], case: str) -> None:
    over_http = outcome(lambda: CASES[case](both["http"]))
    embedded = outcome(lambda: CASES[case](both["embedded"]))
    assert over_http != ("no error",), f"{case}: the server accepted it"
    assert embedded == over_http
    assert both["http"].count("docs") == both["embedded"].count("docs") == 5  # nothing changed


def test_limit_errors_are_the_documented_kinds(both: dict[str, Any]) -> None:
    db = both["embedded"]
    assert outcome(lambda: CASES["k_over_max"](db))[:3] == ("InvalidRequest", 400, "invalid")
    assert outcome(lambda: CASES["too_many_query_vectors"](db))[:3] == ("PayloadTooLarge", 413, "too_large")
    assert outcome(lambda: CASES["upsert_over_max_batch"](db))[:3] == ("PayloadTooLarge", 413, "too_large")


def test_defaults_of_a_created_collection_match(both: dict[str, Any]) -> None:
    name = unique()
    infos = [db.create_collection(name, DIM, hnsw={"m": 8}) for db in both.values()]
    for db in both.values():
        db.delete_collection(name)
    http, embedded = (msgspec.structs.replace(info, created_at=0.0) for info in infos)
    assert http == embedded
    assert (http.tiering_policy, http.hnsw.m) == ("memory", 8)


def test_the_engine_applies_the_settings_caps_to_direct_callers(both: dict[str, Any]) -> None:
    """k and ef are capped by the same settings in the engine itself (it allowed k up to 10 000
    and ef up to 100 000 before)."""
    db = both["embedded"]
    coll = db.engine.get_collection("docs")
    assert outcome(lambda: db._call(coll.query, [vec()], MAX_K + 1)) == outcome(
        lambda: CASES["k_over_max"](db)
    )
    assert outcome(lambda: db._call(coll.query, [vec()], 1, ef=4097)) == outcome(
        lambda: CASES["ef_over_max"](db)
    )
    assert outcome(lambda: db._call(coll.query, [vec()], 1, nprobe=4097)) == outcome(
        lambda: CASES["nprobe_over_max"](db)
    )


def test_compaction_returns_the_typed_result_everywhere(both: dict[str, Any]) -> None:
    db = both["embedded"]
    coll = db.engine.get_collection("docs")
    assert isinstance(db._call(coll.compact), EngineCompactResult)
    results = [db.compact("docs") for db in both.values()]
    assert all(isinstance(result, CompactResult) for result in results)
    assert CompactResult is EngineCompactResult  # one definition for engine, API and clients
