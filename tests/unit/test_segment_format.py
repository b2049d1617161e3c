"""Segment format 2: vectors stored once (in the index when there is one), metadata kept
encoded and decoded per row, version-1 files still open."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import msgspec
import numpy as np
import pytest

from tierdb.engine import segment as seg
from tierdb.errors import ErrorKind, TierDBError
from tierdb.models import HnswParams

from .segment_v1 import encode_v1

PARAMS = HnswParams(m=16, ef_construction=100, ef_search=64)
METRICS = ["cosine", "l2", "ip"]


def rows(n: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, list[str], list[dict | None]]:
    rng = np.random.default_rng(seed)
    raw = (rng.standard_normal((n, dim)) * rng.uniform(0.1, 50, (n, 1))).astype(np.float32)
    ids = [f"doc-{i}" for i in range(n)]
    metadata = [None if i % 3 == 0 else {"i": i, "tag": f"t{i % 5}", "nested": {"x": [i, "y"]}} for i in range(n)]
    return raw, ids, metadata


def header_of(data: bytes) -> seg.SegmentHeader:
    (length,) = seg._LEN.unpack_from(data, 8)
    return msgspec.msgpack.decode(data[12 : 12 + length], type=seg.SegmentHeader)


def build(raw: np.ndarray, metric: str) -> seg.hnswlib.Index:
    return seg.build_index(raw, metric, PARAMS, threads=1)


def assert_same_vectors(got: np.ndarray, raw: np.ndarray) -> None:
    np.testing.assert_allclose(got, raw, rtol=1e-6, atol=1e-6 * float(np.abs(raw).max()))


@pytest.mark.parametrize("metric", METRICS)
def test_indexed_segment_stores_vectors_only_in_the_index(metric):
    raw, ids, metadata = rows(500)
    data = seg.encode(raw, ids, metadata, metric, PARAMS, build(raw, metric))
    header = header_of(data)
    assert header.format == 2
    assert "vectors" not in header.sections
    assert set(header.sections) == {"ids", "metadata", "meta_offsets", "norms", "index"}
    assert len(data) <= 1.2 * header.sections["index"].length

    opened = seg.decode("s", data)
    assert opened.data().raw is None
    assert opened.ids == ids
    assert_same_vectors(opened.vectors_of(np.arange(500)), raw)
    assert_same_vectors(opened.raw_vectors(), raw)
    assert_same_vectors(opened.vectors_of(np.array([499, 0, 7])), raw[[499, 0, 7]])
    np.testing.assert_allclose(opened.row_norms(), np.linalg.norm(raw, axis=1), rtol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_unindexed_segment_keeps_its_raw_vectors(metric):
    raw, ids, metadata = rows(20)
    data = seg.encode(raw, ids, metadata, metric, PARAMS, None)
    assert "vectors" in header_of(data).sections and "index" not in header_of(data).sections
    opened = seg.decode("s", data)
    np.testing.assert_array_equal(opened.raw_vectors(), raw)
    assert [opened.metadata[i] for i in range(20)] == metadata


def test_metadata_is_kept_encoded_and_decoded_per_row():
    raw, ids, metadata = rows(300)
    opened = seg.decode("s", seg.encode(raw, ids, metadata, "cosine", PARAMS, build(raw, "cosine")))
    column = opened.metadata
    assert isinstance(column, seg.MetadataColumn)
    assert isinstance(column.blob, bytes) and len(column.offsets) == 301
    assert column[4] == metadata[4] and column[0] is None and column[-1] == metadata[-1]
    assert list(column) == metadata
    with pytest.raises(IndexError):
        column[300]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("indexed", [True, False])
def test_version_1_files_still_open(metric, indexed):
    raw, ids, metadata = rows(400 if indexed else 30, seed=2)
    index = build(raw, metric) if indexed else None
    old = encode_v1(raw, ids, metadata, metric, PARAMS, index)
    assert header_of(old).format == 1

    opened = seg.decode("old", old)
    assert opened.ids == ids and opened.indexed == indexed
    assert [opened.metadata[i] for i in range(len(ids))] == metadata
    assert_same_vectors(opened.raw_vectors(), raw)
    if indexed:
        assert opened.data().raw is None  # the vectors section is not kept in RAM either
        found = opened.search(raw[:5], 3, 200, None)
        exact = opened.brute_force(raw[:5], 3, None)
        assert found.rows.tolist() == exact.rows.tolist()
    # Re-encoding (a merge) writes format 2 with the same rows.
    again = seg.decode("new", seg.encode(opened.raw_vectors(), opened.ids, opened.metadata, metric, PARAMS, index))
    assert_same_vectors(again.raw_vectors(), raw)
    assert list(again.metadata) == metadata


@pytest.mark.parametrize("metric", METRICS)
def test_dead_rows_can_still_be_read_and_stay_deleted(metric):
    raw, ids, metadata = rows(300, seed=3)
    opened = seg.decode("s", seg.encode(raw, ids, metadata, metric, PARAMS, build(raw, metric)))
    opened.kill(5, seq=1)
    opened.kill(9, seq=2)
    assert_same_vectors(opened.vectors_of(np.array([4, 5, 9, 10])), raw[[4, 5, 9, 10]])
    found = opened.search(raw[[5, 9]], 3, 64, None)
    assert 5 not in found.rows and 9 not in found.rows
    with pytest.raises(RuntimeError):  # still marked deleted in the index
        opened.index.get_items([5])


def test_cosine_zero_vector_round_trips():
    raw, ids, metadata = rows(200, seed=4)
    raw[17] = 0.0
    opened = seg.decode("s", seg.encode(raw, ids, metadata, "cosine", PARAMS, build(raw, "cosine")))
    np.testing.assert_array_equal(opened.vectors_of(np.array([17]))[0], np.zeros(16, np.float32))


def _rewrite_section(data: bytes, name: str, new: bytes) -> bytes:
    """The segment with one section's bytes replaced (checksums updated, so only the content is bad)."""
    header = header_of(data)
    body = 12 + seg._LEN.unpack_from(data, 8)[0]
    sections = {k: data[body + r.offset : body + r.offset + r.length] for k, r in header.sections.items()}
    sections[name] = new
    refs, offset = {}, 0
    for key, chunk in sections.items():
        refs[key] = seg.SectionRef(offset, len(chunk), seg.hashlib.sha256(chunk).hexdigest())
        offset += len(chunk)
    encoded = seg._encoder.encode(msgspec.structs.replace(header, sections=refs))
    return b"".join([seg.MAGIC, seg._LEN.pack(len(encoded)), encoded, *sections.values()])


@pytest.mark.parametrize(
    "section, content",
    [
        ("meta_offsets", np.arange(301, dtype="<u8").tobytes()),  # offsets past the metadata bytes
        ("meta_offsets", b"\x00" * 7),
        ("norms", b"\x00" * 12),
    ],
)
def test_inconsistent_sections_are_reported_corrupt(section, content):
    raw, ids, metadata = rows(300, seed=5)
    data = seg.encode(raw, ids, metadata, "l2", PARAMS, build(raw, "l2"))
    with pytest.raises(TierDBError) as err:
        seg.decode("bad", _rewrite_section(data, section, content))
    assert err.value.kind == ErrorKind.CORRUPT and "bad" in err.value.message and section in err.value.message


_RSS_SCRIPT = textwrap.dedent(
    """
    import gc, json, sys
    import hnswlib
    from tierdb.engine import segment as seg

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    mode, path = sys.argv[1], sys.argv[2]
    gc.collect()
    before = rss()
    if mode == "hnswlib":  # the floor: the bare index, loaded from its own file
        opened = hnswlib.Index(space="cosine", dim=int(sys.argv[3]))
        opened.load_index(path)
    else:
        data = open(path, "rb").read()
        opened = seg.decode("s", data)
        del data
    gc.collect()
    loaded = rss()
    opened = None
    gc.collect()
    print(json.dumps({"before": before, "loaded": loaded, "after": rss()}))
    """
)


def _rss_of(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, *args], capture_output=True, text=True,
                         env=env, timeout=300, check=True)
    return msgspec.json.decode(out.stdout.strip().splitlines()[-1])


def test_reopen_rss_is_bounded_by_the_index_and_returned_when_dropped(tmp_path):
    """A 30k x 64 cosine segment with ids and metadata: opening it costs at most 1.3x the RSS
    of the bare hnswlib index (before format 2 it also held the raw vectors and one dict per
    row: ~1.9x), and dropping it gives the memory back."""
    n, dim = 30_000, 64
    rng = np.random.default_rng(6)
    raw = rng.standard_normal((n, dim)).astype(np.float32)
    ids = [f"id-{i:08d}" for i in range(n)]
    metadata = [{"n": i, "tag": "abc"} for i in range(n)]
    index = seg.build_index(raw, "cosine", PARAMS, threads=2)
    index.save_index(str(tmp_path / "index.bin"))
    (tmp_path / "segment.bin").write_bytes(seg.encode(raw, ids, metadata, "cosine", PARAMS, index))

    bare = _rss_of("hnswlib", str(tmp_path / "index.bin"), str(dim))
    ours = _rss_of("segment", str(tmp_path / "segment.bin"))
    bare_growth = bare["loaded"] - bare["before"]
    growth = ours["loaded"] - ours["before"]
    assert growth <= 1.3 * bare_growth, (growth, bare_growth)
    assert ours["after"] - ours["before"] <= 0.2 * bare_growth, (ours, bare_growth)


def test_dead_row_read_tolerates_an_index_copy_without_the_mark():
    """An evicted segment's old data may be read after a reload: its index lacks later marks."""
    raw, ids, metadata = rows(300, seed=7)
    data = seg.encode(raw, ids, metadata, "l2", PARAMS, build(raw, "l2"))
    opened = seg.decode("s", data)
    stale = seg.decode("s", data).data()  # a copy of the data from before the kill
    opened.kill(5, seq=1)
    got = opened._vectors_including_deleted(stale, np.array([4, 5]))
    np.testing.assert_array_equal(got, raw[[4, 5]])
    stale.index.get_items([5])  # still unmarked there: nothing was marked that was not before
