"""How every command reports: results on stdout (JSON with ``--json``), notices and errors on
stderr, so stdout stays parseable."""

from __future__ import annotations

import json
import sys
from typing import Any


def fail(as_json: bool, code: int, kind: str, message: str, **extra: Any) -> int:
    """Report an error (stderr; also stdout as JSON with ``--json``) and return its exit code."""
    print(f"error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": kind, "message": message, "exit_code": code, **extra}))
    return code


def emit(as_json: bool, payload: Any, human: str) -> None:
    print(json.dumps(payload, indent=2) if as_json else human)


def note(line: str) -> None:
    """Progress and notices go to stderr, so stdout stays parseable (``--json``)."""
    print(line, file=sys.stderr, flush=True)
