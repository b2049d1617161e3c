"""CLI tests: ``tierdb.cli.main`` run in-process (stdout/stderr captured) against a real server
process; a few tests run ``python -m tierdb`` as a subprocess (to kill it mid-import)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.server_process import ServerProcess
from tierdb.cli import main

ADMIN_TOKEN = "cli-tests-admin-token-0123456789"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("cli-server") / "data") as process:
        process.start()
        yield process


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``cli("collections", "--json", url=...)``: run the command, return exit code and output."""
    for var in ("TIERDB_URL", "TIERDB_API_KEY", "TIERDB_ADMIN_TOKEN", "TIERDB_CONFIG"):
        monkeypatch.delenv(var, raising=False)

    def run(*argv: Any, url: str | None = None) -> Result:
        args = [str(a) for a in argv] + (["--url", url] if url else [])
        capsys.readouterr()
        code = main(args)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def write_npy_and_jsonl(directory: Path, n: int, dim: int = 8, seed: int = 3, stem: str = "vectors") -> tuple[Path, Path, np.ndarray]:
    """``stem.npy`` (n x dim float32) and ``stem.jsonl`` with {"id": "v<i>", "metadata": {...}}."""
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    npy = directory / f"{stem}.npy"
    np.save(npy, vectors)
    meta = directory / f"{stem}.jsonl"
    with open(meta, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"v{i}", "metadata": {"i": i, "text": f"row {i}"}}) + "\n")
    return npy, meta, vectors


def write_documents_jsonl(path: Path, n: int, dim: int = 8, seed: int = 5) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"j{i}", "vector": vectors[i].tolist(), "metadata": {"i": i}}) + "\n")
    return vectors
