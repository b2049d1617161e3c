"""``tierdb import``: both input formats, --create, errors and exit codes, resuming after an
interruption (Ctrl-C in-process, SIGKILL of a real process), and the shared dataset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.cli.conftest import write_documents_jsonl, write_npy_and_jsonl
from tests.client.support import unique
from tests.server_process import REPO_ROOT, free_port
from tierdb.cli import build_parser
from tierdb.cli.checkpoint import CHECKPOINT_SUFFIX
from tierdb.cli.importer import run_import
from tierdb.client import TierDB

DATASET = REPO_ROOT.parent / "shared" / "datasets" / "docstrings-50k"


def all_documents(url: str, name: str, ids: list[str]) -> dict[str, tuple[np.ndarray, dict | None]]:
    with TierDB(url) as db:
        return {d.id: (np.asarray(d.vector, dtype=np.float32), d.metadata) for d in db.get(name, ids)}


def test_import_npy_with_ids_metadata(cli, server, tmp_path) -> None:
    npy, meta, vectors = write_npy_and_jsonl(tmp_path, 2500)
    name = unique()
    result = cli("import", npy, "--collection", name, "--create", "--batch-size", 1000, url=server.url)
    assert result.code == 0, result.err
    assert f"created collection '{name}'" in result.err
    assert "import " in result.err and "rows/s" in result.err and "ETA" in result.err  # progress line
    assert "imported 2,500 rows" in result.out and "holds 2,500 documents" in result.out
    docs = all_documents(server.url, name, [f"v{i}" for i in range(2500)])
    assert len(docs) == 2500
    np.testing.assert_array_equal(docs["v1234"][0], vectors[1234])
    assert docs["v1234"][1] == {"i": 1234, "text": "row 1234"}
    assert not (tmp_path / f"vectors.npy{CHECKPOINT_SUFFIX}").exists()  # removed once complete
    with TierDB(server.url) as db:
        info = db.get_collection(name)
        assert (info.dimension, info.metric, info.count) == (8, "cosine", 2500)


def test_import_npy_without_metadata_uses_row_numbers(cli, server, tmp_path) -> None:
    vectors = np.random.default_rng(0).random((30, 4), dtype=np.float32)
    np.save(tmp_path / "plain.npy", vectors)
    name = unique()
    result = cli("import", tmp_path / "plain.npy", "--collection", name, "--create", "--metric", "l2",
                 "--json", "--no-progress", url=server.url)
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["rows"] == 30 and summary["imported"] == 30 and summary["count"] == 30
    assert "rows/s" not in result.err
    with TierDB(server.url) as db:
        assert db.get_collection(name).metric == "l2"
        assert db.get_one(name, "29").metadata is None


def test_import_jsonl_documents(cli, server, tmp_path) -> None:
    path = tmp_path / "docs.jsonl"
    vectors = write_documents_jsonl(path, 450)
    name = unique()
    result = cli("import", path, "--collection", name, "--create", "--batch-size", 100, "--json", url=server.url)
    assert result.code == 0, result.err
    assert result.json()["count"] == 450
    docs = all_documents(server.url, name, ["j0", "j449"])
    np.testing.assert_array_equal(docs["j449"][0], vectors[449])
    assert docs["j0"][1] == {"i": 0}
    # importing again changes nothing (upserts are idempotent)
    again = cli("import", path, "--collection", name, "--json", url=server.url)
    assert again.code == 0 and again.json()["count"] == 450


def test_import_limit(cli, server, tmp_path) -> None:
    npy, _, _ = write_npy_and_jsonl(tmp_path, 100)
    name = unique()
    result = cli("import", npy, "--collection", name, "--create", "--limit", 40, "--json", url=server.url)
    assert result.code == 0, result.err
    assert result.json()["rows"] == 40 and result.json()["count"] == 40


def test_import_errors_and_exit_codes(cli, server, tmp_path) -> None:
    npy, meta, _ = write_npy_and_jsonl(tmp_path, 20)
    name = unique()
    # no such collection without --create: 3, with a hint
    missing = cli("import", npy, "--collection", name, "--json", url=server.url)
    assert missing.code == 3 and "--create" in missing.err
    assert missing.json()["error"] == "not_found"
    # usage problems: 2
    assert cli("import", tmp_path / "nope.npy", "--collection", name, url=server.url).code == 2
    assert cli("import", tmp_path / "x.csv", "--collection", name, url=server.url).code == 2
    (tmp_path / "x.csv").write_text("1,2\n")
    assert cli("import", tmp_path / "x.csv", "--collection", name, url=server.url).code == 2
    wrong_dim = cli("import", npy, "--collection", name, "--create", "--dimension", 3, url=server.url)
    assert wrong_dim.code == 2 and "--dimension 3" in wrong_dim.err
    with pytest.raises(SystemExit) as bad_flag:
        cli("import", npy, "--collection", name, "--batch-size", 0)
    assert bad_flag.value.code == 2
    # an ids file with the wrong number of lines: 1
    short = tmp_path / "short.jsonl"
    short.write_text("".join(meta.read_text().splitlines(keepends=True)[:5]))
    mismatch = cli("import", npy, "--ids-metadata", short, "--collection", name, "--create", url=server.url)
    assert mismatch.code == 1 and "5 lines" in mismatch.err
    # the collection exists with another dimension: 1
    with TierDB(server.url) as db:
        db.create_collection(name, 3)
    other_dim = cli("import", npy, "--collection", name, url=server.url)
    assert other_dim.code == 1 and "dimension 3" in other_dim.err
    # server unreachable: 4
    down = cli("import", npy, "--collection", name, "--retries", 1, url=f"http://127.0.0.1:{free_port()}")
    assert down.code == 4 and "cannot reach" in down.err


def test_a_bad_line_stops_the_import_and_names_it(cli, server, tmp_path) -> None:
    path = tmp_path / "broken.jsonl"
    write_documents_jsonl(path, 50)
    lines = path.read_text().splitlines()
    lines[30] = '{"id": "bad", "vector": [1, 2, "x", 4, 5, 6, 7, 8]}'
    path.write_text("\n".join(lines) + "\n")
    name = unique()
    result = cli("import", path, "--collection", name, "--create", "--batch-size", 10, url=server.url)
    assert result.code == 1
    assert "broken.jsonl:31" in result.err and "30 rows were imported" in result.err
    with TierDB(server.url) as db:
        assert db.count(name) == 30
    checkpoint = json.loads((tmp_path / f"broken.jsonl{CHECKPOINT_SUFFIX}").read_text())
    assert checkpoint["rows_done"] == 30


def test_interrupted_import_resumes_without_duplicates(cli, server, tmp_path) -> None:
    """Ctrl-C after two batches: the checkpoint holds 2 batches; a rerun sends only the rest."""
    npy, _, vectors = write_npy_and_jsonl(tmp_path, 1000)
    name = unique()
    args = build_parser().parse_args(
        ["import", str(npy), "--collection", name, "--create", "--batch-size", "150", "--url", server.url]
    )

    def interrupt_after_two_batches(rows_done: int) -> None:
        if rows_done >= 300:
            raise KeyboardInterrupt

    assert run_import(args, on_batch=interrupt_after_two_batches) == 130
    checkpoint_path = tmp_path / f"vectors.npy{CHECKPOINT_SUFFIX}"
    saved = json.loads(checkpoint_path.read_text())
    assert saved["rows_done"] == 300 and saved["collection"] == name
    with TierDB(server.url) as db:
        assert db.count(name) == 300

    resumed = cli("import", npy, "--collection", name, "--batch-size", 150, "--json", url=server.url)
    assert resumed.code == 0, resumed.err
    assert "resuming at row 300 of 1,000" in resumed.err
    summary = resumed.json()
    assert (summary["resumed_from"], summary["imported"], summary["count"]) == (300, 700, 1000)
    assert not checkpoint_path.exists()
    ids = [f"v{i}" for i in range(1000)]
    docs = all_documents(server.url, name, ids)
    assert sorted(docs) == sorted(ids)
    np.testing.assert_array_equal(np.stack([docs[i][0] for i in ids]), vectors)


def test_checkpoint_of_another_import_is_not_used(cli, server, tmp_path) -> None:
    npy, _, _ = write_npy_and_jsonl(tmp_path, 50)
    name = unique()
    checkpoint = tmp_path / f"vectors.npy{CHECKPOINT_SUFFIX}"
    checkpoint.write_text(json.dumps({"version": 1, "collection": "someone-else", "rows_done": 40}))
    result = cli("import", npy, "--collection", name, "--create", "--json", url=server.url)
    assert result.code == 0
    assert "different collection" in result.err
    assert result.json()["resumed_from"] == 0 and result.json()["count"] == 50
    checkpoint.write_text("{not json")
    again = cli("import", npy, "--collection", name, "--json", url=server.url)
    assert again.code == 0 and "unreadable checkpoint" in again.err
    assert again.json()["resumed_from"] == 0


def test_restart_ignores_a_matching_checkpoint(cli, server, tmp_path) -> None:
    path = tmp_path / "docs.jsonl"
    write_documents_jsonl(path, 60)
    name = unique()
    args = build_parser().parse_args(
        ["import", str(path), "--collection", name, "--create", "--batch-size", "20", "--url", server.url]
    )

    def stop(rows_done: int) -> None:
        raise KeyboardInterrupt

    assert run_import(args, on_batch=stop) == 130
    result = cli("import", path, "--collection", name, "--restart", "--json", url=server.url)
    assert result.code == 0 and "resuming" not in result.err
    assert result.json()["resumed_from"] == 0 and result.json()["imported"] == 60


def test_killed_import_process_resumes(cli, server, tmp_path) -> None:
    """SIGKILL a real ``tierdb import`` mid-way; the rerun continues from the checkpoint."""
    n = 40_000
    npy, _, vectors = write_npy_and_jsonl(tmp_path, n, dim=16)
    checkpoint_path = tmp_path / f"vectors.npy{CHECKPOINT_SUFFIX}"
    name = unique()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERDB_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    command = [sys.executable, "-m", "tierdb", "import", str(npy), "--collection", name, "--create",
               "--batch-size", "200", "--url", server.url, "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline and process.poll() is None:
            try:
                done = json.loads(checkpoint_path.read_text())["rows_done"]
            except (FileNotFoundError, ValueError):
                done = 0
            if done >= 2000:
                break
            time.sleep(0.005)
        assert process.poll() is None, f"the import finished before it could be killed: {process.stderr.read()!r}"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    rows_done = json.loads(checkpoint_path.read_text())["rows_done"]
    assert 2000 <= rows_done < n
    with TierDB(server.url) as db:
        acknowledged = db.count(name)
    assert rows_done <= acknowledged <= rows_done + 200  # at most the batch in flight is ahead

    resumed = cli("import", npy, "--collection", name, "--batch-size", 1000, "--json", url=server.url)
    assert resumed.code == 0, resumed.err
    assert f"resuming at row {rows_done:,}" in resumed.err
    summary = resumed.json()
    assert summary["resumed_from"] == rows_done and summary["imported"] == n - rows_done
    assert summary["count"] == n
    ids = [f"v{i}" for i in range(n)]
    docs = all_documents(server.url, name, ids)
    assert len(docs) == n
    sample = np.random.default_rng(1).choice(n, 200, replace=False)
    for i in sample:
        np.testing.assert_array_equal(docs[f"v{i}"][0], vectors[i])
        assert docs[f"v{i}"][1] == {"i": int(i), "text": f"row {i}"}


@pytest.mark.skipif(not DATASET.is_dir(), reason=f"shared dataset not found at {DATASET}")
def test_import_a_slice_of_the_shared_dataset(cli, server, tmp_path, monkeypatch) -> None:
    """base.npy (read-only, so the checkpoint goes to the cache dir) + texts as metadata."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rows = 2000
    texts = json.loads((DATASET / "base_texts.json").read_text())[:rows]
    meta = tmp_path / "base-meta.jsonl"
    with open(meta, "w") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": str(i), "metadata": {"text": text}}) + "\n")
    name = unique("docstrings")
    result = cli("import", DATASET / "base.npy", "--ids-metadata", meta, "--limit", rows, "--collection", name,
                 "--create", "--batch-size", 500, "--json", url=server.url)
    assert result.code == 0, result.err
    assert result.json()["count"] == rows
    assert not list((tmp_path / "cache").rglob(f"*{CHECKPOINT_SUFFIX}"))  # used, then removed

    base = np.load(DATASET / "base.npy", mmap_mode="r")[:rows]
    queries = np.load(DATASET / "queries.npy")[:5]
    exact = np.argsort(-(queries @ np.asarray(base).T), axis=1)[:, :10]
    with TierDB(server.url) as db:
        for q, truth in zip(queries, exact):
            hits = db.query(name, vector=q, k=10)
            assert hits[0].id == str(truth[0])
            assert len({h.id for h in hits} & {str(t) for t in truth}) >= 9
            assert hits[0].metadata == {"text": texts[truth[0]]}
