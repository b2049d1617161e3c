"""A real TierDB server for API fuzzing, with a collection ready for routes that take {name}.

``fuzz_server`` (package scope: shared by the fuzzing and the regression tests) runs ``python -m tierdb serve`` (tests/server_process.py) with
small compaction thresholds, so that fuzzed upserts also flush and merge segments, and
pre-creates the collection ``fuzz`` (dimension 4) with a few documents ``d0`` .. ``d4``.
``ensure_fuzz_collection`` puts it back when a fuzzed ``DELETE /v1/collections/fuzz`` (or a
fuzzed create with another dimension after that) took it away.

``tightened_schema`` turns the server's OpenAPI document into the one the fuzzer generates
from: the same document, with the constraints the server enforces but cannot express (or does
not yet express) in its request schemas added, so that most generated requests get past
validation and reach the engine; and with the path parameters ``name`` / ``doc_id`` biased
towards the existing collection and documents.  Requests that violate the tightened schema
must still be rejected with a 4xx (the ``negative_data_rejection`` check).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server_process import ServerProcess

FUZZ_COLLECTION = "fuzz"
FUZZ_DIM = 4
FUZZ_DOCS = [f"d{i}" for i in range(5)]
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"   # tierdb.models.COLLECTION_NAME

SERVER_ENV = {
    "TIERDB_COMPACTION_THRESHOLD_OPS": "25",
    "TIERDB_COMPACTION_INTERVAL_SECS": "0.5",
    "TIERDB_COMPACTION_MERGE_MIN_SEGMENTS": "3",
    "TIERDB_INDEX_THRESHOLD": "20",
    "TIERDB_SERVER_MAX_BATCH": "200",
    "TIERDB_SERVER_MAX_K": "100",
    "TIERDB_SERVER_MAX_QUERY_VECTORS": "16",
    "TIERDB_LOG_LEVEL": "WARNING",
}


def _doc(i: int) -> dict[str, Any]:
    return {"id": f"d{i}", "vector": [float(i + 1), 1.0, -0.5, 0.25 * i], "metadata": {"i": i, "tag": "seed"}}


def ensure_fuzz_collection(client: httpx.Client) -> None:
    """(Re)create ``fuzz`` with dimension 4 and its seed documents, whatever a fuzzed call did."""
    info = client.get(f"/v1/collections/{FUZZ_COLLECTION}")
    if info.status_code == 200 and info.json()["dimension"] != FUZZ_DIM:
        assert client.delete(f"/v1/collections/{FUZZ_COLLECTION}").status_code in (200, 204)
        info = client.get(f"/v1/collections/{FUZZ_COLLECTION}")
    if info.status_code == 404:
        created = client.post("/v1/collections", json={"name": FUZZ_COLLECTION, "dimension": FUZZ_DIM, "metric": "l2"})
        assert created.status_code in (201, 409), created.text
    else:
        assert info.status_code == 200, info.text
    have = client.post(f"/v1/collections/{FUZZ_COLLECTION}/documents/get", json={"ids": FUZZ_DOCS})
    assert have.status_code == 200, have.text
    if len(have.json()["documents"]) < len(FUZZ_DOCS):
        upsert = client.post(
            f"/v1/collections/{FUZZ_COLLECTION}/documents",
            json={"documents": [_doc(i) for i in range(len(FUZZ_DOCS))]},
        )
        assert upsert.status_code == 200, upsert.text


@pytest.fixture(scope="package")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("fuzz")
    with ServerProcess(root / "data", env=SERVER_ENV) as server:
        server.start()
        with server.client() as client:
            ensure_fuzz_collection(client)
        yield server
        code = server.stop()
        assert code == 0, f"the fuzzed server did not shut down cleanly (exit {code})\n{server.log_tail()}"


# -- the schema the fuzzer generates from -------------------------------------------------------


def _biased(schema: dict[str, Any], favourites: list[str]) -> dict[str, Any]:
    """Either one of the favourites or anything the original schema allows."""
    return {"anyOf": [{"type": "string", "enum": favourites}, schema]}


def _vector(dim: int) -> dict[str, Any]:
    return {
        "type": "array",
        "minItems": dim,
        "maxItems": dim,
        "items": {"type": "number", "minimum": -1e6, "maximum": 1e6},
    }


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _present(field: str) -> dict[str, Any]:
    return {"required": [field], "properties": {field: {"not": {"type": "null"}}}}


# Valid metadata filters over the fields the fuzzer's documents are likely to have (tierdb/engine/filters.py).
_SCALAR = {"anyOf": [{"type": "integer", "minimum": -10, "maximum": 10}, {"type": "string", "maxLength": 3}]}
_CONDITION = {
    "anyOf": [
        _SCALAR,
        {"type": "object", "minProperties": 1, "maxProperties": 2, "additionalProperties": False, "properties": {
            "$eq": _SCALAR, "$ne": _SCALAR, "$gt": _SCALAR, "$gte": _SCALAR, "$lt": _SCALAR, "$lte": _SCALAR,
            "$in": {"type": "array", "maxItems": 3, "items": _SCALAR},
            "$nin": {"type": "array", "maxItems": 3, "items": _SCALAR},
            "$exists": {"type": "boolean"},
        }},
    ]
}
_CLAUSE = {"type": "object", "minProperties": 1, "maxProperties": 1,
           "propertyNames": {"enum": ["i", "tag", "a.b", "x"]}, "additionalProperties": _CONDITION}
FILTER = {
    "anyOf": [
        _CLAUSE,
        {"type": "object", "required": ["$or"], "additionalProperties": False,
         "properties": {"$or": {"type": "array", "minItems": 1, "maxItems": 3, "items": _CLAUSE}}},
        {"type": "object", "required": ["$and"], "additionalProperties": False,
         "properties": {"$and": {"type": "array", "minItems": 1, "maxItems": 3, "items": _CLAUSE}}},
    ]
}


def tighten(spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]
    doc_id = {"type": "string", "minLength": 1, "maxLength": 64}
    ids = {"type": "array", "minItems": 1, "maxItems": 20, "items": doc_id}

    create = schemas["CreateCollectionRequest"]["properties"]
    create["name"] = {"type": "string", "pattern": NAME_PATTERN}
    create["dimension"] = {"type": "integer", "minimum": 1, "maximum": 64}
    create["metric"] = {"type": "string", "enum": ["cosine", "l2", "ip"]}
    # memory_s3 / s3_only need S3, which this server does not have (a 400, tested elsewhere).
    create["tiering_policy"] = _nullable({"type": "string", "enum": ["memory", "Memory"]})
    hnsw = schemas["HnswConfig"]["properties"]
    hnsw["m"] = _nullable({"type": "integer", "minimum": 2, "maximum": 64})
    hnsw["ef_construction"] = _nullable({"type": "integer", "minimum": 1, "maximum": 400})
    hnsw["ef_search"] = _nullable({"type": "integer", "minimum": 1, "maximum": 400})

    document = schemas["DocumentIn"]["properties"]
    document["id"] = _biased(doc_id, FUZZ_DOCS)
    document["vector"] = _vector(FUZZ_DIM)
    # (ids must be unique within a batch, which JSON Schema cannot say of objects: short batches)
    schemas["UpsertRequest"]["properties"]["documents"]["maxItems"] = 3

    schemas["GetManyRequest"]["properties"]["ids"] = ids
    delete = schemas["DeleteRequest"]
    delete["properties"]["ids"] = _nullable({**ids, "uniqueItems": True})
    delete["properties"]["filter"] = _nullable(FILTER)
    delete["anyOf"] = [_present("ids"), _present("filter")]

    query = schemas["QueryRequest"]
    vector, batch = _vector(FUZZ_DIM), {"type": "array", "minItems": 1, "maxItems": 16, "items": _vector(FUZZ_DIM)}
    query["properties"]["vector"] = _nullable(vector)
    query["properties"]["vectors"] = _nullable(batch)
    query["properties"]["k"] = {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}
    query["properties"]["ef"] = _nullable({"type": "integer", "minimum": 1, "maximum": 4096})
    query["properties"]["nprobe"] = _nullable({"type": "integer", "minimum": 1, "maximum": 4096})
    query["properties"]["filter"] = _nullable(FILTER)
    query["anyOf"] = [  # exactly one of vector / vectors
        {"required": ["vector"], "properties": {"vector": vector, "vectors": {"type": "null"}}},
        {"required": ["vectors"], "properties": {"vectors": batch, "vector": {"type": "null"}}},
    ]

    for path, item in spec["paths"].items():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") != "path":
                    continue
                if parameter["name"] == "name":
                    parameter["schema"] = _biased({"type": "string", "pattern": NAME_PATTERN}, [FUZZ_COLLECTION])
                elif parameter["name"] == "doc_id":
                    parameter["schema"] = _biased({"type": "string", "minLength": 1, "maxLength": 64}, FUZZ_DOCS)
    return spec
