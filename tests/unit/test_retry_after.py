"""One reading of Retry-After for probes, notifications and Azure writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace

import pytest

from controlplane.actuators.base import classify
from controlplane.retry_after import MAX_SECONDS, retry_after_seconds
from probes.llm import parse_headers

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
        ({"x-ms-retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": format_datetime(NOW + timedelta(seconds=30), usegmt=True)}, 30.0),
        ({"retry-after": format_datetime(NOW - timedelta(seconds=30), usegmt=True)}, 0.0),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after": "1e308"}, MAX_SECONDS),
        ({"retry-after": "inf"}, MAX_SECONDS),
        ({"retry-after-ms": "nan", "retry-after": "3"}, 3.0),
        ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0),
    ],
)
def test_it_reads_every_form_and_bounds_the_answer(headers: dict[str, str], seconds: float) -> None:
    assert retry_after_seconds(headers, NOW) == seconds


@pytest.mark.parametrize("headers", [None, {}, {"retry-after": ""}, {"retry-after": "soon"}, {"retry-after": "nan"}, {"x-other": "1"}])
def test_it_answers_none_when_nothing_is_usable(headers: dict[str, str] | None) -> None:
    assert retry_after_seconds(headers, NOW) is None


def test_probes_store_it_in_milliseconds_without_overflowing() -> None:
    assert parse_headers({"retry-after": "1e308"})["retry_after_ms"] == MAX_SECONDS * 1000


def test_an_azure_write_honours_an_http_date_retry_after() -> None:
    from azure.core.exceptions import HttpResponseError

    when = datetime.now(UTC) + timedelta(seconds=20)
    response = SimpleNamespace(status_code=429, reason="Too Many Requests", headers={"Retry-After": format_datetime(when, usegmt=True)})
    exc = HttpResponseError(message="throttled")
    exc.status_code = 429
    exc.response = response  # type: ignore[assignment]  # a stand-in response carrying only what classify reads
    error = classify(exc)
    assert error.retry_after is not None and 15 <= error.retry_after <= 20
