"""Retries: 429/503 with backoff and Retry-After, lost connections, a server that comes up late."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tierdb.client import ConnectionFailed, RateLimited, RequestTimeout, TierDB, Unavailable
from tierdb.client._calls import Backoff, parse_retry_after
from tests.client.support import DIM, dataset, unique
from tests.server_process import ServerProcess, free_port


@pytest.fixture
def collection(server):
    name = unique()
    with TierDB(server.url) as db:
        db.create_collection(name, DIM)
        yield name
        db.delete_collection(name, missing_ok=True)


def test_idempotent_calls_are_retried_on_503_and_429(proxy, collection) -> None:
    ids, vectors, _ = dataset(10)
    with TierDB(proxy.url, retries=3, backoff=0.01) as db:
        proxy.fail_next(2, 503, retry_after="0")
        assert db.upsert(collection, ids, vectors) == 10
        proxy.fail_next(1, 429)
        assert db.query(collection, vector=vectors[0], k=1)[0].id == "d0"
        proxy.fail_next(3, 503)
        assert db.get(collection, ["d1"])[0].id == "d1"
        proxy.fail_next(1, 503)
        assert db.delete(collection, ids=["d9"]) == 1
    assert [s.status for s in proxy.requests("POST", "/documents")] == [503, 503, 200]
    assert [s.status for s in proxy.requests("POST", "/query")] == [429, 200]
    assert [s.status for s in proxy.requests("POST", "/documents/get")] == [503, 503, 503, 200]


def test_retry_after_is_honoured(proxy, collection) -> None:
    with TierDB(proxy.url, retries=2, backoff=0.001) as db:
        proxy.fail_next(1, 503, retry_after="1")
        started = time.monotonic()
        assert db.count(collection) == 0
        assert time.monotonic() - started >= 0.95


def test_retries_run_out(proxy, collection) -> None:
    with TierDB(proxy.url, retries=2, backoff=0.001) as db:
        proxy.fail_next(10, 503)
        with pytest.raises(Unavailable) as exc:
            db.count(collection)
        assert exc.value.status == 503 and exc.value.message == "injected 503"
        assert len(proxy.requests("GET")) == 3  # the first try + 2 retries
        proxy.reset()
        proxy.fail_next(10, 429)
        with pytest.raises(RateLimited):
            db.count(collection)


def test_calls_that_are_not_idempotent_are_not_retried_on_503(proxy, collection) -> None:
    with TierDB(proxy.url, retries=5, backoff=0.001) as db:
        for call in (
            lambda: db.create_collection(unique(), DIM),
            lambda: db.delete_collection(collection),
            lambda: db.compact(collection),
            lambda: db.retry_dlq(collection),
            lambda: db.clear_dlq(collection),
        ):
            proxy.reset()
            proxy.fail_next(1, 503)
            with pytest.raises(Unavailable):
                call()
            assert len(proxy.seen) == 1
        assert db.count(collection) == 0  # the collection is still there


def test_unreachable_server_raises_connection_failed() -> None:
    port = free_port()
    with TierDB(f"http://127.0.0.1:{port}", retries=2, backoff=0.01) as db:
        started = time.monotonic()
        with pytest.raises(ConnectionFailed) as exc:
            db.list_collections()
        assert exc.value.status == 0 and "after 3 attempt(s)" in exc.value.message
        assert time.monotonic() - started < 5


def test_a_slow_answer_is_a_request_timeout(proxy, collection) -> None:
    with TierDB(proxy.url, timeout=0.3, retries=1, backoff=0.01) as db:
        proxy.slow_next(2, 1.0)
        with pytest.raises(RequestTimeout) as exc:
            db.count(collection)  # idempotent: tried twice
        assert exc.value.kind == "timeout" and "did not answer" in exc.value.message
        assert isinstance(exc.value, ConnectionFailed)
        time.sleep(1.0)  # let the proxy finish the held requests
        proxy.reset()
        proxy.slow_next(1, 1.0)
        with pytest.raises(RequestTimeout):
            db.compact(collection)  # not idempotent: the server may be working on it, never resent
        time.sleep(1.0)
        assert len(proxy.requests("POST", "/compact")) == 1
        assert db.count(collection) == 0


def test_client_started_before_the_server_waits_for_it(tmp_path) -> None:
    """Connection refused, then (maybe) 503 while recovering, then success: all retried."""
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens yet
    with ServerProcess(tmp_path / "data", port=port) as server:
        starter = threading.Timer(0.5, lambda: server.start(wait=False))
        starter.start()
        try:
            with TierDB(server.url, retries=40, backoff=0.1, max_backoff=0.5) as db:
                started = time.monotonic()
                assert db.list_collections() == []
                assert time.monotonic() - started >= 0.4
                name = unique()
                db.create_collection(name, DIM)
                assert db.upsert(name, *dataset(5)[:2]) == 5
        finally:
            starter.join()


def test_backoff_grows_with_jitter_and_respects_retry_after() -> None:
    backoff = Backoff(retries=5, base=0.2, cap=1.0)
    for attempt, ceiling in enumerate([0.2, 0.4, 0.8, 1.0, 1.0]):
        delays = [backoff.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert backoff.delay(0, "3") >= 3
    assert Backoff(max_retry_after=2).delay(0, "120") == pytest.approx(2, abs=0.2)
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("garbage") is None and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
