"""Every schemathesis item has its own pytest id (selectable, reported separately)."""

from __future__ import annotations

import collections
import os
import subprocess
import sys

import pytest

from tests.server_process import REPO_ROOT

pytest.importorskip("schemathesis")


def test_each_fuzzed_operation_has_a_distinct_test_id() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
         "tests/fuzz/test_schemathesis.py"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    fuzzed = [i for i in ids if "::test_api_as_documented" in i or "::test_api_deep" in i]
    assert len(fuzzed) >= 20, ids
    duplicates = {i: n for i, n in collections.Counter(ids).items() if n > 1}
    assert not duplicates
    assert any(i.endswith("test_api_deep[POST /v1/collections/{name}/query][deep]") for i in fuzzed), fuzzed
