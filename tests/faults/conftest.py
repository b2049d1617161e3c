"""Fixtures for the fault suite: engines whose S3 store has a fault injector in it, a chaos
proxy, and checks of what S3 holds.  The real S3 server, ``s3_up``, ``s3_prefix``, ``s3_env``
and ``make_settings`` come from tests/conftest.py.

Where the faults go.  ``Engine.start`` builds its S3 store with ``open_s3_store(settings,
on_retry=...)`` (tierdb/node/engine.py); every consumer (uploader, S3 WAL, disk cache, GC)
gets that one object.  ``fault_stores`` patches ``tierdb.node.engine.open_s3_store`` so the
store becomes

    RetryingStore(FaultInjectingStore(MeteredStore(S3Store)))     # position="inner" (default)
    FaultInjectingStore(RetryingStore(MeteredStore(S3Store)))     # position="outer"

"inner": every attempt meets the faults, so retries, backoff and the read-back of an ambiguous
conditional PUT are exercised; "outer": a fault is what the engine sees after the retries, i.e.
exhausted retries.  Each engine started while the patch is active appends its injector to the
list the fixture returns (index 0 = the first engine).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

from tests.faults.chaos_proxy import ChaosProxy
from tierdb import keys
from tierdb.config import Settings
from tierdb.engine import manifest as manifests
from tierdb.node import Engine
from tierdb.engine.restore import verify_manifest
from tierdb.engine.wal import decode_records
from tierdb.storage.base import BlobStore
from tierdb.storage.faults import FaultInjectingStore
from tierdb.storage.metered import MeteredStore
from tierdb.storage.retry import RetryingStore
from tierdb.storage.s3 import S3Store
from tierdb.testing.s3_server import S3Server


@pytest.fixture
def fault_stores(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[FaultInjectingStore]]:
    """``install(position="inner") -> list``: engines started afterwards get a FaultInjectingStore
    in their S3 store (see the module docstring); the list collects them in start order."""

    def install(position: str = "inner") -> list[FaultInjectingStore]:
        created: list[FaultInjectingStore] = []
        import tierdb.node.engine as engine_module

        def open_faulty(settings: Settings, on_request: Any = None, on_retry: Any = None) -> BlobStore:
            s3: BlobStore = MeteredStore(S3Store(settings.s3, on_request=on_request))
            if position == "inner":
                faulty = FaultInjectingStore(s3)
                created.append(faulty)
                return RetryingStore(faulty, settings.retry, on_retry=on_retry)
            faulty = FaultInjectingStore(RetryingStore(s3, settings.retry, on_retry=on_retry))
            created.append(faulty)
            return faulty

        monkeypatch.setattr(engine_module, "open_s3_store", open_faulty)
        return created

    return install


@pytest.fixture
def chaos(s3_up: S3Server) -> Iterator[ChaosProxy]:
    proxy = ChaosProxy(s3_up.endpoint).start()
    yield proxy
    proxy.stop()


# -- helpers --------------------------------------------------------------------------------------


async def started(settings: Settings) -> Engine:
    engine = Engine(settings)
    await engine.start()
    return engine


def plain_store(settings: Settings, server: S3Server) -> BlobStore:
    """A fault-free view of the S3 prefix (straight to the server), for checking what S3 holds."""
    return S3Store(msgspec.structs.replace(settings.s3, endpoint=server.endpoint))


async def s3_chain_report(store: BlobStore, name: str) -> dict[str, Any]:
    """What S3 holds for one collection, checked: every manifest version present from the
    oldest kept one to the newest with no gap, each one verified (its segments exist with the
    recorded size and sha256), no two manifests describing the same state (a duplicated
    publish), and the WAL objects after the newest manifest contiguous and undamaged.
    Returns {"versions", "latest", "wal_records"}; raises AssertionError on any problem."""
    versions = await manifests.versions(store, name)
    assert versions, f"no manifest for {name!r} in S3"
    assert versions == list(range(versions[0], versions[-1] + 1)), f"manifest versions with a gap: {versions}"
    states = []
    latest = None
    for version in versions:
        key = keys.manifest_key(name, version)
        manifest = manifests.decode(await store.get(key), source=key)
        assert manifest.version == version, f"{key} says version {manifest.version}"
        problems = await verify_manifest(store, manifest)
        assert problems == [], f"manifest {version} is not restorable: {problems}"
        state = (manifest.wal_seq, tuple(sorted((r.id, tuple(r.dead)) for r in manifest.segments)))
        assert state not in states, f"manifest {version} duplicates an earlier manifest's state"
        states.append(state)
        latest = manifest
    assert latest is not None
    expected = latest.wal_seq + 1
    records = 0
    for info in await store.list(keys.wal_prefix(name)):
        data = await store.get(info.key)
        decoded, end = decode_records(data, source=info.key)
        assert end == len(data) and decoded, f"WAL object {info.key} is damaged"
        assert decoded[0].seq == keys.parse_number(info.key), f"{info.key} starts at seq {decoded[0].seq}"
        for record in decoded:
            if record.seq <= latest.wal_seq:
                continue
            assert record.seq == expected, (
                f"WAL after manifest {latest.version} (wal_seq {latest.wal_seq}): expected record "
                f"{expected}, found {record.seq} in {info.key}"
            )
            expected += 1
            records += 1
    return {"versions": versions, "latest": latest, "wal_records": records}


def state_of(docs: list[Any]) -> dict[str, Any]:
    return {d.id: (tuple(round(x, 5) for x in d.vector), msgspec.json.encode(d.metadata)) for d in docs}
