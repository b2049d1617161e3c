"""Garbage collection of S3 objects no kept manifest needs.

Kept: the newest ``keep_manifests`` manifests, every segment they reference, and the WAL objects
holding records after the oldest kept manifest's ``wal_seq``.  Everything else under the
collection's prefix is deleted once it has been unneeded for ``grace_secs`` (so an upload in
flight — a segment whose manifest is not yet written — is never taken).  A collection whose
newest manifest has not changed and that has nothing waiting costs no request.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from .. import keys
from ..engine import manifest as manifests
from ..engine.wal import object_seqs, tail as wal_tail
from ..models import Manifest
from ..storage.base import BlobStore

log = logging.getLogger(__name__)


class RemoteGc:
    def __init__(self, remote: BlobStore, name: str, keep_manifests: int, grace_secs: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.remote = remote
        self.name = name
        self.keep = max(1, keep_manifests)
        self.grace = grace_secs
        self.clock = clock
        self._first_unneeded: dict[str, float] = {}
        self._manifests: dict[int, Manifest] = {}
        self._seen_version = -1

    async def run_once(self, newest_version: int) -> int:
        """Delete what has been unneeded for the grace period; returns how many objects."""
        if newest_version == self._seen_version and not self._first_unneeded:
            return 0
        unneeded = await self._unneeded()
        self._seen_version = newest_version   # only now: a failed listing is retried next run
        now = self.clock()
        self._first_unneeded = {k: self._first_unneeded.get(k, now) for k in unneeded}
        deleted = 0
        for key, since in list(self._first_unneeded.items()):
            if now - since >= self.grace:
                await self.remote.delete(key)
                del self._first_unneeded[key]
                deleted += 1
        if deleted:
            log.info("garbage collected", extra={"collection": self.name, "deleted": deleted})
        return deleted

    async def _unneeded(self) -> set[str]:
        versions = await manifests.versions(self.remote, self.name)
        if not versions:
            return set()
        kept = versions[-self.keep :]
        kept_manifests = [await self._manifest(v) for v in kept]
        self._manifests = {v: self._manifests[v] for v in kept}
        referenced = {ref.id for m in kept_manifests for ref in m.segments}
        oldest_wal_seq = min(m.wal_seq for m in kept_manifests)
        unneeded = {keys.manifest_key(self.name, v) for v in versions[: -self.keep]}
        for info in await self.remote.list(keys.segment_prefix(self.name)):
            if keys.segment_id_of(info.key) not in referenced:
                unneeded.add(info.key)
        for first in wal_tail.covered(await object_seqs(self.remote, self.name), oldest_wal_seq):
            unneeded.add(keys.wal_key(self.name, first))
        return unneeded

    async def _manifest(self, version: int) -> Manifest:
        if version not in self._manifests:
            key = keys.manifest_key(self.name, version)
            self._manifests[version] = manifests.decode(await self.remote.get(key), source=key)
        return self._manifests[version]
