"""The client's retry backoff with an injected jitter source and clock: exact delays."""

from __future__ import annotations

import email.utils

import pytest

from tierdb.client._calls import Backoff, parse_retry_after

NOW = 1_700_000_000.0


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


@pytest.mark.parametrize(("jitter", "expected"), [
    (0.0, [0.1, 0.2, 0.4, 0.5, 0.5]),          # half the capped exponential ceiling ...
    (0.5, [0.15, 0.3, 0.6, 0.75, 0.75]),
    (1.0, [0.2, 0.4, 0.8, 1.0, 1.0]),          # ... up to all of it
])
def test_delay_is_half_the_ceiling_plus_jitter(jitter: float, expected: list[float]) -> None:
    backoff = Backoff(retries=5, base=0.2, cap=1.0, jitter=lambda: jitter)
    assert [backoff.delay(attempt) for attempt in range(5)] == pytest.approx(expected)


def test_retry_after_seconds_is_a_floor_capped_by_max_retry_after() -> None:
    backoff = Backoff(base=0.2, cap=1.0, max_retry_after=10.0, jitter=lambda: 0.0)
    assert backoff.delay(0, "3") == 3.0
    assert backoff.delay(0, "0") == pytest.approx(0.1)       # a floor, not a replacement
    assert backoff.delay(0, "120") == 10.0


def test_retry_after_http_date_is_measured_against_the_injected_clock() -> None:
    assert parse_retry_after(http_date(NOW + 7), now=lambda: NOW) == 7.0
    assert parse_retry_after(http_date(NOW - 7), now=lambda: NOW) == 0.0   # in the past
    backoff = Backoff(base=0.2, cap=1.0, max_retry_after=60.0, jitter=lambda: 0.0, now=lambda: NOW)
    assert backoff.delay(2, http_date(NOW + 30)) == 30.0
    assert backoff.delay(2, http_date(NOW + 3600)) == 60.0
