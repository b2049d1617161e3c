"""The HTTP floor for the query benchmark: a minimal Litestar app on the same server stack as
``tierdb serve`` (uvicorn, the same h11 protocol class and options, a socket bound the same way)
that decodes the same query body with msgspec and returns 10 fixed hits.  What it costs is what
any query route pays before doing work; TierDB's route cost is its latency minus this floor.

    python benchmarks/floor_app.py --port 8199
"""

from __future__ import annotations

import argparse

import msgspec
import uvicorn
from litestar import Litestar, Request, Response, post

from tierdb.api.schemas import QueryHit, QueryRequest, QueryResult
from tierdb.api.slow_clients import IdleClosingH11Protocol
from tierdb.cli.serve import _listening_socket

_decoder = msgspec.json.Decoder(QueryRequest)
_encoder = msgspec.json.Encoder()
_HITS = QueryResult(results=[QueryHit(id=str(i), distance=0.1 * i) for i in range(10)])


@post("/v1/collections/{name:str}/query", status_code=200)
async def query(request: Request, name: str) -> Response:
    body = _decoder.decode(await request.body())
    assert body.vector is not None or body.vectors is not None
    return Response(_encoder.encode(_HITS), media_type="application/json")


@post("/ready", status_code=200)
async def ready() -> Response:
    return Response(b"{}", media_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = Litestar(route_handlers=[query, ready], logging_config=None, debug=False)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, http=IdleClosingH11Protocol, lifespan="on",
        log_config=None, access_log=False, server_header=False,
    )
    uvicorn.Server(config).run(sockets=[_listening_socket(args.host, args.port)])


if __name__ == "__main__":
    main()
