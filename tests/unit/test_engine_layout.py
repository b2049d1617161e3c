"""Issue 10 layout rules for the collection and the WAL: small modules, one WAL protocol that
both logs satisfy, and FENCED errors made in one place."""

from __future__ import annotations

import inspect
import pathlib
import re

from tierdb.engine import collection, collection_state, maintenance, reads, recovery, validation, writes
from tierdb.engine.wal import LocalWal, S3Wal, Wal
from tierdb.engine.wal import format as wal_format, local, protocol, s3, tail
from tierdb.storage.memory import MemoryStore

PACKAGE = pathlib.Path(collection.__file__).resolve().parents[1]
MAX_LINES = 500


def test_collection_and_wal_modules_are_small():
    modules = [collection, collection_state, maintenance, reads, recovery, validation, writes,
               wal_format, local, protocol, s3, tail]
    sizes = {m.__name__: len(inspect.getsource(m).splitlines()) for m in modules}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_both_logs_satisfy_the_wal_protocol(tmp_path):
    methods = {name for name in dir(Wal) if not name.startswith("_")}
    members = methods | set(Wal.__annotations__)
    assert members >= {"scan", "append", "rotate", "open_for_append", "remove_covered", "close", "bytes_total"}
    for log in (LocalWal(str(tmp_path)), S3Wal(MemoryStore(), "c", loop=None)):  # type: ignore[arg-type]
        assert {name for name in members if not hasattr(log, name)} == set(), type(log).__name__
        for name in methods:
            wanted = list(inspect.signature(getattr(Wal, name)).parameters)[1:]
            assert list(inspect.signature(getattr(log, name)).parameters) == wanted, (type(log).__name__, name)


def test_fenced_errors_are_made_only_in_errors_py():
    """Comparisons (``kind is ErrorKind.FENCED``) are fine anywhere; constructing one is not."""
    makers = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"ErrorKind\.FENCED\b", line) and not re.search(r"(\bis(\s+not)?|==|!=|\bin)\s+ErrorKind\.FENCED", line):
                makers.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert makers == []
