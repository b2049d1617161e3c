"""The socket `tierdb serve` binds before the engine starts must behave like the one uvicorn
would bind itself: accepted connections get TCP_NODELAY from asyncio.  Without it every
response uvicorn writes in two parts waits for the client's delayed ACK (~40 ms a request)."""

from __future__ import annotations

import asyncio
import socket

from tierdb.cli.serve import _listening_socket


async def test_accepted_connections_have_tcp_nodelay() -> None:
    sock = _listening_socket("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            conn = transport.get_extra_info("socket")
            accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        port = sock.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(accepted, 10) != 0, "accepted connections lack TCP_NODELAY"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
