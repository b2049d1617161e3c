"""keys.py builds and parses every object key and data-directory name."""

import os

import pytest

from tierdb import keys

SEG_ID = "0123456789abcdef" * 2


def test_builders_and_parsers_round_trip():
    assert keys.parse_manifest_key(keys.manifest_key("c", 7)) == 7
    assert keys.parse_wal_key(keys.wal_key("c", 12)) == 12
    assert keys.segment_id_of(keys.segment_key("c", SEG_ID)) == SEG_ID
    assert keys.parse_wal_file_name(keys.wal_file_name(5)) == 5
    assert keys.wal_key("c", 12).endswith("/" + keys.wal_file_name(12))
    for key in (keys.manifest_key("my-coll", 1), keys.wal_key("my-coll", 1),
                keys.segment_key("my-coll", SEG_ID), keys.collection_prefix("my-coll"),
                keys.wal_prefix("my-coll")):
        assert keys.collection_of(key) == "my-coll"
        assert key.startswith(keys.COLLECTIONS_PREFIX)


@pytest.mark.parametrize("key", [
    "collections/c/manifest/x.json",            # not a number
    "collections/c/manifest/00000000000000000001.json.tmp",
    "collections/c/wal/00000000000000000001.json",
    "collections/c/segments/00000000000000000001.json",
    "collections/c/manifest/sub/00000000000000000001.json",
    "other/c/manifest/00000000000000000001.json",
    "collections/manifest/00000000000000000001.json",
])
def test_manifest_parser_rejects_other_keys(key):
    assert keys.parse_manifest_key(key) is None


@pytest.mark.parametrize("key", [
    "collections/c/wal/abc.wal",
    "collections/c/manifest/00000000000000000001.wal",
    "collections/c/wal/00000000000000000001.wal.tmp",
    "collections/c/segments/x.seg",
    "c/wal/00000000000000000001.wal",
])
def test_wal_parser_rejects_other_keys(key):
    assert keys.parse_wal_key(key) is None


@pytest.mark.parametrize("key", [
    "collections/c/segments/ab.seg.tmp",
    "collections/c/wal/ab.seg",
    "collections/c/segments/.ab.seg",
    "x/c/segments/ab.seg",
])
def test_segment_parser_rejects_other_keys(key):
    assert keys.segment_id_of(key) is None


def test_collection_of_outside_collections_is_empty():
    for key in ("health-probe", "collections/", "collections/c", "other/c/wal/1.wal", ""):
        assert keys.collection_of(key) == ""


def test_parse_number_accepts_only_manifest_and_wal_keys():
    assert keys.parse_number(keys.manifest_key("c", 3)) == 3
    assert keys.parse_number(keys.wal_key("c", 4)) == 4
    with pytest.raises(ValueError):
        keys.parse_number(keys.segment_key("c", SEG_ID))


def test_immutable_objects_are_segments_and_wal_objects():
    assert keys.is_immutable(keys.segment_key("c", SEG_ID))
    assert keys.is_immutable(keys.wal_key("c", 1))
    assert not keys.is_immutable(keys.manifest_key("c", 1))
    # a ".seg" or ".wal" name elsewhere is not one of ours
    assert not keys.is_immutable("backup/x.seg")
    assert not keys.is_immutable("collections/c/manifest/00000000000000000001.wal")


def test_wal_file_names_are_only_numbered_wal_files():
    for name in ("00000000000000000001.wal.tmp", "x.wal", ".00000000000000000001.wal", "1.json"):
        assert keys.parse_wal_file_name(name) is None


def test_data_directory_layout(tmp_path):
    d = str(tmp_path)
    coll = os.path.join(d, "collections", "c")
    assert keys.collections_dir(d) == os.path.join(d, "collections")
    assert keys.collection_dir(d, "c") == coll
    assert keys.wal_dir(d, "c") == os.path.join(coll, "wal")
    assert keys.dlq_path(d, "c") == os.path.join(coll, "dlq.json")
    assert keys.upload_state_path(d, "c") == os.path.join(coll, "upload_state.json")
    assert keys.node_id_path(d) == os.path.join(d, "node_id")
    assert keys.dropped_dir_name("c", "1a2b").startswith(keys.DROPPED_PREFIX)
    # the LocalStore rooted at data_dir writes a WAL key to the local WAL directory
    assert os.path.join(d, *keys.wal_key("c", 1).split("/")) == os.path.join(
        keys.wal_dir(d, "c"), keys.wal_file_name(1))
