"""TierDB (sync HTTP client) against a real server: every method, typed errors, batching, auth."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

import tierdb
from tierdb.client import (
    CollectionInfo,
    CollectionStatus,
    CompactResult,
    Conflict,
    Document,
    Forbidden,
    Hit,
    HnswParams,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    TierDB,
    TierDBClientError,
    Unauthorized,
    WarmStatus,
)
from tests.client.conftest import ADMIN_TOKEN, API_KEY
from tests.client.support import DIM, dataset, unique


@pytest.fixture
def db(server):
    with TierDB(server.url) as client:
        yield client


@pytest.fixture
def seeded(db):
    """A collection with 300 documents; yields (name, ids, vectors, metadatas)."""
    name = unique()
    db.create_collection(name, DIM)
    ids, vectors, metas = dataset(300)
    assert db.upsert(name, ids, vectors, metas) == 300
    yield name, ids, vectors, metas
    db.delete_collection(name, missing_ok=True)


# -- collections ------------------------------------------------------------------------------------


def test_collection_lifecycle(db) -> None:
    name = unique()
    info = db.create_collection(name, DIM, metric="l2", hnsw={"m": 8, "ef_search": 64})
    assert isinstance(info, CollectionInfo)
    assert (info.name, info.dimension, info.metric, info.tiering_policy, info.count) == (name, DIM, "l2", "memory", 0)
    assert info.hnsw == HnswParams(m=8, ef_construction=200, ef_search=64)
    assert db.get_collection(name) == info
    assert name in [c.name for c in db.list_collections()]
    assert db.count(name) == 0
    db.delete_collection(name)
    assert name not in [c.name for c in db.list_collections()]
    with pytest.raises(NotFound):
        db.get_collection(name)
    db.delete_collection(name, missing_ok=True)  # no error


def test_hnsw_params_struct_is_accepted(db) -> None:
    name = unique()
    info = db.create_collection(name, 3, hnsw=HnswParams(m=12, ef_construction=100, ef_search=50))
    assert info.hnsw == HnswParams(m=12, ef_construction=100, ef_search=50)
    db.delete_collection(name)


# -- documents --------------------------------------------------------------------------------------


def test_upsert_get_and_count(db, seeded) -> None:
    name, ids, vectors, metas = seeded
    assert db.count(name) == 300
    docs = db.get(name, ["d5", "missing", "d1"])
    assert [d.id for d in docs] == ["d5", "d1"]  # request order, missing left out
    assert isinstance(docs[0], Document)
    assert docs[0].metadata == metas[5]
    np.testing.assert_array_equal(np.asarray(docs[0].vector, dtype=np.float32), vectors[5])
    one = db.get_one(name, "d7")
    assert one.id == "d7" and one.metadata == metas[7]
    with pytest.raises(NotFound, match="d-missing"):
        db.get_one(name, "d-missing")


def test_upsert_replaces_and_accepts_lists_and_int_ids(db, seeded) -> None:
    name, *_ = seeded
    assert db.upsert(name, ["d0"], [[1.0] * DIM], [{"new": True}]) == 1
    assert db.get_one(name, "d0").metadata == {"new": True}
    assert db.upsert(name, [1000, 1001], [[0.5] * DIM, [0.25] * DIM]) == 2  # ints become strings
    assert db.get_one(name, "1000").metadata is None
    assert db.count(name) == 302
    # one document: a 1-D vector is accepted with a single id
    assert db.upsert(name, ["solo"], np.ones(DIM)) == 1


def test_upsert_sends_msgpack_in_batches(server, proxy, db) -> None:
    name = unique()
    db.create_collection(name, DIM)
    ids, vectors, metas = dataset(2500)
    with TierDB(proxy.url) as via_proxy:
        assert via_proxy.upsert(name, ids, vectors, metas, batch_size=1000) == 2500
    posts = proxy.requests("POST", "/documents")
    assert len(posts) == 3
    assert all(p.content_type == "application/msgpack" for p in posts)
    assert db.count(name) == 2500
    got = db.get(name, ["d0", "d1999", "d2499"])
    np.testing.assert_array_equal(np.asarray([d.vector for d in got], dtype=np.float32), vectors[[0, 1999, 2499]])
    db.delete_collection(name)


def test_numpy_inputs_of_other_dtypes_and_views(db) -> None:
    name = unique()
    db.create_collection(name, DIM)
    base = np.random.default_rng(1).standard_normal((50, DIM * 2))
    vectors = base[:, ::2]  # float64, not contiguous
    ids = np.arange(50)     # numpy integers
    assert db.upsert(name, ids, vectors, batch_size=7) == 50
    doc = db.get_one(name, "49")
    np.testing.assert_array_equal(np.asarray(doc.vector, dtype=np.float32), vectors[49].astype(np.float32))
    hits = db.query(name, vector=vectors[3].astype(np.float32), k=1)
    assert hits[0].id == "3"
    db.delete_collection(name)


def test_delete_by_ids_filter_and_both(db, seeded) -> None:
    name, *_ = seeded
    assert db.delete(name, ids=["d0", "d1", "nope"]) == 2
    assert db.delete(name, filter={"tag": "c"}) == 100  # i % 3 == 2
    assert db.delete(name, ids=["d3", "d4"], filter={"even": True}) == 1  # only d4 matches
    assert db.count(name) == 300 - 2 - 100 - 1
    assert db.delete(name, ids=[]) == 0
    with pytest.raises(ValueError):
        db.delete(name)


def test_delete_batches_long_id_lists(db, seeded, proxy) -> None:
    name, ids, *_ = seeded
    with TierDB(proxy.url) as via_proxy:
        assert via_proxy.delete(name, ids=ids[:250], batch_size=100) == 250
    assert len(proxy.requests("POST", "/documents/delete")) == 3
    assert db.count(name) == 50


# -- queries ----------------------------------------------------------------------------------------


def test_query_returns_typed_hits(db, seeded) -> None:
    name, ids, vectors, metas = seeded
    hits = db.query(name, vector=vectors[10], k=5)
    assert len(hits) == 5 and all(isinstance(h, Hit) for h in hits)
    assert hits[0].id == "d10" and hits[0].distance == pytest.approx(0.0, abs=1e-5)
    assert hits[0].metadata == metas[10] and hits[0].vector is None
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    # exact brute force agrees (the collection is small: searched exactly)
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = vectors[10] / np.linalg.norm(vectors[10])
    expected = [ids[i] for i in np.argsort(-(normed @ q))[:5]]
    assert [h.id for h in hits] == expected


def test_query_include_filter_ef_and_batches(db, seeded) -> None:
    name, ids, vectors, metas = seeded
    hits = db.query(name, vector=vectors[0], k=3, include=["vector"], ef=50)
    assert hits[0].metadata is None and len(hits[0].vector) == DIM
    filtered = db.query(name, vector=vectors[0], k=10, filter={"i": {"$lt": 30}, "even": False}, include=())
    assert len(filtered) == 10
    assert all(int(h.id[1:]) < 30 and int(h.id[1:]) % 2 == 1 for h in filtered)
    assert all(h.metadata is None for h in filtered)
    batch = db.query(name, vectors=vectors[:4], k=2)
    assert [b[0].id for b in batch] == ["d0", "d1", "d2", "d3"]
    assert all(len(b) == 2 for b in batch)


def test_query_argument_mistakes_are_caught_locally(db) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        db.query("x", k=1)
    with pytest.raises(ValueError, match="exactly one"):
        db.query("x", vector=[1.0], vectors=[[1.0]])
    with pytest.raises(ValueError, match="include"):
        db.query("x", vector=[1.0], include=["everything"])
    with pytest.raises(ValueError, match="ids but"):
        db.upsert("x", ["a", "b"], [[1.0] * DIM])
    with pytest.raises(ValueError, match="metadatas"):
        db.upsert("x", ["a"], [[1.0] * DIM], [{}, {}])
    with pytest.raises(TypeError):
        db.upsert("x", "abc", [[1.0] * DIM] * 3)
    with pytest.raises(ValueError, match="batch_size"):
        db.upsert("x", ["a"], [[1.0] * DIM], batch_size=0)


# -- errors -----------------------------------------------------------------------------------------


def test_typed_errors_carry_status_kind_message_and_request_id(db, seeded) -> None:
    name, *_ = seeded
    with pytest.raises(NotFound) as missing:
        db.get_collection("does-not-exist")
    err = missing.value
    assert (err.status, err.kind) == (404, "not_found")
    assert "does-not-exist" in err.message and err.request_id
    assert err.details == {"collection": "does-not-exist"}

    with pytest.raises(Conflict) as taken:
        db.create_collection(name, DIM)
    assert (taken.value.status, taken.value.kind) == (409, "conflict")
    assert "already exists" in taken.value.message

    with pytest.raises(InvalidRequest) as wrong_dim:
        db.upsert(name, ["x"], [[1.0, 2.0]])
    assert wrong_dim.value.status == 400
    assert "dimension" in wrong_dim.value.message

    with pytest.raises(InvalidRequest, match="NaN"):
        db.upsert(name, ["x"], [[float("nan")] * DIM])
    with pytest.raises(InvalidRequest, match="unknown filter operator|operator"):
        db.query(name, vector=[1.0] * DIM, filter={"i": {"$regex": "x"}})
    with pytest.raises(InvalidRequest, match="k must be"):
        db.query(name, vector=[1.0] * DIM, k=0)
    with pytest.raises(NotFound):
        db.upsert("no-such-collection", ["a"], [[1.0] * DIM])
    with pytest.raises(InvalidRequest, match="invalid collection name"):
        db.create_collection("Bad Name!", DIM)
    assert db.count(name) == 300  # nothing changed
    assert isinstance(err, TierDBClientError) and "404 not_found" in str(err)


def test_exceptions_pickle_round_trip(db) -> None:
    import pickle

    with pytest.raises(NotFound) as missing:
        db.get_collection("nothing-here")
    again = pickle.loads(pickle.dumps(missing.value))
    assert type(again) is NotFound and again.message == missing.value.message and again.status == 404


# -- admin ------------------------------------------------------------------------------------------


def test_admin_calls(db, seeded) -> None:
    name, *_ = seeded
    status = db.status(name)
    assert isinstance(status, CollectionStatus)
    assert (status.name, status.policy, status.count, status.state) == (name, "memory", 300, "ready")
    assert db.dlq(name) == []
    assert db.retry_dlq(name) == 0
    assert db.clear_dlq(name) == 0
    result = db.compact(name, full=True)
    assert isinstance(result, CompactResult)
    assert result.flushed_rows == 300 and result.segments == 1
    assert db.get_collection(name).segments == 1
    assert db.query(name, vector=db.get_one(name, "d9").vector, k=1)[0].id == "d9"
    with pytest.raises(NotFound):
        db.status("no-such-collection")


# -- auth (a server that requires an API key and an admin token) ------------------------------------


def test_api_key_and_admin_token(secured_server) -> None:
    name = unique()
    with TierDB(secured_server.url) as anonymous:
        with pytest.raises(Unauthorized) as no_key:
            anonymous.list_collections()
        assert no_key.value.status == 401
    with TierDB(secured_server.url, api_key="wrong-key") as wrong:
        with pytest.raises(Forbidden):
            wrong.list_collections()
    with TierDB(secured_server.url, api_key=API_KEY) as keyed:
        keyed.create_collection(name, DIM)
        with pytest.raises(Unauthorized):
            keyed.status(name)  # admin call without a token
    with TierDB(secured_server.url, api_key=API_KEY, admin_token="wrong-token") as wrong_admin:
        with pytest.raises(Forbidden):
            wrong_admin.compact(name)
    with TierDB(secured_server.url, api_key=API_KEY, admin_token=ADMIN_TOKEN) as admin:
        assert admin.status(name).count == 0
        ids, vectors, _ = dataset(120)
        assert admin.upsert(name, ids, vectors, batch_size=50) == 120  # under the server's max_batch
        with pytest.raises(PayloadTooLarge) as too_many:
            admin.upsert(name, ids, vectors, batch_size=100)
        assert too_many.value.status == 413 and "max_batch" in too_many.value.message
        assert isinstance(too_many.value, InvalidRequest)
        admin.delete_collection(name)


def test_top_level_exports_are_the_client_types() -> None:
    assert tierdb.TierDB is TierDB
    assert tierdb.NotFound is NotFound
    assert tierdb.Hit is Hit
    assert msgspec.structs.asdict(Hit("a", 0.5)) == {"id": "a", "distance": 0.5, "metadata": None, "vector": None}


# -- nprobe and warm ------------------------------------------------------------------------------


def test_query_sends_nprobe_and_checks_it_on_the_server(db, seeded) -> None:
    name, ids, vectors, metas = seeded
    assert db.query(name, vector=vectors[7], k=3, nprobe=8) == db.query(name, vector=vectors[7], k=3)
    with pytest.raises(InvalidRequest, match="nprobe must be between 1 and 4096") as bad:
        db.query(name, vector=vectors[7], k=3, nprobe=0)
    assert bad.value.details.get("field") == "nprobe"


def test_warm_returns_progress_and_waits_on_the_node_it_asked(server, secured_server, db, seeded) -> None:
    name = seeded[0]
    db.compact(name)
    started = db.warm(name)
    assert isinstance(started, WarmStatus) and started.state in ("running", "done")
    assert started.segments_total == 1 and started.bytes_total > 0
    # Waiting polls the node at ``url``: a read replica that does not even accept this client
    # (the secured server wants an API key) is never asked.
    with TierDB(server.url, read_urls=[secured_server.url]) as routed:
        done = routed.warm(name, wait=True, timeout=60)
    assert (done.state, done.error) == ("done", "")
    assert done.bytes_fetched == done.bytes_total == started.bytes_total
    assert db.status(name).warm == done
    with pytest.raises(NotFound):
        db.warm("warm-missing")


def test_warm_wait_gives_up_after_the_timeout(db, seeded) -> None:
    name = seeded[0]
    db.compact(name)
    with pytest.raises(RequestTimeout, match=f"warming '{name}' had not finished after 0s"):
        db.warm(name, wait=True, timeout=0)  # the first answer is always "running"
