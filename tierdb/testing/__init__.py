"""Test support that ships with TierDB (needs pytest and pytest-asyncio: the [dev] extra).

``tierdb.testing.store.BlobStoreContract`` is the behaviour every BlobStore must have; a store
implementation (in this repository or outside it) proves itself by subclassing it in a test.
"""

import pytest

# Plain asserts in the contract get pytest's detailed failure messages.
pytest.register_assert_rewrite("tierdb.testing.store")
