"""security.protect_status: /health and /metrics need an API key or the admin token; the probes
/health/live and /health/ready and the schema stay open."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tierdb.config import ConfigError, load_settings

from .conftest import Client, DIM, make_settings

KEY = "status-key-0123456789abcdef01"
ADMIN = "status-admin-token-0123456789"
WRONG = "not-a-configured-credential-00"

PROTECTED = ["/health", "/metrics"]
PROBES = ["/health/live", "/health/ready", "/schema/openapi.json"]


@pytest.fixture
async def protected(open_client, data_dir) -> AsyncIterator[Client]:
    settings = make_settings(data_dir, **{
        "security.api_keys": [KEY], "security.admin_token": ADMIN, "security.protect_status": True,
    })
    async with open_client(settings) as client:
        created = await client.post("/v1/collections", json={"name": "secret-name", "dimension": DIM},
                                    headers={"x-api-key": KEY})
        assert created.status_code == 201, created.text
        yield client


@pytest.mark.parametrize("path", PROTECTED)
async def test_status_endpoints_refuse_requests_without_a_credential(protected: Client, path: str) -> None:
    response = await protected.get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["error"] == "unauthorized" and "security.protect_status" in body["message"]
    assert "secret-name" not in response.text


@pytest.mark.parametrize("path", PROTECTED)
async def test_status_endpoints_refuse_a_wrong_credential(protected: Client, path: str) -> None:
    for headers in ({"x-api-key": WRONG}, {"authorization": f"Bearer {WRONG}"}):
        response = await protected.get(path, headers=headers)
        assert response.status_code == 403, headers
        assert response.json()["error"] == "forbidden"
        assert "secret-name" not in response.text


@pytest.mark.parametrize("path", PROTECTED)
@pytest.mark.parametrize(
    "headers", [{"x-api-key": KEY}, {"authorization": f"Bearer {KEY}"}, {"authorization": f"Bearer {ADMIN}"}],
    ids=["api-key-header", "api-key-bearer", "admin-token"],
)
async def test_status_endpoints_accept_an_api_key_or_the_admin_token(
    protected: Client, path: str, headers: dict[str, str]
) -> None:
    response = await protected.get(path, headers=headers)
    assert response.status_code == 200, response.text
    assert "secret-name" in response.text


@pytest.mark.parametrize("path", PROBES)
async def test_probes_and_schema_stay_open(protected: Client, path: str) -> None:
    assert (await protected.get(path)).status_code == 200


async def test_status_endpoints_stay_open_by_default(client: Client) -> None:
    for path in PROTECTED:
        assert (await client.get(path)).status_code == 200


def test_protect_status_without_any_credential_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="security.protect_status: needs security.api_keys"):
        load_settings(env={"TIERDB_SECURITY_PROTECT_STATUS": "true"})
    assert load_settings(env={"TIERDB_SECURITY_PROTECT_STATUS": "true", "TIERDB_ADMIN_TOKEN": ADMIN}).security.protect_status
