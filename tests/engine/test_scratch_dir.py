"""A crash can leave a built segment's file in the scratch directory (it lives until its upload
is done); the next start removes it."""

from __future__ import annotations

import os

from tierdb import keys
from tierdb.node import Engine

from .conftest import make_settings


async def test_start_empties_the_scratch_directory(tmp_path):
    settings = make_settings(tmp_path / "data")
    scratch = keys.scratch_dir(settings.storage.data_dir)
    os.makedirs(scratch)
    for name in ("segment-abc123", "tierdb-ivf-x.f32"):
        with open(os.path.join(scratch, name), "wb") as f:
            f.write(b"\0" * 4096)
    engine = Engine(settings)
    await engine.start()
    try:
        assert os.listdir(scratch) == []
    finally:
        await engine.close()
