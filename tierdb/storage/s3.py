"""The S3 BlobStore (AWS S3, MinIO, SeaweedFS, any S3-compatible server).

The only module in TierDB that imports aiobotocore/botocore.  botocore's own retries are
off: RetryingStore decides, from ``classify``, what is worth another attempt.
Credentials come from the standard AWS chain unless given explicitly, and never appear in
logs, reprs or error messages (server error messages are not copied either: only the
error code, HTTP status and request id).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import ssl
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any, BinaryIO

import aiohttp
import yarl
from aiobotocore.session import AioSession
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)

from tierdb import keys
from tierdb.config import S3Settings
from tierdb.crashpoints import crash_point
from tierdb.errors import ErrorKind, TierDBError, invalid
from tierdb.storage.base import ObjectInfo
from tierdb.storage.local import (
    local_file_error,
    object_exists,
    object_not_found,
    range_not_satisfiable,
    slice_range,
    validate_key,
    validate_prefix,
    validate_range,
)

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 1000  # the S3 maximum for ListObjectsV2
_MAX_POOL_CONNECTIONS = 32

# Error codes worth retrying whatever the status says.  Throttling* is matched by prefix.
_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestThrottled",
        "BandwidthLimitExceeded",
        "OperationAborted",
    }
)
# 5xx that will not get better by retrying.
_PERMANENT_CODES = frozenset({"NotImplemented"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_RANGE_NOT_SATISFIABLE_CODES = frozenset({"InvalidRange", "416"})
_READ_OPS = ("get", "get_range", "head", "delete")

_TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    EndpointConnectionError,
    ConnectionClosedError,
    ReadTimeoutError,
    ConnectTimeoutError,
    ProxyConnectionError,
    HTTPClientError,  # also covers ResponseStreamingError (body cut off mid-read)
    aiohttp.ClientError,
    TimeoutError,  # is asyncio.TimeoutError since 3.11
    ConnectionError,  # the builtin: resets, refusals, broken pipes
)

# Presigned range GETs: a URL is valid for an hour and reused for 50 minutes (objects are
# immutable); at most this many are kept (a few hundred bytes each).
_URL_TTL_SECS = 3600
_URL_REUSE_SECS = 3000.0
_MAX_URLS = 100_000
# Concurrent range GETs: a query sends a few hundred small ones at once (600 GETs against a local
# SeaweedFS: 115 ms over 32 connections, 95 over 64, 98 over 128).
_RANGE_CONNECTIONS = 64

# put_file: a file of at most one part (``s3.multipart_part_bytes``) goes up in one PUT, a larger
# one as a multipart upload of parts that big (one part in RAM at a time).  S3 wants every part
# but the last >= 5 MiB, at most 5 GiB, and at most 10,000 parts (a file that would need more
# gets larger parts).
MIN_PART_SIZE = 5 << 20
MAX_PART_SIZE = 5 << 30
MAX_PARTS = 10_000


def _range_ssl() -> ssl.SSLContext | bool:
    """TLS for the range GETs as botocore does it: ``AWS_CA_BUNDLE`` (a private CA, e.g. a
    MinIO over TLS) is trusted when set, else the system's default trust store."""
    bundle = os.environ.get("AWS_CA_BUNDLE")
    return ssl.create_default_context(cafile=bundle) if bundle else True


def _proxy_environment() -> dict[str, str]:
    """HTTP(S)_PROXY and friends: aiohttp looks them up on every request when asked to, so it is
    asked only when there are some."""
    return {k: v for k, v in os.environ.items() if k.lower() in ("http_proxy", "https_proxy", "all_proxy") and v}


def _client_error(status: int, body: bytes, headers: Any) -> ClientError:
    """An S3 error answer to a plain HTTP request, as botocore would raise it (code from the
    XML body, else the status), so ``classify`` and ``_error`` treat it the same way."""
    code = str(status)
    found = re.search(rb"<Code>([^<]{1,128})</Code>", body or b"")
    if found:
        code = found.group(1).decode("ascii", "replace")
    return ClientError(
        {"Error": {"Code": code},
         "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": headers.get("x-amz-request-id", "")}},
        "GetObject")


_HINTS = {
    "AccessDenied": "check the S3 credentials and the bucket policy",
    "InvalidAccessKeyId": "check the S3 access key",
    "SignatureDoesNotMatch": "check the S3 secret key",
    "NoSuchBucket": "create the bucket or fix s3.bucket",
    "NotImplemented": "the S3 server does not support this request "
    "(conditional writes need If-None-Match support)",
    "NoCredentialsError": "no S3 credentials found (set AWS_ACCESS_KEY_ID / "
    "AWS_SECRET_ACCESS_KEY or another AWS credential source)",
}


def _open_sized(path: str) -> tuple[BinaryIO, int]:
    source = open(path, "rb")  # noqa: SIM115 - closed by put_file
    return source, os.fstat(source.fileno()).st_size


async def _read_part(fd: int, length: int, offset: int, key: str, path: str) -> bytes:
    """``length`` bytes of the file to upload at ``offset``, read in a worker thread."""
    try:
        return await asyncio.to_thread(_read_exactly, fd, length, offset)
    except OSError as exc:
        raise local_file_error(exc, "put", key, path) from exc


def _read_exactly(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes of the file at ``offset`` (blocking); a file cut short is an error."""
    data = os.pread(fd, length, offset)
    while len(data) < length:
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            raise OSError(errno.EIO, f"file ended {length - len(data)} bytes early (changed while being uploaded)")
        data += more
    return data


def _parse_content_range(content_range: str) -> tuple[int, int, int | None] | None:
    """(first, last, size) of ``Content-Range: bytes first-last/size`` (size None for ``*``);
    None if malformed."""
    unit, _, spec = content_range.strip().partition(" ")
    span, _, size = spec.partition("/")
    first, _, last = span.partition("-")
    if unit != "bytes" or not first.isdigit() or not last.isdigit():
        return None
    if size != "*" and not size.isdigit():
        return None
    return int(first), int(last), None if size == "*" else int(size)


def classify(exc: BaseException) -> tuple[bool, str, int | None]:
    """(retryable, code, http_status) for an exception raised by an S3 call.

    Decided by the botocore error code and HTTP status, never by message text:
    5xx (except 501), 429, SlowDown, RequestTimeout, Throttling*, timeouts and connection
    errors are retryable; every other 4xx and every other error (credentials, bad bucket,
    invalid request, TLS certificate problems) is permanent.
    """
    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        code = str(error.get("Code") or (status if status is not None else "Unknown"))
        if code in _PERMANENT_CODES or status == 501:
            return False, code, status
        retryable = (
            code in _RETRYABLE_CODES
            or code.startswith("Throttl")
            or status == 429
            or (status is not None and status >= 500)
        )
        return retryable, code, status
    code = type(exc).__name__
    # SSLError is a ConnectionError subclass, but a certificate that fails to verify
    # will fail again: configuration, not weather.
    if isinstance(exc, SSLError):
        return False, code, None
    return isinstance(exc, _TRANSIENT_EXCEPTIONS), code, None


def _answers_range(
    parsed: tuple[int, int, int | None] | None, start: int, end: int, received: int
) -> bool:
    """Whether a 206 with this Content-Range and body length is exactly bytes [start, end),
    clamped to the object's end."""
    if parsed is None:
        return False
    first, last, size = parsed
    expected_last = end - 1 if size is None else min(end, size) - 1
    return first == start and last == expected_last and received == last - first + 1


class S3Store:
    """Objects under ``{settings.prefix}/{key}`` in ``settings.bucket``.

    ``on_request(op)`` is called once per HTTP request (op in get/get_range/put/delete/list/
    head; a multi-page list calls it once per page, a multipart upload once per request of it,
    all as "put") so the caller can count S3 requests.  ``part_size``: see ``put_file``.
    """

    def __init__(
        self,
        settings: S3Settings,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        on_request: Callable[[str], None] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        part_size: int | None = None,
    ) -> None:
        if not settings.bucket:
            raise invalid("s3.bucket is not set")
        if not 1 <= page_size <= DEFAULT_PAGE_SIZE:
            raise invalid(f"S3 list page size must be 1..{DEFAULT_PAGE_SIZE}, got {page_size}")
        part_size = settings.multipart_part_bytes if part_size is None else part_size
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise invalid(f"S3 multipart part size must be {MIN_PART_SIZE}..{MAX_PART_SIZE} bytes, got {part_size}")
        self.settings = settings
        self.bucket = settings.bucket
        self._root = keys.with_prefix(settings.prefix, "")
        self._credentials = {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key}
        self._on_request = on_request
        self._page_size = page_size
        self.part_size = part_size
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._ranged: aiohttp.ClientSession | None = None          # range GETs on presigned URLs
        self._urls: dict[str, tuple[yarl.URL, float]] = {}         # key -> (URL, reuse it until)
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        endpoint = self.settings.endpoint or "aws"
        return f"S3Store(endpoint={endpoint!r}, bucket={self.bucket!r}, prefix={self._root!r})"

    # -- BlobStore ---------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        validate_key(key)
        try:
            client = await self._request("get")
            response = await client.get_object(Bucket=self.bucket, Key=self._full(key))
            async with response["Body"] as body:
                return await body.read()
        except Exception as exc:
            raise self._error("get", key, exc) from exc

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """A range GET on a presigned URL of the object (signed once per object, reused for
        ``_URL_REUSE_SECS``), sent with plain aiohttp: queries send hundreds of small range
        GETs and botocore spends ~1 ms of CPU building and parsing each one.  Every other
        operation goes through the botocore client."""
        validate_range(key, start, end)
        try:
            data, content_range = await self._ranged_get(key, start, end)
        except Exception as exc:
            raise self._error("get_range", key, exc, start=start, end=end) from exc
        if not content_range:
            # A server that ignores Range answers 200 with the whole object: still correct.
            logger.warning(
                "S3 server ignored a Range header and sent the whole object",
                extra={"key": key, "bytes": len(data), "bucket": self.bucket},
            )
            return slice_range(key, data, start, end)
        if not _answers_range(_parse_content_range(content_range), start, end, len(data)):
            raise TierDBError(
                ErrorKind.UNAVAILABLE,
                f"S3 get_range of {key!r} asked for bytes [{start}, {end}) and got "
                f"{content_range!r} ({len(data)} bytes)",
                op="get_range", key=key, bucket=self.bucket, start=start, end=end,
                content_range=content_range, retryable=False,
            )
        return data

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        validate_key(key)
        kwargs: dict[str, Any] = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            client = await self._request("put")
            await client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data, **kwargs)
        except Exception as exc:
            raise self._error("put", key, exc) from exc

    async def put_file(self, key: str, path: str) -> None:
        """A file of at most ``part_size`` bytes is sent with one PUT; a larger one as a multipart
        upload, one part read (in a worker thread) and sent at a time.  A multipart upload that
        fails (or is cancelled) is aborted, so no parts are left behind, and the failure is
        raised as ``put`` would raise it."""
        validate_key(key)
        try:
            source, size = await asyncio.to_thread(_open_sized, path)
        except OSError as exc:
            raise local_file_error(exc, "put", key, path) from exc
        try:
            if size <= self.part_size:
                await self.put(key, await _read_part(source.fileno(), size, 0, key, path))
            else:
                await self._put_multipart(key, path, source.fileno(), size)
        finally:
            await asyncio.to_thread(source.close)

    def upload_requests(self, size: int) -> int:
        """The S3 requests ``put_file`` of a file of ``size`` bytes sends when it succeeds."""
        part_size = self._part_size_for(size)
        return 1 if size <= self.part_size else -(-size // part_size) + 2  # create + parts + complete

    def _part_size_for(self, size: int) -> int:
        return max(self.part_size, -(-size // MAX_PARTS))

    async def _put_multipart(self, key: str, path: str, fd: int, size: int) -> None:
        part_size = self._part_size_for(size)
        try:
            client = await self._request("put")
            created = await client.create_multipart_upload(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            raise self._error("put", key, exc) from exc
        upload_id = created["UploadId"]
        try:
            parts = []
            for number, offset in enumerate(range(0, size, part_size), start=1):
                body = await _read_part(fd, min(part_size, size - offset), offset, key, path)
                client = await self._request("put")
                response = await client.upload_part(
                    Bucket=self.bucket, Key=self._full(key), UploadId=upload_id, PartNumber=number, Body=body
                )
                del body  # one part in RAM: this one goes before the next is read
                parts.append({"PartNumber": number, "ETag": response["ETag"]})
                crash_point("s3:multipart_part_uploaded")
            client = await self._request("put")
            await client.complete_multipart_upload(
                Bucket=self.bucket, Key=self._full(key), UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except (Exception, asyncio.CancelledError) as exc:
            await self._abort_multipart(key, upload_id, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise self._error("put", key, exc) from exc
        logger.debug("S3 multipart upload done",
                     extra={"key": key, "bucket": self.bucket, "bytes": size, "parts": len(parts)})

    async def _abort_multipart(self, key: str, upload_id: str, cause: BaseException) -> None:
        """Best effort: a failed abort is logged (the upload's parts then linger until a bucket
        lifecycle rule removes them) and never replaces the error that made us abort."""
        try:
            client = await self._request("put")
            await client.abort_multipart_upload(Bucket=self.bucket, Key=self._full(key), UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001 - best effort: any failure is logged, never raised
            _, code, status = classify(exc)
            logger.warning(
                "S3 abort of a failed multipart upload failed; its parts are left over",
                extra={"key": key, "bucket": self.bucket, "upload_id": upload_id, "code": code,
                       "status": status, "cause": type(cause).__name__},
            )

    async def delete(self, key: str) -> None:
        validate_key(key)
        try:
            client = await self._request("delete")
            await client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            error = self._error("delete", key, exc)
            if error.kind is not ErrorKind.NOT_FOUND:  # some servers 404 a missing key
                raise error from exc

    async def list(self, prefix: str) -> list[ObjectInfo]:
        validate_prefix(prefix)
        out: list[ObjectInfo] = []
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self._full(prefix),
            "MaxKeys": self._page_size,
        }
        try:
            while True:
                client = await self._request("list")
                page = await client.list_objects_v2(**kwargs)
                for obj in page.get("Contents", ()):
                    out.append(
                        ObjectInfo(
                            key=obj["Key"][len(self._root) :],
                            size=obj["Size"],
                            etag=obj.get("ETag", "").strip('"'),
                        )
                    )
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    break
                kwargs["ContinuationToken"] = token
        except Exception as exc:
            raise self._error("list", prefix, exc) from exc
        out.sort(key=lambda info: info.key)
        return out

    async def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        try:
            client = await self._request("head")
            response = await client.head_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            error = self._error("head", key, exc)
            if error.kind is ErrorKind.NOT_FOUND:
                return None
            raise error from exc
        return ObjectInfo(
            key=key, size=response["ContentLength"], etag=response.get("ETag", "").strip('"')
        )

    async def close(self) -> None:
        async with self._lock:
            stack, self._stack, self._client = self._stack, None, None
            session, self._ranged, self._urls = self._ranged, None, {}
            if session is not None:
                await session.close()
            if stack is not None:
                await stack.aclose()

    async def _ranged_get(self, key: str, start: int, end: int) -> tuple[bytes, str | None]:
        """(body, Content-Range or None when the server sent the whole object).  A cached URL
        refused with 403 (expired, or signed with credentials since rotated) is signed again
        once."""
        for fresh in (False, True):
            url, reused = await self._presigned_get(key, fresh)
            if self._on_request is not None:
                self._on_request("get_range")
            async with self._ranged_session().get(url, headers={"Range": f"bytes={start}-{end - 1}"}) as response:
                data = await response.read()
                if response.status in (200, 206):
                    return data, response.headers.get("Content-Range") if response.status == 206 else None
                if response.status == 403 and reused:
                    self._urls.pop(key, None)
                    continue
                raise _client_error(response.status, data, response.headers)
        raise AssertionError("unreachable")

    async def _presigned_get(self, key: str, fresh: bool) -> tuple[yarl.URL, bool]:
        """(a presigned GET URL of ``key``, whether it was signed earlier and reused)."""
        now = time.monotonic()
        cached = None if fresh else self._urls.get(key)
        if cached is not None and cached[1] > now:
            return cached[0], True
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    await self._open()
        url = yarl.URL(await self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._full(key)}, ExpiresIn=_URL_TTL_SECS),
            encoded=True)   # parsed once, sent as signed
        if len(self._urls) >= _MAX_URLS:
            self._urls.clear()
        self._urls[key] = (url, now + _URL_REUSE_SECS)
        return url, False

    def _ranged_session(self) -> aiohttp.ClientSession:
        if self._ranged is None:
            s = self.settings
            self._ranged = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=_RANGE_CONNECTIONS, ssl=_range_ssl()),
                timeout=aiohttp.ClientTimeout(sock_connect=s.connect_timeout_secs, sock_read=s.read_timeout_secs),
                trust_env=bool(_proxy_environment()),   # HTTP(S)_PROXY, as botocore honours them
                auto_decompress=False,
            )
        return self._ranged

    # -- helpers -----------------------------------------------------------------------

    def _full(self, key: str) -> str:
        return self._root + key

    async def _request(self, op: str) -> Any:
        """The client, created on first use; counts the request about to be sent."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    await self._open()
        if self._on_request is not None:
            self._on_request(op)
        return self._client

    async def _open(self) -> None:
        s = self.settings
        config = Config(
            region_name=s.region,
            connect_timeout=s.connect_timeout_secs,
            read_timeout=s.read_timeout_secs,
            # total_max_attempts counts the first try: 1 means botocore never retries.
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path" if s.path_style else "auto"},
            max_pool_connections=_MAX_POOL_CONNECTIONS,
            signature_version="s3v4",   # presigned URLs too (botocore may presign with SigV2)
        )
        stack = AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                AioSession().create_client(
                    "s3",
                    endpoint_url=s.endpoint or None,
                    region_name=s.region,
                    config=config,
                    **self._credentials,
                )
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        logger.info(
            "S3 client opened",
            extra={"endpoint": s.endpoint or "aws", "bucket": self.bucket, "prefix": self._root},
        )

    def _error(self, op: str, key: str, exc: Exception, **extra: Any) -> TierDBError:
        if isinstance(exc, TierDBError):
            return exc
        retryable, code, status = classify(exc)
        context: dict[str, Any] = {
            "op": op,
            "key": key,
            "bucket": self.bucket,
            "code": code,
            "status": status,
            "retryable": retryable,
        }
        if isinstance(exc, ClientError):
            request_id = (exc.response.get("ResponseMetadata") or {}).get("RequestId")
            if request_id:
                context["request_id"] = request_id
        if op in _READ_OPS and code in _NOT_FOUND_CODES:
            return object_not_found(key)
        if op == "get_range" and (code in _RANGE_NOT_SATISFIABLE_CODES or status == 416):
            return range_not_satisfiable(key, extra["start"], extra["end"])
        if op == "put" and (code in _PRECONDITION_CODES or status == 412):
            return object_exists(key)

        http = f" (HTTP {status})" if status is not None else ""
        where = f"S3 {op} of {key!r} in bucket {self.bucket!r}"
        if retryable:
            message = f"{where} failed transiently: {code}{http}"
        else:
            hint = _HINTS.get(code)
            message = f"{where} failed permanently: {code}{http}" + (f"; {hint}" if hint else "")
            if not isinstance(exc, (ClientError, BotoCoreError)) and code not in _HINTS:
                # An unexpected exception type is most likely a bug: keep its traceback.
                logger.exception("unexpected error from S3 client", extra=context)
        logger.debug("S3 request failed", extra=context)
        return TierDBError(ErrorKind.UNAVAILABLE, message, **context)
