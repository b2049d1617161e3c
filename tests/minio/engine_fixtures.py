"""Fixtures that build engine Settings against the session's S3 server."""

from __future__ import annotations

import pytest

from tierdb.config import (
    CompactionSettings,
    GcSettings,
    IndexSettings,
    RetrySettings,
    Settings,
    StorageSettings,
    UploaderSettings,
)

FAST_RETRY = RetrySettings(max_retries=2, base_backoff_secs=0.05, max_backoff_secs=0.2)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key or "")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key or "")
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    return s3_server


@pytest.fixture
def make_settings(tmp_path, s3_settings_factory, s3_env):
    s3 = s3_settings_factory()

    def make(node: str, policy: str = "memory_s3", **sections) -> Settings:
        defaults = dict(
            storage=StorageSettings(data_dir=str(tmp_path / node), tiering_policy=policy),
            index=IndexSettings(threshold=64, ef_construction=100, ef_search=64),
            compaction=CompactionSettings(interval_secs=3600, threshold_ops=10_000),
            s3=s3,
            retry=FAST_RETRY,
            uploader=UploaderSettings(interval_secs=3600, group_commit_ms=5, backoff_base_secs=0.0),  # tests drive runs
            gc=GcSettings(interval_secs=3600, keep_manifests=3, grace_secs=0),
        )
        defaults.update(sections)
        return Settings(**defaults)

    return make


