"""Who may call what: the admin token for ``/admin``, optional API keys for ``/v1``.

Two Litestar guards, attached where the routes are registered (controllers/__init__.py and
the admin controller), so a route is protected by where it lives, not by a path check:

- ``require_admin``: ``Authorization: Bearer <token>`` compared (constant time) with
  ``security.admin_token`` (``TIERDB_ADMIN_TOKEN``).  With no token configured, the admin API
  is open only while the server binds to loopback (``127.0.0.1``, ``::1``, ``localhost``) and
  disabled (403) otherwise.
- ``require_api_key``: when ``security.api_keys`` is not empty, ``X-API-Key: <key>`` or
  ``Authorization: Bearer <key>`` must match one of the keys.
- ``require_status_access``: with ``security.protect_status``, ``/health`` and ``/metrics``
  (which name collections and count their documents) need an API key or the admin token, sent
  the same ways; ``/health/live`` and ``/health/ready`` stay open for probes.

401 (with ``WWW-Authenticate: Bearer``) means no credential was sent, 403 a wrong one (or a
disabled admin API).  The guards raise Litestar's HTTP exceptions rather than ``TierDBError``
because only those carry response headers; the API's handler (errors.py) still turns them into
``{"error": "unauthorized" | "forbidden", "message": ...}``, the kinds of ``ErrorKind``.  Secrets and the credentials a
client presented never appear in messages or logs.

    >>> admin_mode(Settings()).value          # default: no token, binds to 127.0.0.1
    'loopback'
    >>> bearer_token("Bearer abc"), bearer_token("Basic abc"), bearer_token("Bearer ")
    ('abc', None, None)
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler

from ..config import Settings

log = logging.getLogger("tierdb.api")

ADMIN_TOKEN_ENV = "TIERDB_ADMIN_TOKEN"
API_KEY_HEADER = "x-api-key"
LOOPBACK_NAMES = frozenset({"localhost"})
SETTINGS_STATE_KEY = "settings"  # app.state[...] holds the Settings the guards read

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class AdminMode(str, enum.Enum):
    TOKEN = "token"          # a token is configured: every admin request must present it
    LOOPBACK = "loopback"    # no token, loopback-only bind: open to local callers
    DISABLED = "disabled"    # no token, reachable from the network: every admin request is 403


def is_loopback(host: str) -> bool:
    """True when binding to ``host`` accepts connections from this machine only."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost, or 0.0.0.0-style wildcards are IPs
        return False


def admin_mode(settings: Settings) -> AdminMode:
    if settings.security.admin_token:
        return AdminMode.TOKEN
    return AdminMode.LOOPBACK if is_loopback(settings.server.host) else AdminMode.DISABLED


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header; None if absent or malformed."""
    if not authorization:
        return None
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential:
        return None
    return credential


def matches_any(presented: str, secrets: Iterable[str]) -> bool:
    """Constant-time comparison of ``presented`` with every secret (no early exit on a match).

    Header values reach us decoded as latin-1, so re-encoding them as latin-1 gives back the
    bytes the client sent; configured secrets are compared as UTF-8.
    """
    given = presented.encode("latin-1", "replace")
    found = False
    for secret in secrets:
        if secret and hmac.compare_digest(given, secret.encode("utf-8")):
            found = True
    return found


# -- checks (pure: settings + headers in, an exception out) ------------------------------------


def check_admin(settings: Settings, authorization: str | None) -> None:
    mode = admin_mode(settings)
    if mode is AdminMode.LOOPBACK:
        return
    if mode is AdminMode.DISABLED:
        raise PermissionDeniedException(
            detail=(
                "the admin API is disabled: no admin token is configured and the server is not bound "
                f"to loopback only; set {ADMIN_TOKEN_ENV} (security.admin_token) to enable it"
            )
        )
    presented = bearer_token(authorization)
    if presented is None:
        raise NotAuthorizedException(
            detail=f"the admin API requires 'Authorization: Bearer <token>' (the server's {ADMIN_TOKEN_ENV})",
            headers=_CHALLENGE,
        )
    if not matches_any(presented, [settings.security.admin_token]):
        raise PermissionDeniedException(detail="the admin token is not valid")


def check_api_key(settings: Settings, headers: Mapping[str, str]) -> None:
    keys = settings.security.api_keys
    if not keys:
        return
    presented = _presented_credentials(headers)
    if not presented:
        raise NotAuthorizedException(
            detail="this server requires an API key: send 'X-API-Key: <key>' or 'Authorization: Bearer <key>'",
            headers=_CHALLENGE,
        )
    if not any([matches_any(value, keys) for value in presented]):  # a list: check every value
        raise PermissionDeniedException(detail="the API key is not valid")


def check_status_access(settings: Settings, headers: Mapping[str, str]) -> None:
    security = settings.security
    if not security.protect_status:
        return
    presented = _presented_credentials(headers)
    if not presented:
        raise NotAuthorizedException(
            detail=(
                "this server protects /health and /metrics (security.protect_status): send an API key "
                "('X-API-Key: <key>' or 'Authorization: Bearer <key>') or the admin token"
            ),
            headers=_CHALLENGE,
        )
    accepted = [*security.api_keys, security.admin_token]
    if not any([matches_any(value, accepted) for value in presented]):  # a list: check every value
        raise PermissionDeniedException(detail="the API key or admin token is not valid")


def _presented_credentials(headers: Mapping[str, str]) -> list[str]:
    return [
        value
        for value in ((headers.get(API_KEY_HEADER) or "").strip(), bearer_token(headers.get("authorization")))
        if value
    ]


# -- guards and start-up ----------------------------------------------------------------------


def _settings(connection: ASGIConnection[Any, Any, Any, Any]) -> Settings:
    return connection.app.state[SETTINGS_STATE_KEY]


# Guards are coroutines: Litestar runs a plain function guard in a worker thread, a hop that
# every data request would pay for a check that never blocks.


async def require_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of the admin routes."""
    check_admin(_settings(connection), connection.headers.get("authorization"))


async def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of the data routes (/v1)."""
    check_api_key(_settings(connection), connection.headers)


async def require_status_access(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of /health and /metrics (a no-op unless security.protect_status)."""
    check_status_access(_settings(connection), connection.headers)


class route_with_uncopied_guards(HTTPRouteHandler):
    """``@route`` whose guards get the route handler itself: Litestar's ``authorize_connection``
    hands each guard a fresh ``copy()`` of the handler on every request, a cost for the hot query
    route; the guards here never look at (let alone change) the handler."""

    async def authorize_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
        for guard in self.resolve_guards():
            await guard(connection, self)  # type: ignore[misc]


def security_summary(settings: Settings) -> list[tuple[int, str]]:
    """(log level, message) lines describing how the admin and data APIs are protected."""
    host = settings.server.host
    lines: list[tuple[int, str]] = []
    mode = admin_mode(settings)
    if mode is AdminMode.TOKEN:
        lines.append((logging.INFO, "admin API enabled: requests need 'Authorization: Bearer <admin token>'"))
    elif mode is AdminMode.LOOPBACK:
        lines.append((
            logging.WARNING,
            f"admin API open without a token because the server binds to loopback only ({host}); "
            f"set {ADMIN_TOKEN_ENV} before binding to another interface or proxying /admin",
        ))
    else:
        lines.append((
            logging.WARNING,
            f"admin API disabled (403): no {ADMIN_TOKEN_ENV} is set and the server binds to {host}, "
            f"not loopback only; set {ADMIN_TOKEN_ENV} to enable it",
        ))
    count = len(settings.security.api_keys)
    if count:
        lines.append((logging.INFO, f"data API (/v1) requires an API key ({count} configured)"))
    else:
        level = logging.INFO if is_loopback(host) else logging.WARNING
        lines.append((level, "data API (/v1) is open: no API keys configured (security.api_keys)"))
    if settings.security.protect_status:
        lines.append((logging.INFO, "/health and /metrics require an API key or the admin token "
                                    "(security.protect_status); /health/live and /health/ready stay open"))
    else:
        level = logging.INFO if is_loopback(host) else logging.WARNING
        lines.append((level, "/health and /metrics are open and show collection names and counts; "
                             "set security.protect_status to require a credential"))
    return lines


def log_security_mode(app: Litestar) -> None:
    """On start-up: say how the admin and data APIs are protected (never the secrets)."""
    for level, message in security_summary(app.state[SETTINGS_STATE_KEY]):
        log.log(level, message)
