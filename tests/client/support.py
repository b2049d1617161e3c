"""Helpers for the client and CLI tests: data, unique names, and a fault-injecting HTTP proxy.

The proxy sits between a client and a real server: it forwards every request unchanged, records
what it saw (method, path, content type), and can answer the next requests itself with an
injected status (503 + Retry-After, 429, ...) before they reach the server.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import msgspec
import numpy as np

DIM = 8
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


def unique(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def dataset(n: int, dim: int = DIM, seed: int = 7) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """n documents: ids d0.., random float32 vectors, metadata {"i", "even", "tag"}."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    ids = [f"d{i}" for i in range(n)]
    metas = [{"i": i, "even": i % 2 == 0, "tag": "abc"[i % 3]} for i in range(n)]
    return ids, vectors, metas


class Seen(msgspec.Struct):
    method: str
    path: str
    content_type: str
    accept: str
    authorization: str
    status: int
    consistency: str = ""   # the X-TierDB-Consistency header
    body: bytes = b""


class FaultProxy:
    """A threaded HTTP proxy in front of ``upstream``; ``fail_next(n, status, retry_after)``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[Seen] = []
        self._faults: list[tuple[int, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=upstream, timeout=30.0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._take_fault()
                if fault is not None and fault[0] == 0:  # a slow answer: wait, then forward
                    time.sleep(float(fault[1]["delay"]))
                    fault = None
                if fault is not None:
                    status, headers = fault
                    payload = msgspec.json.encode(
                        {"error": "unavailable" if status == 503 else "too_many_requests",
                         "message": f"injected {status}", "request_id": "proxy"}
                    )
                    content, out_headers = payload, {"content-type": "application/json", **headers}
                elif isinstance(proxy, FakeNode):
                    status, content = proxy.answer(self.command, self.path, body, self.headers.get("content-type", ""))
                    out_headers = {"content-type": "application/json"}
                else:
                    forward = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                    response = proxy._http.request(self.command, self.path, content=body, headers=forward)
                    status, content = response.status_code, response.content
                    out_headers = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP}
                proxy._record(self, status, body)
                self.send_response(status)
                for key, value in out_headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, count: int, status: int = 503, retry_after: str | None = None) -> None:
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        with self._lock:
            self._faults.extend(itertools.repeat((status, headers), count))

    def slow_next(self, count: int, seconds: float) -> None:
        """Hold the next ``count`` requests for ``seconds`` before forwarding them."""
        with self._lock:
            self._faults.extend(itertools.repeat((0, {"delay": str(seconds)}), count))

    def _take_fault(self) -> tuple[int, dict[str, str]] | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _record(self, handler: BaseHTTPRequestHandler, status: int, body: bytes = b"") -> None:
        with self._lock:
            self.seen.append(Seen(
                handler.command, handler.path, handler.headers.get("content-type", ""),
                handler.headers.get("accept", ""), handler.headers.get("authorization", ""), status,
                handler.headers.get("x-tierdb-consistency", ""), body,
            ))

    def requests(self, method: str | None = None, path_suffix: str = "") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (method is None or s.method == method) and s.path.endswith(path_suffix)]

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()
            self._faults.clear()

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()


class FakeNode(FaultProxy):
    """A stand-in TierDB node with no server behind it: it answers the read routes with a canned
    reply (one collection "c" of dimension 2, documents and hits echoing the request), and
    records every request like ``FaultProxy``; ``fail_next`` works the same."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9")  # never contacted: _forward answers itself
        self._http.close()

    def decoded(self, method: str | None = None, path_suffix: str = "") -> list[Any]:
        """The bodies of the matching requests, decoded (msgpack or JSON)."""
        out = []
        for seen in self.requests(method, path_suffix):
            if not seen.body:
                out.append(None)
            elif "msgpack" in seen.content_type:
                out.append(msgspec.msgpack.decode(seen.body))
            else:
                out.append(msgspec.json.decode(seen.body))
        return out

    def answer(self, method: str, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        request: Any = None
        if body:
            request = msgspec.msgpack.decode(body) if "msgpack" in content_type else msgspec.json.decode(body)
        info = {"name": "c", "dimension": 2, "count": 1}
        if method == "GET" and path == "/v1/collections":
            reply: Any = {"collections": [info]}
        elif method == "GET" and path.startswith("/admin/") and path.endswith("/status"):
            reply = {"name": "c", "count": 1}
        elif method == "GET":
            reply = info
        elif path.endswith("/documents/get"):
            reply = {"documents": [{"id": i, "vector": [0.0, 0.0]} for i in request["ids"]]}
        elif path.endswith("/query"):
            hit = {"id": "h", "distance": 0.0}
            reply = {"results": [hit] if "vector" in request else [[hit] for _ in request["vectors"]]}
        elif path.endswith("/documents"):
            reply = {"upserted": len(request["documents"])}
        else:
            return 404, msgspec.json.encode({"error": "not_found", "message": f"fake node: no route {path}"})
        return 200, msgspec.json.encode(reply)
