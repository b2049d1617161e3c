"""Client tests run against a real ``tierdb serve`` process (one per module), sometimes through
a fault-injecting proxy (support.FaultProxy)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client.support import FaultProxy
from tests.server_process import ServerProcess

ADMIN_TOKEN = "client-tests-admin-token-0123456789"
API_KEY = "client-tests-api-key-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """An open server (no API keys; admin API open on loopback)."""
    with ServerProcess(tmp_path_factory.mktemp("server") / "data") as process:
        process.start()
        yield process


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """API keys and an admin token required; at most 50 documents per request."""
    env = {"TIERDB_ADMIN_TOKEN": ADMIN_TOKEN, "TIERDB_SECURITY_API_KEYS": API_KEY, "TIERDB_SERVER_MAX_BATCH": "50"}
    with ServerProcess(tmp_path_factory.mktemp("secured") / "data", env=env) as process:
        process.start()
        yield process


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[FaultProxy]:
    with FaultProxy(server.url) as p:
        yield p
