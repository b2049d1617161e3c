"""Argument rules shared by the REST API, the HTTP clients and embedded mode.

Each rule returns what is wrong (or None) and takes how the caller spells its arguments, so
the server words it as a 400 about body fields (``'ids'``) and the clients as a ``ValueError``
about keyword arguments (``ids=``), from one definition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

Include = Literal["metadata", "vector"]
INCLUDE_FIELDS: tuple[str, ...] = get_args(Include)

Spelling = Callable[[str], str]


def body_field(name: str) -> str:
    return f"'{name}'"


def keyword(name: str) -> str:
    return f"{name}="


def delete_selector_problem(ids: Any, filter: Any, spell: Spelling) -> str | None:
    """A delete names ``ids``, a ``filter`` or both (both: the listed ids that match)."""
    if ids is None and filter is None:
        return (
            f"give {spell('ids')}, {spell('filter')} or both "
            "(both: delete the listed ids that match the filter)"
        )
    return None


def query_vectors_problem(vector: Any, vectors: Any, spell: Spelling) -> str | None:
    """A query gives exactly one of ``vector`` (one query) or ``vectors`` (a batch)."""
    if (vector is None) == (vectors is None):
        return f"give exactly one of {spell('vector')} (one query) or {spell('vectors')} (a batch)"
    return None


def include_problem(include: Sequence[str]) -> str | None:
    """``include`` names only fields a hit can carry besides id and distance."""
    for field in include:
        if field not in INCLUDE_FIELDS:
            return f"include accepts {', '.join(INCLUDE_FIELDS)}; got {field!r}"
    return None
