"""Regular regression tests for what the API fuzzing (test_schemathesis.py) found.

Each test reproduces one distinct failure with a plain request against the running server.
Server bugs that are not fixed yet are ``xfail(strict=True)`` with the reason; when the fix
lands, the test passes, strict xfail turns that into a failure, and whoever fixed it removes the
marker here and the matching entry in ``KNOWN`` in test_schemathesis.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="API fuzzing needs schemathesis (dev extra)")
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.server_process import ServerProcess

from .conftest import FUZZ_COLLECTION


@pytest.fixture(scope="module")
def client(fuzz_server: ServerProcess) -> Any:
    with fuzz_server.client() as c:
        yield c


@pytest.fixture(scope="module")
def api_schema(client: httpx.Client) -> Any:
    return schemathesis.openapi.from_dict(client.get("/schema/openapi.json").json())


@pytest.fixture
def empty_collection(client: httpx.Client) -> str:
    name = "regress-empty"
    client.delete(f"/v1/collections/{name}")
    assert client.post("/v1/collections", json={"name": name, "dimension": 4}).status_code == 201
    return name


def _validate(api_schema: Any, method: str, path: str, response: httpx.Response, check: Any, **case: Any) -> None:
    operation = api_schema[path][method]
    operation.Case(**case).validate_response(response, checks=[check])


def test_metrics_content_type_is_documented(client: httpx.Client, api_schema: Any) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    _validate(api_schema, "GET", "/metrics", response, content_type_conformance)


def test_query_with_no_hits_matches_the_response_schema(client: httpx.Client, api_schema: Any,
                                                        empty_collection: str) -> None:
    """{"results": []} fits both QueryResult and BatchQueryResult: the 200 schema is an anyOf
    of the two (a oneOf rejects a body valid under both; openapi.union_responses_as_any_of)."""
    body = {"vector": [1.0, 0.0, 0.0, 0.0], "k": 3}
    response = client.post(f"/v1/collections/{empty_collection}/query", json=body)
    assert response.status_code == 200
    assert response.json() == {"results": []}
    _validate(api_schema, "POST", "/v1/collections/{name}/query", response, response_schema_conformance,
              path_parameters={"name": empty_collection}, body=body, media_type="application/json")


def test_query_with_hits_matches_the_response_schema(client: httpx.Client, api_schema: Any) -> None:
    """The non-empty cases of the same operation conform too."""
    for body in ({"vector": [1.0, 1.0, 0.0, 0.0], "k": 2, "include": ["metadata", "vector"]},
                 {"vectors": [[1.0, 1.0, 0.0, 0.0]] * 2, "k": 2}):
        response = client.post(f"/v1/collections/{FUZZ_COLLECTION}/query", json=body)
        assert response.status_code == 200 and response.json()["results"]
        _validate(api_schema, "POST", "/v1/collections/{name}/query", response, response_schema_conformance,
                  path_parameters={"name": FUZZ_COLLECTION}, body=body, media_type="application/json")


@pytest.mark.parametrize(("path", "methods"), [
    ("/v1/collections", {"GET", "POST"}),
    (f"/v1/collections/{FUZZ_COLLECTION}", {"GET", "DELETE"}),
    (f"/admin/collections/{FUZZ_COLLECTION}/dlq", {"GET", "DELETE"}),
])
def test_options_allow_header_lists_every_method(client: httpx.Client, path: str, methods: set[str]) -> None:
    """Litestar 2 answered with the methods of one handler only (app._complete_options_allow)."""
    response = client.options(path)
    assert response.status_code in (200, 204)
    allowed = {m.strip() for m in response.headers.get("allow", "").split(",")}
    assert methods <= allowed, f"Allow: {response.headers.get('allow')}"


@pytest.mark.parametrize("content_type", ["application/json", "application/msgpack"])
def test_bodies_a_client_cannot_mean_are_clear_4xx(client: httpx.Client, content_type: str) -> None:
    """What the fuzzer sent while its msgpack serializer was wrong (a form-encoded dict under a
    msgpack/JSON content type), plus other undecodable bodies: a 400 naming the problem, never 5xx."""
    path = f"/v1/collections/{FUZZ_COLLECTION}/query"
    for raw in (b"vector=0.0&k=10", b"\xc1", b"", b"[]", b"7", b"\x93\x01\x02\x03" if "msgpack" in content_type else b"[1,2,3]"):
        response = client.post(path, content=raw, headers={"content-type": content_type})
        assert response.status_code == 400, (raw, response.status_code, response.text)
        body = response.json()
        assert body["error"] == "invalid" and body["message"], body


def test_integer_fields_reject_huge_and_fractional_numbers_with_400(client: httpx.Client) -> None:
    path = f"/v1/collections/{FUZZ_COLLECTION}/query"
    for k in (2**64, -(2**63) - 1, 1.5, "10", True):
        response = client.post(path, content=msgspec.json.encode({"vector": [0.0] * 4, "k": k}),
                               headers={"content-type": "application/json"})
        assert response.status_code == 400, (k, response.text)
    big = client.post(f"/v1/collections/{FUZZ_COLLECTION}/documents",
                      json={"documents": [{"id": "huge", "vector": [0.0] * 4, "metadata": {"n": 2**70}}]})
    assert big.status_code == 400, big.text


@pytest.mark.parametrize(("route", "content_type", "raw"), [
    ("documents", "application/msgpack",       # metadata with an ext value (was 200, then every read 500)
     msgspec.msgpack.encode({"documents": [{"id": "e", "vector": [0.0] * 4, "metadata": {"x": msgspec.msgpack.Ext(1, b"")}}]})),
    ("documents", "application/msgpack",       # metadata with an integer key
     msgspec.msgpack.encode({"documents": [{"id": "e", "vector": [0.0] * 4, "metadata": {"x": {1: 2}}}]})),
    ("documents", "application/json",          # 2000 levels: RecursionError in the decoder (was 500)
     b'{"documents": [{"id": "e", "vector": [0,0,0,0], "metadata": {"x": ' + b"[" * 2000 + b"]" * 2000 + b"}}]}"),
    ("query", "application/json",              # $and 5000 deep (was 500)
     b'{"vector": [0,0,0,0], "filter": ' + b'{"$and": [' * 5000 + b'{"a": 1}' + b"]}" * 5000 + b"}"),
    ("query", "application/msgpack",           # mixed key types in a literal: filter_key's sort (was 500)
     msgspec.msgpack.encode({"vector": [0.0] * 4, "filter": {"a": {"b": 1, 2: 3}}})),
    ("documents", "application/json",          # an id GET /documents/{id} cannot reach (was stored)
     b'{"documents": [{"id": "a/b", "vector": [0,0,0,0]}]}'),
    ("documents", "application/json",          # a duplicated key (was: the last one silently won)
     b'{"documents": [{"id": "a", "id": "b", "vector": [0,0,0,0]}]}'),
], ids=["ext-metadata", "int-key-metadata", "deep-metadata", "deep-and", "mixed-key-literal", "slash-id",
        "duplicate-key"])
def test_hostile_bodies_are_400_and_change_nothing(client: httpx.Client, route: str, content_type: str,
                                                   raw: bytes) -> None:
    before = client.get(f"/v1/collections/{FUZZ_COLLECTION}").json()["count"]
    response = client.post(f"/v1/collections/{FUZZ_COLLECTION}/{route}", content=raw,
                           headers={"content-type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid" and response.json()["message"]
    assert client.get(f"/v1/collections/{FUZZ_COLLECTION}").json()["count"] == before
