from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from tierdb.errors import TierDBError
from tierdb.engine.filters import compile_filter

DOCS = [
    {"genre": "jazz", "year": 1959, "tags": ["a"], "author": {"name": "Ada"}},
    {"genre": "rock", "year": 1991, "draft": True},
    {"genre": "jazz", "year": 2001.5},
    {"year": "1990"},
    None,
]


def matches(spec):
    predicate = compile_filter(spec)
    return [i for i, d in enumerate(DOCS) if predicate(d)]


@pytest.mark.parametrize(
    "spec,expected",
    [
        ({"genre": "jazz"}, [0, 2]),
        ({"genre": {"$eq": "jazz"}}, [0, 2]),
        ({"genre": {"$ne": "jazz"}}, [1, 3, 4]),
        ({"genre": {"$in": ["rock", "pop"]}}, [1]),
        ({"genre": {"$nin": ["rock"]}}, [0, 2, 3, 4]),
        ({"year": {"$gt": 1959}}, [1, 2]),
        ({"year": {"$gte": 1959, "$lt": 2000}}, [0, 1]),
        ({"year": {"$lte": "2000"}}, [3]),
        ({"$or": [{"genre": "rock"}, {"year": {"$gt": 2000}}]}, [1, 2]),
        ({"$and": [{"genre": "jazz"}, {"year": {"$lt": 2000}}]}, [0]),
        ({"genre": "jazz", "year": 1959}, [0]),
        ({"author.name": "Ada"}, [0]),
        ({"draft": {"$exists": True}}, [1]),
        ({"draft": True}, [1]),
        ({"year": 1959.0}, [0]),
        ({"tags": ["a"]}, [0]),
    ],
)
def test_operators(spec, expected):
    assert matches(spec) == expected


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"a": {"$regex": "x"}}, "unknown operator '$regex'"),
        ({"$not": {"a": 1}}, "unknown operator '$not'"),
        ({"$and": {}}, "non-empty list"),
        ({"a": {"$in": 3}}, "expected a list"),
        ({"a": {"$gt": [1]}}, "number or a string"),
        ({"a": {"$gt": True}}, "number or a string"),
        ({"a": {"$exists": 1}}, "true or false"),
        ([], "must be a JSON object"),
        ({}, "empty filter"),
    ],
)
def test_bad_filters_name_the_problem(spec, message):
    with pytest.raises(TierDBError) as err:
        compile_filter(spec)
    assert message in err.value.message


values = st.one_of(st.integers(-5, 5), st.sampled_from(["a", "b", "c"]), st.booleans(), st.none())
docs_strategy = st.lists(st.dictionaries(st.sampled_from(["x", "y"]), values, max_size=2), max_size=20)


@given(docs_strategy, st.integers(-5, 5))
@settings(max_examples=200, deadline=None)
def test_range_is_complement_of_its_negation_on_numbers(docs, pivot):
    gt = compile_filter({"x": {"$gt": pivot}})
    lte = compile_filter({"x": {"$lte": pivot}})
    for d in docs:
        x = d.get("x")
        is_number = isinstance(x, int) and not isinstance(x, bool)
        assert gt(d) == (is_number and x > pivot)
        assert (gt(d) or lte(d)) == is_number


@given(docs_strategy, values)
@settings(max_examples=200, deadline=None)
def test_eq_and_ne_partition_documents(docs, value):
    eq = compile_filter({"y": {"$eq": value}})
    ne = compile_filter({"y": {"$ne": value}})
    or_ = compile_filter({"$or": [{"y": {"$eq": value}}, {"y": {"$ne": value}}]})
    for d in docs:
        assert eq(d) != ne(d)
        assert or_(d)


# -- hostile filters (issue 9 items 5, 6): a clear 400, never a crash ---------------------------


@pytest.mark.parametrize("spec", [
    {"a": {1: "x", "b": 2}},           # mixed key types in a literal: filter_key could not sort them
    {"a": {"$in": [{"b": 1, None: 2}]}},
    {"$or": [{3: 1}]},
    {"a": {"$eq": 1, (1,): 2}},
    {"a": {"$eq": float("nan")}},
    {"a": {"$gt": float("inf")}},
    {"a": b"bytes"},
])
def test_literals_follow_the_metadata_rule(spec) -> None:
    with pytest.raises(TierDBError) as excinfo:
        compile_filter(spec)
    assert excinfo.value.kind.value == "invalid"
    assert excinfo.value.message.startswith("filter")


def test_depth_counts_every_object_and_array() -> None:
    assert compile_filter({"a": [[1]]}, max_depth=3)({"a": [[1]]})
    for spec in ({"a": [[[1]]]}, {"$and": [{"a": 1}]}, {"a": {"$in": [[1]]}}):
        with pytest.raises(TierDBError, match="deeper than 2 levels .*server.max_nesting_depth"):
            compile_filter(spec, max_depth=2)
    deep: dict = {"a": 1}
    for _ in range(5000):
        deep = {"$or": [deep]}
    with pytest.raises(TierDBError, match="deeper than 64 levels"):
        compile_filter(deep)


def test_filter_key_is_canonical_for_valid_filters() -> None:
    from tierdb.engine.filters import filter_key

    assert filter_key({"b": {"$in": [1, 2]}, "a": 1}) == filter_key({"a": 1, "b": {"$in": [1, 2]}})
