"""The request limits, one set for every entry point, taken from the ``[server]`` settings.

The engine checks k and ef here too, so embedded mode and direct engine callers get the caps
the REST API has always had (before, the engine alone allowed k up to 10 000 and ef up to
100 000).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..errors import invalid, too_large

# hnswlib's ef at query time; the same bound as hnsw.ef_search (models.HnswParams).
MAX_EF = 4096
# Partitions a query may probe per partitioned segment (s3_only); beyond this a query reads
# most of a 1M-row segment and should be an export instead.
MAX_NPROBE = 4096


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Limits:
    max_k: int
    max_batch: int
    max_query_vectors: int
    max_dimension: int
    max_ef: int = MAX_EF
    max_nprobe: int = MAX_NPROBE

    @classmethod
    def of(cls, settings: Settings) -> "Limits":
        server = settings.server
        return cls(
            max_k=server.max_k,
            max_batch=server.max_batch,
            max_query_vectors=server.max_query_vectors,
            max_dimension=server.max_dimension,
        )

    def check_k(self, k: Any) -> None:
        if not _is_int(k) or not 1 <= k <= self.max_k:
            raise invalid(f"k must be between 1 and {self.max_k} (server.max_k), got {k!r}", field="k")

    def check_ef(self, ef: Any) -> None:
        if ef is not None and (not _is_int(ef) or not 1 <= ef <= self.max_ef):
            raise invalid(f"ef must be between 1 and {self.max_ef}, got {ef!r}", field="ef")

    def check_nprobe(self, nprobe: Any) -> None:
        if nprobe is not None and (not _is_int(nprobe) or not 1 <= nprobe <= self.max_nprobe):
            raise invalid(f"nprobe must be between 1 and {self.max_nprobe}, got {nprobe!r}", field="nprobe")

    def check_batch(self, what: str, count: int) -> None:
        """Documents per upsert, ids per get or delete."""
        _check_count(what, count, self.max_batch, "server.max_batch")

    def check_query_vectors(self, what: str, count: int) -> None:
        _check_count(what, count, self.max_query_vectors, "server.max_query_vectors")

    def check_dimension(self, dimension: int) -> None:
        if dimension > self.max_dimension:
            raise invalid(
                f"dimension {dimension} exceeds this server's limit of {self.max_dimension} (server.max_dimension)",
                field="dimension",
            )


def _check_count(what: str, count: int, limit: int, setting: str) -> None:
    """Too many items in one request is a 413 naming the limit and the setting that controls it."""
    if count > limit:
        raise too_large(
            f"{what} has {count} entries; the limit is {limit} per request ({setting})", field=what, limit=limit
        )
