"""Compaction decisions as pure functions: when to flush the memtable, which segments to merge."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import CompactionSettings


@dataclass(frozen=True)
class MemtableState:
    ops: int
    approx_bytes: int
    age_secs: float


@dataclass(frozen=True)
class SegmentState:
    id: str
    rows: int
    live_rows: int
    indexed: bool = True


def should_flush(m: MemtableState, settings: CompactionSettings) -> str | None:
    """The reason to flush now, or None."""
    if m.ops == 0:
        return None
    if m.ops >= settings.threshold_ops:
        return "ops"
    if m.approx_bytes >= settings.threshold_bytes:
        return "bytes"
    if m.age_secs >= settings.max_age_secs:
        return "age"
    return None


def plan_merge(segments: list[SegmentState], settings: CompactionSettings, *, full: bool = False,
               max_rows: int | None = None) -> list[str]:
    """Ids of the segments to merge into one, or [] for nothing to do.

    Size-tiered: segments fall into tiers by live rows (powers of 4); the first tier holding
    ``merge_min_segments`` segments is merged, capped at ``merge_max_rows``.  A segment whose dead
    fraction passes ``rebuild_dead_fraction`` is rewritten on its own to purge them.  ``full`` merges
    everything that has more than one segment or any dead row.  ``max_rows`` (partitioned
    segments) caps every merge, full ones too: the smallest segments first, up to that many rows.
    """
    if full and max_rows is not None:
        chosen, rows = [], 0
        for seg in sorted(segments, key=lambda s: s.live_rows):
            if chosen and rows + seg.live_rows > max_rows:
                break
            chosen.append(seg)
            rows += seg.live_rows
        if len(chosen) > 1 or any(s.live_rows < s.rows for s in chosen):
            return [s.id for s in chosen]
        dead = [s for s in segments if s.live_rows < s.rows]
        return [dead[0].id] if dead else []
    if full:
        if len(segments) > 1 or any(s.live_rows < s.rows for s in segments):
            return [s.id for s in segments]
        return []
    if max_rows is not None:
        return _fill_to(segments, settings, max_rows)
    tiers: dict[int, list[SegmentState]] = {}
    for seg in sorted(segments, key=lambda s: s.live_rows):
        tiers.setdefault(int(math.log(max(seg.live_rows, 1), 4)), []).append(seg)
    for tier in sorted(tiers):
        members = tiers[tier]
        if len(members) >= settings.merge_min_segments:
            chosen, rows = [], 0
            for seg in members:
                if rows + seg.live_rows > settings.merge_max_rows and chosen:
                    break
                chosen.append(seg.id)
                rows += seg.live_rows
            if len(chosen) > 1:
                return chosen
    for seg in segments:
        if seg.rows and too_dead_to_grow(seg, settings):
            return [seg.id]
    return []


def _fill_to(segments: list[SegmentState], settings: CompactionSettings, max_rows: int) -> list[str]:
    """Partitioned segments: merge the smallest segments together, as many as fit in
    ``max_rows``, once ``merge_min_segments`` of them do.  Segments fill up to the cap instead of
    stopping at a power-of-4 tier below it: an IVF query's recall at a given number of probed
    partitions falls with every extra segment (each is clustered on its own), so fewer, fuller
    segments beat the tiers' lower write amplification here."""
    chosen, rows = [], 0
    for seg in sorted(segments, key=lambda s: s.live_rows):
        if rows + seg.live_rows > max_rows:
            break
        chosen.append(seg.id)
        rows += seg.live_rows
    if len(chosen) >= max(settings.merge_min_segments, 2):
        return chosen
    for seg in segments:
        if seg.rows and too_dead_to_grow(seg, settings):
            return [seg.id]
    return []


def too_dead_to_grow(seg: SegmentState, settings: CompactionSettings) -> bool:
    return seg.rows - seg.live_rows > settings.rebuild_dead_fraction * seg.rows


def growth_base(segments: list[SegmentState], settings: CompactionSettings) -> str | None:
    """The segment whose index a merge of ``segments`` grows instead of building a new one:
    the largest indexed segment, keeping its dead rows as tombstones.  None (build from scratch)
    when there is nothing to add to it or its dead fraction passes ``rebuild_dead_fraction``."""
    if len(segments) < 2:
        return None  # a lone segment is merged only to purge its dead rows
    base = max(segments, key=lambda s: (s.indexed, s.rows))
    if not base.indexed or too_dead_to_grow(base, settings):
        return None
    return base.id


def flush_growth_base(
    segments: list[SegmentState], flush_rows: int, index_threshold: int, settings: CompactionSettings
) -> str | None:
    """The segment a flush of ``flush_rows`` rows grows instead of writing a segment of its own,
    or None.  Growing inserts each row into the index once; a segment of its own would index
    the rows now and again when a merge adds them to a larger one.  It costs a copy of the
    grown segment, so only while that segment has at most ``flush_grow_ratio`` rows per flushed
    row.  Flushes too small for an index of their own stay separate (they cost no indexing)."""
    if settings.flush_grow_ratio <= 0 or flush_rows < max(index_threshold, 1):
        return None
    fits = [
        s for s in segments
        if s.indexed
        and not too_dead_to_grow(s, settings)
        and s.rows + flush_rows <= settings.merge_max_rows
        and s.rows <= settings.flush_grow_ratio * flush_rows
    ]
    return max(fits, key=lambda s: s.rows).id if fits else None
