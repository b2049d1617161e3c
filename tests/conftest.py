"""Fixtures shared by every test directory: one real S3 server per session and the settings
pointed at it (tests/minio, tests/faults, tests/crash and the API tests over S3 use them).

``s3_server`` (session) is started on first use and stopped at the end; a test may stop it
(``stop()``/``start()`` block: call them via ``asyncio.to_thread`` from a test whose event loop
must keep running) and ``s3_up`` restarts it before and after each test that uses S3.  Every
test gets a fresh ``s3_prefix``; all stores and nodes of one test share it.
The server bootstrap and the settings defaults live in ``tierdb.testing`` (benchmarks use them).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tierdb.config import RetrySettings, S3Settings, Settings
from tierdb.storage.base import BlobStore
from tierdb.storage.retry import RetryingStore
from tierdb.storage.s3 import S3Store
from tierdb.testing.s3_server import S3Server, S3ServerError, start_s3_server
from tierdb.testing.settings import FAST_RETRY, engine_settings, s3_settings


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    try:
        server = start_s3_server(tmp_path_factory.mktemp("s3-server"))
    except S3ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        if server.controllable:
            server.stop()


@pytest.fixture
def s3_up(s3_server: S3Server) -> Iterator[S3Server]:
    """The S3 server, running before the test and again after it (a test may stop it)."""
    s3_server.ensure_running()
    yield s3_server
    s3_server.ensure_running()


@pytest.fixture
def s3_prefix() -> str:
    return f"tests/{uuid.uuid4().hex}"


@pytest.fixture
def s3_env(s3_up: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """S3Store reads credentials from the standard AWS chain."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_up.access_key or "")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_up.secret_key or "")
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_up.region)
    return s3_up


@pytest.fixture
def s3_settings_factory(s3_up: S3Server, s3_prefix: str) -> Callable[..., S3Settings]:
    """``make(**overrides) -> S3Settings`` under the test's prefix."""

    def make(**overrides: Any) -> S3Settings:
        server = {"endpoint": s3_up.endpoint, "bucket": s3_up.bucket, "prefix": s3_prefix, "region": s3_up.region}
        return s3_settings(**(server | overrides))

    return make


@pytest.fixture
def make_settings(tmp_path, s3_env: S3Server, s3_settings_factory: Callable[..., S3Settings]) -> Callable[..., Settings]:
    """``make(node, policy="memory_s3", endpoint=None, read_timeout=None, **sections)``: one
    data directory per node, the test's S3 prefix for all of them; ``endpoint`` (e.g. a chaos
    proxy) replaces the server's own."""

    def make(node: str, policy: str = "memory_s3", endpoint: str | None = None,
             read_timeout: float | None = None, **sections: Any) -> Settings:
        overrides: dict[str, Any] = {}
        if endpoint is not None:
            overrides["endpoint"] = endpoint
        if read_timeout is not None:
            overrides["read_timeout_secs"] = read_timeout
        return engine_settings(str(tmp_path / node), s3_settings_factory(**overrides), policy, **sections)

    return make


@pytest.fixture
async def make_s3_store(s3_up: S3Server, s3_settings_factory: Callable[..., S3Settings]) -> Any:
    """``make(settings=None, *, retry=FAST_RETRY, access_key=..., secret_key=..., **S3Store
    kwargs) -> BlobStore``; ``retry=None`` returns the bare S3Store.  All closed afterwards."""
    created: list[BlobStore] = []

    def make(
        settings: S3Settings | None = None,
        *,
        retry: RetrySettings | None = FAST_RETRY,
        access_key: str | None = s3_up.access_key,
        secret_key: str | None = s3_up.secret_key,
        on_retry: Any = None,
        **kwargs: Any,
    ) -> BlobStore:
        store: BlobStore = S3Store(
            settings or s3_settings_factory(), access_key=access_key, secret_key=secret_key, **kwargs
        )
        if retry is not None:
            store = RetryingStore(store, retry, on_retry=on_retry)
        created.append(store)
        return store

    yield make
    for store in created:
        await store.close()


@pytest.fixture
async def s3_store(make_s3_store: Any) -> BlobStore:
    return make_s3_store()
