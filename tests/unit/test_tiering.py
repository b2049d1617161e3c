"""Placement as data: the policy is decided in tiering.py, and nowhere else compares policy names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tierdb
from tierdb.config import Settings
from tierdb.errors import ErrorKind, TierDBError
from tierdb.tiering import POLICIES, Stores, WalKind, normalize_policy, placement, policy_of

LOCAL, REMOTE, CACHED = object(), object(), object()
STORES = Stores(local=LOCAL, remote=REMOTE, disk_cached=lambda name: CACHED)
SETTINGS = Settings()


def test_memory_keeps_everything_local_and_runs_no_worker():
    place = placement(POLICIES["memory"], STORES, SETTINGS, "docs")
    assert (place.wal, place.segment_store, place.disk_cache, place.ram_cache_bytes) == (WalKind.LOCAL, LOCAL, None, None)
    assert (place.uploader, place.remote_gc, place.group_commit_secs) == (False, False, 0.0)


def test_memory_s3_ships_the_local_copy_and_collects_s3_garbage():
    place = placement(POLICIES["memory_s3"], STORES, SETTINGS, "docs")
    assert (place.wal, place.segment_store, place.disk_cache, place.ram_cache_bytes) == (WalKind.LOCAL, LOCAL, None, None)
    assert (place.uploader, place.remote_gc) == (True, True)
    assert place.policy.restores_to_disk


def test_s3_only_reads_through_the_caches_and_group_commits_wal_puts():
    place = placement(POLICIES["s3_only"], STORES, SETTINGS, "docs")
    assert (place.wal, place.segment_store, place.disk_cache) == (WalKind.S3, CACHED, CACHED)
    assert place.ram_cache_bytes == SETTINGS.cache.ram_bytes
    assert place.group_commit_secs == SETTINGS.uploader.group_commit_ms / 1000
    assert (place.uploader, place.remote_gc, place.policy.restores_to_disk) == (False, True, False)


@pytest.mark.parametrize("policy", ["memory_s3", "s3_only"])
def test_a_policy_that_needs_s3_on_a_node_without_s3_is_a_400_naming_the_fix(policy):
    with pytest.raises(TierDBError) as caught:
        placement(POLICIES[policy], Stores(local=LOCAL, remote=None, disk_cached=lambda n: CACHED), SETTINGS, "docs")
    assert caught.value.kind is ErrorKind.INVALID and "s3.bucket" in caught.value.message


def test_seed_spellings_are_aliases_and_unknown_names_are_rejected():
    assert [normalize_policy(n) for n in ("Memory", "MemoryS3", "S3Only")] == ["memory", "memory_s3", "s3_only"]
    assert policy_of("S3Only") is POLICIES["s3_only"]
    with pytest.raises(TierDBError) as caught:
        normalize_policy("disk")
    assert caught.value.kind is ErrorKind.INVALID and "memory, memory_s3, s3_only" in caught.value.message


def _policy_literals(path: Path) -> list[str]:
    """String constants equal to a policy name or alias, docstrings left out."""
    names = set(POLICIES) | {"Memory", "MemoryS3", "S3Only"}
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        f"{path}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings
    ]


def test_no_module_but_tiering_names_a_policy():
    """tierdb/testing/ is exempt: test fixtures choose a policy the way a config file does."""
    root = Path(tierdb.__file__).parent
    found = [
        hit
        for path in sorted(root.rglob("*.py"))
        if path.name != "tiering.py" and "testing" not in path.relative_to(root).parts
        for hit in _policy_literals(path)
    ]
    assert found == []


def test_only_local_segments_grow_on_flush():
    """A grown segment is rewritten whole: where segments go to S3 that would re-upload it on
    every flush, so only the memory policy grows on flush."""
    assert {name: policy.grows_on_flush for name, policy in POLICIES.items()} == {
        "memory": True, "memory_s3": False, "s3_only": False,
    }
