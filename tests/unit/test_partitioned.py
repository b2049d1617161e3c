"""Partitioned (IVF) segments: build -> open by header -> search by partitions."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tierdb.engine import partitioned as pt
from tierdb.engine import vectors as vec
from tierdb.errors import ErrorKind, TierDBError

DATASET = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "docstrings-50k"
SMALL = pt.PartitionSettings(rows_per_partition=100)


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, dim)).astype(np.float32) * 3
    return (centers[rng.integers(0, 20, n)] + rng.standard_normal((n, dim))).astype(np.float32)


class Store:
    """The bytes of one segment behind a counting ``fetch``."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        self.calls: list[list[tuple[int, int]]] = []

    def fetch(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        self.calls.append(list(ranges))
        return [bytes(self.data[offset : offset + length]) for offset, length in ranges]


def built(n: int = 3000, dim: int = 16, metric: str = "cosine", settings: pt.PartitionSettings = SMALL):
    matrix = clustered(n, dim)
    ids = [f"doc-{i}" for i in range(n)]
    metadata = [{"i": i} for i in range(n)]
    store = Store(pt.build_bytes(ids, matrix, metadata, metric, settings))
    return matrix, ids, store, pt.open_segment(store.fetch, "seg-1")


def as_input_rows(seg: pt.PartitionedSegment, store: Store, rows: np.ndarray) -> list[list[int]]:
    load = seg.loader(store.fetch)
    return [[int(i.split("-")[1]) for i in seg.documents(r[r >= 0], load)[0]] for r in rows]


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_probing_every_partition_equals_brute_force(metric: str) -> None:
    matrix, _, store, seg = built(metric=metric)
    assert seg.nlist > 10
    queries = clustered(25, matrix.shape[1], seed=7)
    rows, dist = seg.search(queries, 10, seg.nlist, store.fetch)
    _, expected_dist = vec.top_k(vec.distances(queries, matrix, vec.norms(matrix), metric), 10)
    np.testing.assert_allclose(dist, expected_dist, rtol=1e-4, atol=1e-4)
    found = as_input_rows(seg, store, rows)
    for q in range(len(queries)):
        # Same rows; equal distances may come in another order.
        np.testing.assert_allclose(
            vec.distances(queries[q : q + 1], matrix[found[q]], vec.norms(matrix[found[q]]), metric)[0],
            expected_dist[q], rtol=1e-4, atol=1e-4,
        )
    # The metadata travels with the rows.
    _, metadata = seg.documents(rows[0], seg.loader(store.fetch))
    assert [m["i"] for m in metadata] == found[0]


def test_one_fetch_call_per_search_and_only_probed_partitions() -> None:
    _, _, store, seg = built()
    store.calls.clear()
    queries = clustered(4, 16, seed=3)
    seg.search(queries, 5, 3, store.fetch)
    assert len(store.calls) == 1
    probed = set(np.unique(seg.route(queries, 3)).tolist())
    assert store.calls[0] == seg.partition_ranges(sorted(probed))


@pytest.mark.skipif(not (DATASET / "base.npy").exists(), reason=f"shared dataset absent at {DATASET}")
def test_recall_on_the_shared_dataset_at_the_default_nprobe() -> None:
    base = np.array(np.load(DATASET / "base.npy", mmap_mode="r")[:20_000])
    queries = np.load(DATASET / "queries.npy")[:200]
    gt = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    # ~270 partitions of ~75 rows: the default nprobe scans a fraction of the segment, as at 1M.
    settings = pt.PartitionSettings(rows_per_partition=75)
    store = Store(pt.build_bytes([str(i) for i in range(len(base))], base, None, "cosine", settings))
    seg = pt.open_segment(store.fetch, "docstrings")
    assert seg.nlist >= 2 * pt.DEFAULT_NPROBE
    rows, _ = seg.search(queries, 10, pt.DEFAULT_NPROBE, store.fetch)
    load = seg.loader(store.fetch)
    found = [{int(i) for i in seg.documents(r, load)[0]} for r in rows]
    recall = np.mean([len(f & set(g.tolist())) / 10 for f, g in zip(found, gt)])
    assert recall >= 0.95, recall


def test_locate_by_id_and_a_forced_hash_collision(monkeypatch: pytest.MonkeyPatch) -> None:
    real = pt.hash_ids
    # Every id hashes into one of three values: each lookup has ~1000 colliding candidates.
    monkeypatch.setattr(pt, "hash_ids", lambda ids: real(str(int(i.split("-")[1]) % 3) for i in ids))
    _, _, store, seg = built()
    load = seg.loader(store.fetch)
    wanted = ["doc-0", "doc-1", "doc-1234", "doc-2999", "doc-3000", "nope-3"]
    rows = seg.locate(wanted, load)
    assert rows[-2:].tolist() == [-1, -1]  # a colliding hash but no such id
    found, _ = seg.documents(rows[:-2], load)
    assert found == wanted[:-2]
    assert len(seg.hash_candidates("doc-1234")) == 1000


def test_locate_without_collisions_uses_one_fetch() -> None:
    _, ids, store, seg = built()
    load = seg.loader(store.fetch)
    store.calls.clear()
    rows = seg.locate(ids[::7], load)
    assert len(store.calls) == 1 and (rows >= 0).all()
    assert seg.documents(rows, load)[0] == ids[::7]


def test_tombstones_and_allowed_rows_are_never_returned() -> None:
    matrix, ids, store, seg = built(metric="l2")
    load = seg.loader(store.fetch)
    query = clustered(1, 16, seed=11)
    best, _ = vec.top_k(vec.distances(query, matrix, vec.norms(matrix), "l2"), 5)
    doomed = [ids[i] for i in best[0]]
    assert seg.delete(doomed, load) == 5
    assert seg.delete(doomed, load) == 0  # already dead
    rows, _ = seg.search(query, 10, seg.nlist, store.fetch)
    returned = set(seg.documents(rows[0], load)[0])
    assert returned.isdisjoint(doomed) and len(returned) == 10
    alive = np.ones(len(ids), bool)
    alive[[int(d.split("-")[1]) for d in doomed]] = False
    expected, _ = vec.top_k(vec.distances(query, matrix[alive], vec.norms(matrix[alive]), "l2"), 10)
    assert returned == {ids[i] for i in np.flatnonzero(alive)[expected[0]]}

    # An allow-list of 3 rows: only those, padded with -1 / inf.
    allowed = np.zeros(seg.rows, bool)
    allowed[seg.locate(["doc-5", "doc-6", "doc-7"], load)] = True
    rows, dist = seg.search(query, 10, seg.nlist, store.fetch, allowed=allowed)
    assert set(seg.documents(rows[0][:3], load)[0]) == {"doc-5", "doc-6", "doc-7"}
    assert (rows[0][3:] == -1).all() and np.isinf(dist[0][3:]).all()


@pytest.mark.parametrize("rows, calls", [(500, 1), (8000, 2)])
def test_open_reads_the_header_only(rows: int, calls: int) -> None:
    _, _, store, seg = built(n=rows)
    assert len(store.calls) == calls  # the 64 KiB prefix, then the rest of a bigger header
    read = [r for call in store.calls for r in call]
    assert max(offset + length for offset, length in read) <= max(seg.header_bytes, pt.HEADER_PREFIX_BYTES)
    first_partition = int(seg.table["offset"].min())
    assert first_partition == seg.header_bytes
    assert sum(length for _, length in read) <= max(seg.header_bytes, pt.HEADER_PREFIX_BYTES)


def test_a_corrupt_partition_or_header_is_a_corrupt_error() -> None:
    _, _, store, seg = built()
    query = clustered(1, 16, seed=5)
    p = int(seg.route(query, 1)[0, 0])
    offset, length = seg.partition_ranges([p])[0]
    store.data[offset + length // 2] ^= 0xFF
    with pytest.raises(TierDBError) as err:
        seg.search(query, 10, 1, store.fetch)
    assert err.value.kind is ErrorKind.CORRUPT and f"partition {p}" in err.value.message
    # Truncated bytes are corrupt too.
    with pytest.raises(TierDBError) as err:
        seg.decode_partition(p, store.fetch([(offset, length - 1)])[0])
    assert err.value.kind is ErrorKind.CORRUPT

    store.data[pt.PREFIX_BYTES + 40] ^= 0xFF
    with pytest.raises(TierDBError) as err:
        pt.open_segment(store.fetch, "seg-1")
    assert err.value.kind is ErrorKind.CORRUPT and "header" in err.value.message


def test_streaming_build_from_chunks_holds_no_full_copy() -> None:
    n, dim = 40_000, 64
    matrix = clustered(n, dim)
    ids = [f"doc-{i}" for i in range(n)]
    settings = pt.PartitionSettings(rows_per_partition=1000, build_memory_bytes=1 << 20)
    from_array = pt.build_bytes(ids, matrix, None, "cosine", settings)

    def chunks():
        for start in range(0, n, 1000):
            yield matrix[start : start + 1000].copy()

    out = io.BytesIO()
    tracemalloc.start()
    try:
        stats = pt.build(out, ids, chunks(), None, "cosine", settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peak -= len(out.getvalue())  # the output buffer itself is the caller's
    assert out.getvalue() == from_array
    assert stats.chunk_rows * dim * 4 < settings.build_memory_bytes
    # The vectors are 10 MiB; the build holds a bounded working set, not a copy of them.
    assert peak < matrix.nbytes / 2, (peak, matrix.nbytes)


def test_hnsw_routing_over_many_centroids_matches_brute_force_routing() -> None:
    _, _, store, seg = built(n=5000, settings=pt.PartitionSettings(rows_per_partition=50))
    routed = pt.open_header(bytes(store.data[: seg.header_bytes]), "seg-1", routing_index_min=1)
    assert routed._router is not None and seg._router is None
    queries = clustered(30, 16, seed=9)
    same = [set(a) == set(b) for a, b in zip(routed.route(queries, 8), seg.route(queries, 8))]
    assert np.mean(same) >= 0.9


def test_bad_inputs_are_invalid() -> None:
    _, ids, store, seg = built()
    for call in (
        lambda: seg.search(np.zeros((1, 5), np.float32), 10, 4, store.fetch),
        lambda: seg.search(np.zeros((1, 16), np.float32), 0, 4, store.fetch),
        lambda: seg.search(np.zeros((1, 16), np.float32), 10, 4, store.fetch, allowed=np.ones(3, bool)),
        lambda: pt.build_bytes(ids, np.zeros((len(ids), 4), np.float32), [None], "cosine"),
        lambda: pt.build_bytes(ids, np.zeros((len(ids), 4), np.float32), None, "hamming"),
        lambda: pt.build_bytes(ids, np.zeros((3, 4), np.float32), None, "l2"),
    ):
        with pytest.raises(TierDBError) as err:
            call()
        assert err.value.kind is ErrorKind.INVALID


def _rss_file_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile in /proc/self/status")


def test_file_rows_read_like_the_array_and_leave_nothing_mapped(tmp_path) -> None:
    rng = np.random.default_rng(3)
    n, dim = 40_000, 384                                   # 61 MB of float32
    matrix = rng.standard_normal((n, dim)).astype(np.float32)
    path = tmp_path / "rows.f32"
    matrix.tofile(path)
    with open(path, "rb") as f:
        rows = pt.FileRows(f.fileno(), n, dim)
        assert rows.shape == (n, dim) and rows.ndim == 2 and len(rows) == n
        np.testing.assert_array_equal(rows[5:900], matrix[5:900])
        np.testing.assert_array_equal(rows[n - 3 : n + 10], matrix[n - 3 :])
        scattered = np.sort(rng.choice(n, 1000, replace=False))
        np.testing.assert_array_equal(rows[scattered], matrix[scattered])
        unsorted = np.array([7, 3, 3, 39_999, 0, 8, 9])
        np.testing.assert_array_equal(rows[unsorted], matrix[unsorted])
        assert rows[np.zeros(0, np.int64)].shape == (0, dim)
        with pytest.raises(IndexError):
            rows[np.array([n])]
        # every row read, scattered, a partition at a time: nothing of the file stays mapped
        # (a memory map of it grew RssFile by most of the file)
        before = _rss_file_bytes()
        for start in range(0, n, 1000):
            rows[np.arange(start % 40, n, 40)[:1000]]
        assert _rss_file_bytes() - before < matrix.nbytes / 8


def test_a_build_from_file_rows_equals_the_build_from_the_array(tmp_path) -> None:
    n, dim = 5_000, 32
    matrix = clustered(n, dim)
    ids = [f"doc-{i}" for i in range(n)]
    settings = pt.PartitionSettings(rows_per_partition=200, build_memory_bytes=1 << 20)
    path = tmp_path / "rows.f32"
    matrix.tofile(path)
    with open(path, "rb") as f:
        out = io.BytesIO()
        pt.build(out, ids, pt.FileRows(f.fileno(), n, dim), None, "cosine", settings)
    assert out.getvalue() == pt.build_bytes(ids, matrix, None, "cosine", settings)
