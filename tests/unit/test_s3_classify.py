"""classify() over constructed botocore errors, and S3Store's error mapping end to end
against a tiny fake S3 endpoint (no real server needed)."""

import asyncio
import ssl

import aiohttp
import pytest
from aiohttp import web
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)

from tierdb.config import RetrySettings, S3Settings
from tierdb.errors import ErrorKind, TierDBError
from tierdb.storage.retry import RetryingStore
from tierdb.storage.s3 import S3Store, classify


def client_error(code, status, op="PutObject"):
    response = {"Error": {"Code": code, "Message": "server text is never parsed"},
                "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "req-1"}}
    return ClientError(response, op)


@pytest.mark.parametrize(
    "code,status,retryable",
    [
        ("InternalError", 500, True),
        ("ServiceUnavailable", 503, True),
        ("SlowDown", 503, True),
        ("BadGateway", 502, True),
        ("GatewayTimeout", 504, True),
        ("TooManyRequests", 429, True),
        ("RequestTimeout", 400, True),
        ("ThrottlingException", 400, True),
        ("Throttling", 400, True),
        ("AccessDenied", 403, False),
        ("InvalidAccessKeyId", 403, False),
        ("SignatureDoesNotMatch", 403, False),
        ("NoSuchBucket", 404, False),
        ("NoSuchKey", 404, False),
        ("InvalidRequest", 400, False),
        ("InvalidArgument", 400, False),
        ("PreconditionFailed", 412, False),
        ("ConditionalRequestConflict", 409, False),
        ("EntityTooLarge", 400, False),
        ("NotImplemented", 501, False),
        ("", 418, False),
    ],
)
def test_client_errors(code, status, retryable):
    got = classify(client_error(code, status))
    assert got == (retryable, code or str(status), status)


def test_head_404_without_body_uses_status_as_code():
    assert classify(client_error("404", 404, "HeadObject")) == (False, "404", 404)


def test_missing_metadata_is_permanent():
    assert classify(ClientError({}, "GetObject")) == (False, "Unknown", None)


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="http://s3"),
        ConnectionClosedError(endpoint_url="http://s3"),
        ReadTimeoutError(endpoint_url="http://s3"),
        ConnectTimeoutError(endpoint_url="http://s3"),
        ResponseStreamingError(error="reset"),
        aiohttp.ClientConnectionError(),
        aiohttp.ServerDisconnectedError(),
        asyncio.TimeoutError(),
        ConnectionResetError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_connection_errors_are_retryable(exc):
    assert classify(exc) == (True, type(exc).__name__, None)


@pytest.mark.parametrize(
    "exc",
    [NoCredentialsError(), SSLError(endpoint_url="https://s3", error="bad cert"), ValueError("x")],
    ids=lambda e: type(e).__name__,
)
def test_other_errors_are_permanent(exc):
    assert classify(exc) == (False, type(exc).__name__, None)


# -- S3Store against a fake endpoint ---------------------------------------------------

SECRET = "sEcReT-never-in-errors"


class FakeS3:
    """Answers every request with one canned S3 error and counts requests."""

    def __init__(self):
        self.requests = 0
        self.status, self.code = 503, "SlowDown"
        self.respond = None  # a function of the request answering instead of the canned error

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        await request.read()
        if self.respond is not None:
            return self.respond(request)
        body = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{self.code}</Code>"
                "<Message>nope</Message><RequestId>r-42</RequestId></Error>")
        if request.method == "HEAD":
            body = ""
        return web.Response(status=self.status, body=body, content_type="application/xml",
                            headers={"x-amz-request-id": "r-42"})


@pytest.fixture
async def fake_s3():
    fake = FakeS3()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.endpoint = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


@pytest.fixture
async def fake_store(fake_s3):
    ops = []
    store = S3Store(
        S3Settings(endpoint=fake_s3.endpoint, bucket="b", prefix="p", connect_timeout_secs=1,
                   read_timeout_secs=2),
        access_key="AKIAFAKE", secret_key=SECRET, on_request=ops.append,
    )
    store.ops = ops
    yield store
    await store.close()


async def test_transient_status_is_retryable_and_botocore_does_not_retry(fake_s3, fake_store):
    with pytest.raises(TierDBError) as info:
        await fake_store.get("collections/c/segments/x.seg")
    err = info.value
    assert err.kind is ErrorKind.UNAVAILABLE
    assert err.context["retryable"] is True
    assert (err.context["code"], err.context["status"]) == ("SlowDown", 503)
    assert err.context["request_id"] == "r-42"
    assert "collections/c/segments/x.seg" in str(err)
    assert fake_s3.requests == 1 and fake_store.ops == ["get"]


@pytest.mark.parametrize("code,status", [("AccessDenied", 403), ("SignatureDoesNotMatch", 403),
                                         ("NoSuchBucket", 404), ("InvalidRequest", 400)])
async def test_permanent_errors_are_not_retried_and_keep_secrets(fake_s3, fake_store, code, status):
    fake_s3.status, fake_s3.code = status, code
    retried = []
    store = RetryingStore(fake_store, RetrySettings(max_retries=3, base_backoff_secs=0.001),
                          on_retry=lambda *a: retried.append(a))
    with pytest.raises(TierDBError) as info:
        await store.put("k/obj", b"data")
    err = info.value
    assert err.kind is ErrorKind.UNAVAILABLE
    assert err.context["retryable"] is False
    assert (err.context["code"], err.context["status"]) == (code, status)
    assert fake_s3.requests == 1 and retried == []
    assert SECRET not in repr(err) + str(err) + repr(err.context) + repr(fake_store)


async def test_conditional_put_precondition(fake_s3, fake_store):
    for status, code in [(412, "PreconditionFailed"), (409, "ConditionalRequestConflict")]:
        fake_s3.status, fake_s3.code = status, code
        with pytest.raises(TierDBError) as info:
            await fake_store.put("m/1.json", b"x", if_absent=True)
        assert info.value.kind is ErrorKind.PRECONDITION


async def test_missing_key(fake_s3, fake_store):
    fake_s3.status, fake_s3.code = 404, "NoSuchKey"
    with pytest.raises(TierDBError) as info:
        await fake_store.get("a/b")
    assert info.value.kind is ErrorKind.NOT_FOUND
    assert await fake_store.head("a/b") is None
    await fake_store.delete("a/b")  # idempotent even if the server says 404


@pytest.mark.parametrize(
    "status,code,kind,retryable",
    [(416, "InvalidRange", ErrorKind.INVALID, None), (404, "NoSuchKey", ErrorKind.NOT_FOUND, None),
     (503, "SlowDown", ErrorKind.UNAVAILABLE, True), (403, "AccessDenied", ErrorKind.UNAVAILABLE, False)],
)
async def test_range_get_errors(fake_s3, fake_store, status, code, kind, retryable):
    fake_s3.status, fake_s3.code = status, code
    with pytest.raises(TierDBError) as info:
        await fake_store.get_range("collections/c/segments/x.seg", 10, 20)
    assert info.value.kind is kind
    assert "collections/c/segments/x.seg" in str(info.value)
    assert info.value.context.get("retryable") is retryable
    assert fake_s3.requests == 1 and fake_store.ops == ["get_range"]


async def test_range_get_from_a_server_that_ignores_range(fake_s3, fake_store):
    seen = []

    def whole_object(request):
        seen.append(request.headers.get("Range"))
        return web.Response(status=200, body=b"0123456789")

    fake_s3.respond = whole_object
    assert await fake_store.get_range("k/obj", 3, 6) == b"345"
    assert await fake_store.get_range("k/obj", 8, 100) == b"89"
    with pytest.raises(TierDBError) as info:
        await fake_store.get_range("k/obj", 10, 11)
    assert info.value.kind is ErrorKind.INVALID
    assert seen == ["bytes=3-5", "bytes=8-99", "bytes=10-10"]


async def test_range_get_rejects_an_answer_for_other_bytes(fake_s3, fake_store):
    fake_s3.respond = lambda request: web.Response(
        status=206, body=b"0123", headers={"Content-Range": "bytes 0-3/10"}
    )
    with pytest.raises(TierDBError) as info:
        await fake_store.get_range("k/obj", 4, 8)
    assert info.value.kind is ErrorKind.UNAVAILABLE and info.value.context["retryable"] is False
    assert "bytes 0-3/10" in str(info.value)


async def test_connection_refused_is_retryable():
    store = S3Store(S3Settings(endpoint="http://127.0.0.1:9", bucket="b", connect_timeout_secs=1),
                    access_key="a", secret_key=SECRET)
    try:
        with pytest.raises(TierDBError) as info:
            await store.list("")
        assert info.value.context["retryable"] is True
        assert info.value.context["code"] == "EndpointConnectionError"
    finally:
        await store.close()


def test_store_requires_a_bucket():
    with pytest.raises(TierDBError) as info:
        S3Store(S3Settings(bucket=""))
    assert info.value.kind is ErrorKind.INVALID


@pytest.mark.parametrize(
    "content_range,body",
    [("bytes 4-7/10", b"456"), ("bytes 4-6/10", b"456"), ("bytes 4-7/*", b"4567x"), ("items 4-7/10", b"4567"),
     ("bytes 4-/10", b"4567")],
)
async def test_range_get_rejects_a_short_or_malformed_answer(fake_s3, fake_store, content_range, body):
    fake_s3.respond = lambda request: web.Response(
        status=206, body=body, headers={"Content-Range": content_range}
    )
    with pytest.raises(TierDBError) as info:
        await fake_store.get_range("k/obj", 4, 8)
    assert info.value.kind is ErrorKind.UNAVAILABLE and info.value.context["retryable"] is False


@pytest.mark.parametrize("content_range,body", [("bytes 4-7/10", b"4567"), ("bytes 4-5/6", b"45"),
                                                ("bytes 4-7/*", b"4567")])
async def test_range_get_accepts_an_exact_or_clamped_answer(fake_s3, fake_store, content_range, body):
    fake_s3.respond = lambda request: web.Response(
        status=206, body=body, headers={"Content-Range": content_range}
    )
    assert await fake_store.get_range("k/obj", 4, 8) == body


async def test_range_gets_reuse_one_presigned_url_per_object_and_sign_again_after_a_403(fake_s3, fake_store):
    """Range GETs go to a presigned URL signed once per object; a reused URL refused with 403
    (expired, or signed with rotated credentials) is signed again once, and a 403 on a fresh
    signature is a permanent error."""
    seen: list[str] = []

    def answer(request):
        seen.append(request.query_string)
        assert request.headers["Range"] == "bytes=2-4" and "X-Amz-Signature" in request.query_string
        return web.Response(status=206, body=b"234", headers={"Content-Range": "bytes 2-4/10"})

    fake_s3.respond = answer
    for _ in range(3):
        assert await fake_store.get_range("k/obj", 2, 5) == b"234"
    assert len(set(seen)) == 1 and fake_store.ops == ["get_range"] * 3

    refused = {"left": 1}

    def refuse_once(request):
        if refused["left"]:
            refused["left"] -= 1
            return web.Response(status=403, body=b"<Error><Code>AccessDenied</Code></Error>")
        return answer(request)

    fake_s3.respond = refuse_once
    fake_store._urls["k/obj"] = (fake_store._urls["k/obj"][0], float("inf"))
    assert await fake_store.get_range("k/obj", 2, 5) == b"234"     # re-signed after the 403
    assert fake_store.ops[-2:] == ["get_range", "get_range"]
    fake_s3.respond = None
    fake_s3.status, fake_s3.code = 403, "AccessDenied"
    fake_store._urls.clear()
    before = fake_s3.requests
    with pytest.raises(TierDBError) as info:
        await fake_store.get_range("k/other", 2, 5)
    assert info.value.context["retryable"] is False and info.value.context["code"] == "AccessDenied"
    assert fake_s3.requests == before + 1                           # a fresh signature is not retried


def test_range_gets_trust_aws_ca_bundle_like_botocore(monkeypatch, tmp_path):
    """A private CA named by AWS_CA_BUNDLE (botocore honours it) is trusted by the range GETs too."""
    certifi = pytest.importorskip("certifi")   # installed with httpx (dev extra)

    from tierdb.storage import s3

    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    assert s3._range_ssl() is True                      # the default trust store
    monkeypatch.setenv("AWS_CA_BUNDLE", certifi.where())
    context = s3._range_ssl()
    assert context.verify_mode is ssl.CERT_REQUIRED and context.cert_store_stats()["x509_ca"] > 10
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(OSError):                         # a wrong path is an error, never ignored
        s3._range_ssl()
