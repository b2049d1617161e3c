"""Settings for tests that run engines against an S3 server: one set of defaults.

Every engine a test starts drives its workers itself (intervals of an hour), so nothing runs
behind the test's back; a test that needs other values passes them as sections.
"""

from __future__ import annotations

from typing import Any

from ..config import (
    CompactionSettings,
    GcSettings,
    IndexSettings,
    RetrySettings,
    S3Settings,
    Settings,
    StorageSettings,
    UploaderSettings,
)

# Three retries, as production; backoffs short enough for tests, long enough for a real
# server's brief 500s right after a restart (SeaweedFS re-registering its volume server).
FAST_RETRY = RetrySettings(max_retries=3, base_backoff_secs=0.02, max_backoff_secs=0.2)

HOUR = 3600.0


def s3_settings(**fields: Any) -> S3Settings:
    """S3Settings for a test server (``endpoint``, ``bucket``, ``prefix``, ``region``, ...):
    path-style addressing and timeouts generous enough for a busy two-core machine (a short
    read timeout turns a slow answer into a retry)."""
    defaults: dict[str, Any] = {"path_style": True, "connect_timeout_secs": 2.0, "read_timeout_secs": 10.0}
    return S3Settings(**(defaults | fields))


def engine_settings(data_dir: str, s3: S3Settings, policy: str = "memory_s3", **sections: Any) -> Settings:
    """Engine Settings for a test node; ``sections`` (e.g. ``retry=...``, ``gc=...``) replace
    whole sections."""
    values: dict[str, Any] = {
        "storage": StorageSettings(data_dir=data_dir, tiering_policy=policy),
        "index": IndexSettings(threshold=64, ef_construction=100, ef_search=64, build_threads=1),
        # flush_grow_ratio=0: flushes write segments of their own (the shapes these tests build)
        "compaction": CompactionSettings(interval_secs=HOUR, threshold_ops=100_000, max_age_secs=HOUR, flush_grow_ratio=0),
        "s3": s3,
        "retry": FAST_RETRY,
        "uploader": UploaderSettings(interval_secs=HOUR, group_commit_ms=5, backoff_base_secs=0.0),
        "gc": GcSettings(interval_secs=HOUR, keep_manifests=3, grace_secs=600),
    }
    values.update(sections)
    return Settings(**values)
