"""A loopback HTTP proxy in front of the real S3 server that injects network-level faults.

FaultInjectingStore (tierdb/storage/faults.py) raises ready-made TierDBErrors above the S3
client.  This proxy sits *below* it, between botocore and the server, so the real client code
sees real failures and has to classify them itself (tierdb/storage/s3.py ``classify``):

    proxy = ChaosProxy(s3_server.endpoint).start()       # point s3.endpoint at proxy.endpoint
    proxy.add("reset", method="PUT", path="/wal/")        # RST before the request is forwarded
    proxy.add("lost_response", method="PUT", path="/manifest/")  # forwarded, stored, reply dropped
    proxy.add("status", status=503, code="SlowDown")      # an S3 error reply, nothing forwarded
    proxy.add("stall", seconds=3)                         # no reply: the client's read timeout
    proxy.add("cut_upload", seconds=3)                    # half the body reaches the server, then
                                                          # silence (read timeout) and both cut
    proxy.add("delay", seconds=0.5)                       # latency spike, then forwarded
    proxy.stop()

Rules fire in the order added, each ``times`` times (default once; None = until removed).
``proxy.seen`` records (method, path, action) for every request.  It speaks just enough
HTTP/1.1 for S3: Content-Length and chunked bodies, ``Expect: 100-continue``, keep-alive.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

ACTIONS = frozenset({"reset", "lost_response", "status", "stall", "cut_upload", "delay"})


@dataclass
class Rule:
    action: str
    method: str | None = None
    path: str | None = None          # substring of the request path
    times: int | None = 1
    status: int = 503
    code: str = "SlowDown"
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or self.path in path)


class _Closed(Exception):
    pass


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise _Closed from exc


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            out = bytearray()
            while True:
                size_line = await reader.readuntil(b"\r\n")
                out += size_line
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, then the blank line
                        line = await reader.readuntil(b"\r\n")
                        out += line
                        if line == b"\r\n":
                            return bytes(out)
                out += await reader.readexactly(size + 2)
        length = int(headers.get("content-length", "0") or 0)
        return await reader.readexactly(length) if length else b""
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise _Closed from exc


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0): the peer sees 'connection reset by peer'."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


def _error_reply(status: int, code: str) -> bytes:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>injected by the chaos proxy</Message>"
        "<RequestId>chaos</RequestId></Error>"
    ).encode()
    reason = {500: "Internal Server Error", 503: "Service Unavailable", 403: "Forbidden"}.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nx-amz-request-id: chaos\r\n\r\n"
    ).encode()
    return head + body


class ChaosProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- rules ------------------------------------------------------------------------------
    def add(self, action: str, *, method: str | None = None, path: str | None = None, times: int | None = 1,
            status: int = 503, code: str = "SlowDown", seconds: float = 0.0) -> Rule:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        rule = Rule(action, method, path, times, status, code, seconds)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def fired(self, action: str | None = None) -> int:
        with self._lock:
            return sum(1 for _, _, a in self.seen if a != "forward" and (action is None or a == action))

    def _take(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self.rules.remove(rule)
                    self.seen.append((method, path, rule.action))
                    return rule
            self.seen.append((method, path, "forward"))
            return None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "ChaosProxy":
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            for task in list(self._tasks):
                task.cancel()
            loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="chaos-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("chaos proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            loop.stop()

        loop.call_soon_threadsafe(shutdown)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    # -- one client connection --------------------------------------------------------------
    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                head = await _read_head(client_r)
                request_line, headers = _headers(head)
                method, path = request_line.split(" ")[:2]
                if headers.get("expect", "").lower() == "100-continue":
                    client_w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await client_w.drain()
                    head = b"\r\n".join(
                        line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:")
                    )
                body = await _read_body(client_r, headers)
                rule = self._take(method, path)
                if rule is not None and rule.action == "reset":
                    _reset(client_w)
                    return
                if rule is not None and rule.action == "status":
                    client_w.write(_error_reply(rule.status, rule.code))
                    await client_w.drain()
                    continue
                if rule is not None and rule.action == "stall":
                    await asyncio.sleep(rule.seconds)
                    _reset(client_w)
                    return
                if rule is not None and rule.action == "cut_upload":
                    up_r, up_w = await asyncio.open_connection(*self.upstream)
                    up_w.write(head + body[: len(body) // 2])
                    await up_w.drain()
                    await asyncio.sleep(rule.seconds)
                    _reset(up_w)
                    _reset(client_w)
                    return
                if rule is not None and rule.action == "delay":
                    await asyncio.sleep(rule.seconds)
                if upstream is None:
                    upstream = await asyncio.open_connection(*self.upstream)
                up_r, up_w = upstream
                up_w.write(head + body)
                await up_w.drain()
                reply_head = await _read_head(up_r)
                status_line, reply_headers = _headers(reply_head)
                status = int(status_line.split(" ")[1])
                no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
                reply_body = b"" if no_body else await _read_body(up_r, reply_headers)
                if rule is not None and rule.action == "lost_response":
                    _reset(client_w)  # the server did it; the client never hears
                    return
                client_w.write(reply_head + reply_body)
                await client_w.drain()
                if reply_headers.get("connection", "").lower() == "close":
                    return
        except (_Closed, ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self._tasks.discard(task)
            if upstream is not None:
                upstream[1].close()
            if not client_w.transport.is_closing():
                client_w.close()
