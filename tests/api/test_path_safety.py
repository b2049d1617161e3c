"""Collection names and document ids can never make the server touch a path outside its data dir.

Names: validated (``^[a-z0-9][a-z0-9_-]{0,62}$``) before anything is created, and a name in a
URL is only ever looked up, so traversal attempts are 400 (body) or 404 (URL).
Ids: opaque strings stored inside WAL records and segments; never part of a file name.  Writes
refuse ids with '/', control characters, '.' or '..' (models.check_new_ids); ids stored before
that rule are still stored, read and deleted safely, so they are written here with it off.
The data dir lives in ``tmp_path/jail/data``: every file the server creates must be inside it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tierdb import keys
from tierdb.engine import writes as writes_module
from tierdb.errors import TierDBError
from tierdb.storage.local import LocalStore
from tierdb.storage.memory import MemoryStore

from .conftest import DIM, Client, unit

MARKER = "escaped"  # part of every hostile name and id: must never show up in a file name
SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9._-]+$")

BAD_NAMES = [
    "..", ".", f"../{MARKER}", f"../../{MARKER}", f"../../../{MARKER}", f"a/../../{MARKER}",
    f"/tmp/{MARKER}", f"docs/{MARKER}", f"%2e%2e%2f{MARKER}", f"..%2f{MARKER}", f"..\\{MARKER}",
    f"{MARKER}\x00", f"{MARKER}\r", f"\n{MARKER}", f" {MARKER}", f"{MARKER}.", f".{MARKER}",
    f"-{MARKER}", f"_{MARKER}",
    f"{MARKER.upper()}", f"{MARKER}\u00fc", f"{MARKER}\u540d", "\u2024\u2024", f"{MARKER}{'x' * 57}",
    MARKER * 2000, "",
]
# Hostile names as they appear in URLs: percent-encoded so the client sends them unnormalised
# and the server decodes them into '..', '/', unicode, NUL.
URL_NAMES = [
    "%2e%2e", "%2E%2E", "%2e", f"%2e%2e%2f{MARKER}", f"..%2f..%2f{MARKER}", f"%2e%2e%5c{MARKER}",
    f"{MARKER}%00", f"{MARKER}%c3%bc", f"%2f{MARKER}", f"{MARKER}%20", MARKER * 2000, f"{MARKER.upper()}",
]
HOSTILE_IDS = [
    f"../../../{MARKER}-1", f"../../{MARKER}-2", f"/tmp/{MARKER}-3", f"..\\..\\{MARKER}-4",
    f"a/../../{MARKER}-5", f"%2e%2e%2f{MARKER}-6", f"{MARKER}-7\x00nul", f"\u00fc/../{MARKER}-8",
    "..", ".", "/", f"{MARKER}-9/", "x" * 256,
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "jail" / "data"


def files_outside(root: Path, data_dir: Path) -> list[Path]:
    """Every file or directory under ``root`` that is not ``data_dir``, inside it, or an ancestor."""
    ancestors = set(data_dir.parents)
    found = []
    for path in root.rglob("*"):
        if path == data_dir or data_dir in path.parents or path in ancestors:
            continue
        found.append(path)
    return found


def assert_confined(tmp_path: Path, data_dir: Path) -> None:
    assert files_outside(tmp_path, data_dir) == []
    # Deeper escapes would land above tmp_path: no file there may carry the marker either.
    above = tmp_path.parent
    assert not [p for p in above.glob(f"*{MARKER}*")]
    assert not [p for p in Path("/tmp").glob(f"{MARKER}*")]
    for path in data_dir.rglob("*"):
        name = path.name
        assert SAFE_COMPONENT.match(name), path
        assert MARKER not in name, path
    collections = data_dir / "collections"
    if collections.exists():
        assert {p.name for p in collections.iterdir() if not p.name.startswith(".")} <= {"docs"}


async def test_hostile_collection_names_in_bodies_are_400_and_create_nothing(
    client: Client, tmp_path: Path, data_dir: Path
) -> None:
    for name in BAD_NAMES:
        response = await client.post("/v1/collections", json={"name": name, "dimension": DIM})
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"] == "invalid"
    assert (await client.get("/v1/collections")).json()["collections"] == []
    assert_confined(tmp_path, data_dir)


async def test_a_trailing_newline_in_a_name_is_400(client: Client, tmp_path: Path, data_dir: Path) -> None:
    response = await client.post("/v1/collections", json={"name": f"{MARKER}\n", "dimension": DIM})
    assert response.status_code == 400, response.text


async def test_hostile_collection_names_in_urls_are_404_and_touch_nothing(
    client: Client, tmp_path: Path, data_dir: Path
) -> None:
    await client.post("/v1/collections", json={"name": "docs", "dimension": DIM})
    await client.post("/v1/collections/docs/documents", json={"documents": [{"id": "a", "vector": unit(0)}]})
    for name in URL_NAMES:
        base = f"/v1/collections/{name}"
        requests = [
            ("GET", base, None),
            ("DELETE", base, None),
            ("POST", f"{base}/documents", {"documents": [{"id": "x", "vector": unit(0)}]}),
            ("GET", f"{base}/documents/a", None),
            ("POST", f"{base}/documents/get", {"ids": ["a"]}),
            ("POST", f"{base}/documents/delete", {"ids": ["a"]}),
            ("POST", f"{base}/query", {"vector": unit(0)}),
            ("GET", f"/admin/collections/{name}/status", None),
            ("GET", f"/admin/collections/{name}/dlq", None),
            ("POST", f"/admin/collections/{name}/dlq/retry", None),
            ("DELETE", f"/admin/collections/{name}/dlq", None),
            ("POST", f"/admin/collections/{name}/compact", None),
        ]
        for method, path, body in requests:
            response = await client.request(method, path, json=body)
            assert response.status_code in (400, 404, 405), (method, path, response.text)
            assert response.json()["error"] in ("invalid", "not_found", "method_not_allowed")
    # The real collection is untouched.
    info = (await client.get("/v1/collections/docs")).json()
    assert info["count"] == 1
    assert [c["name"] for c in (await client.get("/v1/collections")).json()["collections"]] == ["docs"]
    assert_confined(tmp_path, data_dir)


async def test_hostile_ids_are_opaque_and_stay_inside_segments(
    open_client, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writes_module, "check_new_ids", lambda ids: None)  # data from before the rule
    documents = [
        {"id": doc_id, "vector": unit(i), "metadata": {"i": i}} for i, doc_id in enumerate(HOSTILE_IDS)
    ]
    async with open_client() as client:
        await client.post("/v1/collections", json={"name": "docs", "dimension": DIM})
        response = await client.post("/v1/collections/docs/documents", json={"documents": documents})
        assert response.json() == {"upserted": len(HOSTILE_IDS)}
        got = (await client.post("/v1/collections/docs/documents/get", json={"ids": HOSTILE_IDS})).json()
        assert [d["id"] for d in got["documents"]] == HOSTILE_IDS
        assert_confined(tmp_path, data_dir)  # in the WAL and memtable

        compact = await client.post("/admin/collections/docs/compact")
        assert compact.json()["flushed_rows"] == len(HOSTILE_IDS)
        assert_confined(tmp_path, data_dir)  # in a segment

    async with open_client() as client:  # recovered from the segment
        got = (await client.post("/v1/collections/docs/documents/get", json={"ids": HOSTILE_IDS})).json()
        assert [(d["id"], d["metadata"]) for d in got["documents"]] == [
            (doc_id, {"i": i}) for i, doc_id in enumerate(HOSTILE_IDS)
        ]
        # A single-segment id that decodes to '..' is looked up as an id, not as a path.
        one = await client.get("/v1/collections/docs/documents/%2e%2e")
        assert (one.status_code, one.json()["id"]) == (200, "..")
        deleted = await client.post("/v1/collections/docs/documents/delete", json={"ids": HOSTILE_IDS[:4]})
        assert deleted.json() == {"deleted": 4}
        await client.post("/admin/collections/docs/compact", json={"full": True})
    assert_confined(tmp_path, data_dir)


@pytest.mark.parametrize("name", ["..", ".", "a/..", "../x", "", "/abs", "a\\b", "x\x00"])
@pytest.mark.parametrize("store_kind", ["local", "memory"])
async def test_blob_stores_refuse_keys_that_would_escape(tmp_path: Path, name: str, store_kind: str) -> None:
    """Defence in depth (and the S3 prefix): even a key built from an unvalidated name is refused.

    The S3 store applies the same ``validate_key`` before every request.
    """
    root = tmp_path / "store"
    root.mkdir()
    store = LocalStore(str(root)) if store_kind == "local" else MemoryStore()
    try:
        for key in (keys.manifest_key(name, 1), keys.wal_key(name, 1)):
            with pytest.raises(TierDBError) as excinfo:
                await store.put(key, b"x")
            assert excinfo.value.kind.value == "invalid"
    finally:
        await store.close()
    assert list(root.rglob("*")) == []
    assert not os.path.exists(tmp_path / "manifest") and not os.path.exists(tmp_path / "wal")

