from __future__ import annotations

import os

import pytest
from hypothesis import given, settings, strategies as st

from tierdb.errors import ErrorKind, TierDBError
from tierdb.engine.wal import LocalWal, WalRecord, decode_records, frame


def record(seq: int, n: int = 2) -> WalRecord:
    return WalRecord(seq=seq, op="upsert", ids=[f"{seq}-{i}" for i in range(n)], vectors=b"\x00" * 8 * n, metadata=[None] * n)


records_strategy = st.lists(
    st.builds(
        WalRecord,
        seq=st.integers(1, 2**40),
        op=st.sampled_from(["upsert", "delete"]),
        ids=st.lists(st.text(min_size=1, max_size=20), max_size=5),
        vectors=st.binary(max_size=64),
        metadata=st.lists(st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**64 - 1))), max_size=3),
    ),
    max_size=8,
)


@given(records_strategy)
@settings(max_examples=100, deadline=None)
def test_frames_round_trip(records):
    data = b"".join(frame(r) for r in records)
    decoded, end = decode_records(data, source="mem")
    assert decoded == records and end == len(data)


@given(records_strategy.filter(bool), st.data())
@settings(max_examples=100, deadline=None)
def test_any_truncation_yields_a_prefix(records, data):
    blob = b"".join(frame(r) for r in records)
    cut = data.draw(st.integers(0, len(blob) - 1))
    decoded, end = decode_records(blob[:cut], source="mem")
    assert decoded == records[: len(decoded)]
    assert end <= cut


def write_records(wal: LocalWal, seqs) -> None:
    for s in seqs:
        wal.append([frame(record(s))])


def test_torn_tail_is_cut_and_appending_continues(tmp_path):
    wal = LocalWal(str(tmp_path))
    wal.open_for_append(1)
    write_records(wal, [1, 2, 3])
    wal.close()
    path = wal.files()[-1].path
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(frame(record(4))[:-3])  # a torn write
    wal = LocalWal(str(tmp_path))
    assert [r.seq for r in wal.scan(after_seq=1)] == [2, 3]
    assert os.path.getsize(path) == size
    wal.open_for_append(4)
    write_records(wal, [4])
    assert [r.seq for r in LocalWal(str(tmp_path)).scan(after_seq=0)] == [1, 2, 3, 4]


def test_corruption_in_the_middle_refuses(tmp_path):
    wal = LocalWal(str(tmp_path))
    wal.open_for_append(1)
    write_records(wal, [1, 2, 3])
    wal.close()
    path = wal.files()[-1].path
    with open(path, "r+b") as f:
        first = len(frame(record(1)))
        f.seek(first + 12)
        f.write(b"\xff\xff")  # damage record 2; record 3 is intact behind it
    with pytest.raises(TierDBError) as err:
        list(LocalWal(str(tmp_path)).scan(after_seq=0))
    assert err.value.kind is ErrorKind.CORRUPT and "refusing to skip" in err.value.message


def test_damage_in_a_sealed_file_refuses(tmp_path):
    wal = LocalWal(str(tmp_path))
    wal.open_for_append(1)
    write_records(wal, [1, 2])
    wal.rotate(3)
    write_records(wal, [3])
    wal.close()
    sealed = wal.files()[0].path
    with open(sealed, "r+b") as f:
        f.truncate(os.path.getsize(sealed) - 2)
    with pytest.raises(TierDBError, match="sealed file"):
        list(LocalWal(str(tmp_path)).scan(after_seq=0))


def test_sequence_gap_refuses(tmp_path):
    wal = LocalWal(str(tmp_path))
    wal.open_for_append(1)
    write_records(wal, [1, 3])
    with pytest.raises(TierDBError, match="sequence gap"):
        list(LocalWal(str(tmp_path)).scan(after_seq=0))


def test_remove_covered_keeps_active_and_uncovered_files(tmp_path):
    wal = LocalWal(str(tmp_path))
    wal.open_for_append(1)
    write_records(wal, [1, 2])
    wal.rotate(3)
    write_records(wal, [3, 4])
    wal.rotate(5)
    write_records(wal, [5])
    assert wal.remove_covered(3) == 1          # file 1-2 only; 3-4 is not fully covered
    assert [f.first_seq for f in wal.files()] == [3, 5]
    assert wal.remove_covered(10) == 1         # the active file stays
    assert [f.first_seq for f in wal.files()] == [5]


def test_failed_write_is_cut_back(tmp_path, monkeypatch):
    wal = LocalWal(str(tmp_path))
    wal.open_for_append(1)
    write_records(wal, [1])
    real_fsync = os.fsync

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(TierDBError) as err:
        wal.append([frame(record(2))])
    assert err.value.kind is ErrorKind.INSUFFICIENT_STORAGE
    monkeypatch.setattr(os, "fsync", real_fsync)
    write_records(wal, [2])
    assert [r.seq for r in LocalWal(str(tmp_path)).scan(after_seq=0)] == [1, 2]


def test_cleanup_and_uploader_removing_covered_files_at_once_take_turns(tmp_path):
    """Local cleanup after a publish and the memory_s3 uploader both call remove_covered, from
    different threads (a FileNotFoundError in CI before they took turns)."""
    import threading

    wal = LocalWal(str(tmp_path), fsync=False)
    wal.open_for_append(1)
    for seq in range(1, 301):
        write_records(wal, [seq])
        wal.rotate(seq + 1)
    before = wal.bytes_total
    start = threading.Barrier(2)
    removed: list[int] = []
    errors: list[BaseException] = []

    def remove() -> None:
        start.wait()
        try:
            removed.append(wal.remove_covered(300))
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=remove) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(removed) == 300 and all(f.first_seq > 300 for f in wal.files())
    assert before > 0 and wal.bytes_total == 0      # each file's bytes subtracted exactly once
