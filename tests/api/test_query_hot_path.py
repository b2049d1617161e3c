"""The query route's hot path (issue 13): no dependency injection, guards without a handler
copy, the query vectors checked once; the answers and errors stay those of every data route."""

from __future__ import annotations

import random

import litestar.handlers.base
import msgspec
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute

from tierdb.api import codec
from tierdb.api.app import create_app
from tierdb.api.schemas import GetManyRequest, QueryRequest, UpsertRequest
from tierdb.engine import reads
from tierdb.errors import TierDBError

from .conftest import Client, make_settings, seeded, unit

QUERY_PATH = "/v1/collections/{name:str}/query"
KEY = "hot-path-key-0123456789"


def _query_handler(app: Litestar):
    for route in app.routes:
        if isinstance(route, HTTPRoute) and route.path == QUERY_PATH:
            return route.route_handler_map["POST"]
    raise AssertionError("no query route")


def test_query_route_resolves_no_dependencies(data_dir) -> None:
    """Dependencies are resolved in an anyio task group per request; the route reads the
    engine and settings from app.state instead."""
    _, kwargs_model = _query_handler(create_app(make_settings(data_dir)))
    assert not kwargs_model.dependency_batches
    assert {param.field_name for param in kwargs_model.expected_path_params} == {"name"}


async def test_query_guard_runs_without_copying_the_handler(open_client, data_dir, monkeypatch) -> None:
    settings = make_settings(data_dir, **{"security.api_keys": [KEY]})
    async with open_client(settings) as client:
        created = await client.post("/v1/collections", json={"name": "docs", "dimension": 4},
                                    headers={"x-api-key": KEY})
        assert created.status_code == 201, created.text

        def no_copy(_):
            raise AssertionError("the query route's guard copied the route handler")

        monkeypatch.setattr(litestar.handlers.base, "copy", no_copy)
        path, body = "/v1/collections/docs/query", {"vector": unit(0), "k": 1}
        assert (await client.post(path, json=body, headers={"x-api-key": KEY})).status_code == 200
        assert (await client.post(path, json=body)).status_code == 401
        assert (await client.post(path, json=body, headers={"x-api-key": "wrong"})).status_code == 403


async def test_the_engine_gets_the_checked_query_matrix(client: Client, monkeypatch) -> None:
    from tierdb.engine.vectors import CheckedMatrix  # here: its absence fails only this test

    await seeded(client, n=4)
    seen = []
    original = reads.as_matrix

    def spy(vectors, dimension, **kwargs):
        seen.append(type(vectors))
        return original(vectors, dimension, **kwargs)

    monkeypatch.setattr(reads, "as_matrix", spy)
    response = await client.post("/v1/collections/docs/query", json={"vectors": [unit(0), unit(1)], "k": 1})
    assert response.status_code == 200, response.text
    assert [[hit["id"] for hit in hits] for hits in response.json()["results"]] == [["d0"], ["d1"]]
    assert seen == [CheckedMatrix]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"vector": [1e18, 1e18, 0, 0]}, "query vector 0 has a norm above 1e+18; distances would overflow float32"),
        ({"vectors": [unit(0), [0, 0, 2e18, 0]]}, "query vector 1 has a norm above 1e+18"),
        ({"vector": [1e39, 0, 0, 0]}, "vector contains NaN, infinity or a value outside the float32 range"),
        ({"vectors": [unit(0), [0, 1e39, 0, 0]]}, "vectors[1] contains NaN, infinity or a value outside"),
        ({"vector": [1, 2, 3]}, "vector has 3 values but the collection has dimension 4"),
        # the labelled value check comes before the norm check, whatever the row order
        ({"vectors": [[0, 0, 2e18, 0], [0, 1e39, 0, 0]]}, "vectors[1] contains NaN, infinity or a value outside"),
    ],
)
async def test_query_vector_errors_are_unchanged(client: Client, body: dict, message: str) -> None:
    await seeded(client, n=2)
    response = await client.post("/v1/collections/docs/query", json={"k": 1, **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid"
    assert message in response.json()["message"]


async def test_a_just_in_range_query_vector_is_answered(client: Client) -> None:
    await seeded(client, n=2)
    response = await client.post("/v1/collections/docs/query", json={"vector": [0.99e18, 0, 0, 0], "k": 1})
    assert response.status_code == 200, response.text


# -- duplicate JSON keys: the flat fast path ---------------------------------------------------


async def test_a_query_with_default_fields_skips_the_exact_duplicate_scan(client: Client, monkeypatch) -> None:
    """``k`` equal to its default used to defeat the fast path (it was not counted as a key)."""
    await seeded(client, n=4)

    def no_scan(_):
        raise AssertionError("the exact duplicate-key scan ran")

    monkeypatch.setattr(codec, "_find_duplicate_key", no_scan)
    for body in ({"vector": unit(0), "k": 10}, {"vector": unit(0), "k": 10, "include": [], "ef": None,
                                                "consistency": "eventual"}, {"vector": unit(0)}):
        response = await client.post("/v1/collections/docs/query", json=body)
        assert response.status_code == 200, response.text


def _random_query_body(rng: random.Random) -> bytes:
    """A flat query body, often with a key written twice, odd spacing or an escaped key."""
    fields = [("vector", "[1, 0, 0, 0]"), ("k", rng.choice(["10", "3"])), ("ef", rng.choice(["null", "8"])),
              ("include", rng.choice(["[]", '["vector"]'])), ("consistency", '"eventual"'),
              ("vectors", "null"), ("filter", "null")]
    chosen = rng.sample(fields, rng.randint(1, len(fields)))
    if rng.random() < 0.5:
        chosen.append(rng.choice(chosen))
    rng.shuffle(chosen)
    parts = []
    for name, value in chosen:
        key = name if rng.random() < 0.8 else "".join(f"\\u{ord(c):04x}" for c in name)
        parts.append(f'"{key}"{rng.choice(["", " ", chr(9)])}:{rng.choice(["", " "])}{value}')
    return ("{" + ", ".join(parts) + "}").encode()


def test_the_flat_fast_path_agrees_with_the_exact_scan() -> None:
    rng = random.Random(13)
    settled = duplicates = 0
    for _ in range(3000):
        body = _random_query_body(rng)
        try:
            value = msgspec.json.decode(body, type=QueryRequest)
        except msgspec.ValidationError:
            continue
        has_duplicate = codec._find_duplicate_key(body) is not None
        duplicates += has_duplicate
        if codec._flat_keys_unique(body, value):
            settled += 1
            assert not has_duplicate, body
    assert settled > 500 and duplicates > 500, (settled, duplicates)


def test_the_flat_fast_path_leaves_bulk_bodies_alone(monkeypatch) -> None:
    """A list of documents holds objects: the flat path must not tokenize a bulk body only to
    give up (the count-based fast path handles it)."""

    class NoScan:
        def finditer(self, _):
            raise AssertionError("tokenized a body that is not flat")

    monkeypatch.setattr(codec, "_STRING", NoScan())
    body = b'{"documents": [{"id": "a", "vector": [1, 0], "metadata": {"k": 1}}]}'
    value = msgspec.json.decode(body, type=UpsertRequest)
    assert not codec._flat_keys_unique(body, value)
    codec.check_unique_json_keys(body, value, 32)  # still exact: no duplicate here


def test_a_flat_body_with_many_strings_still_gets_the_exact_answer() -> None:
    ids = ", ".join(f'"id-{i}"' for i in range(40))
    unique = f'{{"ids": [{ids}], "consistency": "eventual"}}'.encode()
    repeated = f'{{"ids": [{ids}], "ids": ["x"]}}'.encode()
    codec.check_unique_json_keys(unique, msgspec.json.decode(unique, type=GetManyRequest), 32)
    with pytest.raises(TierDBError, match="duplicate key 'ids'"):
        codec.check_unique_json_keys(repeated, msgspec.json.decode(repeated, type=GetManyRequest), 32)
