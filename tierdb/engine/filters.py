"""The metadata filter language, compiled once into a predicate.

    {"genre": "jazz"}                              equality (same as {"genre": {"$eq": "jazz"}})
    {"year": {"$gte": 1990, "$lt": 2000}}          several operators on one field are ANDed
    {"tag": {"$in": ["a", "b"]}}  {"tag": {"$nin": [...]}}
    {"lang": {"$ne": "en"}}                        also matches documents without the field
    {"$and": [f1, f2]}  {"$or": [f1, f2]}          several top-level keys are ANDed
    {"author.name": "Ada"}                         dotted paths reach into nested objects
    {"draft": {"$exists": false}}

Comparisons ($gt/$gte/$lt/$lte) need a number or a string; a document whose value has another
type simply does not match.  Booleans are not numbers.  Unknown operators are a 400 error.
Literals follow the metadata rule (models.check_json_value: string keys, JSON values only), and
the whole filter may nest at most ``max_depth`` objects/arrays (server.max_nesting_depth), the
filter object itself being level 1, so ``{"$and": [{...}]}`` uses three levels.
"""

from __future__ import annotations

import json
import operator
from typing import Any, Callable

from ..errors import invalid
from ..models import DEFAULT_MAX_NESTING_DEPTH, NESTING_SETTING, check_json_value

Predicate = Callable[[dict[str, Any] | None], bool]

_MISSING = object()
_ORDER_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
FIELD_OPERATORS = ("$eq", "$ne", "$in", "$nin", "$exists", *_ORDER_OPS)
LOGICAL_OPERATORS = ("$and", "$or")


def compile_filter(spec: Any, max_depth: int = DEFAULT_MAX_NESTING_DEPTH) -> Predicate:
    """Validate a filter and return a predicate over a document's metadata."""
    return _Compiler(max_depth).compile(spec, "filter", 1)


def filter_key(spec: Any) -> str:
    """A canonical string for caching per-filter results; ``spec`` must have passed compile_filter
    (string keys only, or sort_keys could not order them)."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


class _Compiler:
    """``depth`` arguments are the nesting level of the object or array being compiled."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth

    def compile(self, spec: Any, where: str, depth: int) -> Predicate:
        self._check_depth(where, depth)
        if not isinstance(spec, dict):
            raise invalid(f"{where}: a filter must be a JSON object, got {_type_name(spec)}")
        if not spec:
            raise invalid(f"{where}: empty filter object")
        _check_keys(spec, where)
        parts = [self._entry(key, value, where, depth) for key, value in spec.items()]
        return parts[0] if len(parts) == 1 else lambda md: all(p(md) for p in parts)

    def _check_depth(self, where: str, depth: int) -> None:
        if depth > self.max_depth:
            raise invalid(
                f"{where}: filter nested deeper than {self.max_depth} levels of objects/arrays ({NESTING_SETTING})",
                field=where, limit=self.max_depth,
            )

    def _literal(self, value: Any, where: str, depth: int) -> None:
        """``value`` sits inside a container at level ``depth``."""
        if isinstance(value, dict) and any(isinstance(k, str) and k.startswith("$") for k in value):
            raise invalid(f"{where}: operators are not allowed here")
        check_json_value(value, where, self.max_depth, depth)

    def _entry(self, key: str, value: Any, where: str, depth: int) -> Predicate:
        if key in LOGICAL_OPERATORS:
            if not isinstance(value, list) or not value:
                raise invalid(f"{where}.{key}: expected a non-empty list of filters")
            self._check_depth(f"{where}.{key}", depth + 1)
            subs = [self.compile(v, f"{where}.{key}[{i}]", depth + 2) for i, v in enumerate(value)]
            if key == "$and":
                return lambda md: all(s(md) for s in subs)
            return lambda md: any(s(md) for s in subs)
        if key.startswith("$"):
            raise invalid(
                f"{where}: unknown operator {key!r}; logical operators are {', '.join(LOGICAL_OPERATORS)}"
            )
        if not key or len(key) > 256:
            raise invalid(f"{where}: field names must be 1-256 characters")
        path = key.split(".")
        field_where = f"{where}.{key}"
        if isinstance(value, dict) and any(isinstance(k, str) and k.startswith("$") for k in value):
            self._check_depth(field_where, depth + 1)
            _check_keys(value, field_where)
            tests = [self._operator(op, arg, field_where, depth + 1) for op, arg in value.items()]
        else:
            self._literal(value, field_where, depth)
            tests = [_equals(value)]
        return lambda md: _all_hold(tests, _lookup(md, path))

    def _operator(self, op: str, arg: Any, where: str, depth: int) -> Callable[[Any], bool]:
        """``op`` is a key of the operator object at level ``depth``."""
        if op in ("$eq", "$ne"):
            self._literal(arg, f"{where}.{op}", depth)
            eq = _equals(arg)
            return eq if op == "$eq" else lambda found: not eq(found)
        if op in ("$in", "$nin"):
            if not isinstance(arg, list):
                raise invalid(f"{where}.{op}: expected a list of values")
            self._check_depth(f"{where}.{op}", depth + 1)
            for i, item in enumerate(arg):
                self._literal(item, f"{where}.{op}[{i}]", depth + 1)
            tests = [_equals(item) for item in arg]
            if op == "$in":
                return lambda found: any(t(found) for t in tests)
            return lambda found: not any(t(found) for t in tests)
        if op in _ORDER_OPS:
            if not _is_orderable(arg):
                raise invalid(f"{where}.{op}: expected a number or a string, got {_type_name(arg)}")
            check_json_value(arg, f"{where}.{op}", self.max_depth, depth)  # finite, 64-bit
            compare = _ORDER_OPS[op]
            want_str = isinstance(arg, str)
            return lambda found: (
                _is_orderable(found) and isinstance(found, str) == want_str and compare(found, arg)
            )
        if op == "$exists":
            if not isinstance(arg, bool):
                raise invalid(f"{where}.$exists: expected true or false")
            return lambda found: (found is not _MISSING) == arg
        raise invalid(f"{where}: unknown operator {op!r}; supported: {', '.join(FIELD_OPERATORS)}")


def _check_keys(obj: dict[Any, Any], where: str) -> None:
    for key in obj:
        if not isinstance(key, str):
            raise invalid(f"{where}: object keys must be strings, got {_type_name(key)} key {key!r}", field=where)


def _all_hold(tests: list[Callable[[Any], bool]], found: Any) -> bool:
    for test in tests:
        if not test(found):
            return False
    return True


def _lookup(metadata: dict[str, Any] | None, path: list[str]) -> Any:
    node: Any = metadata
    for part in path:
        if not isinstance(node, dict):
            return _MISSING
        node = node.get(part, _MISSING)
        if node is _MISSING:
            return _MISSING
    return node


def _equals(expected: Any) -> Callable[[Any], bool]:
    if isinstance(expected, bool) or expected is None:
        return lambda found: found is expected
    if isinstance(expected, (int, float)):
        return lambda found: (
            isinstance(found, (int, float)) and not isinstance(found, bool) and found == expected
        )
    return lambda found: found is not _MISSING and type(found) is type(expected) and found == expected


def _is_orderable(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
