"""The query route's own cost without a network: the ASGI app called directly, against the
floor app (benchmarks/floor_app.py's handler) called the same way.

    python benchmarks/bench_route_asgi.py [--requests 5000] [--rows 1000] [--profile]

Both apps get the same JSON body; the difference of their p50 is what TierDB's route adds on
top of a minimal Litestar handler (engine search included: a small in-memory collection, so
the search itself costs a few tens of microseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from floor_app import query as floor_query, ready as floor_ready  # noqa: E402
from litestar import Litestar  # noqa: E402

from tierdb.api.app import create_app  # noqa: E402
from tierdb.config import Settings, StorageSettings  # noqa: E402
from tierdb.models import CollectionSpec  # noqa: E402
from tierdb.node import Engine  # noqa: E402

DIM = 384


class Caller:
    """Sends one HTTP request through an ASGI app (no sockets) and returns the status."""

    def __init__(self, app, path: str, body: bytes) -> None:
        self.app = app
        self.body = body
        self.scope_base = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()), (b"accept", b"*/*")],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "state": {},
        }

    async def __call__(self) -> int:
        cycle = BodyReceived(self.body)
        status = 0

        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        scope = dict(self.scope_base)
        scope["headers"] = list(self.scope_base["headers"])
        await self.app(scope, cycle.receive, send)
        return status


class BodyReceived:
    """Like uvicorn's request cycle for a small body: the whole body has arrived before the app
    is called (``more_body`` False, ``message_event`` set), so the body deadline is skipped as
    it is over HTTP (tierdb/api/slow_clients.py ``body_already_received``)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.more_body = False
        self.message_event = asyncio.Event()
        self.message_event.set()
        self.sent = False

    async def receive(self):
        if not self.sent:
            self.sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await asyncio.sleep(3600)


async def lifespan(app):
    queue: asyncio.Queue = asyncio.Queue()
    await queue.put({"type": "lifespan.startup"})
    done = asyncio.Event()

    async def send(message):
        if message["type"].endswith("complete") or message["type"].endswith("failed"):
            done.set()

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, queue.get, send))
    await done.wait()
    return queue, task


async def timed(call: Caller, n: int) -> list[float]:
    for _ in range(200):
        assert await call() == 200
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        status = await call()
        lat.append(time.perf_counter() - t)
        assert status == 200, status
    return lat


def p(lat: list[float], q: float) -> float:
    return round(sorted(lat)[int(q * (len(lat) - 1))] * 1e6, 1)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    body = msgspec.json.encode({"vector": rng.normal(size=DIM).astype(np.float32).tolist(), "k": 10})
    path = "/v1/collections/bench/query"
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(storage=StorageSettings(data_dir=tmp))
        engine = Engine(settings)
        app = create_app(settings, engine)
        queue, task = await lifespan(app)
        while not engine.ready:
            await asyncio.sleep(0.01)
        await engine.create_collection(CollectionSpec(name="bench", dimension=DIM, metric="cosine"))
        coll = engine.get_collection("bench")
        await coll.upsert([str(i) for i in range(args.rows)], rng.normal(size=(args.rows, DIM)).astype(np.float32))
        floor = Litestar(route_handlers=[floor_query, floor_ready], logging_config=None, debug=False)
        tierdb_call, floor_call = Caller(app, path, body), Caller(floor, path, body)
        matrix = rng.normal(size=(1, DIM)).astype(np.float32)
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            await timed(tierdb_call, args.requests)
            prof.disable()
            prof.dump_stats("/tmp/httpb/route.prof")
        rounds = {"floor": [], "tierdb": [], "engine": []}
        for _ in range(3):  # interleaved so machine load hits all alike
            rounds["floor"] += await timed(floor_call, args.requests // 3)
            rounds["tierdb"] += await timed(tierdb_call, args.requests // 3)
            lat = []
            for _ in range(args.requests // 3):
                t = time.perf_counter()
                await coll.query(matrix, 10)
                lat.append(time.perf_counter() - t)
            rounds["engine"] += lat
        for name, lat in rounds.items():
            print(f"{name:8s} p50 {p(lat, 0.5):8.1f} us  p99 {p(lat, 0.99):8.1f} us  mean {statistics.fmean(lat) * 1e6:8.1f} us")
        route = p(rounds["tierdb"], 0.5) - p(rounds["floor"], 0.5) - p(rounds["engine"], 0.5)
        print(f"route cost p50 (tierdb - floor - engine.query): {route:.1f} us")
        await queue.put({"type": "lifespan.shutdown"})
        await task


if __name__ == "__main__":
    asyncio.run(main())
