"""API test fixtures: a real engine on a tmp data dir behind Litestar's AsyncTestClient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tierdb.api.app import create_app
from tierdb.config import Settings, load_settings

DIM = 4
MAX_BODY = 256 * 1024
MAX_BATCH = 100
MAX_K = 50
MAX_QUERY_VECTORS = 8

Client = AsyncTestClient[Litestar]


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values = {
        "storage.data_dir": str(data_dir),
        "server.max_body_bytes": MAX_BODY,
        "server.max_batch": MAX_BATCH,
        "server.max_k": MAX_K,
        "server.max_query_vectors": MAX_QUERY_VECTORS,
        "compaction.interval_secs": 3600.0,
        **overrides,
    }
    return load_settings(env={}, overrides=values)


async def wait_ready(client: Client, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await client.get("/health/ready")).status_code != 200:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("engine did not become ready")
        await asyncio.sleep(0.01)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return make_settings(data_dir)


@pytest.fixture
def open_client(settings: Settings) -> Callable[..., AbstractAsyncContextManager[Client]]:
    """Factory: ``async with open_client() as client`` starts an app (again) on the same data dir."""

    @asynccontextmanager
    async def opener(app_settings: Settings | None = None, ready: bool = True) -> AsyncIterator[Client]:
        app = create_app(app_settings or settings)
        async with AsyncTestClient(app=app) as client:
            if ready:
                await wait_ready(client)
            yield client

    return opener


@pytest.fixture
async def client(open_client: Callable[..., AbstractAsyncContextManager[Client]]) -> AsyncIterator[Client]:
    async with open_client() as client:
        yield client


# -- helpers shared by the API tests ----------------------------------------------------------


def doc(doc_id: str, vector: list[float], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": doc_id, "vector": vector}
    if metadata is not None:
        out["metadata"] = metadata
    return out


def unit(i: int, dim: int = DIM) -> list[float]:
    """A distinct, non-zero vector per i (cosine-friendly)."""
    return [1.0 if j == i % dim else 0.1 * ((i // dim) + 1) for j in range(dim)]


async def create(client: Client, name: str = "docs", dimension: int = DIM, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/collections", json={"name": name, "dimension": dimension, **fields})
    assert response.status_code == 201, response.text
    return response.json()


async def upsert(client: Client, name: str, documents: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post(f"/v1/collections/{name}/documents", json={"documents": documents})
    assert response.status_code == 200, response.text
    return response.json()


async def count(client: Client, name: str) -> int:
    response = await client.get(f"/v1/collections/{name}")
    assert response.status_code == 200, response.text
    return response.json()["count"]


async def get_docs(client: Client, name: str, ids: list[str]) -> list[dict[str, Any]]:
    response = await client.post(f"/v1/collections/{name}/documents/get", json={"ids": ids})
    assert response.status_code == 200, response.text
    return response.json()["documents"]


async def seeded(client: Client, name: str = "docs", n: int = 10) -> list[dict[str, Any]]:
    """A collection with n documents ``d0..d{n-1}``; metadata {"i": i, "even": bool, "tag": ...}."""
    await create(client, name)
    documents = [
        doc(f"d{i}", unit(i), {"i": i, "even": i % 2 == 0, "tag": "abc"[i % 3]}) for i in range(n)
    ]
    await upsert(client, name, documents)
    return documents


def msgpack_body(payload: Any) -> bytes:
    return msgspec.msgpack.encode(payload)
