"""Several byte ranges of one object, fetched concurrently with nearby ranges coalesced.

A query reads a few partitions of a segment; partitions stored next to each other are cheaper
as one range GET than as several (a request costs a round trip and is billed; a small gap of
unwanted bytes costs almost nothing).  ``plan_ranges`` decides which requests to send,
``get_ranges`` sends them in parallel and cuts the answers back into the ranges asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgspec

from tierdb.errors import invalid
from tierdb.storage.base import BlobStore
from tierdb.storage.local import range_not_satisfiable, validate_key, validate_range

# Ranges separated by at most this many bytes are read in one request.
DEFAULT_MAX_GAP = 64 * 1024


class Span(msgspec.Struct, frozen=True):
    """One request: bytes [start, end) covering the ranges at ``members`` (their indexes)."""

    start: int
    end: int
    members: tuple[int, ...]


def plan_ranges(
    key: str, ranges: Sequence[tuple[int, int]], max_gap: int = DEFAULT_MAX_GAP
) -> list[Span]:
    """The requests that read every non-empty range: ranges sorted by start, and merged when
    they overlap or the gap between them is at most ``max_gap`` bytes.  Empty ranges
    (``start == end``) need no request and belong to no span.  INVALID for a range that is
    not two integers with ``0 <= start <= end``, or a negative ``max_gap``."""
    if type(max_gap) is not int or max_gap < 0:
        raise invalid(f"max_gap must be a non-negative integer, got {max_gap!r}", key=key)
    spans: list[Span] = []
    order = sorted(
        (i for i, r in enumerate(_checked(key, ranges)) if r[0] < r[1]), key=lambda i: ranges[i]
    )
    for i in order:
        start, end = ranges[i]
        if spans and start - spans[-1].end <= max_gap:
            last = spans[-1]
            spans[-1] = Span(last.start, max(last.end, end), (*last.members, i))
        else:
            spans.append(Span(start, end, (i,)))
    return spans


async def get_ranges(
    store: BlobStore,
    key: str,
    ranges: Sequence[tuple[int, int]],
    *,
    max_gap: int = DEFAULT_MAX_GAP,
) -> list[bytes]:
    """The bytes of each ``(start, end)`` range of ``key``, in the order given.

    Same rules as ``BlobStore.get_range`` (an end past the object is clamped, a start at or
    past it is INVALID, a missing key NOT_FOUND), except that an empty range is allowed and
    answers ``b""`` without a request.  The requests of ``plan_ranges`` run concurrently; the
    first error is raised once all of them have finished.
    """
    spans = plan_ranges(key, ranges, max_gap)
    fetched = await asyncio.gather(
        *(store.get_range(key, span.start, span.end) for span in spans), return_exceptions=True
    )
    for result in fetched:
        if isinstance(result, BaseException):
            raise result
    out = [b""] * len(ranges)
    for span, data in zip(spans, fetched):
        for i in span.members:
            start, end = ranges[i]
            offset = start - span.start
            if offset >= len(data):  # the span was clamped: the object ends before this range
                raise range_not_satisfiable(key, start, end, span.start + len(data))
            out[i] = data[offset : end - span.start]
    return out


def _checked(key: str, ranges: Sequence[tuple[int, int]]) -> Sequence[tuple[int, int]]:
    validate_key(key)
    for r in ranges:
        if not isinstance(r, tuple) or len(r) != 2:
            raise invalid(f"a byte range of {key!r} must be a (start, end) tuple, got {r!r}", key=key)
        start, end = r
        if type(start) is int and type(end) is int and 0 <= start == end:
            continue  # empty: allowed here, answered without a request
        validate_range(key, start, end)
    return ranges
