"""Validation of write and read arguments: ids and metadata (4xx, before anything changes)."""

from __future__ import annotations

import msgspec

from ..errors import invalid
from ..models import MAX_ID_BYTES, check_json_value


def check_ids(ids: list[str], *, allow_duplicates: bool = False) -> None:
    if not isinstance(ids, list) or not ids:
        raise invalid("ids must be a non-empty list of strings", field="ids")
    seen: set[str] = set()
    for i, doc_id in enumerate(ids):
        if not isinstance(doc_id, str) or not doc_id:
            raise invalid(f"id at position {i} is empty or not a string", field="ids")
        if len(doc_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise invalid(f"id at position {i} is longer than {MAX_ID_BYTES} bytes", field="ids")
        if not allow_duplicates:
            if doc_id in seen:
                raise invalid(f"duplicate id {doc_id!r} in one batch", field="ids")
            seen.add(doc_id)


_metadata_encoder = msgspec.msgpack.Encoder()


def check_metadata(ids: list[str], metadata: list[dict | None], max_depth: int) -> None:
    for i, md in enumerate(metadata):
        if md is None:
            continue
        if not isinstance(md, dict):
            raise invalid(f"metadata of document {i} ({ids[i]!r}) must be a JSON object or null")
        check_json_value(md, f"documents[{i}].metadata", max_depth)
        try:
            _metadata_encoder.encode(md)
        except (OverflowError, TypeError, ValueError) as exc:  # e.g. a lone surrogate in a str
            raise invalid(f"metadata of document {i} ({ids[i]!r}) cannot be stored: {exc}") from exc
