"""The one table of error kinds (tierdb.errors.ERROR_KINDS) drives the server's statuses and
kinds and the clients' exception classes; nothing else decides them."""

from __future__ import annotations

import pytest
from litestar.exceptions import HTTPException

from tierdb.client import errors as client_errors
from tierdb.errors import ERROR_KINDS, ErrorKind, TierDBError, kind_for_status


def test_every_kind_has_a_status_and_an_existing_client_class() -> None:
    assert set(ERROR_KINDS) == set(ErrorKind)
    for kind, rule in ERROR_KINDS.items():
        cls = getattr(client_errors, rule.client_error)
        assert issubclass(cls, client_errors.TierDBClientError), kind
        assert TierDBError(kind, "x").status_code == rule.status


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_an_engine_error_becomes_the_client_exception_of_its_kind(kind: ErrorKind) -> None:
    """Embedded mode and the HTTP client turn an error of each kind into the same exception."""
    rule = ERROR_KINDS[kind]
    exc = client_errors.make_error(rule.status, kind.value, "m")
    assert type(exc) is getattr(client_errors, rule.client_error)
    assert (exc.status, exc.kind) == (rule.status, kind.value)


def test_a_status_without_a_kind_takes_the_first_kind_listed_for_it() -> None:
    assert kind_for_status(409) is ErrorKind.CONFLICT
    assert kind_for_status(500) is ErrorKind.INTERNAL
    assert kind_for_status(422) is None
    assert type(client_errors.make_error(409, None, "m")) is client_errors.Conflict
    assert client_errors.make_error(502, None, "m").kind == "internal"
    assert type(client_errors.make_error(422, None, "m")) is client_errors.InvalidRequest


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 408, 409, 413, 415, 429])
def test_the_api_names_framework_errors_with_the_table(status: int) -> None:
    from tierdb.api.errors import http_exception_handler

    class FakeRequest:
        method, scope, headers = "GET", {"type": "http"}, {}

        class url:
            path = "/x"

    response = http_exception_handler(FakeRequest(), HTTPException(status_code=status, detail="d"))  # type: ignore[arg-type]
    import json

    body = json.loads(response.content)
    assert response.status_code == status
    assert body["error"] == kind_for_status(status).value  # type: ignore[union-attr]
    # ... and the client maps that kind back to the class the table names for it
    cls = client_errors.error_class(status, body["error"])
    assert cls is getattr(client_errors, ERROR_KINDS[kind_for_status(status)].client_error)  # type: ignore[index]
