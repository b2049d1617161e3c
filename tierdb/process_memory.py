"""The process's memory as the OS sees it: hand freed heap back (glibc keeps it otherwise) and
serve large buffers by their own mmap so that freeing them returns them at once.

A base module (imports nothing of TierDB), so the engine can trim after a flush or merge and the
composition root at start and close.
"""

from __future__ import annotations

from typing import Any


def release_freed_memory(collect: bool = True) -> None:
    """Return freed heap pages to the OS (glibc keeps them otherwise: RSS would stay at its
    peak after a big engine is closed or a big segment built).  ``collect`` runs a full garbage
    collection first (at close; not after every flush, where it would hold the GIL for long).
    No-op where malloc_trim does not exist."""
    import gc

    if collect:
        gc.collect()
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)


# glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
LARGE_ALLOCATION_BYTES = 1024 * 1024


def return_large_buffers_to_the_os() -> None:
    """Serve every allocation of 1 MiB or more by its own mmap, released to the OS when freed.

    A query of an s3_only collection reads megabytes of partitions, a flush or merge builds a
    segment of hundreds of MB; by default glibc raises its mmap threshold after such buffers are
    freed and keeps the next ones in the heap, so RSS stays at the peak of every past query and
    build instead of the RAM budget.  Two arenas bound the heap fragmentation of the worker
    threads.  No-op where mallopt does not exist (not glibc)."""
    mallopt = _glibc("mallopt")
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, LARGE_ALLOCATION_BYTES)
        mallopt(_M_ARENA_MAX, 2)


def _glibc(function: str) -> Any:
    """A glibc function, or None where the C library lacks it (musl, macOS)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return getattr(ctypes.CDLL(name), function)
    except (OSError, AttributeError):
        return None
