"""Builds the stores the rest of TierDB uses, from Settings."""

from __future__ import annotations

import os
from collections.abc import Callable

from tierdb.config import Settings
from tierdb.storage.base import BlobStore
from tierdb.storage.cache import DiskCachedStore, OnEvent
from tierdb.storage.metered import MeteredStore
from tierdb.storage.retry import OnRetry, RetryingStore
from tierdb.storage.s3 import S3Store


def open_s3_store(
    settings: Settings,
    on_request: Callable[[str], None] | None = None,
    on_retry: OnRetry | None = None,
) -> BlobStore:
    """S3 with our retry policy, every request counted per collection in
    ``storage_s3_requests_total``; credentials from the standard AWS chain."""
    return RetryingStore(
        MeteredStore(S3Store(settings.s3, on_request=on_request)), settings.retry, on_retry=on_retry
    )


def with_disk_cache(
    inner: BlobStore, settings: Settings, collection: str, on_event: OnEvent | None = None
) -> DiskCachedStore:
    """The s3_only disk tier of one collection: ``{cache.dir}/{collection}`` (default
    ``{data_dir}/cache/{collection}``), at most ``cache.disk_bytes`` bytes, LRU."""
    root = settings.cache.dir or os.path.join(settings.storage.data_dir, "cache")
    return DiskCachedStore(inner, os.path.join(root, collection), settings.cache.disk_bytes, on_event=on_event)
