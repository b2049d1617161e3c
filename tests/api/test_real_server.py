"""End to end: ``python -m tierdb serve`` as a real process, driven over HTTP with httpx."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import msgspec
import pytest

from tests.server_process import REPO_ROOT, ServerProcess

DIM = 8
SECRET = "s3cr3t-admin-token-value"


def vec(i: int) -> list[float]:
    return [float((i * 7 + j) % 11) + 0.5 for j in range(DIM)]


def seed(client, n: int) -> None:
    assert client.post("/v1/collections", json={"name": "e2e", "dimension": DIM}).status_code == 201
    half = n // 2
    as_json = {"documents": [{"id": f"j{i}", "vector": vec(i), "metadata": {"i": i}} for i in range(half)]}
    assert client.post("/v1/collections/e2e/documents", json=as_json).json() == {"upserted": half}
    as_msgpack = msgspec.msgpack.encode(
        {"documents": [{"id": f"m{i}", "vector": vec(i), "metadata": {"i": i}} for i in range(n - half)]}
    )
    response = client.post(
        "/v1/collections/e2e/documents", content=as_msgpack, headers={"content-type": "application/msgpack"}
    )
    assert response.json() == {"upserted": n - half}
    assert client.post("/v1/collections/e2e/documents/delete", json={"ids": ["j0", "m0"]}).json() == {"deleted": 2}


def check(client, n: int) -> None:
    info = client.get("/v1/collections/e2e").json()
    assert info["count"] == n - 2
    assert client.get("/v1/collections/e2e/documents/j0").status_code == 404
    doc = client.get("/v1/collections/e2e/documents/j3").json()
    assert doc["metadata"] == {"i": 3}
    hits = client.post("/v1/collections/e2e/query", json={"vector": vec(5), "k": 3}).json()["results"]
    assert hits[0]["id"] in {"j5", "m5"}
    assert hits[0]["distance"] == pytest.approx(0.0, abs=1e-5)


def test_sigterm_shuts_down_cleanly_and_data_survives_restart(tmp_path) -> None:
    server = ServerProcess(
        tmp_path / "data",
        env={"TIERDB_ADMIN_TOKEN": SECRET},
        extra_args=["--log-format", "json"],
    )
    with server:
        server.start()
        with server.client() as client:
            seed(client, 200)
            check(client, 200)
            assert client.get("/health", headers={"x-request-id": "e2e-trace-1"}).status_code == 200
        assert server.stop(signal.SIGTERM) == 0, server.log_tail()

        server.start()
        with server.client() as client:
            check(client, 200)
        assert server.stop(signal.SIGINT) == 0, server.log_tail()

    log = server.log_path.read_text()
    assert SECRET not in log
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert records, log
    assert any(r.get("request_id") == "e2e-trace-1" and r["logger"] == "tierdb.access" for r in records)
    assert all({"timestamp", "level", "logger", "message"} <= set(r) for r in records)
    assert sum(r["message"] == "server stopped" for r in records) == 2


def test_sigkill_then_restart_keeps_acknowledged_writes(tmp_path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        server.start()
        with server.client() as client:
            seed(client, 100)
        assert server.kill() == -signal.SIGKILL
        server.start()
        with server.client() as client:
            check(client, 100)
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--port", "70000"], {}, "server.port: must be between 1 and 65535, got 70000 (from command line)"),
        ([], {"TIERDB_COMPACTION_THRESHOLD_OPS": "abc"}, "compaction.threshold_ops: expected int, got 'abc'"),
        (["--policy", "floppy"], {}, "storage.tiering_policy"),
        (["--config", "/nonexistent/tierdb.toml"], {}, "not found"),
    ],
)
def test_invalid_configuration_exits_2_naming_the_key(tmp_path, args, env, needle) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tierdb", "serve", "--data-dir", str(tmp_path / "data"), *args],
        cwd=REPO_ROOT,
        env={**ServerProcess(tmp_path / "data").environment(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("configuration error: ")
    assert needle in result.stderr
