"""Admin API: status, DLQ, compaction, and who may call it (token, loopback rule)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tierdb.api.auth import AdminMode, admin_mode, bearer_token, is_loopback
from tierdb.node import Engine

from .conftest import Client, count, doc, make_settings, msgpack_body, seeded, unit

TOKEN = "adm1n-T0ken-for-tests-0123456789abcdef"
WRONG = "not-the-admin-token-abcdef0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}

# (method, path) of every admin route, for collection "docs".
ROUTES = [
    ("GET", "/admin/collections/docs/status"),
    ("GET", "/admin/collections/docs/dlq"),
    ("POST", "/admin/collections/docs/dlq/retry"),
    ("DELETE", "/admin/collections/docs/dlq"),
    ("POST", "/admin/collections/docs/compact"),
    ("POST", "/admin/collections/docs/warm"),
]
ACCEPTED = {("POST", "/admin/collections/docs/warm")}  # answered 202 (runs on), the others 200


def success(method: str, path: str) -> int:
    return 202 if (method, path) in ACCEPTED else 200


def assert_error(response, status: int, kind: str, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == kind
    for needle in needles:
        assert needle in body["message"], body["message"]
    return body


async def status(client: Client, name: str = "docs", headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await client.get(f"/admin/collections/{name}/status", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


# -- routes (default settings: no token, loopback bind) -------------------------------------------


async def test_status_reports_the_collection(client: Client) -> None:
    await seeded(client, n=10)
    body = await status(client)
    assert body["name"] == "docs"
    assert body["policy"] == "memory"
    assert body["state"] == "ready"
    assert body["count"] == 10
    assert body["memtable_rows"] == 10
    assert body["segments"] == 0
    assert body["manifest_version"] >= 1
    assert body["wal_seq"] >= 1
    assert body["wal_bytes"] > 0
    assert body["last_snapshot_ts"] > 0
    for key in (
        "upload_lag_secs", "upload_lag_bytes", "upload_queue_size", "dlq_size",
        "cache_bytes_ram", "cache_bytes_disk", "fenced", "last_compaction_ts",
    ):
        assert key in body, key
    assert body["dlq_size"] == 0 and body["upload_queue_size"] == 0 and body["fenced"] is False


async def test_dlq_of_a_memory_collection_is_always_empty(client: Client) -> None:
    await seeded(client, n=3)
    response = await client.get("/admin/collections/docs/dlq")
    assert response.status_code == 200
    assert response.json() == {"collection": "docs", "entries": [], "size": 0}
    retry = await client.post("/admin/collections/docs/dlq/retry")
    assert (retry.status_code, retry.json()) == (200, {"retried": 0})
    clear = await client.delete("/admin/collections/docs/dlq")
    assert (clear.status_code, clear.json()) == (200, {"cleared": 0})
    assert await count(client, "docs") == 3


@pytest.mark.parametrize(("method", "path"), [(m, p.replace("/docs/", "/nope/")) for m, p in ROUTES])
async def test_unknown_collection_is_404_on_every_route(client: Client, method: str, path: str) -> None:
    await seeded(client, n=1)
    assert_error(await client.request(method, path), 404, "not_found", "'nope'")


async def test_admin_routes_answer_503_until_recovery_finishes(open_client, monkeypatch) -> None:
    release = asyncio.Event()
    original_start = Engine.start

    async def slow_start(self):
        await release.wait()
        await original_start(self)

    monkeypatch.setattr(Engine, "start", slow_start)
    async with open_client(ready=False) as client:
        response = await client.get("/admin/collections/docs/status")
        assert_error(response, 503, "unavailable", "starting")
        release.set()


# -- warming --------------------------------------------------------------------------------------


async def test_warm_answers_202_with_progress_and_the_status_shows_it(client: Client) -> None:
    await seeded(client, n=10)
    assert (await client.post("/admin/collections/docs/compact")).status_code == 200
    assert (await status(client))["warm"] == {
        "state": "idle", "segments_total": 0, "segments_done": 0, "bytes_total": 0, "bytes_fetched": 0,
        "started_at": 0.0, "finished_at": 0.0, "error": "",
    }
    response = await client.post("/admin/collections/docs/warm")
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["state"] == "running" and started["segments_total"] == 1 and started["bytes_total"] > 0
    deadline = time.monotonic() + 60
    while (warm := (await status(client))["warm"])["state"] == "running":
        assert time.monotonic() < deadline, warm
        await asyncio.sleep(0.02)
    assert warm["state"] == "done" and warm["error"] == ""
    assert warm["segments_done"] == 1 and warm["bytes_fetched"] == warm["bytes_total"] == started["bytes_total"]
    assert warm["finished_at"] >= warm["started_at"] == started["started_at"] > 0
    assert await count(client, "docs") == 10


async def test_warm_answers_msgpack_when_asked(client: Client) -> None:
    await seeded(client, n=3)
    response = await client.post("/admin/collections/docs/warm", headers={"accept": "application/msgpack"})
    assert response.status_code == 202 and response.headers["content-type"] == "application/msgpack"
    assert msgspec.msgpack.decode(response.content)["state"] == "running"


# -- compaction -----------------------------------------------------------------------------------


async def test_compact_flushes_the_memtable_into_a_segment(client: Client) -> None:
    documents = await seeded(client, n=10)
    before = await status(client)
    assert (before["memtable_rows"], before["segments"]) == (10, 0)

    started = time.perf_counter()
    response = await client.post("/admin/collections/docs/compact")
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["flushed_rows"] == 10
    assert result["segments"] == 1
    assert result["manifest_version"] > before["manifest_version"]
    # Seconds the compaction took, within the request's own duration (rounded to ms).
    assert isinstance(result["duration_secs"], float)
    assert 0 <= result["duration_secs"] <= round(elapsed, 3) + 0.001, (result["duration_secs"], elapsed)
    assert set(result) >= {"flushed_rows", "merged_segments", "segments", "manifest_version", "duration_secs"}

    after = await status(client)
    assert (after["memtable_rows"], after["segments"], after["count"]) == (0, 1, 10)
    assert after["manifest_version"] == result["manifest_version"]
    query = {"vector": documents[3]["vector"], "k": 1}
    hits = (await client.post("/v1/collections/docs/query", json=query)).json()
    assert hits["results"][0]["id"] == "d3"


async def test_full_compaction_merges_every_segment_and_survives_a_restart(open_client) -> None:
    async with open_client() as client:
        await seeded(client, n=4)
        for batch in range(2):
            await client.post("/admin/collections/docs/compact")
            new = [doc(f"b{batch}-{i}", unit(i)) for i in range(3)]
            await client.post("/v1/collections/docs/documents", json={"documents": new})
        await client.post("/admin/collections/docs/compact", json={"full": False})
        assert (await status(client))["segments"] == 3

        response = await client.post("/admin/collections/docs/compact", json={"full": True})
        assert response.status_code == 200, response.text
        assert response.json()["merged_segments"] == 3
        assert response.json()["segments"] == 1
        assert (await status(client))["count"] == 10

    async with open_client() as client:
        after = await status(client)
        assert (after["segments"], after["count"], after["memtable_rows"]) == (1, 10, 0)


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"", {}),
        (b"", {"content-type": "application/json"}),
        (b"{}", {"content-type": "application/json"}),
        (b'{"full": false}', {"content-type": "application/json"}),
        (msgpack_body({"full": True}), {"content-type": "application/msgpack"}),
    ],
)
async def test_compact_body_is_optional(client: Client, content: bytes, headers: dict[str, str]) -> None:
    await seeded(client, n=2)
    response = await client.post("/admin/collections/docs/compact", content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["flushed_rows"] == 2


@pytest.mark.parametrize(
    ("content", "content_type", "status", "needle"),
    [
        (b'{"full": "yes"}', "application/json", 400, "$.full"),
        (b'{"ful": true}', "application/json", 400, "unknown field `ful`"),
        (b"{not json", "application/json", 400, "malformed JSON"),
        (b"full=true", "application/x-www-form-urlencoded", 415, "application/json"),
    ],
)
async def test_bad_compact_bodies_are_rejected_and_change_nothing(
    client: Client, content: bytes, content_type: str, status: int, needle: str
) -> None:
    await seeded(client, n=2)
    before = await status_of(client)
    response = await client.post(
        "/admin/collections/docs/compact", content=content, headers={"content-type": content_type}
    )
    assert_error(response, status, "invalid" if status == 400 else "unsupported_media_type", needle)
    assert await status_of(client) == before


async def status_of(client: Client) -> tuple[int, int, int]:
    body = await status(client)
    return body["segments"], body["memtable_rows"], body["manifest_version"]


# -- who may call the admin API -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
        ("localhost", True), ("LOCALHOST", True),
        ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("10.0.0.1", False),
        ("example.com", False), ("tierdb.internal", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None), ("", None), ("Bearer", None), ("Bearer ", None), ("Basic dXNlcjpwYXNz", None),
        (TOKEN, None), (f"Bearer {TOKEN} extra", None),
        (f"Bearer {TOKEN}", TOKEN), (f"bearer {TOKEN}", TOKEN), (f"BEARER   {TOKEN}  ", TOKEN),
    ],
)
def test_bearer_token_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_admin_mode(data_dir: Path) -> None:
    assert admin_mode(make_settings(data_dir)) is AdminMode.LOOPBACK
    assert admin_mode(make_settings(data_dir, **{"server.host": "0.0.0.0"})) is AdminMode.DISABLED
    assert admin_mode(make_settings(data_dir, **{"security.admin_token": TOKEN})) is AdminMode.TOKEN
    both = make_settings(data_dir, **{"server.host": "0.0.0.0", "security.admin_token": TOKEN})
    assert admin_mode(both) is AdminMode.TOKEN


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
async def test_no_token_and_loopback_bind_allows_admin(open_client, data_dir, host) -> None:
    async with open_client(make_settings(data_dir, **{"server.host": host})) as client:
        await seeded(client, n=2)
        for method, path in ROUTES:
            response = await client.request(method, path)
            assert response.status_code == success(method, path), (method, path, response.text)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "tierdb.example.com"])
async def test_no_token_and_network_bind_disables_admin(open_client, data_dir, host) -> None:
    async with open_client(make_settings(data_dir, **{"server.host": host})) as client:
        await seeded(client, n=2)
        for method, path in ROUTES:
            for headers in ({}, {"authorization": "Bearer anything"}):
                response = await client.request(method, path, headers=headers)
                assert_error(response, 403, "forbidden", "disabled", "TIERDB_ADMIN_TOKEN")
        # The data API is unaffected, and nothing was compacted.
        body = (await client.get("/v1/collections/docs")).json()
        assert (body["count"], body["segments"]) == (2, 0)


@pytest.fixture(params=["127.0.0.1", "0.0.0.0"])
async def token_client(request, open_client, data_dir) -> Any:
    """A token is configured: it is required whatever the bind address (also on loopback)."""
    settings = make_settings(data_dir, **{"security.admin_token": TOKEN, "server.host": request.param})
    async with open_client(settings) as client:
        await seeded(client, n=2)
        yield client


async def assert_nothing_compacted(client: Client) -> None:
    body = await status(client, headers=AUTH)
    assert (body["segments"], body["memtable_rows"]) == (0, 2)


MISSING_OR_MALFORMED = [
    {},
    {"authorization": ""},
    {"authorization": "Bearer"},
    {"authorization": "Bearer "},
    {"authorization": TOKEN},
    {"authorization": f"Basic {TOKEN}"},
    {"authorization": f"Token {TOKEN}"},
    {"authorization": f"Bearer {TOKEN} {TOKEN}"},
    {"x-api-key": TOKEN},
]


async def test_token_configured_missing_or_malformed_is_401(token_client: Client) -> None:
    for method, path in ROUTES:
        for headers in MISSING_OR_MALFORMED:
            response = await token_client.request(method, path, headers=headers)
            assert_error(response, 401, "unauthorized", "Authorization: Bearer")
            assert response.headers["www-authenticate"] == "Bearer"
            assert TOKEN not in response.text
    await assert_nothing_compacted(token_client)


WRONG_TOKENS = [WRONG, TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "x", "\u00e9" * 8]


async def test_token_configured_wrong_token_is_403(token_client: Client) -> None:
    for method, path in ROUTES:
        for presented in WRONG_TOKENS:
            headers = {"authorization": f"Bearer {presented}".encode("utf-8")}
            response = await token_client.request(method, path, headers=headers)
            body = assert_error(response, 403, "forbidden", "not valid")
            assert presented not in body["message"] and TOKEN not in response.text
    await assert_nothing_compacted(token_client)


async def test_token_configured_right_token_is_200(token_client: Client) -> None:
    for method, path in ROUTES:
        for headers in (AUTH, {"authorization": f"bearer {TOKEN}"}, {"authorization": f"  BEARER  {TOKEN} "}):
            response = await token_client.request(method, path, headers=headers)
            assert response.status_code == success(method, path), (method, path, response.text)


async def test_non_ascii_token_is_compared_as_utf8(open_client, data_dir) -> None:
    token = "k\u00e9y-\u2603-0123456789"
    async with open_client(make_settings(data_dir, **{"security.admin_token": token})) as client:
        await seeded(client, n=1)
        good = {"authorization": f"Bearer {token}".encode("utf-8")}
        assert (await client.get("/admin/collections/docs/status", headers=good)).status_code == 200
        bad = {"authorization": f"Bearer {token[:-1]}".encode("utf-8")}
        assert (await client.get("/admin/collections/docs/status", headers=bad)).status_code == 403


async def test_admin_token_is_not_needed_for_the_data_api_or_open_routes(token_client: Client) -> None:
    assert (await token_client.get("/v1/collections/docs")).status_code == 200
    for path in ("/health", "/health/live", "/health/ready", "/metrics", "/schema/openapi.json"):
        assert (await token_client.get(path)).status_code == 200, path


# -- start-up log and secrets -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "level", "needles"),
    [
        (
            {},
            logging.WARNING,
            ("admin API open without a token", "loopback only", "127.0.0.1", "TIERDB_ADMIN_TOKEN"),
        ),
        ({"server.host": "0.0.0.0"}, logging.WARNING, ("admin API disabled", "0.0.0.0", "TIERDB_ADMIN_TOKEN")),
        ({"security.admin_token": TOKEN}, logging.INFO, ("admin API enabled", "Bearer")),
    ],
    ids=["loopback", "disabled", "token"],
)
async def test_startup_log_says_which_admin_mode(
    open_client, data_dir, caplog, overrides, level, needles
) -> None:
    with caplog.at_level(logging.INFO, logger="tierdb.api"):
        async with open_client(make_settings(data_dir, **overrides)):
            pass
    lines = [r for r in caplog.records if r.name == "tierdb.api" and "admin API" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert lines[0].levelno == level
    for needle in needles:
        assert needle in lines[0].getMessage()


async def test_secrets_never_reach_logs_or_responses(open_client, data_dir, caplog) -> None:
    settings = make_settings(data_dir, **{"security.admin_token": TOKEN, "security.api_keys": ["k-" + WRONG]})
    with caplog.at_level(logging.DEBUG):
        async with open_client(settings) as client:
            key = {"x-api-key": "k-" + WRONG}
            await client.post("/v1/collections", json={"name": "docs", "dimension": 4}, headers=key)
            texts = []
            for headers in ({}, {"authorization": f"Bearer {WRONG}"}, AUTH):
                for method, path in ROUTES:
                    texts.append((await client.request(method, path, headers=headers)).text)
            texts.append((await client.get("/health")).text)
            texts.append((await client.get("/v1/collections", headers={"x-api-key": "guess"})).text)
    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    for secret in (TOKEN, WRONG, "guess"):
        assert secret not in logged
        assert not any(secret in text for text in texts)
