"""Defences against clients that hold connections open without sending anything.

uvicorn has no timeout for reading a request body, and none for a fresh connection that never
sends a request: a client announcing ``Content-Length: 1000000`` and then staying silent would
hold its connection (and a request task) forever, and a few hundred such clients exhaust the
server.  Three settings bound them:

- ``server.body_read_timeout_secs``: ``with_body_deadline`` (applied by the API's one request
  middleware, tierdb/api/middleware.py) gives each request this long, from its start, to
  deliver its whole body.  Past the deadline reading the body raises
  ``BodyReadTimeout``: a 408 that errors.py renders as ``{"error": "timeout", ...}`` with
  ``Connection: close``, so uvicorn drops the connection and the unread rest of the body.
- ``server.keep_alive_timeout_secs``: ``IdleClosingH11Protocol`` closes a new connection that
  sends no byte within this time, as uvicorn already does for idle keep-alive connections.
- ``server.max_connections`` (uvicorn's ``limit_concurrency``): beyond it, requests get a 503.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar.exceptions import HTTPException
from litestar.types import Receive, Scope
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("tierdb.api")

HTTP_408_REQUEST_TIMEOUT = 408


class BodyReadTimeout(HTTPException):
    """The client did not send the request body within ``server.body_read_timeout_secs``."""

    status_code = HTTP_408_REQUEST_TIMEOUT


def body_already_received(receive: Receive) -> bool:
    """True when ``receive`` is a uvicorn request cycle's that holds the whole body already
    (nothing more to come, the message ready): reading it cannot wait, so it needs no deadline.
    This is the common case for small bodies such as queries, and the deadline's timer costs
    microseconds per request.  Any other ``receive`` (another server, a test client) says False."""
    cycle = getattr(receive, "__self__", None)
    if getattr(cycle, "more_body", True) is not False:
        return False
    event = getattr(cycle, "message_event", None)
    return isinstance(event, asyncio.Event) and event.is_set()


def with_body_deadline(scope: Scope, receive: Receive, timeout_secs: float) -> Receive:
    """``receive`` that raises ``BodyReadTimeout`` when the request body is not complete
    ``timeout_secs`` after this call (a deadline for the whole body, so trickling bytes does not
    extend it).  Applied by ``tierdb.api.middleware.RequestMiddleware`` to every request whose
    body has not fully arrived (``body_already_received``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_secs
    body_complete = False

    async def receive_before_deadline() -> Any:
        nonlocal body_complete
        if body_complete:  # later reads only wait for a disconnect: no deadline
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            log.warning(
                "request body not received in time; closing the connection",
                extra={"method": scope.get("method"), "path": scope.get("path"),
                       "body_read_timeout_secs": timeout_secs},
            )
            raise BodyReadTimeout(
                detail=(
                    f"the request body was not received within {timeout_secs:g} seconds "
                    "(server.body_read_timeout_secs)"
                ),
                headers={"connection": "close"},
            ) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            body_complete = True
        return message

    return receive_before_deadline  # type: ignore[return-value]


class IdleClosingH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, but a new connection that sends nothing is closed after the
    keep-alive timeout, exactly like an idle connection between two requests (any byte
    received cancels the timer, as uvicorn does for keep-alive connections)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )
