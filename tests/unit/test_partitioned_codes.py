"""Scan codes of partitioned segments (format 4): estimates, sections read alone, checksums,
coded search against brute force, and format 3 segments still read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tierdb.engine import binary_codes, coded_search
from tierdb.engine import partitioned as pt
from tierdb.engine import vectors as vec
from tierdb.errors import ErrorKind, TierDBError

from .test_partitioned import SMALL, Store, built, clustered

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def exact_b_dots(query: np.ndarray, bits: np.ndarray, dim: int) -> np.ndarray:
    """<q, sign(r)/sqrt(D)> from word-major codes, unpacked in full."""
    rows = np.unpackbits(np.ascontiguousarray(bits.T).view(np.uint8), axis=1, bitorder="little")[:, :dim]
    return ((rows * 2.0 - 1.0) @ query.astype(np.float64)) / np.sqrt(dim)


@pytest.mark.parametrize("dim", [16, 100, 384])
def test_a_query_on_the_4_bit_grid_gets_exact_bit_dots(dim: int) -> None:
    rng = np.random.default_rng(dim)
    rows = rng.standard_normal((300, dim)).astype(np.float32)
    bits, _, _ = binary_codes.encode(rows, np.zeros(dim, np.float32), "ip")
    assert bits.shape == (binary_codes.words(dim), 300)
    query = (rng.integers(0, 16, dim) * 0.25 - 1.0).astype(np.float32)   # 16 levels: no rounding error
    query[0], query[1] = -1.0, 2.75                                       # span the whole grid
    code = binary_codes.QueryCode(query, "ip")
    np.testing.assert_allclose(code.dots(bits), exact_b_dots(query, bits, dim), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_estimates_rank_rows_like_their_exact_distances(metric: str) -> None:
    rng = np.random.default_rng(1)   # one partition: rows around one centre
    rows = (rng.standard_normal(256) * 3 + rng.standard_normal((2000, 256))).astype(np.float32)
    stored = vec.norms(rows)
    centre = rows.mean(axis=0)
    if metric == "cosine":
        centre = centre / np.linalg.norm(centre)
    bits, a, b = binary_codes.encode(rows, centre, metric)
    for seed in range(5):
        query = rows[seed] + rng.standard_normal(256).astype(np.float32)
        code = binary_codes.QueryCode(query, metric)
        estimate = code.terms(centre[None, :])[0] + a + b * code.dots(bits)
        exact = vec.distances(query[None, :], rows, stored, metric)[0]
        assert np.corrcoef(estimate, exact)[0, 1] > 0.7
        # the true nearest row is among the best 5% by estimate
        assert np.argmin(exact) in np.argsort(estimate)[:100]


def test_each_section_of_a_partition_reads_and_checks_alone() -> None:
    matrix, ids, store, seg = built(n=1500, dim=24, metric="l2")
    assert seg.has_codes and seg.format == pt.FORMAT_VERSION
    for p in range(seg.nlist):
        ((offset, length),) = seg.codes_ranges([p])
        codes = seg.decode_codes(p, store.fetch([(offset, length)])[0])
        ((offset, length),) = seg.docs_ranges([p])
        docs = seg.decode_docs(p, store.fetch([(offset, length)])[0])
        whole = seg.loader(store.fetch)([p])[0]
        assert len(codes) == len(whole.vectors) == len(docs.ids)
        assert docs.ids == whole.ids and docs.metadata == whole.metadata
        np.testing.assert_array_equal(codes.bits, whole.codes.bits)
        rows = np.arange(codes.start, codes.start + len(codes))
        vectors = np.stack([seg.decode_row(int(r), data, codes) for r, data in zip(rows, store.fetch(seg.row_ranges(rows)))])
        np.testing.assert_array_equal(vectors, whole.vectors)
        for r, doc_id in zip(rows[:3], docs.ids[:3]):
            np.testing.assert_array_equal(vectors[r - codes.start], matrix[ids.index(doc_id)])


@pytest.mark.parametrize("section", ["codes", "docs", "row"])
def test_a_damaged_section_is_refused(section: str) -> None:
    _, _, store, seg = built(n=600, dim=16)
    p = 1
    ((codes_at, codes_len),) = seg.codes_ranges([p])
    codes = seg.decode_codes(p, store.fetch([(codes_at, codes_len)])[0])
    ((docs_at, docs_len),) = seg.docs_ranges([p])
    ((row_at, row_len),) = seg.row_ranges([codes.start])
    at = {"codes": codes_at + 3, "docs": docs_at + docs_len - 2, "row": row_at + 5}[section]
    store.data[at] ^= 0x40
    fresh = pt.open_segment(store.fetch, "seg-1")   # nothing verified yet in this process
    with pytest.raises(TierDBError) as err:
        if section == "codes":
            fresh.decode_codes(p, store.fetch([(codes_at, codes_len)])[0])
        elif section == "docs":
            fresh.decode_docs(p, store.fetch([(docs_at, docs_len)])[0])
        else:
            fresh.decode_row(codes.start, store.fetch([(row_at, row_len)])[0], codes)
    assert err.value.kind is ErrorKind.CORRUPT
    with pytest.raises(TierDBError):   # the whole partition fails too
        fresh.loader(store.fetch)([p])


def _codes_of(seg: pt.PartitionedSegment, store: Store) -> dict[int, pt.PartitionCodes]:
    ranges = seg.codes_ranges(range(seg.nlist))
    return {p: seg.decode_codes(p, data) for p, data in zip(range(seg.nlist), store.fetch(ranges))}


def _coded_search(seg, store, queries, k, nprobe, candidates, metric):
    routes = [list(seg.route(queries, nprobe))]
    picked = coded_search.pick_candidates(queries, metric, [seg], routes, [_codes_of(seg, store)], candidates)[0]
    rows = np.unique(np.concatenate(picked))
    vectors = np.stack([np.frombuffer(d, "<f4") for d in store.fetch(seg.row_ranges(rows))]) if len(rows) \
        else np.zeros((0, seg.dimension), np.float32)
    return coded_search.rerank(queries, metric, k, picked, rows, vectors)


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_coded_search_over_every_row_is_exact_and_a_short_list_keeps_recall(metric: str) -> None:
    matrix, _, store, seg = built(n=3000, dim=32, metric=metric)
    queries = clustered(20, 32, seed=9)
    expected_rows, expected = seg.search(queries, 10, seg.nlist, store.fetch)
    every = _coded_search(seg, store, queries, 10, seg.nlist, seg.rows, metric)
    np.testing.assert_allclose(every.distances, expected, rtol=1e-4, atol=1e-4)
    short = _coded_search(seg, store, queries, 10, seg.nlist, 200, metric)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(short.rows.tolist(), expected_rows.tolist())])
    assert recall >= 0.9


def test_tombstoned_rows_are_never_candidates() -> None:
    _, _, store, seg = built(n=1000, dim=16)
    queries = clustered(5, 16, seed=4)
    first = _coded_search(seg, store, queries, 10, seg.nlist, 50, "cosine")
    seg.delete_rows(first.rows.reshape(-1))
    again = _coded_search(seg, store, queries, 10, seg.nlist, 50, "cosine")
    assert not set(again.rows.reshape(-1).tolist()) & set(first.rows.reshape(-1).tolist())
    assert (again.rows >= 0).all()


def test_a_format_3_segment_still_opens_reads_and_searches() -> None:
    """Written by the previous release (no codes): scanned whole, as before."""
    store = Store((FIXTURES / "partitioned_v3.bin").read_bytes())
    matrix = np.load(FIXTURES / "partitioned_v3_vectors.npy")
    seg = pt.open_segment(store.fetch, "v3")
    assert seg.format == 3 and not seg.has_codes and seg.rows == len(matrix)
    queries = matrix[:5] + 0.01
    rows, dist = seg.search(queries, 10, seg.nlist, store.fetch)
    _, expected = vec.top_k(vec.distances(queries, matrix, vec.norms(matrix), "cosine"), 10)
    np.testing.assert_allclose(dist, expected, rtol=1e-4, atol=1e-4)
    ids, metadata = seg.documents(rows[0], seg.loader(store.fetch))
    assert ids[0] == "v3-0" and metadata[0] == {"i": 0, "tag": "a"}
    assert seg.locate(["v3-399", "nope"], seg.loader(store.fetch)).tolist()[1] == -1


def test_segments_built_now_are_format_4() -> None:
    data = pt.build_bytes(["a", "b"], np.eye(2, 8, dtype=np.float32), None, "cosine", SMALL)
    assert pt.open_segment(Store(data).fetch, "s").format == 4


def test_a_long_scan_split_over_threads_equals_one_pass() -> None:
    rng = np.random.default_rng(5)
    blocks = [rng.integers(0, 2**63, (6, n), dtype=np.int64).view(np.uint64) for n in (30_000, 1, 17_000, 9_999)]
    code = binary_codes.QueryCode(rng.standard_normal(384).astype(np.float32), "l2")
    assert sum(b.shape[1] for b in blocks) >= binary_codes._SPLIT_ROWS
    joined = np.concatenate(blocks, axis=1)
    np.testing.assert_array_equal(code.dots(blocks), code._dots(joined, binary_codes.row_ones(joined)))
    # the rows' popcounts given (as partitions' codes keep them) or computed: the same estimate
    np.testing.assert_array_equal(code.dots(blocks, [binary_codes.row_ones(b) for b in blocks]), code.dots(blocks))


def test_a_scan_longer_than_one_chunk_equals_the_sum_over_its_bits() -> None:
    rng = np.random.default_rng(6)
    dim = 384
    n = binary_codes._CHUNK_ROWS + 123
    bits = rng.integers(0, 2**63, (6, n), dtype=np.int64).view(np.uint64)
    query = (rng.integers(0, 16, dim) * 0.25 - 1.0).astype(np.float32)   # on the 4-bit grid: exact
    query[0], query[1] = -1.0, 2.75
    code = binary_codes.QueryCode(query, "ip")
    np.testing.assert_allclose(code._dots(bits, binary_codes.row_ones(bits)), exact_b_dots(query, bits, dim),
                               rtol=1e-5, atol=1e-4)


def test_the_default_nprobe_grows_with_the_effective_number_of_segments() -> None:
    from tierdb.engine.partitioned_source import default_nprobe

    assert default_nprobe(96, []) == 96
    assert default_nprobe(96, [1_000_000]) == 96
    assert default_nprobe(96, [250_000] * 4) == 257          # the calibration point: 256 for four
    assert default_nprobe(96, [1_000_000, 5_000]) == 96       # a small fresh segment adds ~nothing
    assert default_nprobe(96, [1_000_000] * 3) > default_nprobe(96, [1_000_000] * 2) > 96
