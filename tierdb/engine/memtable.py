"""The memtable: recent writes in RAM, append-only, searched by brute force."""

from __future__ import annotations

import time

import numpy as np

from . import vectors as vec
from .rows import RowSource

_INITIAL_CAPACITY = 1024
# Rough per-row overhead of the id string, list slots and metadata dict, for threshold_bytes.
_ROW_OVERHEAD_BYTES = 200


class Memtable(RowSource):
    def __init__(self, metric: str, dimension: int) -> None:
        super().__init__(metric, dimension)
        self.metadata: list[dict | None] = []
        self._raw = np.empty((_INITIAL_CAPACITY, dimension), np.float32)
        self._norms = np.empty(_INITIAL_CAPACITY, np.float32)
        self._alive = np.zeros(_INITIAL_CAPACITY, bool)
        self._n = 0
        self.ops = 0                      # documents upserted or deleted here
        self.approx_bytes = 0
        self.first_seq = 0                # first WAL seq applied here (0 = none yet)
        self.last_seq = 0
        self.created_monotonic = time.monotonic()

    def size(self) -> int:
        return self._n

    def alive_mask(self) -> np.ndarray:
        return self._alive[: self._n]

    def raw_vectors(self) -> np.ndarray:
        return self._raw[: self._n]

    def row_norms(self) -> np.ndarray:
        return self._norms[: self._n]

    def _kill_row(self, row: int) -> None:
        self._alive[row] = False

    def note_op(self, seq: int, documents: int, nbytes: int) -> None:
        """Count a WAL record: ``ops`` counts documents written or deleted (threshold_ops)."""
        if not self.first_seq:
            self.first_seq = seq
        self.last_seq = seq
        self.ops += documents
        self.approx_bytes += nbytes

    def append(self, ids: list[str], matrix: np.ndarray, metadata: list[dict | None]) -> int:
        """Append rows; returns the first new row number."""
        start = self._n
        end = start + len(ids)
        if end > len(self._raw):
            self._grow(end)
        self._raw[start:end] = matrix
        self._norms[start:end] = vec.norms(matrix)
        self._alive[start:end] = True
        self.ids.extend(ids)
        self.metadata.extend(metadata)
        self._n = end
        self.approx_bytes += matrix.nbytes + _ROW_OVERHEAD_BYTES * len(ids)
        return start

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * len(self._raw))
        raw = np.empty((capacity, self.dimension), np.float32)
        raw[: self._n] = self._raw[: self._n]
        norms = np.empty(capacity, np.float32)
        norms[: self._n] = self._norms[: self._n]
        alive = np.zeros(capacity, bool)
        alive[: self._n] = self._alive[: self._n]
        self._raw, self._norms, self._alive = raw, norms, alive

    def live_rows(self, dead_after_seq: int | None = None) -> np.ndarray:
        """Rows alive now, plus rows that died after ``dead_after_seq`` when given."""
        alive = self._alive[: self._n].copy()
        if dead_after_seq is not None:
            for row, seq in self.death_seq.items():
                if seq > dead_after_seq:
                    alive[row] = True
        return np.flatnonzero(alive)
