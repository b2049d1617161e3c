"""``restore`` and ``verify``: offline operations on a data directory and its S3 copy (server stopped).

``progress`` callbacks, when given, receive one short human-readable line per step (the CLI
prints them on stderr).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .. import keys
from ..config import ConfigError, Settings
from ..engine import manifest as manifests
from ..engine import localdirs
from ..engine.dirlock import DataDirLock
from ..engine.restore import remote_collection_names, restore_collection, verify_manifest
from ..errors import TierDBError
from ..storage.base import BlobStore
from ..storage.factory import open_s3_store
from ..storage.local import LocalStore
from ..tiering import policy_of


def _local_names(data_dir: str) -> list[str]:
    root = keys.collections_dir(data_dir)
    return sorted(n for n in os.listdir(root) if not n.startswith(".")) if os.path.isdir(root) else []


Progress = Callable[[str], None] | None


async def restore_from_s3(
    settings: Settings, only: list[str] | None, *, force: bool, progress: Progress = None
) -> list[dict[str, Any]]:
    if not settings.s3.bucket:  # a configuration error (exit code 2), not a failed restore
        raise ConfigError("s3.bucket is not set: restore reads from S3 (set TIERDB_S3_BUCKET or [s3] bucket)")
    data_dir = os.path.abspath(settings.storage.data_dir)
    os.makedirs(data_dir, exist_ok=True)
    lock = DataDirLock(data_dir)
    lock.acquire()  # never restore under a running server
    remote = open_s3_store(settings)
    rows: list[dict[str, Any]] = []
    try:
        # A directory without a manifest is an interrupted restore or create: it needs restoring.
        present = {name for name in _local_names(data_dir) if localdirs.has_manifest(data_dir, name)}
        names = only or await remote_collection_names(remote)
        for number, name in enumerate(names, 1):
            if progress is not None:
                progress(f"restore {number}/{len(names)}: {name}")
            if name in present and not force:
                rows.append({"collection": name, "where": "local", "status": "skipped",
                             "detail": "exists locally (use --force to replace it)"})
                continue
            try:
                latest = await manifests.load_latest(remote, name)
                if latest is not None and not policy_of(latest.spec.tiering_policy).restores_to_disk:
                    rows.append({"collection": name, "where": "s3", "status": "skipped",
                                 "detail": f"{latest.spec.tiering_policy} collections live in S3; nothing to restore"})
                    continue
                # replaces the local directory atomically, only once the restored copy is complete
                restored = await restore_collection(remote, data_dir, name)
            except TierDBError as exc:
                rows.append({"collection": name, "where": "s3", "status": "failed", "detail": exc.message})
                continue
            if restored is None:
                rows.append({"collection": name, "where": "s3", "status": "failed", "detail": "no manifest in S3"})
            else:
                rows.append({"collection": name, "where": "s3", "status": "restored",
                             "detail": f"manifest v{restored.version}, {len(restored.segments)} segments, wal_seq {restored.wal_seq}"})
    finally:
        await remote.close()
        lock.release()
    return rows


async def verify_collections(
    settings: Settings, only: list[str] | None, *, progress: Progress = None
) -> list[dict[str, Any]]:
    data_dir = os.path.abspath(settings.storage.data_dir)
    stores: list[tuple[str, BlobStore, list[str]]] = []
    local = LocalStore(data_dir)
    stores.append(("local", local, only or _local_names(data_dir)))
    remote = open_s3_store(settings) if settings.s3.bucket else None
    rows: list[dict[str, Any]] = []
    try:
        if remote is not None:
            stores.append(("s3", remote, only or await remote_collection_names(remote)))
        for where, store, names in stores:
            for number, name in enumerate(names, 1):
                if progress is not None:
                    progress(f"verify {where} {number}/{len(names)}: {name}")
                rows.append(await _verify_one(store, where, name))
    finally:
        if remote is not None:
            await remote.close()
    return rows


async def _verify_one(store: BlobStore, where: str, name: str) -> dict[str, Any]:
    try:
        latest = await manifests.load_latest(store, name)
    except TierDBError as exc:
        return {"collection": name, "where": where, "status": "corrupt", "problems": [exc.message]}
    if latest is None:
        return {"collection": name, "where": where, "status": "missing", "problems": ["no manifest"]}
    problems = await verify_manifest(store, latest)
    return {
        "collection": name,
        "where": where,
        "status": "ok" if not problems else "corrupt",
        "manifest_version": latest.version,
        "segments": len(latest.segments),
        "problems": problems,
    }
