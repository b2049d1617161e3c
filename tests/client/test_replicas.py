"""Read replicas in the clients: ``TierDB(url, read_urls=[...])`` spreads reads over the replicas,
sends writes only to the writer, fails over to the next node, and asks for strong reads.

The "replicas" are proxies in front of the real test server (so every answer is real and the
proxies record who got what), or ``FakeNode``s where the server cannot answer yet (a strong
query body needs a server that knows the field).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import tierdb
from tests.client.support import DIM, FakeNode, FaultProxy, dataset, unique
from tests.server_process import free_port
from tierdb.client import AsyncTierDB, ConnectionFailed, TierDB, Unavailable

READ_SUFFIXES = ("/query", "/documents/get")


@pytest.fixture
def nodes(server) -> Iterator[tuple[FaultProxy, FaultProxy, FaultProxy]]:
    """(writer, replica1, replica2): three recording proxies in front of the one real server."""
    with FaultProxy(server.url) as writer, FaultProxy(server.url) as one, FaultProxy(server.url) as two:
        yield writer, one, two


@pytest.fixture
def loaded(server) -> Iterator[str]:
    """A collection with 20 documents (written directly, not through the proxies)."""
    name = unique()
    with TierDB(server.url) as db:
        db.create_collection(name, DIM)
        db.upsert(name, *dataset(20)[:2])
        yield name
        db.delete_collection(name, missing_ok=True)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused


def reads(node: FaultProxy) -> list[str]:
    return [s.path for s in node.seen if s.method == "GET" or s.path.endswith(READ_SUFFIXES)]


def writes(node: FaultProxy) -> list[str]:
    return [s.path for s in node.seen if s.method != "GET" and not s.path.endswith(READ_SUFFIXES)]


def exercise_sync(db: TierDB, name: str) -> list[str]:
    """Two writes and eight reads; returns the ids the reads found."""
    _, vectors, metas = dataset(4, seed=11)
    new_ids = [f"n{i}" for i in range(4)]
    assert db.upsert(name, new_ids, vectors, metas) == 4
    found = [db.get_one(name, "n1").id, db.get(name, ["d3"])[0].id]
    found += [db.query(name, vector=vectors[2], k=1)[0].id, db.query(name, vectors=vectors[:1], k=1)[0][0].id]
    found += [str(db.count(name)), str(len([c for c in db.list_collections() if c.name == name]))]
    found += [db.get_collection(name).name == name and "info", db.status(name).name == name and "status"]
    assert db.delete(name, ids=new_ids) == 4
    return found


async def exercise_async(db: AsyncTierDB, name: str) -> list[str]:
    _, vectors, metas = dataset(4, seed=11)
    new_ids = [f"n{i}" for i in range(4)]
    assert await db.upsert(name, new_ids, vectors, metas) == 4
    found = [(await db.get_one(name, "n1")).id, (await db.get(name, ["d3"]))[0].id]
    found += [(await db.query(name, vector=vectors[2], k=1))[0].id, (await db.query(name, vectors=vectors[:1], k=1))[0][0].id]
    found += [str(await db.count(name)), str(len([c for c in await db.list_collections() if c.name == name]))]
    found += [(await db.get_collection(name)).name == name and "info", (await db.status(name)).name == name and "status"]
    assert await db.delete(name, ids=new_ids) == 4
    return found


EXPECTED = ["n1", "d3", "n2", "n0", "24", "1", "info", "status"]


def test_reads_rotate_over_the_replicas_and_writes_go_to_the_writer(nodes, loaded) -> None:
    writer, one, two = nodes
    with TierDB(writer.url, read_urls=[one.url, two.url + "/"]) as db:
        assert exercise_sync(db, loaded) == EXPECTED
    assert reads(writer) == [] and len(writes(writer)) == 2  # the upsert and the delete
    assert writes(one) == [] and writes(two) == []
    assert len(reads(one)) == len(reads(two)) == 4  # round-robin: eight reads, four each


async def test_async_reads_rotate_over_the_replicas_and_writes_go_to_the_writer(nodes, loaded) -> None:
    writer, one, two = nodes
    async with AsyncTierDB(writer.url, read_urls=[one.url, two.url]) as db:
        assert await exercise_async(db, loaded) == EXPECTED
    assert reads(writer) == [] and len(writes(writer)) == 2
    assert writes(one) == [] and writes(two) == []
    assert len(reads(one)) == len(reads(two)) == 4


def test_without_read_urls_everything_goes_to_the_writer(nodes, loaded) -> None:
    writer = nodes[0]
    with TierDB(writer.url) as db:
        assert exercise_sync(db, loaded) == EXPECTED
    assert len(reads(writer)) == 8 and len(writes(writer)) == 2


def test_a_dead_replica_is_skipped(nodes, loaded) -> None:
    writer, one, _ = nodes
    with TierDB(writer.url, read_urls=[dead_url(), one.url], retries=0) as db:
        assert exercise_sync(db, loaded) == EXPECTED  # retries=0: no second round, failover alone
    assert len(reads(one)) == 8 and reads(writer) == []


async def test_async_a_dead_replica_is_skipped(nodes, loaded) -> None:
    writer, one, _ = nodes
    async with AsyncTierDB(writer.url, read_urls=[dead_url(), one.url], retries=0) as db:
        assert await exercise_async(db, loaded) == EXPECTED
    assert len(reads(one)) == 8 and reads(writer) == []


def test_reads_fall_back_to_the_writer_when_every_replica_is_down(nodes, loaded) -> None:
    writer, _, _ = nodes
    with TierDB(writer.url, read_urls=[dead_url(), dead_url()], retries=0) as db:
        assert exercise_sync(db, loaded) == EXPECTED
    assert len(reads(writer)) == 8


def test_a_replica_answering_503_is_left_for_the_next_one_and_cools_down(nodes, loaded) -> None:
    writer, one, two = nodes
    with TierDB(writer.url, read_urls=[one.url, two.url], retries=0, replica_cooldown=600) as db:
        one.fail_next(1, 503)
        for _ in range(6):
            assert db.count(loaded) == 20
    assert [s.status for s in one.seen] == [503]  # tried once, then last in line while cooling
    assert len(reads(two)) == 6 and reads(writer) == []
    one.reset()
    two.reset()
    with TierDB(writer.url, read_urls=[one.url, two.url], retries=0, replica_cooldown=0) as db:
        one.fail_next(1, 503)
        for _ in range(6):
            assert db.count(loaded) == 20
    assert [s.status for s in one.seen] == [503, 200, 200]  # no cooldown: back in the rotation


def test_when_every_node_fails_the_read_is_retried_with_backoff(nodes, loaded) -> None:
    writer, one, two = nodes
    with TierDB(writer.url, read_urls=[one.url, two.url], retries=1, backoff=0.01) as db:
        for node in nodes:
            node.fail_next(1, 503)
        assert db.count(loaded) == 20  # round 1: all three 503; round 2 succeeds
        for node in nodes:
            node.fail_next(2, 503)
        with pytest.raises(Unavailable):
            db.count(loaded)
    assert sum(len(n.seen) for n in nodes) == 3 + 1 + 6


def test_writes_are_never_sent_to_a_replica(nodes, loaded) -> None:
    _, one, two = nodes
    with TierDB(dead_url(), read_urls=[one.url, two.url], retries=1, backoff=0.01) as db:
        assert db.count(loaded) == 20  # reads still work without the writer
        with pytest.raises(ConnectionFailed, match="after 2 attempt"):
            db.upsert(loaded, ["x"], [[0.0] * DIM])
        with pytest.raises(ConnectionFailed):
            db.delete(loaded, ids=["d1"])
        with pytest.raises(ConnectionFailed):
            db.create_collection(unique(), DIM)
    assert writes(one) == [] and writes(two) == []


def test_the_writer_in_read_urls_is_not_listed_twice() -> None:
    with TierDB("http://w:1/", read_urls=["http://r:1/", "http://w:1", "http://r:1"]) as db:
        assert db.read_urls == ["http://r:1"]
        assert repr(db) == "TierDB('http://w:1', read_urls=['http://r:1'])"
    with pytest.raises(TypeError, match="list of URLs"):
        TierDB("http://w:1", read_urls="http://r:1")
    with pytest.raises(ValueError, match="http"):
        TierDB("http://w:1", read_urls=["r:1"])
    with pytest.raises(ValueError, match="consistency must be one of eventual, strong"):
        TierDB("http://w:1", read_consistency="linearizable")


# -- strong reads ---------------------------------------------------------------------------------


@pytest.fixture
def fakes() -> Iterator[tuple[FakeNode, FakeNode]]:
    with FakeNode() as writer, FakeNode() as replica:
        yield writer, replica


def strong_marks(node: FakeNode) -> list[tuple[str, str]]:
    """(what, how) for every read the node got: how it asked for strong reads, if at all."""
    out = []
    for seen, body in zip(node.seen, node.decoded()):
        in_body = isinstance(body, dict) and body.get("consistency", "")
        out.append((seen.path.rsplit("/", 1)[-1], f"body={in_body or '-'} header={seen.consistency or '-'}"))
    return out


STRONG_READS = [
    ("query", "body=strong header=-"),
    ("get", "body=- header=strong"),
    ("c", "body=- header=strong"),         # count
    ("collections", "body=- header=strong"),
    ("c", "body=- header=strong"),         # get_collection
    ("status", "body=- header=strong"),
]


def sync_reads(db: TierDB, consistency: str | None) -> None:
    db.query("c", vector=[0.0, 1.0], k=1, consistency=consistency)
    db.get_one("c", "a", consistency=consistency)
    db.count("c", consistency=consistency)
    db.list_collections(consistency=consistency)
    db.get_collection("c", consistency=consistency)
    db.status("c", consistency=consistency)


def test_strong_reads_send_the_body_field_or_the_header(fakes) -> None:
    writer, replica = fakes
    with TierDB(writer.url, read_urls=[replica.url]) as db:
        sync_reads(db, "strong")
        assert strong_marks(replica) == STRONG_READS  # strong reads may be served by a replica
        replica.reset()
        sync_reads(db, None)  # the default: eventual, which sends nothing
        assert {how for _, how in strong_marks(replica)} == {"body=- header=-"}
        with pytest.raises(ValueError, match="consistency must be one of"):
            db.query("c", vector=[0.0, 1.0], consistency="STRONG")
    with TierDB(writer.url, read_urls=[replica.url], read_consistency="strong") as db:
        replica.reset()
        sync_reads(db, None)  # the client-wide default
        assert strong_marks(replica) == STRONG_READS
        replica.reset()
        sync_reads(db, "eventual")  # a call can still ask for less
        assert {how for _, how in strong_marks(replica)} == {"body=- header=-"}
    assert writer.seen == []


async def test_async_strong_reads_send_the_body_field_or_the_header(fakes) -> None:
    writer, replica = fakes
    async with AsyncTierDB(writer.url, read_urls=[replica.url], read_consistency="strong") as db:
        await db.query("c", vector=[0.0, 1.0], k=1)
        await db.get_one("c", "a")
        await db.count("c")
        await db.list_collections()
        await db.get_collection("c")
        await db.status("c")
        assert strong_marks(replica) == STRONG_READS
        replica.reset()
        await asyncio.gather(*(db.query("c", vectors=[[0.0, 1.0]], consistency="eventual") for _ in range(3)))
        assert {how for _, how in strong_marks(replica)} == {"body=- header=-"}
        with pytest.raises(ValueError, match="consistency must be one of"):
            await db.count("c", consistency="weak")
    assert writer.seen == []


def test_embedded_accepts_consistency_and_is_always_strong(tmp_path) -> None:
    ids, vectors, _ = dataset(5)
    with tierdb.open(tmp_path / "data") as db:
        db.create_collection("c", DIM)
        db.upsert("c", ids, vectors)
        assert db.query("c", vector=vectors[1], k=1, consistency="strong")[0].id == "d1"
        assert db.count("c", consistency="strong") == db.count("c", consistency="eventual") == 5
        assert db.get_one("c", "d2", consistency="strong").id == "d2"
        assert [c.name for c in db.list_collections(consistency="strong")] == ["c"]
        assert db.get_collection("c", consistency="strong").count == 5
        assert db.status("c", consistency="strong").count == 5
        with pytest.raises(ValueError, match="consistency must be one of"):
            db.get("c", ["d1"], consistency="always")
