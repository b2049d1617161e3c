"""Request limits come from settings (here: TIERDB_SERVER_* env variables) and are enforced exactly.

test_errors.py covers each limit with the fixture's values; this module proves they are
configuration, not constants: other values, set through the environment, move the boundary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from tests.server_process import ServerProcess
from tierdb.config import Settings, load_settings

from .conftest import Client, doc, unit

DIM = 4
LIMITS = {
    "TIERDB_SERVER_MAX_BODY_BYTES": "4096",
    "TIERDB_SERVER_MAX_BATCH": "3",
    "TIERDB_SERVER_MAX_K": "2",
    "TIERDB_SERVER_MAX_QUERY_VECTORS": "2",
}


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    env = {**LIMITS, "TIERDB_STORAGE_DATA_DIR": str(data_dir), "TIERDB_COMPACTION_INTERVAL_SECS": "3600"}
    return load_settings(env=env)


@pytest.fixture
async def limited(client: Client) -> AsyncIterator[Client]:
    assert (await client.post("/v1/collections", json={"name": "docs", "dimension": DIM})).status_code == 201
    yield client


def test_env_variables_set_the_limits(settings: Settings) -> None:
    server = settings.server
    assert (server.max_body_bytes, server.max_batch, server.max_k, server.max_query_vectors) == (4096, 3, 2, 2)


def _error(response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.text
    for needle in needles:
        assert needle in response.json()["message"]


async def test_max_batch_boundary(limited: Client) -> None:
    at_limit = {"documents": [doc(f"a{i}", unit(i)) for i in range(3)]}
    assert (await limited.post("/v1/collections/docs/documents", json=at_limit)).status_code == 200
    over = {"documents": [doc(f"b{i}", unit(i)) for i in range(4)]}
    response = await limited.post("/v1/collections/docs/documents", json=over)
    _error(response, 413, "4 entries", "limit is 3", "server.max_batch")
    four = {"ids": ["a0", "a1", "a2", "b0"]}
    _error(await limited.post("/v1/collections/docs/documents/get", json=four), 413, "server.max_batch")
    _error(await limited.post("/v1/collections/docs/documents/delete", json=four), 413, "server.max_batch")
    count = (await limited.get("/v1/collections/docs")).json()["count"]
    assert count == 3


async def test_max_k_boundary(limited: Client) -> None:
    at_limit = await limited.post("/v1/collections/docs/query", json={"vector": unit(0), "k": 2})
    assert at_limit.status_code == 200, at_limit.text
    response = await limited.post("/v1/collections/docs/query", json={"vector": unit(0), "k": 3})
    _error(response, 400, "between 1 and 2", "server.max_k")


async def test_max_query_vectors_boundary(limited: Client) -> None:
    two = {"vectors": [unit(0), unit(1)], "k": 1}
    assert (await limited.post("/v1/collections/docs/query", json=two)).status_code == 200
    three = {"vectors": [unit(0), unit(1), unit(2)], "k": 1}
    _error(await limited.post("/v1/collections/docs/query", json=three), 413, "server.max_query_vectors")


def _padded(size: int) -> bytes:
    """A valid one-document upsert body of exactly ``size`` bytes (padding in the metadata)."""
    empty = msgspec.json.encode({"documents": [doc("p", unit(0), {"pad": ""})]})
    return msgspec.json.encode({"documents": [doc("p", unit(0), {"pad": "x" * (size - len(empty))})]})


@pytest.mark.parametrize(("size", "status"), [(4096, 200), (4097, 413)])
async def test_max_body_bytes_boundary(limited: Client, size: int, status: int) -> None:
    body = _padded(size)
    assert len(body) == size
    response = await limited.post(
        "/v1/collections/docs/documents", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    if status == 413:
        _error(response, 413, "4096 bytes", "server.max_body_bytes")
        assert (await limited.get("/v1/collections/docs")).json()["count"] == 0


def test_body_limit_holds_for_chunked_uploads_on_a_real_server(tmp_path: Path) -> None:
    """A chunked upload announces no size: uvicorn + Litestar must count the bytes as they stream in."""
    server = ServerProcess(tmp_path / "data", env={"TIERDB_SERVER_MAX_BODY_BYTES": "4096"})
    with server:
        server.start()
        with server.client() as client:
            assert client.post("/v1/collections", json={"name": "docs", "dimension": DIM}).status_code == 201

            def chunks():
                for _ in range(64):
                    yield b" " * 1024

            response = client.post(
                "/v1/collections/docs/documents", content=chunks(), headers={"content-type": "application/json"}
            )
            assert response.request.headers.get("transfer-encoding") == "chunked"
            assert "content-length" not in response.request.headers
            _error(response, 413, "4096 bytes", "server.max_body_bytes")
            small = {"documents": [doc("a", unit(0))]}
            assert client.post("/v1/collections/docs/documents", json=small).json() == {"upserted": 1}
        assert server.stop() == 0, server.log_tail()


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/v1/collections/docs/documents", "application/msgpack", msgspec.msgpack.encode({"pad": "x" * 5000})),
        ("/v1/collections/docs/query", "application/json", b" " * 5000),
        ("/v1/collections", "application/json", b" " * 5000),
        ("/admin/collections/docs/compact", "application/json", b" " * 5000),
    ],
)
async def test_body_limit_applies_to_every_route_and_format(limited: Client, path, content_type, body) -> None:
    response = await limited.post(path, content=body, headers={"content-type": content_type})
    _error(response, 413, "server.max_body_bytes")
