"""API keys: enforced on the data API (/v1) when configured; health, metrics and schema stay open."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar

from tierdb.api.app import create_app
from tierdb.api.auth import require_admin, require_api_key, require_status_access

from .conftest import Client, DIM, make_settings, unit

KEY_A = "key-a-0123456789abcdef0123456789"
KEY_B = "key-b-fedcba9876543210fedcba9876"
WRONG = "key-c-not-configured-0000000000"

# (method, path, json body) of every data route, against collection "docs" holding "d0".
DATA_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/v1/collections", None),
    ("POST", "/v1/collections", {"name": "other", "dimension": DIM}),
    ("GET", "/v1/collections/docs", None),
    ("POST", "/v1/collections/docs/documents", {"documents": [{"id": "d1", "vector": unit(1)}]}),
    ("GET", "/v1/collections/docs/documents/d0", None),
    ("POST", "/v1/collections/docs/documents/get", {"ids": ["d0"]}),
    ("POST", "/v1/collections/docs/query", {"vector": unit(0), "k": 1}),
    ("POST", "/v1/collections/docs/documents/delete", {"ids": ["d0"]}),
    ("DELETE", "/v1/collections/docs", None),
]
OPEN_ROUTES = ["/health", "/health/live", "/health/ready", "/metrics", "/schema", "/schema/openapi.json"]


@pytest.fixture
async def keyed(open_client, data_dir) -> AsyncIterator[Client]:
    """API keys configured, a collection 'docs' with one document 'd0'."""
    settings = make_settings(data_dir, **{"security.api_keys": [KEY_A, KEY_B]})
    async with open_client(settings) as client:
        headers = {"x-api-key": KEY_A}
        create = {"name": "docs", "dimension": DIM}
        response = await client.post("/v1/collections", json=create, headers=headers)
        assert response.status_code == 201, response.text
        body = {"documents": [{"id": "d0", "vector": unit(0)}]}
        response = await client.post("/v1/collections/docs/documents", json=body, headers=headers)
        assert response.status_code == 200, response.text
        yield client


async def call(client: Client, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return await client.request(method, path, json=body, headers=headers)


async def state(client: Client) -> tuple[list[str], int]:
    collections = (await client.get("/v1/collections", headers={"x-api-key": KEY_A})).json()["collections"]
    docs = next((c["count"] for c in collections if c["name"] == "docs"), -1)
    return sorted(c["name"] for c in collections), docs


MISSING = [
    {},
    {"x-api-key": ""},
    {"x-api-key": "   "},
    {"authorization": "Bearer"},
    {"authorization": f"Basic {KEY_A}"},
    {"authorization": KEY_A},
]
WRONG_KEYS = [
    {"x-api-key": WRONG},
    {"authorization": f"Bearer {WRONG}"},
    {"x-api-key": KEY_A[:-1]},
    {"x-api-key": KEY_A + KEY_B},
    {"x-api-key": KEY_A.upper()},
    {"x-api-key": WRONG, "authorization": f"Bearer {WRONG}"},
]
VALID = [
    {"x-api-key": KEY_A},
    {"x-api-key": KEY_B},
    {"X-Api-Key": f"  {KEY_B}  "},
    {"authorization": f"Bearer {KEY_A}"},
    {"authorization": f"bearer {KEY_B}"},
    {"x-api-key": WRONG, "authorization": f"Bearer {KEY_A}"},
]


async def test_missing_key_is_401_and_changes_nothing(keyed: Client) -> None:
    for method, path, body in DATA_ROUTES:
        for headers in MISSING:
            response = await call(keyed, method, path, body, headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"] == "unauthorized"
            assert "X-API-Key" in response.json()["message"]
            assert response.headers["www-authenticate"] == "Bearer"
    assert await state(keyed) == (["docs"], 1)


async def test_wrong_key_is_403_and_changes_nothing(keyed: Client) -> None:
    for method, path, body in DATA_ROUTES:
        for headers in WRONG_KEYS:
            response = await call(keyed, method, path, body, headers)
            assert response.status_code == 403, (method, path, headers, response.text)
            assert response.json()["error"] == "forbidden"
            assert WRONG not in response.text and KEY_A not in response.text and KEY_B not in response.text
    assert await state(keyed) == (["docs"], 1)


@pytest.mark.parametrize(
    "headers", VALID, ids=["x-api-key-a", "x-api-key-b", "padded", "bearer-a", "bearer-lower", "one-valid"]
)
async def test_either_header_with_any_configured_key_is_accepted(keyed: Client, headers: dict[str, str]) -> None:
    for method, path, body in DATA_ROUTES:  # in order: the last one drops the collection
        response = await call(keyed, method, path, body, headers)
        assert response.status_code < 300, (method, path, response.text)


@pytest.mark.parametrize("path", OPEN_ROUTES)
async def test_health_metrics_and_schema_need_no_key(keyed: Client, path: str) -> None:
    assert (await keyed.get(path)).status_code == 200


async def test_admin_routes_do_not_accept_api_keys_as_admin_tokens(open_client, data_dir) -> None:
    settings = make_settings(
        data_dir, **{"security.api_keys": [KEY_A], "security.admin_token": "the-admin-token-0123456789"}
    )
    async with open_client(settings) as client:
        create = {"name": "docs", "dimension": DIM}
        await client.post("/v1/collections", json=create, headers={"x-api-key": KEY_A})
        path = "/admin/collections/docs/status"
        assert (await client.get(path, headers={"x-api-key": KEY_A})).status_code == 401
        assert (await client.get(path, headers={"authorization": f"Bearer {KEY_A}"})).status_code == 403
        assert (await client.get(path, headers={"authorization": "Bearer the-admin-token-0123456789"})).status_code == 200
        # ... and the admin token is no API key.
        as_key = {"authorization": "Bearer the-admin-token-0123456789"}
        assert (await client.get("/v1/collections", headers=as_key)).status_code == 403


async def test_without_configured_keys_the_data_api_is_open(client: Client) -> None:
    assert (await client.get("/v1/collections")).status_code == 200
    assert (await client.get("/v1/collections", headers={"x-api-key": "anything"})).status_code == 200


def test_every_route_has_exactly_the_guard_its_prefix_needs(data_dir) -> None:
    """New routes are protected by where they are registered; this catches one that is not.

    Guards must be coroutines: Litestar would run a plain function in a worker thread
    (wrapped in an AsyncCallable), a thread hop on every data request."""
    app: Litestar = create_app(make_settings(data_dir))
    seen = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            guards = set(handler.resolve_guards())  # coroutine guards: not wrapped for a thread
            if route.path.startswith("/v1"):
                assert guards == {require_api_key}, route.path
            elif route.path.startswith("/admin"):
                assert guards == {require_admin}, route.path
            elif route.path in ("/health", "/metrics"):  # OPTIONS (automatic) discloses nothing
                expected = set() if handler.http_methods == {"OPTIONS"} else {require_status_access}
                assert guards == expected, route.path
            else:
                assert route.path.startswith(("/health", "/schema")), route.path
                assert not guards, route.path
            seen.add(route.path.split("/")[1])
    assert {"v1", "admin", "health", "metrics", "schema"} <= seen
