"""Builds the stores the rest of TierDB uses, from Settings."""

from __future__ import annotations

import os
from collections.abc import Callable

from tierdb.config import Settings
from tierdb.storage.base import BlobStore
from tierdb.storage.cache import DiskCachedStore, OnEvent
from tierdb.storage.retry import OnRetry, RetryingStore
from tierdb.storage.s3 import S3Store


def open_s3_store(
    settings: Settings,
    on_request: Callable[[str], None] | None = None,
    on_retry: OnRetry | None = None,
) -> BlobStore:
    """S3 with our retry policy; credentials from the standard AWS chain."""
    return RetryingStore(S3Store(settings.s3, on_request=on_request), settings.retry, on_retry=on_retry)


def with_disk_cache(
    inner: BlobStore, settings: Settings, on_event: OnEvent | None = None
) -> DiskCachedStore:
    """The s3_only disk tier: ``cache.dir`` (default ``{data_dir}/cache``), ``cache.disk_bytes``."""
    directory = settings.cache.dir or os.path.join(settings.storage.data_dir, "cache")
    return DiskCachedStore(inner, directory, settings.cache.disk_bytes, on_event=on_event)
