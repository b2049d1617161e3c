"""Exit codes agree with the table in docs/quickstart.md and the summary in README.md."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

from tests.server_process import REPO_ROOT, free_port
from tierdb.cli import exit_codes, main


def _run_tierdb(*args: str, cwd: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERDB_", "AWS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "tierdb", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_restore_without_s3_configuration_exits_2(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # no config/tierdb.toml here
    for var in [v for v in os.environ if v.startswith("TIERDB_")]:
        monkeypatch.delenv(var)
    code = main(["restore", "--data-dir", str(tmp_path / "data")])
    assert code == exit_codes.EXIT_CONFIG == 2
    assert "s3.bucket is not set" in capsys.readouterr().err


def test_serve_on_a_busy_port_exits_1_with_a_clear_message(tmp_path) -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", port))
        busy.listen()
        result = _run_tierdb("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"), cwd=str(tmp_path))
    assert result.returncode == exit_codes.EXIT_FAILURE == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr
    assert not (tmp_path / "data").exists()  # failed before the engine started


def test_exit_code_tables_match_the_code() -> None:
    codes = {
        exit_codes.EXIT_OK: "success", exit_codes.EXIT_FAILURE: "failure", exit_codes.EXIT_CONFIG: "usage or configuration",
        exit_codes.EXIT_NOT_FOUND: "not found", exit_codes.EXIT_UNREACHABLE: "server unreachable", exit_codes.EXIT_INTERRUPTED: "interrupted",
    }
    quickstart = (REPO_ROOT / "docs" / "quickstart.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", quickstart, flags=re.M))
    assert set(map(int, table)) == set(codes)
    for code, meaning in codes.items():
        assert table[str(code)].lower().startswith(meaning), (code, table[str(code)])
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    summary = ", ".join(f"{code} {meaning.replace('success', 'ok')}" for code, meaning in codes.items())
    assert f"Exit codes: {summary}." in readme
