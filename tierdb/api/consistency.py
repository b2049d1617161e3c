"""Which freshness a read asks for: the body's ``consistency`` or the ``X-TierDB-Consistency``
header (for GETs, which have no body; also ``?consistency=``).  Anything else is a 400."""

from __future__ import annotations

from typing import Any

from litestar import Request

from ..errors import invalid
from .schemas import CONSISTENCY_HEADER

_CHOICES = ("eventual", "strong")


def read_consistency(request: Request[Any, Any, Any], from_body: str = "eventual") -> str:
    """"strong" if the body, the header or the query parameter asks for it, else "eventual"."""
    asked = [from_body]
    for where, value in ((f"header {CONSISTENCY_HEADER}", request.headers.get(CONSISTENCY_HEADER)),
                         ("query parameter consistency", request.query_params.get("consistency"))):
        if value is None:
            continue
        if value.lower() not in _CHOICES:
            raise invalid(f"{where}: expected one of {', '.join(_CHOICES)}, got {value!r}", field="consistency")
        asked.append(value.lower())
    return "strong" if "strong" in asked else "eventual"
