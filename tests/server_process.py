"""Run ``python -m tierdb serve`` as a real subprocess for end-to-end and crash tests.

    with ServerProcess(data_dir=tmp_path / "data") as server:
        server.start()                      # waits for /health/ready
        httpx.get(f"{server.url}/v1/collections")
        assert server.stop() == 0           # SIGTERM, graceful
        server.start()                      # same port and data dir
        server.kill()                       # SIGKILL, no shutdown at all

The server's stdout/stderr go to ``log_path`` (never a pipe, which could fill up and block the
server); ``log_tail()`` shows the end of it in assertion messages.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_READY_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 60.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerError(RuntimeError):
    """The server process did not start, did not become ready, or did not stop in time."""


class ServerProcess:
    """One TierDB server process; start/stop/kill may be repeated (same port and data dir)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        policy: str | None = None,
        config: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.policy = policy
        self.config = config
        self.extra_env = env or {}
        self.extra_args = extra_args or []
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / f"tierdb-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.returncodes: list[int] = []

    # -- properties ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "tierdb", "serve", "--host", self.host, "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir)]
        if self.policy:
            cmd += ["--policy", self.policy]
        if self.config:
            cmd += ["--config", str(self.config)]
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERDB_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30.0), **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=kwargs.pop("timeout", 30.0), **kwargs)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, wait: bool = True, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        if self.running:
            raise ServerError(f"server on port {self.port} is already running")
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start: {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Poll /health/ready until 200; fail fast if the process exits."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.running:
                    code = self.process.returncode if self.process else None
                    raise ServerError(
                        f"server exited with code {code} before it was ready\n{self.log_tail()}"
                    )
                try:
                    if client.get("/health/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise ServerError(f"server not ready after {timeout}s\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = DEFAULT_STOP_TIMEOUT) -> int:
        """Send ``sig`` (graceful by default) and wait for the exit code."""
        return self._signal_and_wait(sig, timeout)

    def kill(self, timeout: float = 10.0) -> int:
        """SIGKILL: the process gets no chance to flush or clean up."""
        return self._signal_and_wait(signal.SIGKILL, timeout)

    def _signal_and_wait(self, sig: int, timeout: float) -> int:
        if self.process is None:
            raise ServerError("server was never started")
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise ServerError(
                    f"server did not exit within {timeout}s of {signal.Signals(sig).name}\n{self.log_tail()}"
                ) from None
        code = self.process.returncode
        self.returncodes.append(code)
        return code

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no server log)"
        return "--- server log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.running:
            self.kill()
