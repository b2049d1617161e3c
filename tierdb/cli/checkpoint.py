"""The resumable state of an import: which import it is and how many rows the server acknowledged.

After each acknowledged batch the row count is saved atomically in a checkpoint file
(``FILE.tierdb-import.json``, or under ``~/.cache/tierdb/imports`` when the input's directory is
read-only).  A rerun of the same command continues after the last acknowledged batch; a
checkpoint written for other inputs, another collection or another server is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .readers import Source

CHECKPOINT_SUFFIX = ".tierdb-import.json"
CHECKPOINT_VERSION = 1


def default_checkpoint(path: Path) -> Path:
    """``FILE.tierdb-import.json`` next to the input, or in the user's cache directory when the
    input's directory is not writable (a shared, read-only dataset)."""
    beside = path.with_name(path.name + CHECKPOINT_SUFFIX)
    if os.access(path.parent, os.W_OK):
        return beside
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tierdb" / "imports"
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return cache / f"{path.name}-{digest}{CHECKPOINT_SUFFIX}"


def _fingerprint(files: list[Path]) -> list[dict[str, Any]]:
    out = []
    for f in files:
        st = f.stat()
        out.append({"path": str(f.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


@dataclass
class Checkpoint:
    """What a rerun needs to continue: which import this was and how many rows are acknowledged."""

    path: Path
    identity: dict[str, Any]
    rows_done: int = 0

    def load(self) -> tuple[int, str | None]:
        """(rows to skip, why an existing checkpoint is ignored or None)."""
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return 0, None
        except (OSError, ValueError) as exc:
            return 0, f"unreadable checkpoint {self.path} ({exc}); starting from the first row"
        if not isinstance(saved, dict) or saved.get("version") != CHECKPOINT_VERSION:
            return 0, f"checkpoint {self.path} has an unknown format; starting from the first row"
        for key, value in self.identity.items():
            if saved.get(key) != value:
                return 0, f"checkpoint {self.path} is for a different {key.replace('_', ' ')}; starting from the first row"
        rows = saved.get("rows_done")
        if not isinstance(rows, int) or rows < 0:
            return 0, f"checkpoint {self.path} is damaged; starting from the first row"
        self.rows_done = rows
        return rows, None

    def save(self, rows_done: int) -> None:
        """Atomically record ``rows_done`` (write a temporary file, then rename it over)."""
        self.rows_done = rows_done
        payload = {"version": CHECKPOINT_VERSION, **self.identity, "rows_done": rows_done, "updated_at": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def import_identity(source: Source, collection: str, url: str, limit: int | None) -> dict[str, Any]:
    return {"collection": collection, "url": url, "inputs": _fingerprint(source.files), "limit": limit}
