"""Manifest persistence: versioned JSON objects advanced by put-if-absent.

Writing version N+1 with ``if_absent`` both publishes atomically and fences a second writer:
if another node already wrote N+1, this node has lost the collection and must stop writing.
"""

from __future__ import annotations

import msgspec

from .. import keys
from ..errors import ErrorKind, TierDBError, corrupt, fenced
from ..models import Manifest
from ..storage.base import BlobStore

_decoder = msgspec.json.Decoder(Manifest)


def encode(manifest: Manifest) -> bytes:
    return msgspec.json.encode(manifest)


def decode(data: bytes, *, source: str) -> Manifest:
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise corrupt(f"manifest {source} is unreadable: {exc}", path=source) from exc


async def versions(store: BlobStore, name: str) -> list[int]:
    infos = await store.list(keys.manifest_prefix(name))
    found = (keys.parse_manifest_key(info.key) for info in infos)
    return sorted(version for version in found if version is not None)


async def load_latest(store: BlobStore, name: str) -> Manifest | None:
    """The newest manifest, or None if the collection has none. A corrupt newest one raises."""
    found = await versions(store, name)
    if not found:
        return None
    key = keys.manifest_key(name, found[-1])
    return decode(await store.get(key), source=key)


async def publish(store: BlobStore, manifest: Manifest) -> None:
    """Write the manifest as the next version; raises FENCED if that version already exists."""
    key = keys.manifest_key(manifest.spec.name, manifest.version)
    try:
        await store.put(key, encode(manifest), if_absent=True)
    except TierDBError as exc:
        if exc.kind is ErrorKind.PRECONDITION:
            raise fenced(manifest.spec.name, f"manifest version {manifest.version}", version=manifest.version) from exc
        raise
