"""Hostile bodies get a 400 naming the problem and change nothing (issue 9, items 4, 5, 6, 8).

- metadata and filter literals must read back identically as JSON: no msgpack ext / bin /
  timestamp values, no non-string keys, no NaN, at any depth;
- nesting deeper than server.max_nesting_depth (and far deeper: the decoder's recursion limit);
- ids the single-document route cannot reach ('/', control characters, '.', '..', 'get', 'delete');
- a key repeated in one JSON object.

Every case sends a JSON and/or msgpack body over HTTP and checks that the count and an existing
document are unchanged afterwards.
"""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import quote

import msgspec
import pytest
from litestar.routes import HTTPRoute

from tests.server_process import ServerProcess
from tierdb.api.app import create_app

from .conftest import DIM, Client, count, get_docs, make_settings, seeded, unit

JSON = {"content-type": "application/json"}
MSGPACK = {"content-type": "application/msgpack"}
DEFAULT_DEPTH = 64


async def snapshot(client: Client) -> tuple[int, list[dict[str, Any]]]:
    return await count(client, "docs"), await get_docs(client, "docs", ["d0", "d1"])


async def assert_rejected(client: Client, path: str, body: bytes, headers: dict[str, str], *expected: str) -> str:
    """POST ``body``: a 400 whose message contains every ``expected`` text; nothing changed."""
    before = await snapshot(client)
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["error"] == "invalid", payload
    for text in expected:
        assert text in payload["message"], payload
    assert await snapshot(client) == before
    return payload["message"]


def nested(depth: int, leaf: Any = 1) -> Any:
    """``depth`` levels of containers, alternating objects and arrays, around ``leaf``."""
    value = leaf
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


def deep_msgpack_metadata(depth: int) -> bytes:
    """An upsert whose metadata is ``{"a": [[[...]]]}`` with ``depth`` levels in all, built as raw
    msgpack (the encoder itself refuses very deep values)."""
    doc_map = msgspec.msgpack.encode({"id": "deep", "vector": unit(0)})  # a 2-entry fixmap
    document = b"\x83" + doc_map[1:] + msgspec.msgpack.encode("metadata") + b"\x81\xa1a"
    document += b"\x91" * (depth - 1) + b"\x01"
    return b"\x81" + msgspec.msgpack.encode("documents") + b"\x91" + document


# -- item 4: metadata that cannot be read back as JSON ------------------------------------------


def _array_key_map() -> bytes:
    """msgpack ``{[1]: 2}``: an array as a map key (no Python encoder produces it)."""
    return b"\x81\x91\x01\x02"


METADATA_CASES = [
    ({"a": msgspec.msgpack.Ext(5, b"xy")}, "documents[1].metadata.a", "msgpack ext type 5"),
    ({"a": {"b": [0, 1, msgspec.msgpack.Ext(1, b"")]}}, "documents[1].metadata.a.b[2]", "msgpack ext type 1"),
    ({"t": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)}, "documents[1].metadata.t", "ext type -1"),
    ({"b": b"\x00\x01"}, "documents[1].metadata.b", "binary"),
    ({"f": float("nan")}, "documents[1].metadata.f", "NaN"),
    ({"f": [float("-inf")]}, "documents[1].metadata.f[0]", "NaN and infinity"),
    ({"a": {1: "one"}}, "documents[1].metadata.a", "keys must be strings, got integer key 1"),
    ({"a": {True: "yes"}}, "documents[1].metadata.a", "got boolean key True"),
    ({"a": [{None: 0}]}, "documents[1].metadata.a[0]", "got null key None"),
]


@pytest.mark.parametrize(("metadata", "where", "problem"), METADATA_CASES)
async def test_msgpack_metadata_that_is_not_json_is_rejected(client: Client, metadata: Any, where: str, problem: str) -> None:
    await seeded(client)
    documents = [{"id": "ok", "vector": unit(0)}, {"id": "bad", "vector": unit(1), "metadata": metadata}]
    body = msgspec.msgpack.encode({"documents": documents})
    await assert_rejected(client, "/v1/collections/docs/documents", body, MSGPACK, f"{where}: ", problem)


async def test_msgpack_metadata_with_an_array_key_is_rejected(client: Client) -> None:
    await seeded(client)
    document = msgspec.msgpack.encode({"id": "bad", "vector": unit(1)})
    document = b"\x83" + document[1:] + msgspec.msgpack.encode("metadata") + b"\x81\xa1x" + _array_key_map()
    body = b"\x81" + msgspec.msgpack.encode("documents") + b"\x91" + document
    await assert_rejected(client, "/v1/collections/docs/documents", body, MSGPACK,
                          "documents[0].metadata.x: object keys must be strings, got array key")


async def test_json_metadata_integer_beyond_64_bits_names_the_path(client: Client) -> None:
    await seeded(client)
    body = b'{"documents": [{"id": "big", "vector": [1,0,0,0], "metadata": {"n": [1, 18446744073709551616]}}]}'
    await assert_rejected(client, "/v1/collections/docs/documents", body, JSON,
                          "documents[0].metadata.n[1]: integer 18446744073709551616 does not fit in 64 bits")


async def test_metadata_that_is_json_round_trips_over_both_formats(client: Client) -> None:
    """The rule rejects only what cannot come back: these values all read back identically."""
    await seeded(client)
    metadata = {"s": "é", "i": -(2**63), "u": 2**64 - 1, "f": 1.5, "b": False, "n": None,
                "l": [1, "x", [None, {"deep": nested(DEFAULT_DEPTH - 4)}]]}
    for headers, body in ((JSON, msgspec.json.encode({"documents": [{"id": "j", "vector": unit(1), "metadata": metadata}]})),
                          (MSGPACK, msgspec.msgpack.encode({"documents": [{"id": "m", "vector": unit(1), "metadata": metadata}]}))):
        response = await client.post("/v1/collections/docs/documents", content=body, headers=headers)
        assert response.status_code == 200, response.text
    found = await get_docs(client, "docs", ["j", "m"])
    assert [d["metadata"] for d in found] == [metadata, metadata]


# -- item 5: nesting depth ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("depth", [DEFAULT_DEPTH + 1, 1000, 20_000])
async def test_metadata_nested_too_deep_is_400(client: Client, fmt: str, depth: int) -> None:
    await seeded(client)
    if fmt == "json":
        body = b'{"documents": [{"id": "deep", "vector": [1,0,0,0], "metadata": {"a": ' + b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) + b"}}]}"
        headers = JSON
    else:
        body, headers = deep_msgpack_metadata(depth), MSGPACK
    message = await assert_rejected(client, "/v1/collections/docs/documents", body, headers, "server.max_nesting_depth", "64")
    if depth < 900:  # decoded, then refused by the engine with the path
        assert message.startswith("documents[0].metadata.a" + "[0]" * (DEFAULT_DEPTH - 1)), message


async def test_metadata_at_the_depth_limit_is_accepted(client: Client) -> None:
    await seeded(client)
    for fmt, headers, body in (("json", JSON, None), ("msgpack", MSGPACK, deep_msgpack_metadata(DEFAULT_DEPTH))):
        if body is None:
            body = msgspec.json.encode({"documents": [{"id": "deep", "vector": unit(0), "metadata": {"a": nested(DEFAULT_DEPTH - 1)}}]})
        response = await client.post("/v1/collections/docs/documents", content=body, headers=headers)
        assert response.status_code == 200, (fmt, response.text)


def _deep_logical(depth: int) -> bytes:
    return b'{"$and": [' * depth + b'{"i": 1}' + b"]}" * depth


def _deep_literal(depth: int) -> bytes:
    return b'{"tag": {"$in": [' + b"[" * depth + b"1" + b"]" * depth + b"]}}"


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize(("make_filter", "depth"), [(_deep_logical, 40), (_deep_logical, 5000),
                                                   (_deep_literal, 70), (_deep_literal, 10_000)])
@pytest.mark.parametrize("route", ["query", "documents/delete"])
async def test_filters_nested_too_deep_are_400(client: Client, fmt: str, make_filter: Any, depth: int, route: str) -> None:
    await seeded(client)
    raw_filter = make_filter(depth)
    extra = b'"vector": [1,0,0,0], "k": 3' if route == "query" else b'"ids": ["d0", "d1"]'
    body = b'{"filter": ' + raw_filter + b", " + extra + b"}"
    headers = JSON
    if fmt == "msgpack":  # the same body as msgpack, built from the JSON with a high recursion head-room
        if depth > 500:
            pytest.skip("msgspec cannot re-encode this depth; the JSON variant covers the decoder limit")
        body, headers = msgspec.msgpack.encode(msgspec.json.decode(body)), MSGPACK
    await assert_rejected(client, f"/v1/collections/docs/{route}", body, headers, "server.max_nesting_depth")


async def test_the_depth_limit_is_a_setting(open_client: Any, data_dir: Any) -> None:
    settings = make_settings(data_dir, **{"server.max_nesting_depth": 3})
    async with open_client(settings) as client:
        await seeded(client)
        ok = {"documents": [{"id": "x", "vector": unit(0), "metadata": {"a": [{"b": 1}]}}]}
        assert (await client.post("/v1/collections/docs/documents", json=ok)).status_code == 200
        too_deep = msgspec.json.encode({"documents": [{"id": "y", "vector": unit(0), "metadata": {"a": [{"b": [1]}]}}]})
        await assert_rejected(client, "/v1/collections/docs/documents", too_deep, JSON,
                              "documents[0].metadata.a[0].b: nested deeper than 3 levels", "server.max_nesting_depth")
        flt = msgspec.json.encode({"vector": unit(0), "filter": {"$or": [{"i": {"$in": [1]}}]}})
        await assert_rejected(client, "/v1/collections/docs/query", flt, JSON, "filter.$or[0]", "deeper than 3 levels")


# -- item 6: filter literals with non-string keys ------------------------------------------------


@pytest.mark.parametrize("route", ["query", "documents/delete"])
@pytest.mark.parametrize("bad_filter", [
    {"tag": {1: "x", "b": 2}},                        # mixed key types in an equality literal
    {"tag": {"$in": [{"a": 1, 2: 3}]}},
    {"$and": [{1: 2}]},                               # a non-string field name below $and
    {"tag": {"$eq": 1, 2: 3}},                        # ... beside an operator
    {"tag": {"$eq": msgspec.msgpack.Ext(3, b"z")}},
])
async def test_msgpack_filters_with_non_string_keys_or_ext_are_400(client: Client, route: str, bad_filter: Any) -> None:
    await seeded(client)
    extra = {"vector": unit(0), "k": 3} if route == "query" else {"ids": ["d0", "d1"]}
    body = msgspec.msgpack.encode({"filter": bad_filter, **extra})
    message = await assert_rejected(client, f"/v1/collections/docs/{route}", body, MSGPACK, "filter")
    assert "must be strings" in message or "ext type" in message, message


# -- item 8: ids every route can reach ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize(("bad_id", "problem"), [
    ("a/b", "must not contain '/'"), ("/", "must not contain '/'"), ("a\x00b", "control characters"),
    ("line\nbreak", "control characters"), ("del\x7f", "control characters"),
    (".", "reserved"), ("..", "reserved"), ("get", "reserved"), ("delete", "reserved"),
])
async def test_ids_the_document_route_cannot_reach_are_rejected(client: Client, fmt: str, bad_id: str, problem: str) -> None:
    await seeded(client)
    payload = {"documents": [{"id": "fine", "vector": unit(0)}, {"id": bad_id, "vector": unit(1)}]}
    body, headers = (msgspec.json.encode(payload), JSON) if fmt == "json" else (msgspec.msgpack.encode(payload), MSGPACK)
    await assert_rejected(client, "/v1/collections/docs/documents", body, headers, "documents[1].id", problem)


REACHABLE_IDS = ["a?b", "a#b", "a%b", "a%2Fb", "%2e%2e", "a b", "ü-名", "a\\b", "a;b=c", "...", "getx", "x" * 200]


def test_every_id_a_write_accepts_is_reachable_by_get_on_a_real_server(tmp_path: Any) -> None:
    """On a real server (the in-process test client decodes the path twice)."""
    with ServerProcess(tmp_path / "data") as server:
        server.start()
        with server.client() as http:
            assert http.post("/v1/collections", json={"name": "ids", "dimension": DIM}).status_code == 201
            docs = [{"id": doc_id, "vector": unit(i), "metadata": {"i": i}} for i, doc_id in enumerate(REACHABLE_IDS)]
            assert http.post("/v1/collections/ids/documents", json={"documents": docs}).json() == {"upserted": len(docs)}
            for i, doc_id in enumerate(REACHABLE_IDS):
                response = http.get(f"/v1/collections/ids/documents/{quote(doc_id, safe='')}")
                assert response.status_code == 200, (doc_id, response.text)
                assert (response.json()["id"], response.json()["metadata"]) == (doc_id, {"i": i})


# -- duplicate keys in JSON --------------------------------------------------------------------


@pytest.mark.parametrize(("route", "body", "key", "where"), [
    ("documents", b'{"documents": [{"id": "n1", "vector": [1,0,0,0]}], "documents": [{"id": "n2", "vector": [0,1,0,0]}]}',
     "documents", "the top-level object"),
    ("documents", b'{"documents": [{"id": "n1", "id": "n2", "vector": [1,0,0,0]}]}', "id", "the object under 'documents'"),
    ("documents", b'{"documents": [{"id": "d0", "vector": [1,0,0,0], "metadata": {"k": 1, "k": 2}}]}',
     "k", "the object under 'metadata'"),
    ("documents", b'{"documents": [{"id": "d0", "vector": [1,0,0,0], "metadata": {"a": [{"x": 1}, {"y": 1, "\\u0079": 2}]}}]}',
     "y", "the object under 'a'"),
    ("query", b'{"vector": [1,0,0,0], "k": 3, "k": 5}', "k", "the top-level object"),
    ("documents/delete", b'{"filter": {"i": {"$gte": 0, "$gte": 8}}}', "$gte", "the object under 'i'"),
])
async def test_duplicate_json_keys_are_400_naming_the_key(client: Client, route: str, body: bytes, key: str, where: str) -> None:
    await seeded(client)
    await assert_rejected(client, f"/v1/collections/docs/{route}", body, JSON, f"duplicate key {key!r} in {where}")


async def test_repeated_keys_in_different_objects_and_inside_strings_are_fine(client: Client) -> None:
    await seeded(client)
    body = (b'{"documents": [{"id": "a", "vector": [1,0,0,0], "metadata": {"k": "\\"k\\": 1", "o": {"k": 1}}},'
            b' {"id": "b", "vector": [0,1,0,0], "metadata": {"k": 2, "s": "{\\"k\\":3}"}}]}')
    response = await client.post("/v1/collections/docs/documents", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    found = await get_docs(client, "docs", ["a", "b"])
    assert [d["metadata"] for d in found] == [{"k": '"k": 1', "o": {"k": 1}}, {"k": 2, "s": '{"k":3}'}]


# -- OPTIONS -----------------------------------------------------------------------------------


async def test_options_lists_every_method_of_every_path(client: Client, settings: Any) -> None:
    app = create_app(settings)
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "{" in route.path:
            continue
        response = await client.options(route.path)
        assert set(response.headers["allow"].split(", ")) == set(route.methods), route.path
    for path, methods in (("/v1/collections/docs", {"GET", "DELETE", "OPTIONS"}),
                          ("/admin/collections/docs/dlq", {"GET", "DELETE", "OPTIONS"})):
        assert set((await client.options(path)).headers["allow"].split(", ")) == methods
