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


# -- one middleware layer, a response that sends itself, float32 straight from the body --------


def test_one_middleware_layer_per_request(data_dir) -> None:
    """Request context, body deadline, metrics and access log are one ASGI call, not a stack."""
    from tierdb.api.middleware import RequestMiddleware

    app = create_app(make_settings(data_dir))
    assert [m.middleware for m in app.middleware] == [RequestMiddleware]


@pytest.mark.parametrize("accept", ["application/json", "application/msgpack"])
async def test_the_query_response_sends_itself(client: Client, monkeypatch, accept: str) -> None:
    """No Litestar ASGIResponse is built for a query answer; the messages stay the same."""
    import litestar.response.base

    await seeded(client, n=4)

    def no_asgi_response(*_, **__):
        raise AssertionError("built a generic ASGIResponse")

    monkeypatch.setattr(litestar.response.base.ASGIResponse, "__init__", no_asgi_response)
    response = await client.post("/v1/collections/docs/query", json={"vector": unit(0), "k": 2},
                                 headers={"accept": accept, "x-request-id": "hot-1"})
    assert response.status_code == 200, response.text
    assert sorted(response.headers.keys()) == ["content-length", "content-type", "x-request-id"]
    assert response.headers["content-type"] == accept
    assert response.headers["x-request-id"] == "hot-1"
    assert int(response.headers["content-length"]) == len(response.content)
    decode = msgspec.json.decode if accept == "application/json" else msgspec.msgpack.decode
    assert [hit["id"] for hit in decode(response.content)["results"]] == ["d0", "d1"]


def test_query_matrix_is_numpys_float32_conversion_without_it(monkeypatch) -> None:
    """Packed straight into float32: bit for bit numpy's rounding, without numpy's list
    conversion unless a value is beyond float32 (then the error names the row as before)."""
    import numpy as np

    from tierdb.api import validation

    rng = random.Random(7)
    edge = [0.0, -0.0, 1, -3, 1e-45, 1.4e-45, 7e-46, 1e-40, 3.4e17, -1e17, 0.1, 1 / 3,
            16777217.0, 2.0**-149, 2.0**-150]
    rows = [[rng.uniform(-2, 2) * 10.0 ** rng.randint(-45, 15) for _ in range(16)] for _ in range(50)]
    rows.append(edge + [0.5])
    expected = [np.array(rows, dtype=np.float32), np.array(rows[:1], dtype=np.float32)]

    class NoListConversion:
        def __getattr__(self, name):
            if name == "array":
                raise AssertionError("numpy converted the list")
            return getattr(np, name)

    monkeypatch.setattr(validation, "np", NoListConversion())
    for want, got in zip(expected, (validation.query_matrix(rows, 16, str), validation.query_matrix(rows[:1], 16, str))):
        assert got.array.dtype == np.float32 and got.array.shape == want.shape and got.array.flags.writeable
        assert got.array.tobytes() == want.tobytes()
    monkeypatch.undo()
    with pytest.raises(TierDBError, match=r"vectors\[1\] contains NaN, infinity or a value outside"):
        validation.query_matrix([[0.0] * 16, [0.0] * 15 + [4e38]], 16, lambda i: f"vectors[{i}]")


async def test_query_metrics_are_bound_once_per_collection(client: Client, monkeypatch) -> None:
    from tierdb import metrics

    await seeded(client, n=4)
    calls = []
    original = metrics.QUERIES.labels

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(metrics.QUERIES, "labels", counted)
    before = metrics.QUERIES.labels(collection="docs")._value.get()
    for _ in range(3):
        response = await client.post("/v1/collections/docs/query", json={"vector": unit(0), "k": 1})
        assert response.status_code == 200, response.text
    assert len(calls) <= 2  # the read of `before`, and at most one bind
    assert original(collection="docs")._value.get() == before + 3
