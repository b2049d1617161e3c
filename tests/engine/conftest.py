from __future__ import annotations

import msgspec
import numpy as np
import pytest

from tierdb.config import CompactionSettings, IndexSettings, Settings, StorageSettings
from tierdb.node import Engine
from tierdb.models import CollectionSpec


def make_settings(data_dir, *, threshold=64, threshold_ops=10_000, interval=3600.0, **compaction) -> Settings:
    return Settings(
        storage=StorageSettings(data_dir=str(data_dir)),
        index=IndexSettings(threshold=threshold, m=16, ef_construction=100, ef_search=64),
        compaction=CompactionSettings(interval_secs=interval, threshold_ops=threshold_ops, **compaction),
    )


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
async def engine(settings):
    eng = Engine(settings)
    await eng.start()
    yield eng
    await eng.close()


async def reopen(engine: Engine) -> Engine:
    await engine.close()
    fresh = Engine(engine.settings)
    await fresh.start()
    return fresh


def spec(name="docs", dimension=8, metric="cosine") -> CollectionSpec:
    return CollectionSpec(name=name, dimension=dimension, metric=metric)


def random_vectors(n, dim, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def with_settings(settings: Settings, **sections) -> Settings:
    return msgspec.structs.replace(settings, **sections)
