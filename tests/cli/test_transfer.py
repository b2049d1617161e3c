"""Building blocks of import/export: readers, checkpoints, the progress line; and the offline
commands that share the CLI (verify) still behave."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.cli.conftest import write_documents_jsonl, write_npy_and_jsonl
from tierdb.cli import build_parser
from tierdb.cli.checkpoint import CHECKPOINT_SUFFIX, Checkpoint, default_checkpoint, import_identity
from tierdb.cli.progress import Progress
from tierdb.cli.readers import InputError, UsageError, open_source


def collect(source, start: int = 0, batch_size: int = 7):
    ids, vectors, metas = [], [], []
    for batch in source.batches(start, batch_size):
        assert len(batch.ids) <= batch_size
        ids += batch.ids
        vectors.append(batch.vectors)
        metas += batch.metadatas
    return ids, np.concatenate(vectors) if vectors else np.empty((0, source.dimension)), metas


def test_npy_source_reads_rows_in_batches_from_any_start(tmp_path) -> None:
    npy, meta, vectors = write_npy_and_jsonl(tmp_path, 30)
    source = open_source(npy)  # finds vectors.jsonl next to vectors.npy
    assert (source.total, source.dimension) == (30, 8)
    ids, got, metas = collect(source)
    assert ids == [f"v{i}" for i in range(30)] and metas[3] == {"i": 3, "text": "row 3"}
    np.testing.assert_array_equal(got, vectors)
    ids, got, _ = collect(source, start=17)
    assert ids[0] == "v17" and len(ids) == 13
    np.testing.assert_array_equal(got, vectors[17:])
    limited = open_source(npy, limit=10)
    assert limited.total == 10 and collect(limited)[0][-1] == "v9"


def test_npy_of_other_dtypes_and_blank_lines(tmp_path) -> None:
    np.save(tmp_path / "ints.npy", np.arange(12, dtype=np.int64).reshape(4, 3))
    (tmp_path / "ints.jsonl").write_text('{"id": 7}\n\n{"metadata": {"a": 1}}\n{"id": "x"}\n{}\n')
    ids, got, metas = collect(open_source(tmp_path / "ints.npy"))
    assert ids == ["7", "1", "x", "3"]  # a missing id is the row number
    assert metas == [None, {"a": 1}, None, None]
    assert got.dtype == np.float32 and got[3].tolist() == [9.0, 10.0, 11.0]


def test_jsonl_source(tmp_path) -> None:
    path = tmp_path / "docs.jsonl"
    vectors = write_documents_jsonl(path, 25, dim=5)
    source = open_source(path)
    assert (source.total, source.dimension) == (25, 5)
    ids, got, metas = collect(source, start=4, batch_size=10)
    assert ids[0] == "j4" and metas[0] == {"i": 4}
    np.testing.assert_array_equal(got, vectors[4:])


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"id": "a", "vector": [1, 2, 3]}', "vector has 3 values"),
        ('{"id": "a", "vector": [1, 2, 3, 4, 5], "extra": 1}', "unknown field"),
        ('{"id": "a", "vector": "nope"}', "Expected `array`"),
        ('{"id": "", "vector": [1, 2, 3, 4, 5]}', "empty id"),
        ('{"id": "a", "vec', "malformed JSON"),
        ("[1, 2]", "Expected `object`"),
        ('{"id": "a", "vector": [1, 2, 3, 4, 5], "metadata": [1]}', "Expected `object | null`"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, line: str, needle: str) -> None:
    path = tmp_path / "docs.jsonl"
    write_documents_jsonl(path, 3, dim=5)
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(InputError, match=needle) as exc:
        collect(open_source(path))
    assert "docs.jsonl:4" in str(exc.value)


def test_usage_errors(tmp_path) -> None:
    npy, meta, _ = write_npy_and_jsonl(tmp_path, 5)
    with pytest.raises(UsageError, match="no such file"):
        open_source(tmp_path / "missing.npy")
    with pytest.raises(UsageError, match="no such file"):
        open_source(npy, ids_metadata=tmp_path / "missing.jsonl")
    with pytest.raises(UsageError, match="goes with a .npy"):
        open_source(meta, ids_metadata=meta)
    (tmp_path / "data.parquet").write_bytes(b"")
    with pytest.raises(UsageError, match="unsupported"):
        open_source(tmp_path / "data.parquet")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match="2-D"):
        open_source(tmp_path / "cube.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="readable"):
        open_source(tmp_path / "junk.npy")


def test_checkpoint_save_load_and_identity(tmp_path) -> None:
    npy, _, _ = write_npy_and_jsonl(tmp_path, 10)
    source = open_source(npy)
    identity = import_identity(source, "docs", "http://x", None)
    path = default_checkpoint(npy)
    assert path == tmp_path / f"vectors.npy{CHECKPOINT_SUFFIX}"
    checkpoint = Checkpoint(path, identity)
    assert checkpoint.load() == (0, None)
    checkpoint.save(6)
    assert json.loads(path.read_text())["rows_done"] == 6
    assert Checkpoint(path, identity).load() == (6, None)
    other = Checkpoint(path, import_identity(source, "other", "http://x", None))
    rows, note = other.load()
    assert rows == 0 and "different collection" in note
    elsewhere = Checkpoint(path, import_identity(source, "docs", "http://y", None))
    assert "different url" in elsewhere.load()[1]
    # the input changed since: do not trust the row count
    time.sleep(0.01)
    np.save(npy, np.ones((10, 8), dtype=np.float32))
    os.utime(npy)
    changed = Checkpoint(path, import_identity(open_source(npy), "docs", "http://x", None))
    assert changed.load()[0] == 0 and "different inputs" in changed.load()[1]
    checkpoint.remove()
    assert not path.exists()
    checkpoint.remove()  # twice is fine


def test_checkpoint_goes_to_the_cache_when_the_input_dir_is_read_only(tmp_path, monkeypatch) -> None:
    readonly = tmp_path / "ro"
    readonly.mkdir()
    npy, _, _ = write_npy_and_jsonl(readonly, 3)
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != readonly)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = default_checkpoint(npy)
    assert path.parent == tmp_path / "cache" / "tierdb" / "imports"
    assert path.name.startswith("vectors.npy-") and path.name.endswith(CHECKPOINT_SUFFIX)


def test_progress_line_has_rate_and_eta() -> None:
    stream = io.StringIO()
    progress = Progress("import docs", 1000, start=200, stream=stream, log_interval=0)
    progress.started -= 2.0  # as if 2 seconds had passed
    progress.update(600)     # 400 rows in 2 s
    line = stream.getvalue().strip()
    assert line.startswith("import docs: 600/1,000 rows  60.0%")
    assert "200 rows/s" in line and "ETA 0:02" in line
    progress.finish()  # nothing new to say: the same line is not repeated in a log
    assert stream.getvalue().count("\n") == 1
    progress.update(1000)
    progress.finish()
    assert stream.getvalue().splitlines()[-1].startswith("import docs: 1,000/1,000 rows 100.0%")


def test_progress_redraws_in_place_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress = Progress("export x", 10, stream=stream)
    progress.update(5)
    progress.finish()
    text = stream.getvalue()
    assert text.startswith("\rexport x: 5/10") and text.endswith("\n") and text.count("\n") == 1
    silent = io.StringIO()
    quiet = Progress("x", 10, stream=silent, enabled=False)
    quiet.update(3)
    quiet.finish()
    assert silent.getvalue() == ""


def test_every_command_is_registered() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert set(subparsers.choices) == {
        "serve", "restore", "verify", "export", "import", "collections", "compact", "dlq", "warm"
    }


def test_verify_a_local_data_directory(cli, tmp_path) -> None:
    import tierdb

    with tierdb.open(tmp_path / "data") as db:
        db.create_collection("docs", 4)
        db.upsert("docs", ["a", "b"], np.eye(2, 4))
        db.compact("docs")
    result = cli("verify", "--data-dir", tmp_path / "data", "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    assert [(r["collection"], r["where"], r["status"]) for r in rows] == [("docs", "local", "ok")]
    assert "verify local 1/1: docs" in result.err
