from tierdb.config import CompactionSettings
from tierdb.engine.compaction import MemtableState, SegmentState, plan_merge, should_flush

SETTINGS = CompactionSettings(threshold_ops=100, threshold_bytes=1000, max_age_secs=60, merge_min_segments=3, merge_max_rows=10_000)


def test_flush_reasons():
    assert should_flush(MemtableState(0, 10**9, 10**9), SETTINGS) is None
    assert should_flush(MemtableState(100, 0, 0), SETTINGS) == "ops"
    assert should_flush(MemtableState(1, 1000, 0), SETTINGS) == "bytes"
    assert should_flush(MemtableState(1, 0, 61), SETTINGS) == "age"
    assert should_flush(MemtableState(99, 999, 59), SETTINGS) is None


def seg(i, rows, live=None):
    return SegmentState(f"s{i}", rows, rows if live is None else live)


def test_merges_a_full_tier_only():
    assert plan_merge([seg(1, 100), seg(2, 110), seg(3, 5000)], SETTINGS) == []
    assert sorted(plan_merge([seg(1, 100), seg(2, 110), seg(3, 120), seg(4, 5000)], SETTINGS)) == ["s1", "s2", "s3"]


def test_respects_max_rows():
    chosen = plan_merge([seg(i, 4000) for i in range(4)], SETTINGS)
    assert len(chosen) == 2


def test_rewrites_mostly_dead_segment():
    assert plan_merge([seg(1, 1000, live=400)], SETTINGS) == ["s1"]


def test_full_merges_everything_unless_already_clean():
    assert sorted(plan_merge([seg(1, 10), seg(2, 5000)], SETTINGS, full=True)) == ["s1", "s2"]
    assert plan_merge([seg(1, 10)], SETTINGS, full=True) == []
    assert plan_merge([seg(1, 10, live=9)], SETTINGS, full=True) == ["s1"]


def test_rewrites_a_segment_once_its_dead_fraction_passes_rebuild_threshold():
    assert plan_merge([seg(1, 1000, live=810)], SETTINGS) == []   # 19% dead: tombstones stay
    assert plan_merge([seg(1, 1000, live=790)], SETTINGS) == ["s1"]  # 21% dead: rebuilt


def test_growth_base_is_the_largest_indexed_segment_unless_too_dead():
    from tierdb.engine.compaction import growth_base

    assert growth_base([seg(1, 100), seg(2, 5000), seg(3, 300)], SETTINGS) == "s2"
    assert growth_base([seg(1, 100), seg(2, 5000, live=3900)], SETTINGS) is None  # 22% dead: rebuild
    assert growth_base([seg(1, 100), seg(2, 5000, live=4100)], SETTINGS) == "s2"  # 18% dead: grow
    big_unindexed = SegmentState("s2", 5000, 5000, indexed=False)
    assert growth_base([seg(1, 100), big_unindexed], SETTINGS) == "s1"
    assert growth_base([SegmentState("a", 10, 10, False), SegmentState("b", 20, 20, False)], SETTINGS) is None
    assert growth_base([seg(1, 5000)], SETTINGS) is None  # a lone segment is merged only to purge


def test_flush_grows_the_largest_indexed_segment_that_fits():
    from tierdb.engine.compaction import flush_growth_base

    settings = CompactionSettings(merge_max_rows=10_000, flush_grow_ratio=10)
    segs = [seg(1, 900), seg(2, 2000), SegmentState("big-unindexed", 5000, 5000, indexed=False)]
    assert flush_growth_base(segs, 200, 100, settings) == "s2"          # 2000 <= 10 x 200
    assert flush_growth_base(segs, 150, 100, settings) == "s1"          # 2000 > 10 x 150
    assert flush_growth_base(segs, 50, 100, settings) is None           # below index.threshold
    assert flush_growth_base([seg(1, 9900)], 1000, 100, settings) is None  # would pass merge_max_rows
    assert flush_growth_base([seg(1, 1000, live=700)], 200, 100, settings) is None  # too dead
    off = CompactionSettings(flush_grow_ratio=0)
    assert flush_growth_base(segs, 200, 100, off) is None


def test_partitioned_segments_fill_up_to_the_cap():
    # tiers would stop at 4 x 40 = 160 rows; filling merges the smallest while they fit in 250
    segments = [seg(1, 160), seg(2, 40), seg(3, 30), seg(4, 20), seg(5, 240)]
    assert plan_merge(segments, SETTINGS, max_rows=250) == ["s4", "s3", "s2", "s1"]           # 20+30+40+160 = 250
    assert plan_merge([seg(1, 200), seg(2, 100), seg(3, 240)], SETTINGS, max_rows=250) == []   # nothing fits together
    assert plan_merge([seg(1, 100), seg(2, 100)], SETTINGS, max_rows=250) == []               # fewer than merge_min_segments
    assert plan_merge([seg(1, 100, live=20)], SETTINGS, max_rows=250) == ["s1"]               # purge a mostly dead one


def test_full_merges_of_partitioned_segments_stop_at_the_cap():
    chosen = plan_merge([seg(i, 100) for i in range(5)], SETTINGS, full=True, max_rows=250)
    assert len(chosen) == 2
    assert plan_merge([seg(1, 240), seg(2, 240)], SETTINGS, full=True, max_rows=250) == []
