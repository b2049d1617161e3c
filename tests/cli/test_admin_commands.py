"""``tierdb collections | compact | dlq`` against a real server: output, --json, exit codes."""

from __future__ import annotations

import pytest

from tests.cli.conftest import ADMIN_TOKEN
from tests.client.support import DIM, dataset, unique
from tests.server_process import ServerProcess, free_port
from tierdb.client import TierDB


@pytest.fixture
def seeded(server):
    name = unique()
    ids, vectors, metas = dataset(250)
    with TierDB(server.url) as db:
        db.create_collection(name, DIM, metric="l2")
        db.upsert(name, ids, vectors, metas)
    yield name
    with TierDB(server.url) as db:
        db.delete_collection(name, missing_ok=True)


def test_collections_table_and_json(cli, server, seeded) -> None:
    table = cli("collections", url=server.url)
    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split() == ["NAME", "DIM", "METRIC", "POLICY", "COUNT", "SEGMENTS", "UPLOAD", "LAG"]
    row = next(r for r in rows if r.startswith(seeded))
    assert row.split() == [seeded, "8", "l2", "memory", "250", "0", "n/a"]

    listed = cli("collections", "--json", url=server.url)
    assert listed.code == 0
    entry = next(e for e in listed.json() if e["name"] == seeded)
    assert entry["dimension"] == DIM and entry["metric"] == "l2" and entry["tiering_policy"] == "memory"
    assert entry["count"] == 250 and entry["segments"] == 0
    assert entry["state"] == "ready" and entry["upload_lag_secs"] == 0.0 and entry["dlq_size"] == 0


def test_collections_on_an_empty_server(cli, tmp_path) -> None:
    with ServerProcess(tmp_path / "data") as empty:
        empty.start()
        assert cli("collections", url=empty.url).out.strip() == "no collections"
        assert cli("collections", "--json", url=empty.url).json() == []


def test_compact(cli, server, seeded) -> None:
    result = cli("compact", "--collection", seeded, url=server.url)
    assert result.code == 0, result.err
    assert f"compacted '{seeded}': flushed 250 rows" in result.out
    with TierDB(server.url) as db:
        db.upsert(seeded, ["new"], [[1.0] * DIM])
    full = cli("compact", "--collection", seeded, "--full", "--json", url=server.url)
    assert full.code == 0
    body = full.json()
    assert body["flushed_rows"] == 1 and body["segments"] == 1 and body["merged_segments"] == 2
    missing = cli("compact", "--collection", "no-such", "--json", url=server.url)
    assert missing.code == 3 and missing.json()["error"] == "not_found" and missing.json()["status"] == 404


def test_dlq_commands(cli, server, seeded) -> None:
    listed = cli("dlq", "list", "--collection", seeded, url=server.url)
    assert listed.code == 0 and "is empty" in listed.out
    assert cli("dlq", "list", "--collection", seeded, "--json", url=server.url).json() == {
        "collection": seeded, "size": 0, "entries": []
    }
    assert cli("dlq", "retry", "--collection", seeded, "--json", url=server.url).json() == {
        "collection": seeded, "retried": 0
    }
    cleared = cli("dlq", "clear", "--collection", seeded, url=server.url)
    assert cleared.code == 0 and "cleared 0" in cleared.out
    assert cli("dlq", "list", "--collection", "no-such", url=server.url).code == 3
    with pytest.raises(SystemExit) as usage:
        cli("dlq", "purge", "--collection", seeded)
    assert usage.value.code == 2


def test_unreachable_server_exits_4(cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for argv in (["collections"], ["compact", "--collection", "x"], ["dlq", "list", "--collection", "x"]):
        result = cli(*argv, "--retries", 0, "--json", url=url)
        assert result.code == 4, argv
        assert result.json()["error"] == "connection_failed"


def test_url_from_the_environment(cli, server, seeded, monkeypatch) -> None:
    monkeypatch.setenv("TIERDB_URL", server.url)
    result = cli("collections", "--json")
    assert result.code == 0 and seeded in [e["name"] for e in result.json()]


def test_admin_token_from_the_environment(cli, tmp_path, monkeypatch) -> None:
    with ServerProcess(tmp_path / "data", env={"TIERDB_ADMIN_TOKEN": ADMIN_TOKEN}) as secured:
        secured.start()
        with TierDB(secured.url) as db:
            db.create_collection("docs", DIM)
        # without the token: listing works (data API), the admin columns stay empty
        table = cli("collections", url=secured.url)
        assert table.code == 0 and table.out.splitlines()[1].split()[-1] == "-"
        denied = cli("compact", "--collection", "docs", "--json", url=secured.url)
        assert denied.code == 2 and "TIERDB_ADMIN_TOKEN" in denied.err
        assert denied.json()["status"] == 401
        monkeypatch.setenv("TIERDB_ADMIN_TOKEN", "wrong-token")
        assert cli("dlq", "list", "--collection", "docs", url=secured.url).code == 2
        monkeypatch.setenv("TIERDB_ADMIN_TOKEN", ADMIN_TOKEN)
        assert cli("compact", "--collection", "docs", url=secured.url).code == 0
        assert cli("collections", url=secured.url).out.splitlines()[1].split()[-1] == "n/a"


def test_warm(cli, server, seeded) -> None:
    with TierDB(server.url) as db:
        db.compact(seeded)
    started = cli("warm", "--collection", seeded, url=server.url)
    assert started.code == 0, started.err
    assert f"warming '{seeded}': 0/1 segments" in started.out
    waited = cli("warm", "--collection", seeded, "--wait", url=server.url)
    assert waited.code == 0, waited.err
    assert f"warmed 1/1 segments" in waited.out and f"of '{seeded}' in " in waited.out
    assert f"warming '{seeded}': " in waited.err and "bytes 100.0%" in waited.err  # the progress line
    body = cli("warm", "--collection", seeded, "--wait", "--json", url=server.url).json()
    assert (body["state"], body["segments_done"], body["error"]) == ("done", 1, "")
    assert body["bytes_fetched"] == body["bytes_total"] > 0
    missing = cli("warm", "--collection", "no-such", "--json", url=server.url)
    assert missing.code == 3 and missing.json()["error"] == "not_found"


def test_a_failed_warm_exits_non_zero_and_says_why(cli, server, seeded) -> None:
    with TierDB(server.url) as db:
        db.compact(seeded)
    (segment,) = (server.data_dir / "collections" / seeded / "segments").glob("*.seg")
    segment.unlink()  # the node can no longer read it
    failed = cli("warm", "--collection", seeded, "--wait", "--json", url=server.url)
    assert failed.code == 1, failed.out
    body = failed.json()
    assert body["error"] == "warm_failed" and body["warm"]["state"] == "failed"
    assert segment.stem in body["message"] or "not found" in body["message"].lower()
    assert f"error: warming '{seeded}' failed: " in failed.err
