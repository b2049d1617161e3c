"""Spec completion: a create request (REST body or embedded call) -> the complete, checked
``CollectionSpec`` the engine stores.  The server defaults come from settings: the tiering
policy from ``storage.tiering_policy``, the HNSW parameters from ``[index]``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

import msgspec

from ..config import Settings
from ..errors import invalid
from ..models import CollectionSpec, HnswParams, normalize_policy
from ..tiering import POLICIES
from .limits import Limits


def request_spec(
    settings: Settings,
    name: str,
    dimension: int,
    metric: str = "cosine",
    tiering_policy: str | None = None,
    hnsw: Mapping[str, int | None] | None = None,
) -> CollectionSpec:
    """The checked spec of a create request; values left out (None) take the server defaults."""
    given = {key: value for key, value in (hnsw or {}).items() if value is not None}
    index = settings.index
    params = HnswParams(
        m=given.get("m", index.m),
        ef_construction=given.get("ef_construction", index.ef_construction),
        ef_search=given.get("ef_search", index.ef_search),
    )
    spec = CollectionSpec(
        name=name, dimension=dimension, metric=metric, tiering_policy=tiering_policy or "", hnsw=params
    )
    return _checked(spec, settings)


def complete_spec(spec: CollectionSpec, settings: Settings) -> CollectionSpec:
    """The spec as the engine creates it: checked, defaults filled in, stamped with the creation
    time and a fresh incarnation id."""
    spec = _checked(spec, settings)
    if spec.hnsw is None:
        index = settings.index
        spec = msgspec.structs.replace(
            spec, hnsw=HnswParams(m=index.m, ef_construction=index.ef_construction, ef_search=index.ef_search).validate()
        )
    return msgspec.structs.replace(spec, created_at=time.time(), incarnation=uuid.uuid4().hex)


def _checked(spec: CollectionSpec, settings: Settings) -> CollectionSpec:
    spec.validate()
    Limits.of(settings).check_dimension(spec.dimension)
    policy = normalize_policy(spec.tiering_policy or settings.storage.tiering_policy)
    if POLICIES[policy].needs_s3 and not settings.s3.bucket:
        raise invalid(
            f"tiering_policy {policy!r} needs S3: set s3.bucket (TIERDB_S3_BUCKET) and, for MinIO or "
            "SeaweedFS, s3.endpoint (TIERDB_S3_ENDPOINT)",
            field="tiering_policy",
        )
    return msgspec.structs.replace(spec, tiering_policy=policy)
