"""Content negotiation: decode request bodies (JSON or msgpack) and encode responses.

Bodies are decoded by msgspec straight from the raw bytes into the request Struct, so JSON and
msgpack go through exactly the same validation and every error names the offending path
(``Expected `float`, got `str` - at `$.documents[0].vector[3]```).

Requests: ``Content-Type: application/json`` (or absent, or any ``+json`` type),
``application/msgpack`` / ``application/x-msgpack`` / ``application/vnd.msgpack``.
Responses: JSON unless ``Accept`` prefers msgpack.  Error responses are always JSON.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

from ..errors import invalid

T = TypeVar("T")

JSON = "application/json"
MSGPACK = "application/msgpack"
MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
_RESPONSE_TYPES = [JSON, MSGPACK, "application/x-msgpack", "application/vnd.msgpack"]


def _enc_hook(obj: Any) -> Any:
    """numpy scalars and arrays (engine internals) encode as plain numbers and lists."""
    tolist = getattr(obj, "tolist", None)
    if tolist is None:
        raise TypeError(f"cannot encode objects of type {type(obj).__name__}")
    return tolist()


_json_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_msgpack_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


@functools.cache
def _json_decoder(tp: type[T]) -> msgspec.json.Decoder[T]:
    return msgspec.json.Decoder(tp)


@functools.cache
def _msgpack_decoder(tp: type[T]) -> msgspec.msgpack.Decoder[T]:
    return msgspec.msgpack.Decoder(tp)


def request_media_type(request: Request[Any, Any, Any]) -> str:
    """The Content-Type without parameters, lower-cased ('' when absent)."""
    raw = request.headers.get("content-type", "")
    return raw.split(";", 1)[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type in ("", JSON) or media_type.endswith("+json")


def unsupported_media_type(media_type: str) -> HTTPException:
    return HTTPException(
        status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        detail=f"unsupported Content-Type {media_type!r}: send {JSON} or {MSGPACK}",
    )


def decode(body: bytes, media_type: str, tp: type[T]) -> T:
    """Decode and validate ``body`` into ``tp``; every failure is an INVALID error naming the problem."""
    if _is_json(media_type):
        decoder: msgspec.json.Decoder[T] | msgspec.msgpack.Decoder[T] = _json_decoder(tp)
        fmt = "JSON"
    elif media_type in MSGPACK_TYPES:
        decoder = _msgpack_decoder(tp)
        fmt = "msgpack"
    else:
        raise unsupported_media_type(media_type)
    if not body:
        raise invalid(f"request body is empty: expected a {fmt} object")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise invalid(f"malformed {fmt} body: {exc}") from None


async def decode_body(request: Request[Any, Any, Any], tp: type[T]) -> T:
    """Read the raw body (enforcing the size limit: 413) and decode it into ``tp``."""
    media_type = request_media_type(request)
    if not (_is_json(media_type) or media_type in MSGPACK_TYPES):
        raise unsupported_media_type(media_type)  # before reading a body we cannot parse
    return decode(await request.body(), media_type, tp)


def wants_msgpack(request: Request[Any, Any, Any]) -> bool:
    accept = request.headers.get("accept")
    if not accept or "msgpack" not in accept:
        return False
    return request.accept.best_match(_RESPONSE_TYPES, default=JSON) in MSGPACK_TYPES


def encode_json(payload: Any) -> bytes:
    return _json_encoder.encode(payload)


def respond(request: Request[Any, Any, Any], payload: Any, status_code: int = 200) -> Response[Any]:
    """Encode ``payload`` as msgpack when the client asks for it, else as JSON."""
    if wants_msgpack(request):
        return Response(_msgpack_encoder.encode(payload), media_type=MSGPACK, status_code=status_code)
    return Response(_json_encoder.encode(payload), media_type=JSON, status_code=status_code)
