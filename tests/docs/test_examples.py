"""The Python examples in README.md and docs/quickstart.md run as written.

Every ```python block of a document runs, in order, as its own ``python`` process against a real
server (tests/server_process.py); the only change made to the code is the server address
(``http://127.0.0.1:8080`` -> the test server's). The blocks run in a scratch directory laid
out like a checkout next to ``../shared`` (the worked example reads the shared dataset there), so
``tierdb.open("./my-vectors")`` writes nothing into the repository. Each document runs twice:
an example must also work when it is run again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.server_process import REPO_ROOT, ServerProcess

DOCUMENTED_URL = "http://127.0.0.1:8080"
DATASET = REPO_ROOT.parent / "shared" / "datasets" / "docstrings-50k"
DATASET_ROWS = 2_000  # the worked example's collection, imported in part (its queries only need it to exist)
DOCUMENTS = ["README.md", "docs/quickstart.md"]

_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_blocks(document: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```python block."""
    text = (REPO_ROOT / document).read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in _BLOCK.finditer(text)]


def _create_docstrings_collection(server: ServerProcess) -> None:
    """What the quickstart's `tierdb import` step does, for the first DATASET_ROWS rows."""
    import json

    import tierdb

    vectors = np.load(DATASET / "base.npy", mmap_mode="r")[:DATASET_ROWS]
    texts = json.loads((DATASET / "base_texts.json").read_text())[:DATASET_ROWS]
    with tierdb.TierDB(server.url) as db:
        db.create_collection("docstrings", dimension=vectors.shape[1], metric="cosine")
        db.upsert("docstrings", [str(i) for i in range(len(texts))], np.asarray(vectors),
                  [{"text": text} for text in texts])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("docs-server") / "data") as process:
        process.start()
        if DATASET.is_dir():
            _create_docstrings_collection(process)
        yield process


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A scratch 'checkout' with ../shared next to it, as in the real layout."""
    checkout = tmp_path / "tierdb"
    checkout.mkdir()
    if (REPO_ROOT.parent / "shared").is_dir():
        (tmp_path / "shared").symlink_to(REPO_ROOT.parent / "shared")
    return checkout


def run_block(code: str, server: ServerProcess, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERDB_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code.replace(DOCUMENTED_URL, server.url)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_python_examples_run_as_written(document: str, server: ServerProcess, workdir: Path) -> None:
    blocks = python_blocks(document)
    assert blocks, f"{document} has no python examples"
    for attempt in ("first run", "second run"):
        for line, code in blocks:
            if "docstrings-50k" in code and not DATASET.is_dir():
                continue  # the worked example needs the shared dataset; nothing to run it on
            result = run_block(code, server, workdir)
            assert result.returncode == 0, (
                f"{document}:{line} ({attempt}) failed:\n{code}\n--- stderr ---\n{result.stderr}"
            )


def test_route_labels_in_the_operations_guide_are_real_route_templates(tmp_path: Path) -> None:
    from tierdb.api.app import create_app
    from tierdb.config import load_settings

    app = create_app(load_settings(env={}, overrides={"storage.data_dir": str(tmp_path)}))
    templates = {re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path) for route in app.routes}
    text = (REPO_ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"`(/[\w/{}-]*\{\w+\}[\w/{}-]*)`", text))
    assert documented, "no route templates found in docs/operations.md"
    assert documented <= templates, documented - templates
