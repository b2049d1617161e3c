"""Content negotiation: decode request bodies (JSON or msgpack) and encode responses.

Bodies are decoded by msgspec straight from the raw bytes into the request Struct, so JSON and
msgpack go through exactly the same validation and every error names the offending path
(``Expected `float`, got `str` - at `$.documents[0].vector[3]```).

Requests: ``Content-Type: application/json`` (or absent, or any ``+json`` type),
``application/msgpack`` / ``application/x-msgpack`` / ``application/vnd.msgpack``.
Responses: JSON unless ``Accept`` prefers msgpack.  Error responses are always JSON.

Two things msgspec lets through are refused here: nesting so deep that decoding would exhaust
the recursion limit (400 naming server.max_nesting_depth, never a RecursionError -> 500), and
a key repeated in one JSON object (msgspec silently keeps the last one).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

from ..errors import invalid
from ..models import DEFAULT_MAX_NESTING_DEPTH, NESTING_SETTING
from .auth import SETTINGS_STATE_KEY

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


def decode(body: bytes, media_type: str, tp: type[T], max_depth: int = DEFAULT_MAX_NESTING_DEPTH) -> T:
    """Decode and validate ``body`` into ``tp``; every failure is an INVALID error naming the problem.
    ``max_depth`` (server.max_nesting_depth) only names the limit in the too-deep error: the depth
    of metadata and filters is checked by the engine, which every caller goes through."""
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
        value = decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise invalid(f"malformed {fmt} body: {exc}") from None
    except RecursionError:
        raise invalid(
            f"request body nested too deeply: metadata and filters may nest at most {max_depth} "
            f"levels of objects/arrays ({NESTING_SETTING})",
            limit=max_depth,
        ) from None
    if fmt == "JSON":
        check_unique_json_keys(body, value, max_depth)
    return value


async def decode_body(request: Request[Any, Any, Any], tp: type[T]) -> T:
    """Read the raw body (enforcing the size limit: 413) and decode it into ``tp``."""
    media_type = request_media_type(request)
    if not (_is_json(media_type) or media_type in MSGPACK_TYPES):
        raise unsupported_media_type(media_type)  # before reading a body we cannot parse
    max_depth = request.app.state[SETTINGS_STATE_KEY].server.max_nesting_depth
    return decode(await request.body(), media_type, tp, max_depth)


# -- duplicate keys in JSON objects -------------------------------------------------------------

# Ends every object key; inside a string only after an escaped quote (\" :), so counting these
# gives an upper bound of the keys written in the text.
_KEY_END = re.compile(rb'"[ \t\r\n]*:')
_KEY_FOLLOWS = re.compile(rb"[ \t\r\n]*:").match
_BRACES = re.compile(rb"[{}]")
_REQUIRED = object()


def check_unique_json_keys(body: bytes, value: Any, max_depth: int) -> None:
    """Refuse a key that appears twice in one object of ``body`` (already decoded into ``value``).

    Fast paths: a flat request (a query) is settled by ``_flat_keys_unique``; otherwise, cheap
    enough for bulk upserts, when the key tokens in the text are exactly as many as the distinct
    keys the decoded value holds (counted as a lower bound, see ``_count_keys``), nothing was
    repeated.  Otherwise scan the text exactly.
    """
    if _flat_keys_unique(body, value):
        return
    if len(_KEY_END.findall(body)) == _count_keys(value, max_depth + 4):  # + the request's own levels
        return
    duplicate = _find_duplicate_key(body)
    if duplicate is not None:
        key, where = duplicate
        raise invalid(f"duplicate key {key!r} in {where}: a key may appear only once per JSON object")


@functools.cache
def _field_defaults(tp: type[msgspec.Struct]) -> tuple[tuple[str, Any], ...]:
    fields = msgspec.structs.fields(tp)
    return tuple(
        (f.name, _REQUIRED if f.required else (f.default_factory() if f.default is msgspec.NODEFAULT else f.default))
        for f in fields
    )


# One JSON string (escapes included) and, when it is an object key, the colon after it.  Matched
# from the start of a valid JSON text, every match starts at an opening quote: no string is
# split or missed, so the keys found are exactly the keys written.
_STRING = re.compile(rb'"([^"\\]*(?:\\.[^"\\]*)*)"([ \t\r\n]*:)?', re.S)


_FLAT_MAX_STRINGS = 32


@functools.cache
def _unset_field_keys(tp: type[msgspec.Struct]) -> tuple[tuple[str, bytes, Any], ...]:
    return tuple(
        (name, msgspec.structs.fields(tp)[i].encode_name.encode(), default)
        for i, (name, default) in enumerate(_field_defaults(tp))
    )


def _flat_keys_unique(body: bytes, value: Any) -> bool:
    """True when ``value`` is a Struct whose set fields hold no objects and the keys written
    prove no repetition: as many keys as set fields, plus at most one key spelled like each
    field left at its default (it may or may not have been written).  Exact: every set field
    was written at least once and each key spelled like an unset field counts once, so equal
    totals leave no room for a repeated key anywhere.  False means "not settled here"."""
    if not isinstance(value, msgspec.Struct):
        return False
    written = 0  # keys known to be in the text: the fields not at their default
    unset: list[bytes] = []
    for name, key, default in _unset_field_keys(type(value)):
        item = getattr(value, name)
        if default is _REQUIRED or item != default:
            if _count_keys(item, 2):  # holds objects (documents, a filter): left to the paths below
                return False
            written += 1
        else:
            unset.append(key)
    keys = []
    for count, string in enumerate(_STRING.finditer(body)):
        if count == _FLAT_MAX_STRINGS:
            return False  # many strings (ids, say): tokenizing them all costs more than it saves
        if string.group(2) is not None:
            keys.append(string.group(1))
    for key in unset:
        seen = keys.count(key)
        if seen > 1:
            return False
        written += seen
    return len(keys) == written


def _count_keys(value: Any, levels: int) -> int:
    """A lower bound of the distinct object keys in ``value``: a Struct field equal to its default
    may have been left out (not counted), lists are looked into only when they start with a
    container, and nothing deeper than ``levels`` is counted."""
    if levels <= 0:
        return 0
    if isinstance(value, msgspec.Struct):
        count = 0
        for name, default in _field_defaults(type(value)):
            item = getattr(value, name)
            if default is _REQUIRED or item != default:
                count += 1 + _count_keys(item, levels - 1)
        return count
    if isinstance(value, dict):
        return len(value) + sum([_count_keys(item, levels - 1) for item in value.values()])
    if isinstance(value, list) and value and isinstance(value[0], (dict, list, msgspec.Struct)):
        return sum([_count_keys(item, levels - 1) for item in value])
    return 0


def _find_duplicate_key(body: bytes) -> tuple[str, str] | None:
    """The first key repeated within one object of the valid JSON text ``body``, and which object."""
    parts = body.split(b'"')  # even parts are outside strings, odd parts inside
    outer: list[tuple[set[bytes], str]] = []
    seen: set[bytes] = set()
    where = label = "the top-level object"  # where: the open object; label: for the next one
    i = 0
    while True:
        outside = parts[i]
        if b"{" in outside or b"}" in outside:
            for brace in _BRACES.findall(outside):
                if brace == b"{":
                    outer.append((seen, where))
                    seen, where = set(), label
                else:
                    label = where  # a sibling in the same array gets the same name
                    seen, where = outer.pop()
        i += 1
        if i >= len(parts):
            return None
        text = parts[i]
        while _escaped_quote_at_end(text):  # the string goes on after an escaped quote
            i += 1
            text += b'"' + parts[i]
        i += 1
        if _KEY_FOLLOWS(parts[i]):
            key = json.loads(b'"' + text + b'"').encode("utf-8", "surrogatepass") if b"\\" in text else text
            if key in seen:
                return key.decode("utf-8", "replace"), where
            seen.add(key)
            label = f"the object under {key.decode('utf-8', 'replace')!r}"


def _escaped_quote_at_end(text: bytes) -> bool:
    return (len(text) - len(text.rstrip(b"\\"))) % 2 == 1


def wants_msgpack(request: Request[Any, Any, Any]) -> bool:
    accept = request.headers.get("accept")
    if not accept or "msgpack" not in accept:
        return False
    return request.accept.best_match(_RESPONSE_TYPES, default=JSON) in MSGPACK_TYPES


def encode_json(payload: Any) -> bytes:
    return _json_encoder.encode(payload)


class EncodedResponse(Response[bytes]):
    """A response whose body ``respond`` has already encoded, and that sends itself: Litestar's
    generic path (``to_asgi_response`` building an ``ASGIResponse`` with its header objects)
    costs more than the encoding on the hot query route.  The messages are the same: status,
    ``content-type`` and ``content-length``, then the body.  Route-level headers, cookies or a
    background task (none is declared today) take Litestar's generic path."""

    def __init__(self, body: bytes, media_type: str, status_code: int) -> None:
        # Response.__init__'s attributes, set directly (it normalises arguments we never pass)
        self.content = body
        self.media_type = media_type
        self.status_code = status_code
        self.background = None
        self.cookies = []
        self.headers = {}
        self.encoding = "utf-8"
        self.response_type_encoders = {}

    def to_asgi_response(self, app: Any, request: Request[Any, Any, Any], **kwargs: Any) -> Any:
        if kwargs.get("background") is not None or kwargs.get("cookies") or kwargs.get("headers"):
            return super().to_asgi_response(app, request, **kwargs)
        return self

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = self.content
        await send({
            "type": "http.response.start",
            "status": self.status_code,
            "headers": [(b"content-type", _MEDIA_TYPE_BYTES[self.media_type]), (b"content-length", b"%d" % len(body))],
        })
        await send({"type": "http.response.body", "body": body, "more_body": False})


_MEDIA_TYPE_BYTES = {JSON: JSON.encode(), MSGPACK: MSGPACK.encode()}


def respond(request: Request[Any, Any, Any], payload: Any, status_code: int = 200) -> Response[Any]:
    """Encode ``payload`` as msgpack when the client asks for it, else as JSON."""
    if wants_msgpack(request):
        return EncodedResponse(_msgpack_encoder.encode(payload), MSGPACK, status_code)
    return EncodedResponse(_json_encoder.encode(payload), JSON, status_code)
