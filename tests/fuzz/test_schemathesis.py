"""schemathesis against the OpenAPI schema of a running server (tests/server_process.py).

The schema is the app's own OpenAPI document (built in-process at collection time, because
pytest parametrizes before any server runs; ``test_the_fuzzed_schema_is_the_served_one`` checks
it equals what the server serves at /schema/openapi.json).  Two runs, one pytest test per API
operation each (schemathesis phases: examples, coverage, fuzzing):

- ``test_api_as_documented``: requests generated from the schema as documented, valid and
  invalid (positive + negative modes).  Checks: no 5xx; status code, content type, headers and
  body of every response match the schema; data that violates the schema is rejected with a 4xx
  (design invariant 4: bad input gets a clear 4xx).
- ``test_api_deep``: valid requests from a tightened copy (conftest.tighten: the right dimension,
  non-empty ids, valid metadata filters, exactly one of vector/vectors, the collection ``fuzz``
  and its documents), so that most requests get past validation and reach the engine: upserts
  with arbitrary metadata, filtered queries and deletes, flushes and merges (small thresholds),
  admin compaction, drop and re-create.  Checks: no 5xx and every response matches the schema.
  ``test_the_deep_run_reached_the_engine`` fails if most of them stopped at validation.

Bounded: ``TIERDB_FUZZ_EXAMPLES`` examples per operation and mode (default 15), deterministic
unless ``TIERDB_FUZZ_RANDOM=1``; ``TIERDB_FUZZ_STATS=1`` (with -s) prints the status codes seen.
About 40 s on 2 cores.  Bodies go as JSON and as msgpack (both accepted by the API).
Every distinct failure found has a regular regression test in test_regressions.py; server bugs
still open are listed in ``KNOWN`` (that check skipped where the bug applies, until the fix).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import hypothesis
import msgspec
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="API fuzzing needs schemathesis (dev extra)")
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server_process import ServerProcess
from tierdb.api.app import create_app
from tierdb.config import load_settings

from .conftest import ensure_fuzz_collection, tighten


EXAMPLES = int(os.environ.get("TIERDB_FUZZ_EXAMPLES", "15"))
DETERMINISTIC = os.environ.get("TIERDB_FUZZ_RANDOM", "") != "1"
PHASES = ["examples", "coverage", "fuzzing"]

CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

@dataclass(frozen=True)
class Known:
    """A server bug this suite found: ``check`` is skipped for responses where ``applies`` holds,
    until the fix; ``regression`` is the xfail(strict) test that demonstrates it."""

    check: Any
    regression: str
    applies: Callable[[Any], bool] = lambda response: True


KNOWN: dict[tuple[str, str], Known] = {
    ("GET", "/metrics"): Known(content_type_conformance, "test_regressions.py::test_metrics_content_type_is_documented"),
}


@schemathesis.serializer("application/msgpack")
def _msgpack(ctx: Any, value: Any) -> bytes:
    """The API accepts msgpack bodies as well as JSON; let the fuzzer send both."""
    try:
        return msgspec.msgpack.encode(value)
    except OverflowError:
        hypothesis.reject()  # an integer msgpack cannot carry: not a request a client could send
        raise


def _configure(schema: Any, modes: list[str]) -> Any:
    schema.config.generation.update(modes=modes, max_examples=EXAMPLES, deterministic=DETERMINISTIC)
    schema.config.phases.update(phases=PHASES)
    return schema


def documented_openapi() -> dict[str, Any]:
    """The app's OpenAPI document, built in-process at collection time (the operations must be
    known before the server runs); ``test_the_fuzzed_schema_is_the_served_one`` checks it is
    exactly what the running server serves at /schema/openapi.json."""
    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(load_settings(env={}, overrides={"storage.data_dir": data_dir, "log.level": "ERROR"}))
        for hook in app.on_startup:          # what Litestar runs at startup (adds request schemas)
            result = hook(app)
            if inspect.isawaitable(result):
                asyncio.run(result)
        return app.openapi_schema.to_schema()


OPENAPI = documented_openapi()
documented = _configure(schemathesis.openapi.from_dict(OPENAPI), ["positive", "negative"])
deep = _configure(schemathesis.openapi.from_dict(tighten(OPENAPI)), ["positive"])


@pytest.fixture(scope="module")
def control(fuzz_server: ServerProcess) -> Any:
    with fuzz_server.client() as client:
        yield client


def test_the_fuzzed_schema_is_the_served_one(control: httpx.Client) -> None:
    response = control.get("/schema/openapi.json")
    assert response.status_code == 200
    assert response.json() == OPENAPI


def _checks(case: Any, response: Any, checks: list[Any]) -> list[Any]:
    known = KNOWN.get((case.method.upper(), case.path))
    if known is None or not known.applies(response):
        return checks
    return [check for check in checks if check is not known.check]


# (run, method, path) -> status codes seen: proves the fuzzer got past validation.
STATUSES: dict[tuple[str, str, str], collections.Counter[int]] = collections.defaultdict(collections.Counter)


def _run(case: Any, server: ServerProcess, control: httpx.Client, checks: list[Any], run: str) -> None:
    try:
        response = case.call(base_url=server.url, timeout=30)
        STATUSES[(run, case.method.upper(), case.path)][response.status_code] += 1
        case.validate_response(response, checks=_checks(case, response, checks))
    finally:
        assert server.running, f"the server died while being fuzzed\n{server.log_tail()}"
        ensure_fuzz_collection(control)


_SETTINGS = settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=EXAMPLES,
                     derandomize=DETERMINISTIC, database=None)


RUNS = {"test_api_as_documented": "documented", "test_api_deep": "deep"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``run`` (one value per test) so that each operation's item gets its own id.

    schemathesis names the items ``test_api_deep[POST /v1/collections]``, but pytest >= 9 builds
    node ids from the original name plus the parametrization only, which gave all of them the id
    ``test_api_deep``; with a parametrization schemathesis keeps its per-operation name in the id:
    ``test_api_deep[POST /v1/collections][deep]``."""
    if "run" in metafunc.fixturenames:
        metafunc.parametrize("run", [RUNS[metafunc.definition.name]])


@documented.parametrize()
@_SETTINGS
def test_api_as_documented(case: Any, fuzz_server: ServerProcess, control: httpx.Client, run: str) -> None:
    _run(case, fuzz_server, control, [*CONFORMANCE, negative_data_rejection], run)


@deep.parametrize()
@_SETTINGS
def test_api_deep(case: Any, fuzz_server: ServerProcess, control: httpx.Client, run: str) -> None:
    _run(case, fuzz_server, control, CONFORMANCE, run)


# Operations the deep run must get past validation; they must be in the schema.
ENGINE_OPERATIONS = [
    ("POST", "/v1/collections/{name}/documents"),
    ("POST", "/v1/collections/{name}/query"),
    ("POST", "/v1/collections/{name}/documents/delete"),
    ("POST", "/v1/collections"),
]


def test_the_engine_operations_are_in_the_schema() -> None:
    documented_operations = {(method.upper(), path) for path, item in OPENAPI["paths"].items() for method in item}
    missing = [op for op in ENGINE_OPERATIONS if op not in documented_operations]
    assert not missing, f"operations missing from the OpenAPI schema: {missing}"


def test_the_deep_run_reached_the_engine(request: pytest.FixtureRequest) -> None:
    """Runs after the fuzzing above (same module): the tightened schema must get most requests
    past validation, or the deep run tests nothing but 400s.  Every engine operation whose deep
    test was selected must have been called (a run that silently skipped one fails here)."""
    selected = [
        op for op in ENGINE_OPERATIONS
        if any(item.name.startswith(f"test_api_deep[{op[0]} {op[1]}]") for item in request.session.items)
    ]
    if not selected:
        pytest.skip("the deep fuzzing run of the engine operations was not selected")
    deep = {(m, p): c for (run, m, p), c in STATUSES.items() if run == "deep"}
    for operation in selected:
        codes = deep.get(operation, collections.Counter())
        assert codes[200] + codes[201] >= 3, f"{operation}: {dict(codes) or 'never called'}"
    if os.environ.get("TIERDB_FUZZ_STATS"):
        for key, codes in sorted(STATUSES.items()):
            print(key, dict(codes))
