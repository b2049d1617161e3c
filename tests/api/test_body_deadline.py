"""The body deadline of the API's request middleware against a real uvicorn server in this process: a body that has
fully arrived when the request starts is read without a deadline (no timer per request); one
still arriving gets the deadline."""

from __future__ import annotations

import asyncio

import httpx
import uvicorn

from tests.server_process import free_port
from tierdb.api import middleware, slow_clients
from tierdb.api.middleware import RequestMiddleware
from tierdb.api.slow_clients import IdleClosingH11Protocol


async def _echo(scope, receive, send, entered: asyncio.Event) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    entered.set()
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def test_deadline_only_for_bodies_still_arriving(monkeypatch) -> None:
    deadlines = []
    original = slow_clients.with_body_deadline

    def counted(scope, receive, timeout_secs):
        deadlines.append(scope["path"])
        return original(scope, receive, timeout_secs)

    monkeypatch.setattr(middleware, "with_body_deadline", counted)
    entered = asyncio.Event()

    async def app(scope, receive, send):
        await _echo(scope, receive, send, entered)

    port = free_port()
    config = uvicorn.Config(RequestMiddleware(app, body_read_timeout_secs=60), host="127.0.0.1", port=port,
                            http=IdleClosingH11Protocol, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await client.post("/complete", content=b"x" * 1000)
        assert (response.status_code, response.content) == (200, b"x" * 1000)
        assert deadlines == []

        entered.clear()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /trickled HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nConnection: close\r\n\r\n12345")
        await writer.drain()
        await asyncio.wait_for(entered.wait(), 60)  # the app runs before the rest is sent
        writer.write(b"67890")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 60)
        writer.close()
        assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"1234567890"), raw
        assert deadlines == ["/trickled"]
    finally:
        server.should_exit = True
        await serving


def test_body_already_received_needs_a_uvicorn_cycle() -> None:
    async def plain_receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    assert not slow_clients.body_already_received(plain_receive)
