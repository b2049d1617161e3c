"""tierdb.logging_setup: JSON/text formats, context fields, request id sanitizing."""

from __future__ import annotations

import json
import logging

import pytest

from tierdb.config import LogSettings
from tierdb.logging_setup import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    collection_var,
    configure_logging,
    request_id_for_scope,
    request_id_var,
    sanitize_request_id,
)


def record(message: str = "hello %s", args: tuple = ("world",), **extra) -> logging.LogRecord:
    rec = logging.LogRecord("tierdb.test", logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    ContextFilter().filter(rec)
    return rec


def test_json_lines_carry_context_and_extra_fields() -> None:
    rid, coll = request_id_var.set("req-1"), collection_var.set("docs")
    try:
        line = JsonFormatter().format(record(duration_ms=1.5, rows=3))
    finally:
        request_id_var.reset(rid)
        collection_var.reset(coll)
    entry = json.loads(line)
    assert entry["message"] == "hello world"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "tierdb.test"
    assert entry["request_id"] == "req-1"
    assert entry["collection"] == "docs"
    assert entry["duration_ms"] == 1.5 and entry["rows"] == 3
    assert entry["timestamp"].endswith("Z")


def test_explicit_extra_beats_the_context() -> None:
    token = request_id_var.set("from-context")
    try:
        entry = json.loads(JsonFormatter().format(record(request_id="explicit")))
    finally:
        request_id_var.reset(token)
    assert entry["request_id"] == "explicit"


def test_json_includes_the_traceback_and_encodes_odd_values() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    rec.path = object()
    ContextFilter().filter(rec)
    entry = json.loads(JsonFormatter().format(rec))
    assert "ValueError: boom" in entry["exception"]
    assert entry["path"].startswith("<object")


def test_text_format_is_one_readable_line() -> None:
    token = request_id_var.set("abc")
    try:
        line = TextFormatter().format(record(status=200))
    finally:
        request_id_var.reset(token)
    assert "INFO tierdb.test [req=abc] hello world status=200" in line


@pytest.mark.parametrize(
    ("value", "expected"),
    [("abc", "abc"), ("A.b-c_9", "A.b-c_9"), ("x" * 128, "x" * 128), ("x" * 129, None), ("a b", None),
     ("a\nb", None), ("", None), (None, None), ("ü", None)],
)
def test_sanitize_request_id(value, expected) -> None:
    assert sanitize_request_id(value) == expected


def test_request_id_for_scope_is_stable_and_honours_the_header() -> None:
    scope = {"type": "http", "headers": [(b"x-request-id", b"given-1")]}
    assert request_id_for_scope(scope) == "given-1"
    fresh = {"type": "http", "headers": [(b"x-request-id", b"bad id!")]}
    first = request_id_for_scope(fresh)
    assert first != "bad id!" and len(first) == 32
    assert request_id_for_scope(fresh) == first


def test_configure_logging_writes_json_to_a_rotating_file(tmp_path) -> None:
    path = tmp_path / "tierdb.log"
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        configure_logging(LogSettings(level="INFO", format="json", file=str(path)))
        configure_logging(LogSettings(level="INFO", format="json", file=str(path)))  # idempotent
        logging.getLogger("tierdb.test").info("to the file", extra={"k": "v"})
        for handler in root.handlers:
            handler.flush()
        lines = path.read_text().splitlines()
        assert len(lines) == 1
        assert json.loads(lines[0])["k"] == "v"
    finally:
        for handler in list(root.handlers):
            if getattr(handler, "_tierdb", False):
                root.removeHandler(handler)
                handler.close()
        for handler in before[0]:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(before[1])
