"""The real S3 server for the crash tests: shared with tests/faults (see tests/faults/s3_shared.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults import s3_shared
from tests.minio.conftest import S3Server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from s3_shared.s3_server_fixture(tmp_path_factory)
