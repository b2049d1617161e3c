"""S3Store against a real S3 server (see conftest.py for which one)."""

from __future__ import annotations

import asyncio
import collections
import os
import socket

import aiohttp
import msgspec
import pytest

from tierdb import metrics
from tierdb.errors import ErrorKind, TierDBError
from tierdb.storage.cache import DiskCachedStore
from tierdb.storage.factory import open_s3_store, with_disk_cache
from tierdb.storage.metered import MeteredStore
from tierdb.storage.retry import RetryingStore
from tierdb.storage.s3 import S3Store
from tierdb.storage.wrapper import without_retries
from tierdb.testing.store import BlobStoreContract

pytestmark = pytest.mark.s3

# SeaweedFS serialises contending conditional PUTs on one key with a ~1 s poll per
# waiter, so many racers make the race test slow without testing anything more.
S3_CONCURRENT_WRITERS = 3


class TestS3StoreContract(BlobStoreContract):
    concurrent_writers = S3_CONCURRENT_WRITERS
    many_keys = 23  # with page_size=5: five pages, the last one partial

    @pytest.fixture
    async def store(self, make_s3_store):
        return make_s3_store(page_size=5, retry=None)


class TestRetryingS3StoreContract(BlobStoreContract):
    concurrent_writers = S3_CONCURRENT_WRITERS
    many_keys = 23

    @pytest.fixture
    async def store(self, make_s3_store):
        return make_s3_store(page_size=5)


class TestProductionRemoteContract(BlobStoreContract):
    """The engine's remote store exactly as the factory builds it."""

    concurrent_writers = S3_CONCURRENT_WRITERS
    many_keys = 23

    @pytest.fixture
    async def store(self, make_settings):
        store = open_s3_store(make_settings("node"))
        yield store
        await store.close()


class TestProductionS3OnlyStackContract(BlobStoreContract):
    """An s3_only collection's store: the disk cache over the factory's remote store."""

    concurrent_writers = S3_CONCURRENT_WRITERS
    many_keys = 23

    @pytest.fixture
    async def store(self, make_settings):
        settings = make_settings("node", policy="s3_only")
        store = with_disk_cache(open_s3_store(settings), settings, "c")
        yield store
        await store.close()


def _counter():
    """(counts, on_request): S3 requests counted by op."""
    counts: collections.Counter[str] = collections.Counter()
    return counts, lambda op: counts.update([op])


async def test_lists_more_than_one_default_page(make_s3_store):
    counts, on_request = _counter()
    store = make_s3_store(on_request=on_request)
    keys = [f"big/{i:05d}.wal" for i in range(1100)]
    sem = asyncio.Semaphore(64)

    async def put(key):
        async with sem:
            await store.put(key, key.encode())

    await asyncio.gather(*(put(k) for k in keys))
    listed = await store.list("big/")
    assert [i.key for i in listed] == keys
    assert all(i.size == len(i.key) for i in listed)
    assert counts["list"] == 2 and counts["put"] == 1100


async def test_keys_live_under_the_configured_prefix(s3_server, s3_settings_factory, make_s3_store):
    settings = s3_settings_factory()
    await make_s3_store(settings).put("collections/c/wal/1.wal", b"x")
    client = s3_server.sync_client()
    listed = client.list_objects_v2(Bucket=s3_server.bucket, Prefix=settings.prefix + "/")
    assert [o["Key"] for o in listed["Contents"]] == [f"{settings.prefix}/collections/c/wal/1.wal"]


async def test_conditional_write_race_between_two_clients(make_s3_store, s3_settings_factory):
    settings = s3_settings_factory()
    a, b = make_s3_store(settings), make_s3_store(settings)
    for version in range(1, 4):
        key = f"collections/c/manifest/{version:020d}.json"
        results = await asyncio.gather(
            a.put(key, b"from-a", if_absent=True),
            b.put(key, b"from-b", if_absent=True),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["NoneType", "TierDBError"]
        loser = next(r for r in results if r is not None)
        assert loser.kind is ErrorKind.PRECONDITION
        winner = b"from-a" if results[0] is None else b"from-b"
        assert await a.get(key) == await b.get(key) == winner


@pytest.mark.parametrize("which", ["access_key", "secret_key"])
async def test_bad_credentials_fail_permanently_without_retry(s3_server, make_s3_store, which):
    counts, on_request = _counter()
    retried = []
    bad = "WRONG" + "x" * 20
    store = make_s3_store(on_request=on_request, on_retry=lambda *a: retried.append(a),
                          **{which: bad})
    with pytest.raises(TierDBError) as info:
        await store.put("k/obj", b"data")
    err = info.value
    assert err.kind is ErrorKind.UNAVAILABLE and err.context["retryable"] is False
    assert err.context["code"] in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}
    assert err.context["status"] == 403
    assert counts["put"] == 1 and retried == []
    assert s3_server.secret_key not in str(err) + repr(err.context)
    assert bad not in str(err) + repr(err.context)


async def test_missing_bucket_fails_permanently(s3_settings_factory, make_s3_store):
    counts, on_request = _counter()
    store = make_s3_store(s3_settings_factory(bucket="tierdb-no-such-bucket"),
                          on_request=on_request)
    for call in (lambda: store.put("k/obj", b"x"), lambda: store.list(""),
                 lambda: store.get("k/obj")):
        with pytest.raises(TierDBError) as info:
            await call()
        assert info.value.context["retryable"] is False
        assert info.value.context["code"] == "NoSuchBucket"
        assert "tierdb-no-such-bucket" in str(info.value)
    assert sum(counts.values()) == 3


async def test_server_outage_is_retryable_and_recovers(s3_server, make_s3_store):
    if not s3_server.controllable:
        pytest.skip("needs a server this session started")
    counts, on_request = _counter()
    store = make_s3_store(on_request=on_request)
    await store.put("collections/c/wal/1.wal", b"before")

    await asyncio.to_thread(s3_server.stop)
    try:
        for call in (lambda: store.get("collections/c/wal/1.wal"),
                     lambda: store.put("collections/c/wal/2.wal", b"during")):
            with pytest.raises(TierDBError) as info:
                await call()
            err = info.value
            assert err.kind is ErrorKind.UNAVAILABLE and err.context["retryable"] is True
            assert err.context["attempts"] == store.settings.max_retries + 1
    finally:
        await asyncio.to_thread(s3_server.start)

    # pooled connections to the old process are dead; the retry layer absorbs that
    assert await store.get("collections/c/wal/1.wal") == b"before"
    await store.put("collections/c/wal/2.wal", b"after", if_absent=True)
    assert await store.get("collections/c/wal/2.wal") == b"after"


async def test_disk_cache_over_s3(tmp_path, make_s3_store):
    counts, on_request = _counter()
    s3 = make_s3_store(on_request=on_request)
    events = []
    store = DiskCachedStore(s3, str(tmp_path / "cache"), 16 * 1024 * 1024,
                            on_event=lambda kind, n: events.append(kind))
    try:
        seg = "collections/c/segments/" + "ab" * 16 + ".seg"
        manifest = "collections/c/manifest/00000000000000000001.json"
        await s3.put(seg, b"segment bytes")
        await store.put(manifest, b"{}", if_absent=True)
        for _ in range(3):
            assert await store.get(seg) == b"segment bytes"
            assert await store.get(manifest) == b"{}"
        assert counts["get"] == 1 + 3  # one fill for the segment, every manifest read
        assert events == ["miss", "hit", "hit"]
        await store.delete(seg)
        with pytest.raises(TierDBError) as info:
            await store.get(seg)
        assert info.value.kind is ErrorKind.NOT_FOUND
    finally:
        await store.close()


async def test_retrying_store_is_what_the_fixture_builds(s3_store):
    assert isinstance(s3_store, RetryingStore)


async def test_production_stack_without_retries_sends_one_request(make_settings, s3_settings_factory):
    # A port nobody listens on: connection refused is transient, so the full stack retries.
    unreachable = s3_settings_factory(endpoint=f"http://127.0.0.1:{_closed_port()}",
                                      connect_timeout_secs=1.0)
    settings = msgspec.structs.replace(make_settings("node"), s3=unreachable)
    counts, on_request = _counter()
    remote = open_s3_store(settings, on_request=on_request)
    try:
        with pytest.raises(TierDBError) as info:
            await without_retries(remote).head("health-probe")
        assert info.value.context["retryable"] is True
        assert counts["head"] == 1
        with pytest.raises(TierDBError) as info:
            await remote.head("health-probe")
        assert info.value.context["attempts"] == settings.retry.max_retries + 1
        assert counts["head"] == 1 + settings.retry.max_retries + 1
    finally:
        await remote.close()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _watch_range_gets(store: S3Store):
    """Every range GET the store sends (on its presigned-URL session): (Range header, HTTP
    status, body length, Content-Range)."""
    seen: list[dict] = []

    async def on_end(session, context, params):
        seen.append({"range": params.headers.get("Range", "").encode(), "status": params.response.status,
                     "length": int(params.response.headers.get("Content-Length", -1)),
                     "content_range": params.response.headers.get("Content-Range")})

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    trace.freeze()
    store._ranged_session()._trace_configs.append(trace)
    return seen


async def test_get_range_sends_one_ranged_get_and_transfers_only_the_range(
    s3_settings_factory, make_s3_store
):
    counts, on_request = _counter()
    store = make_s3_store(retry=None, on_request=on_request)
    key = "collections/ranged/segments/" + "cd" * 16 + ".seg"
    data = os.urandom(1 << 20)
    await store.put(key, data)  # opens the client
    seen = _watch_range_gets(store)
    fetched_before = metrics.S3_BYTES_FETCHED.labels(collection="ranged", op="get_range")._value.get()
    requests_before = metrics.S3_REQUESTS.labels(collection="ranged", op="get_range")._value.get()

    assert await store.get_range(key, 300_000, 300_100) == data[300_000:300_100]
    assert seen == [{"range": b"bytes=300000-300099", "status": 206, "length": 100,
                     "content_range": f"bytes 300000-300099/{len(data)}"}]
    assert counts == {"put": 1, "get_range": 1}

    # An end past the object: S3 clamps, and only the tail travels.
    seen.clear()
    assert await store.get_range(key, len(data) - 10, len(data) + 4096) == data[-10:]
    assert [(s["status"], s["length"]) for s in seen] == [(206, 10)]

    # The production stack meters the request and the bytes under op="get_range".
    metered = MeteredStore(store)
    assert await metered.get_range(key, 0, 4096) == data[:4096]
    assert metrics.S3_REQUESTS.labels(collection="ranged", op="get_range")._value.get() == requests_before + 1
    assert metrics.S3_BYTES_FETCHED.labels(collection="ranged", op="get_range")._value.get() == fetched_before + 4096


async def test_get_range_past_the_end_is_invalid_without_retries(make_s3_store):
    counts, on_request = _counter()
    retried = []
    store = make_s3_store(on_request=on_request, on_retry=lambda *a: retried.append(a))
    await store.put("k/ten", b"0123456789")
    await store.put("k/empty", b"")
    for key, start in (("k/ten", 10), ("k/empty", 0)):
        with pytest.raises(TierDBError) as info:
            await store.get_range(key, start, start + 5)
        assert info.value.kind is ErrorKind.INVALID and key in str(info.value)
    assert counts["get_range"] == 2 and retried == []


MiB = 1 << 20
SEGMENT_KEY = "collections/c/segments/" + "cd" * 16 + ".seg"


def _leftover_uploads(s3_server, settings, key: str) -> list[dict]:
    """Multipart uploads still open for ``key`` (SeaweedFS supports ListMultipartUploads)."""
    listed = s3_server.sync_client().list_multipart_uploads(
        Bucket=s3_server.bucket, Prefix=f"{settings.prefix}/{key}")
    return listed.get("Uploads", [])


def _fail_on_call(client, method: str, n: int, error: Exception, calls: list) -> None:
    """Make the ``n``th call of the client's ``method`` raise ``error`` (the others go through);
    every call's kwargs are recorded in ``calls``."""
    real = getattr(client, method)

    async def faulty(**kwargs):
        calls.append(kwargs)
        if len(calls) == n:
            raise error
        return await real(**kwargs)

    setattr(client, method, faulty)


def _client_error(code: str, status: int, op: str):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, op)


async def test_put_file_multipart_roundtrip(tmp_path, s3_server, s3_settings_factory, make_s3_store):
    settings = s3_settings_factory()
    counts, on_request = _counter()
    store = make_s3_store(settings, retry=None, part_size=5 * MiB, on_request=on_request)
    data = os.urandom(11 * MiB + 12_345)  # parts of 5, 5 and 1 MiB + a bit
    source = tmp_path / "segment.tmp"
    source.write_bytes(data)
    await store.put_file(SEGMENT_KEY, str(source))
    assert await store.get(SEGMENT_KEY) == data
    assert await store.get_range(SEGMENT_KEY, 5 * MiB - 3, 5 * MiB + 3) == data[5 * MiB - 3 : 5 * MiB + 3]
    assert counts["put"] == store.upload_requests(len(data)) == 1 + 3 + 1  # create, parts, complete
    head = s3_server.sync_client().head_object(Bucket=s3_server.bucket, Key=f"{settings.prefix}/{SEGMENT_KEY}")
    assert head["ContentLength"] == len(data) and head["ETag"].strip('"').endswith("-3")  # 3 parts
    # A file of at most one part is one plain PUT.
    counts.clear()
    source.write_bytes(data[: 5 * MiB])
    await store.put_file(SEGMENT_KEY, str(source))
    assert counts["put"] == 1 and await store.get(SEGMENT_KEY) == data[: 5 * MiB]


@pytest.mark.parametrize(
    ("code", "status", "retryable"), [("SlowDown", 503, True), ("AccessDenied", 403, False)]
)
async def test_put_file_failed_part_aborts_the_upload(
    tmp_path, s3_server, s3_settings_factory, make_s3_store, code, status, retryable
):
    settings = s3_settings_factory()
    store = make_s3_store(settings, retry=None, part_size=5 * MiB)
    source = tmp_path / "segment.tmp"
    source.write_bytes(os.urandom(11 * MiB))
    await store.head(SEGMENT_KEY)  # opens the client, to fault its calls
    parts, aborts = [], []
    _fail_on_call(store._client, "upload_part", 2, _client_error(code, status, "UploadPart"), parts)
    _fail_on_call(store._client, "abort_multipart_upload", 0, AssertionError("never"), aborts)
    with pytest.raises(TierDBError) as info:
        await store.put_file(SEGMENT_KEY, str(source))
    err = info.value
    assert err.kind is ErrorKind.UNAVAILABLE and err.context["retryable"] is retryable
    assert err.context["code"] == code and err.context["op"] == "put" and SEGMENT_KEY in str(err)
    assert len(parts) == 2  # no part sent after the failed one
    assert [a["UploadId"] for a in aborts] == [parts[0]["UploadId"]]
    assert await store.head(SEGMENT_KEY) is None
    assert _leftover_uploads(s3_server, settings, SEGMENT_KEY) == []


async def test_put_file_failed_abort_is_logged_and_the_original_error_raised(
    tmp_path, s3_server, s3_settings_factory, make_s3_store, caplog
):
    settings = s3_settings_factory()
    store = make_s3_store(settings, retry=None, part_size=5 * MiB)
    source = tmp_path / "segment.tmp"
    source.write_bytes(os.urandom(11 * MiB))
    await store.head(SEGMENT_KEY)
    parts, aborts = [], []
    _fail_on_call(store._client, "upload_part", 2, _client_error("InternalError", 500, "UploadPart"), parts)
    _fail_on_call(store._client, "abort_multipart_upload", 1,
                  _client_error("ServiceUnavailable", 503, "AbortMultipartUpload"), aborts)
    with caplog.at_level("WARNING", logger="tierdb.storage.s3"):
        with pytest.raises(TierDBError) as info:
            await store.put_file(SEGMENT_KEY, str(source))
    assert info.value.context["code"] == "InternalError" and info.value.context["retryable"] is True
    upload_id = parts[0]["UploadId"]
    warned = [r for r in caplog.records if "abort" in r.getMessage()]
    assert len(warned) == 1 and warned[0].upload_id == upload_id and warned[0].key == SEGMENT_KEY
    assert warned[0].code == "ServiceUnavailable"
    assert [u["UploadId"] for u in _leftover_uploads(s3_server, settings, SEGMENT_KEY)] == [upload_id]
    await asyncio.to_thread(s3_server.sync_client().abort_multipart_upload, Bucket=s3_server.bucket,
                            Key=f"{settings.prefix}/{SEGMENT_KEY}", UploadId=upload_id)


async def test_retried_put_file_restarts_the_whole_upload(tmp_path, s3_server, s3_settings_factory, make_s3_store):
    settings = s3_settings_factory()
    retried = []
    store = make_s3_store(settings, part_size=5 * MiB, on_retry=lambda *a: retried.append(a))
    data = os.urandom(11 * MiB)
    source = tmp_path / "segment.tmp"
    source.write_bytes(data)
    s3 = store.inner
    await s3.head(SEGMENT_KEY)
    parts = []
    _fail_on_call(s3._client, "upload_part", 2, _client_error("SlowDown", 503, "UploadPart"), parts)
    await store.put_file(SEGMENT_KEY, str(source))
    assert len(retried) == 1 and retried[0][0] == "put"
    assert [p["PartNumber"] for p in parts] == [1, 2, 1, 2, 3]  # the retry starts over
    assert len({p["UploadId"] for p in parts}) == 2
    assert await store.get(SEGMENT_KEY) == data
    assert _leftover_uploads(s3_server, settings, SEGMENT_KEY) == []
