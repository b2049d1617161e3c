"""Slow and silent clients against a real server process: body read timeout, idle connections,
connection cap (tierdb/api/slow_clients.py, server.* settings)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.server_process import ServerProcess

DEADLINE = 60.0  # generous: the machine may be busy; the assertions are about what happens, not when

# Announces a 1 MB body and sends none of it.
STALLED_UPLOAD = (
    b"POST /v1/collections HTTP/1.1\r\nHost: tierdb\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000000\r\n\r\n"
)
LIVE_PROBE = b"GET /health/live HTTP/1.1\r\nHost: tierdb\r\nConnection: close\r\n\r\n"


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=DEADLINE)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does)."""
    sock.settimeout(DEADLINE)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_and_body(raw: bytes) -> tuple[int, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def hold_a_stalled_upload(server: ServerProcess) -> socket.socket:
    """A connection whose upload the server accepted and now waits on.

    The readiness probe's connection may still count against the cap for a moment after it
    closed (uvicorn notices the close asynchronously), so a refused attempt is retried."""
    deadline = time.monotonic() + DEADLINE
    while True:
        sock = connect(server)
        sock.sendall(STALLED_UPLOAD)
        time.sleep(0.2)
        sock.setblocking(False)
        try:
            sock.recv(1)
        except BlockingIOError:
            sock.setblocking(True)
            return sock  # nothing sent back: the server is waiting for the body
        sock.close()
        assert time.monotonic() < deadline, "the server kept refusing a connection under the cap"
        time.sleep(0.2)


def test_stalled_bodies_get_408_and_are_closed_while_the_server_keeps_serving(tmp_path) -> None:
    env = {"TIERDB_SERVER_BODY_READ_TIMEOUT_SECS": "2", "TIERDB_SERVER_MAX_CONNECTIONS": "100"}
    with ServerProcess(tmp_path / "data", env=env) as server:
        server.start()
        stalled = [connect(server) for _ in range(30)]
        for sock in stalled:
            sock.sendall(STALLED_UPLOAD)
        # While they hang, the server answers everyone else.
        with server.client() as client:
            assert client.get("/health/live").status_code == 200
            assert client.post("/v1/collections", json={"name": "ok", "dimension": 2}).status_code == 201
        for sock in stalled:
            with sock:
                status, body = status_and_body(read_until_closed(sock))
            assert status == 408, body
            error = json.loads(body)
            assert error["error"] == "timeout"
            assert "server.body_read_timeout_secs" in error["message"]
        with server.client() as client:
            names = [c["name"] for c in client.get("/v1/collections").json()["collections"]]
        assert names == ["ok"]  # the timed-out requests changed nothing
        assert server.stop() == 0, server.log_tail()


def test_a_silent_new_connection_is_closed_after_the_keep_alive_timeout(tmp_path) -> None:
    env = {"TIERDB_SERVER_KEEP_ALIVE_TIMEOUT_SECS": "1"}
    with ServerProcess(tmp_path / "data", env=env) as server:
        server.start()
        with connect(server) as sock:
            assert read_until_closed(sock) == b""  # closed without a response: no request was made
        assert server.stop() == 0, server.log_tail()


def test_connections_beyond_the_cap_get_503_at_once(tmp_path) -> None:
    cap = 8
    env = {
        "TIERDB_SERVER_MAX_CONNECTIONS": str(cap),
        "TIERDB_SERVER_BODY_READ_TIMEOUT_SECS": "600",
        "TIERDB_SERVER_KEEP_ALIVE_TIMEOUT_SECS": "600",
    }
    with ServerProcess(tmp_path / "data", env=env) as server:
        server.start()
        # uvicorn refuses a request once the open connections (its own included) reach the cap:
        # cap - 1 stalled uploads are served (they wait for their bodies), the next one is not.
        held: list[socket.socket] = []
        try:
            for _ in range(cap - 1):
                held.append(hold_a_stalled_upload(server))
            # uvicorn counts connections as it accepts them; poll until the cap is reached.
            deadline = time.monotonic() + DEADLINE
            while True:
                with connect(server) as probe:
                    probe.sendall(LIVE_PROBE)
                    status, _ = status_and_body(read_until_closed(probe))
                if status == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert status == 503
            for sock in held:                 # the held ones were served, not refused
                sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    sock.recv(1)
        finally:
            for sock in held:
                sock.close()
        # Once the stalled clients are gone, the server serves again.
        deadline = time.monotonic() + DEADLINE
        with server.client() as client:
            while client.get("/health/live").status_code != 200:
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.1)
        assert server.stop() == 0, server.log_tail()


@pytest.mark.parametrize("setting", ["body_read_timeout_secs", "keep_alive_timeout_secs", "max_connections"])
def test_limits_must_be_positive(setting: str) -> None:
    from tierdb.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=f"server.{setting}: must be positive"):
        load_settings(env={}, overrides={f"server.{setting}": 0})
