"""``tierdb export``: offline from the data directory, and back in with ``tierdb import``."""

from __future__ import annotations

import json

import numpy as np

from tests.cli.conftest import write_npy_and_jsonl
from tests.server_process import ServerProcess
from tierdb.client import TierDB


def snapshot(db: TierDB, name: str, ids: list[str]) -> dict[str, tuple[list[float], dict | None]]:
    return {d.id: (d.vector, d.metadata) for d in db.get(name, ids)}


def test_export_round_trip(cli, tmp_path) -> None:
    npy, _, vectors = write_npy_and_jsonl(tmp_path, 1500)
    ids = [f"v{i}" for i in range(1500)] + ["extra"]
    name = "exported"
    source = ServerProcess(tmp_path / "data-a")
    with source:
        source.start()
        assert cli("import", npy, "--collection", name, "--create", "--batch-size", 400, url=source.url).code == 0
        with TierDB(source.url) as db:
            db.compact(name)                                   # some rows in a segment...
            db.delete(name, ids=["v0", "v1", "v2"])            # ...some deleted...
            db.upsert(name, ["v10", "extra"], vectors[:2] * 3, [{"changed": True}, None])  # ...some replaced
            expected = snapshot(db, name, ids)
            queries = [db.query(name, vector=vectors[i], k=5) for i in (5, 50, 500)]
        assert len(expected) == 1498

        running = cli("export", "--collection", name, tmp_path / "out.jsonl", "--data-dir", source.data_dir)
        assert running.code == 1 and "stop it first" in running.err
        assert source.stop() == 0

    out = tmp_path / "out.jsonl"
    result = cli("export", "--collection", name, out, "--data-dir", tmp_path / "data-a", "--json")
    assert result.code == 0, result.err
    assert result.json()["documents"] == 1498 and result.json()["files"] == [str(out)]
    assert "export exported" in result.err  # progress line
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {row["id"] for row in lines} == set(expected)
    for row in lines:
        vector, metadata = expected[row["id"]]
        assert row["vector"] == vector and row["metadata"] == metadata

    npy_out = tmp_path / "out-vectors.npy"
    meta_out = tmp_path / "out-meta.jsonl"
    as_npy = cli("export", "--collection", name, npy_out, "--ids-metadata", meta_out, "--data-dir", tmp_path / "data-a")
    assert as_npy.code == 0, as_npy.err
    assert "exported 1,498 documents" in as_npy.out
    matrix = np.load(npy_out)
    rows = [json.loads(line) for line in meta_out.read_text().splitlines()]
    assert matrix.shape == (1498, 8) and matrix.dtype == np.float32 and len(rows) == 1498
    for row, vector in zip(rows, matrix):
        assert vector.tolist() == expected[row["id"]][0] and row["metadata"] == expected[row["id"]][1]
    assert not list(tmp_path.glob("*.partial"))

    target = ServerProcess(tmp_path / "data-b")
    with target:
        target.start()
        assert cli("import", out, "--collection", "from-jsonl", "--create", url=target.url).code == 0
        assert cli("import", npy_out, "--ids-metadata", meta_out, "--collection", "from-npy", "--create",
                   url=target.url).code == 0
        with TierDB(target.url) as db:
            for copy in ("from-jsonl", "from-npy"):
                assert snapshot(db, copy, ids) == expected
                again = [db.query(copy, vector=vectors[i], k=5) for i in (5, 50, 500)]
                assert [[h.id for h in hits] for hits in again] == [[h.id for h in hits] for hits in queries]
        target.stop()


def test_export_errors(cli, tmp_path) -> None:
    missing_dir = cli("export", "--collection", "x", tmp_path / "o.jsonl", "--data-dir", tmp_path / "nothing", "--json")
    assert missing_dir.code == 2 and missing_dir.json()["error"] == "not_found"
    assert not (tmp_path / "nothing").exists()  # export never creates a data directory
    data = tmp_path / "data"
    with ServerProcess(data) as server:
        server.start()
        with TierDB(server.url) as db:
            db.create_collection("small", 2)
            db.upsert("small", ["a"], [[1.0, 2.0]])
        server.stop()
    not_found = cli("export", "--collection", "nope", tmp_path / "o.jsonl", "--data-dir", data, "--json")
    assert not_found.code == 3 and not_found.json()["error"] == "not_found"
    wrong_suffix = cli("export", "--collection", "small", tmp_path / "o.csv", "--data-dir", data)
    assert wrong_suffix.code == 2 and "unsupported output" in wrong_suffix.err
    ok = cli("export", "--collection", "small", tmp_path / "o.jsonl", "--data-dir", data, "--no-progress")
    assert ok.code == 0 and ok.err == ""
    assert json.loads((tmp_path / "o.jsonl").read_text()) == {"id": "a", "vector": [1.0, 2.0], "metadata": None}
