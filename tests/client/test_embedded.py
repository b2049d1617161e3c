"""Embedded mode (tierdb.open): the TierDB interface over the in-process engine, and the same
answers as the HTTP client for the same data."""

from __future__ import annotations

import subprocess
import sys
import threading

import msgspec
import numpy as np
import pytest

import tierdb
from tierdb.client import (
    CollectionInfo,
    Conflict,
    InvalidRequest,
    NotFound,
    TierDB,
)
from tierdb.embedded import EmbeddedTierDB
from tests.client.support import DIM, dataset, unique
from tests.server_process import REPO_ROOT

PUBLIC_METHODS = sorted(
    name for name in dir(TierDB) if not name.startswith("_") and callable(getattr(TierDB, name))
)


def comparable(info: CollectionInfo) -> dict:
    out = msgspec.structs.asdict(info)
    out.pop("created_at")
    return out


def exercise(db, name: str) -> dict:
    """The same script against any client; returns everything it observed."""
    ids, vectors, metas = dataset(500, seed=11)
    seen: dict = {}
    seen["created"] = comparable(db.create_collection(name, DIM, metric="cosine", hnsw={"m": 12}))
    seen["upserted"] = db.upsert(name, ids, vectors, metas, batch_size=128)
    seen["replaced"] = db.upsert(name, ids[:5], vectors[:5] * 2, [{"v": 2}] * 5)
    seen["count"] = db.count(name)
    seen["get"] = db.get(name, ["d4", "nope", "d400"])
    seen["one"] = db.get_one(name, "d5")
    seen["query"] = db.query(name, vector=vectors[42], k=7)
    seen["query_vec"] = db.query(name, vector=vectors[1], k=3, include=["vector", "metadata"])
    seen["filtered"] = db.query(name, vector=vectors[3], k=20, filter={"$or": [{"tag": "a"}, {"i": {"$gte": 480}}]})
    seen["batch"] = db.query(name, vectors=vectors[10:14], k=5, include=())
    seen["deleted_ids"] = db.delete(name, ids=["d0", "d1", "absent"])
    seen["deleted_filter"] = db.delete(name, filter={"even": True, "i": {"$lt": 100}})
    seen["count_after"] = db.count(name)
    compacted = db.compact(name, full=True)
    seen["compact"] = (compacted.flushed_rows, compacted.segments)
    seen["after_compact"] = db.query(name, vector=vectors[42], k=7)
    seen["after_compact_nprobe"] = db.query(name, vector=vectors[42], k=7, nprobe=3)  # hnswlib: ignored
    warmed = db.warm(name, wait=True, timeout=60)
    seen["warm"] = (warmed.state, warmed.error, warmed.segments_done, warmed.segments_total,
                    warmed.bytes_fetched == warmed.bytes_total > 0, db.status(name).warm.state)
    status = db.status(name)
    seen["status"] = (status.name, status.policy, status.count, status.segments, status.state, status.dlq_size)
    seen["dlq"] = (db.dlq(name), db.retry_dlq(name), db.clear_dlq(name))
    seen["listed"] = [comparable(c) for c in db.list_collections() if c.name == name]
    for label, call in {
        "missing": lambda: db.get_collection("missing-collection"),
        "missing_doc": lambda: db.get_one(name, "nope"),
        "conflict": lambda: db.create_collection(name, DIM),
        "dimension": lambda: db.upsert(name, ["x"], [[1.0, 2.0]]),
        "nan": lambda: db.upsert(name, ["x"], [[float("nan")] * DIM]),
        "k": lambda: db.query(name, vector=vectors[0], k=0),
        "nprobe": lambda: db.query(name, vector=vectors[0], k=1, nprobe=0),
        "warm_missing": lambda: db.warm("missing-collection"),
        "bad_filter": lambda: db.query(name, vector=vectors[0], filter={"i": {"$regex": "."}}),
        "bad_name": lambda: db.create_collection("Bad Name", DIM),
    }.items():
        with pytest.raises(tierdb.TierDBClientError) as exc:
            call()
        seen[f"error_{label}"] = (type(exc.value).__name__, exc.value.status, exc.value.kind)
    db.delete_collection(name)
    with pytest.raises(NotFound):
        db.count(name)
    return seen


def test_embedded_matches_the_http_client(server, tmp_path) -> None:
    name = unique()
    with TierDB(server.url) as remote:
        over_http = exercise(remote, name)
    with tierdb.open(tmp_path / "embedded") as local:
        embedded = exercise(local, name)
    assert over_http.keys() == embedded.keys()
    for key in over_http:
        assert embedded[key] == over_http[key], key
    assert over_http["error_conflict"] == ("Conflict", 409, "conflict")
    assert over_http["error_dimension"] == ("InvalidRequest", 400, "invalid")
    assert over_http["error_missing_doc"] == ("NotFound", 404, "not_found")
    assert over_http["after_compact_nprobe"] == over_http["after_compact"]
    assert over_http["warm"] == ("done", "", 1, 1, True, "done")
    assert over_http["error_nprobe"] == ("InvalidRequest", 400, "invalid")
    assert over_http["error_warm_missing"] == ("NotFound", 404, "not_found")


def test_embedded_has_the_same_methods_as_the_http_client() -> None:
    import inspect

    from tierdb.client import AsyncTierDB

    for method in PUBLIC_METHODS:
        remote = inspect.signature(getattr(TierDB, method))
        assert inspect.signature(getattr(EmbeddedTierDB, method)).parameters.keys() == remote.parameters.keys(), method
        assert inspect.signature(getattr(AsyncTierDB, method)).parameters.keys() == remote.parameters.keys(), method


def test_embedded_data_survives_close_and_reopen(tmp_path) -> None:
    ids, vectors, metas = dataset(300)
    with tierdb.open(tmp_path / "db", compaction_threshold_ops=100) as db:
        assert db.settings.compaction.threshold_ops == 100
        db.create_collection("docs", DIM)
        db.upsert("docs", ids, vectors, metas, batch_size=50)
        db.delete("docs", ids=["d7"])
        before = db.query("docs", vector=vectors[3], k=5)
    with tierdb.open(tmp_path / "db") as db:
        assert db.count("docs") == 299
        assert db.query("docs", vector=vectors[3], k=5) == before
        assert db.get("docs", ["d7"]) == []
    db.close()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        db.count("docs")


def test_embedded_is_thread_safe(tmp_path) -> None:
    ids, vectors, _ = dataset(400)
    with tierdb.open(tmp_path / "db") as db:
        db.create_collection("docs", DIM)
        errors: list[BaseException] = []

        def writer(part: int) -> None:
            try:
                db.upsert("docs", ids[part::4], vectors[part::4], batch_size=25)
                db.query("docs", vector=vectors[part], k=3)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert db.count("docs") == 400


def test_embedded_settings_and_errors(tmp_path) -> None:
    with pytest.raises(TypeError, match="unknown setting"):
        tierdb.open(tmp_path / "x", nonsense_value=1)
    with pytest.raises(ValueError, match="compaction.threshold_ops"):
        tierdb.open(tmp_path / "x", compaction_threshold_ops=-5)
    with tierdb.open(tmp_path / "db", **{"index.threshold": 50}) as db:
        assert db.settings.index.threshold == 50
        with pytest.raises(InvalidRequest, match="needs S3"):
            db.create_collection("remote", DIM, tiering_policy="memory_s3")
        db.create_collection("docs", DIM)
        with pytest.raises(Conflict):
            db.create_collection("docs", DIM)
        assert "tierdb.open(" in repr(db)


def test_import_tierdb_is_lazy() -> None:
    code = (
        "import sys, tierdb\n"
        "heavy = [m for m in ('httpx', 'numpy', 'msgspec', 'litestar', 'tierdb.engine', 'tierdb.client') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "tierdb.TierDB\n"
        "assert 'tierdb.client' in sys.modules and 'tierdb.engine' not in sys.modules and 'litestar' not in sys.modules\n"
        "tierdb.open\n"
        "assert 'litestar' not in sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_float32_values_round_trip_exactly(tmp_path, server) -> None:
    vectors = np.array([[0.1, 1e-30, 3.4e15, -2.5, 1 / 3, 7.0, 0.0, -0.0]], dtype=np.float32)
    name = unique()
    with TierDB(server.url) as remote, tierdb.open(tmp_path / "db") as local:
        for db in (remote, local):
            db.create_collection(name, DIM, metric="l2")
            db.upsert(name, ["v"], vectors)
            got = np.asarray(db.get_one(name, "v").vector, dtype=np.float32)
            np.testing.assert_array_equal(got, vectors[0])
        remote.delete_collection(name)


def test_an_engine_left_open_is_closed_at_exit(tmp_path) -> None:
    code = (
        "import sys, tierdb\n"
        f"db = tierdb.open({str(tmp_path / 'db')!r})\n"
        "db.create_collection('docs', 2)\n"
        "db.upsert('docs', ['a'], [[1.0, 0.0]])\n"
        "print('written')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "written" in result.stdout, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    with tierdb.open(tmp_path / "db") as db:
        assert db.get_one("docs", "a").vector == [1.0, 0.0]


def test_embedded_rejects_what_the_server_rejects(tmp_path) -> None:
    """Same rule, same place (the engine): ids, metadata and filters the server refuses with 400."""
    deep: dict = {"x": 1}
    for _ in range(100):
        deep = {"x": deep}
    with tierdb.open(tmp_path / "db", **{"server.max_nesting_depth": 64}) as db:
        db.create_collection("docs", DIM)
        db.upsert("docs", ["ok"], [[1.0] * DIM], [{"a": 1}])
        bad_writes = [
            (["a/b"], [None]), (["x"], [{"e": msgspec.msgpack.Ext(1, b"")}]), (["x"], [{"k": {1: 2}}]),
            (["x"], [{"f": float("nan")}]), (["x"], [deep]),
        ]
        for ids, metas in bad_writes:
            with pytest.raises(InvalidRequest):
                db.upsert("docs", ids, [[1.0] * DIM], metas)
        with pytest.raises(InvalidRequest, match="must be strings"):
            db.query("docs", vector=[1.0] * DIM, filter={"a": {1: "x", "b": 2}})
        assert db.count("docs") == 1


_RSS_SCRIPT = """
import gc, sys, numpy as np, tierdb

def rss():
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith('VmRSS:'))

path, rows, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
warm = tierdb.open(path + '-warm-up')       # imports and threads are not what is measured
warm.create_collection('w', dim)
warm.close()
base = rss()
db = tierdb.open(path, index_threshold=1000, compaction_threshold_ops=10 * rows, index_build_threads=2)
db.create_collection('docs', dim)
rng = np.random.default_rng(0)
for start in range(0, rows, 5000):
    db.upsert('docs', [str(i) for i in range(start, start + 5000)], rng.standard_normal((5000, dim), dtype=np.float32))
db.compact('docs', full=True)
db.query('docs', vector=rng.standard_normal(dim).tolist(), k=5)
loaded = rss()
db.close()                           # the caller keeps `db` around, as most code does
closed = rss()
import hnswlib
gc.collect()
held = sum(o.nbytes for o in gc.get_objects() if isinstance(o, np.ndarray)) + sum(
    len(o) for o in gc.get_objects() if isinstance(o, (bytes, bytearray)) and len(o) > 1 << 16)
indexes = sum(1 for o in gc.get_objects() if isinstance(o, hnswlib.Index))
again = tierdb.open(path)
assert again.query('docs', vector=rng.standard_normal(dim).tolist(), k=5)
reopened = rss()
print(base, loaded, closed, reopened, held, indexes)
"""


def test_close_returns_memory_so_a_reopen_does_not_double_it(tmp_path) -> None:
    """close() drops every reference to vectors and indexes and trims the heap: after close no
    index, array or large buffer is alive, and a reopen (old object still referenced) does not
    double the memory.  How much RSS glibc hands back after close is the allocator's business
    (fragments of the build threads' arenas): printed, not asserted."""
    rows, dim = 30_000, 256   # vectors dominate: what close() must give back, beside allocator fragments
    result = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(tmp_path / "db"), str(rows), str(dim)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    base, loaded, closed, reopened, held, indexes = (int(x) for x in result.stdout.split())
    mib = 1 << 20
    print(f"\nRSS MiB ({rows}x{dim}): start {base / mib:.0f}, loaded {loaded / mib:.0f}, "
          f"closed {closed / mib:.0f}, reopened+query {reopened / mib:.0f}")
    load_growth = loaded - base
    # Before the fix: the closed engine kept every segment (indexes, vectors) and a reopen added
    # a whole second copy (100 % of the load's growth).
    assert indexes == 0, f"{indexes} hnswlib indexes survived close()"
    assert held < 0.05 * load_growth, f"{held} bytes of arrays/buffers survived close()"
    assert reopened - loaded < 0.65 * load_growth, ("reopen doubled the memory", base, loaded, closed, reopened)


def test_query_runs_in_the_calling_thread(tmp_path, monkeypatch):
    """Embedded queries cross no thread boundary: no hop to the engine's loop or a worker."""
    from tierdb.engine.collection import Collection

    seen: list[threading.Thread] = []
    real = Collection._query_sync

    def recording(self, *args, **kwargs):
        seen.append(threading.current_thread())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "_query_sync", recording)
    ids, vectors, metas = dataset(50, seed=3)
    with tierdb.open(tmp_path / "db") as db:
        db.create_collection("c", dimension=DIM)
        db.upsert("c", ids, vectors, metas)
        hits = db.query("c", vector=vectors[4], k=3)
    assert hits[0].id == ids[4]
    assert seen == [threading.current_thread()]
