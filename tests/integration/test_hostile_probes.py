"""Probes against a hostile LLM server on 127.0.0.1: no answer may crash a probe or lose a region.

Every case is one deployment on :class:`HostileServer`; all of them run in
one round next to a healthy endpoint, so "one bad answer drops the batch"
shows up as a missing healthy result. Results are stored on SQLite and on a
real PostgreSQL, and what the CLI prints is checked for control characters.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import pytest

from controlplane.cli.probe import probe_command
from controlplane.config import Settings, parse_settings
from controlplane.domain import Outcome, ProbeResult
from controlplane.engine.health import HealthEvaluator
from controlplane.store import open_store
from probes.llm import MAX_RETRY_AFTER_MS
from probes.runner import ProbeRunner
from tests.integration.hostile_llm import Answer, HostileServer, good_chunks

KEY_ENV = "RG_TEST_HOSTILE_KEY"
ENVIRON = {KEY_ENV: "hostile-key-1234"}
INT32_MAX = 2**31 - 1

THROTTLE_BODY = b'{"error": {"code": "429", "message": "Rate limit exceeded"}}'
ESCAPES = "\x1b[2J\x1b]0;pwned\x07\u202egnp.exe\u2066x\u2069\x9b31m"


def ok_with(headers: list[tuple[bytes, bytes]] | None = None, **kwargs: Any) -> Any:
    return lambda expected: Answer.stream(good_chunks(expected, **kwargs), headers)


def raw_usage_chunk(expected: str) -> Answer:
    chunks: list[Any] = good_chunks(expected)[:-1]
    chunks.append(b'{"choices": [], "usage": {"prompt_tokens": 1e999, "completion_tokens": -1e400, "total_tokens": NaN}}')
    return Answer.stream(chunks)


CASES: dict[str, Any] = {
    "healthy": ok_with([(b"x-ratelimit-remaining-tokens", b"900"), (b"x-ratelimit-limit-tokens", b"1000")]),
    "retry-after-huge": Answer.error(429, THROTTLE_BODY, [(b"retry-after", b"1e308")]),
    "retry-after-ms-inf": Answer.error(429, THROTTLE_BODY, [(b"retry-after-ms", b"inf")]),
    "retry-after-date-far": Answer.error(429, THROTTLE_BODY, [(b"retry-after", b"Fri, 31 Dec 9999 23:59:59 GMT")]),
    "remaining-inf": Answer.error(429, THROTTLE_BODY, [(b"x-ratelimit-remaining-tokens", b"inf")]),
    "remaining-negative": ok_with(
        [(b"x-ratelimit-remaining-tokens", b"-" + b"9" * 40), (b"x-ratelimit-limit-tokens", b"99999999999999999999")]
    ),
    "nan": ok_with([(b"x-ratelimit-remaining-requests", b"NaN"), (b"azure-openai-deployment-utilization", b"nan%")]),
    "utilization-huge": ok_with([(b"azure-openai-deployment-utilization", b"1e308")]),
    "nul-json-body": Answer.error(500, json.dumps({"error": {"code": "boom\x00", "message": "bad\x00 " + ESCAPES}}).encode()),
    "nul-header": Answer.error(500, b"{}", [(b"x-request-id", b"id\x00")]),
    "nul-raw-body": Answer.error(502, b"plain \x00 text " + ESCAPES.encode("utf-8")),
    "usage-overflow": raw_usage_chunk,
    "escaped-headers": ok_with(
        [
            (b"x-ms-region", "East\u202eUS \x9b31m".encode()),
            (b"apim-request-id", b"a" * 500),
            (b"x-request-id", "\u2067id".encode()),
        ]
    ),
    "long-finish-reason": ok_with(finish="stop" + "\u202e" * 100 + "x" * 500),
    "choices-not-objects": Answer.stream([{"choices": ["x", 3, None]}, {"choices": [{"delta": "text"}]}, {"usage": "lots"}]),
    "content-not-text": Answer.stream([{"choices": [{"delta": {"content": {"x": 1}}, "finish_reason": 7}]}]),
    "deep-json": Answer.stream([b"[" * 100_000 + b"]" * 100_000]),
    "escapes-in-content": lambda expected: Answer.stream(good_chunks(expected + ESCAPES)),
}


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with HostileServer() as s:
        s.answers.update(CASES)
        yield s


def hostile_settings(server: HostileServer, names: list[str] | None = None) -> Settings:
    names = names or list(CASES)
    endpoints = [{"name": n, "base_url": server.base_url, "deployment": n, "auth": {"kind": "api_key", "env": KEY_ENV}} for n in names]
    return parse_settings(
        {
            "regions": [{"name": "eastus", "azure_region": "eastus", "endpoints": endpoints}],
            "probe": {"vantage": "hostile", "timeout": "3s", "interval": "30s", "fast_interval": "5s", "concurrency": 4},
        }
    )


@pytest.fixture(scope="module")
def results(server: HostileServer) -> dict[str, ProbeResult]:
    out = ProbeRunner(hostile_settings(server), environ=ENVIRON).run_round_sync()
    return {r.endpoint: r for r in out}


def _bad_chars(text: str) -> list[str]:
    """Characters that must never reach storage or a terminal: C0/C1 controls, DEL, bidi and other format characters."""
    return [c for c in text if unicodedata.category(c) in ("Cc", "Cf") and c not in "\n"]


def assert_clean(r: ProbeResult) -> None:
    for f in fields(r):
        value = getattr(r, f.name)
        if isinstance(value, float):
            assert math.isfinite(value), f"{r.endpoint}: {f.name} = {value}"
        elif isinstance(value, int) and not isinstance(value, bool):
            assert -(2**31) <= value <= INT32_MAX, f"{r.endpoint}: {f.name} = {value}"
        elif isinstance(value, str):
            assert not _bad_chars(value), f"{r.endpoint}: {f.name} = {value!r}"


# ---------------------------------------------------------------- the probe itself


def test_every_hostile_answer_gives_one_classified_result_and_the_healthy_endpoint_is_ok(results: dict[str, ProbeResult]) -> None:
    assert set(results) == set(CASES)
    assert results["healthy"].outcome is Outcome.OK, results["healthy"].error
    assert results["healthy"].anomalies is None
    for r in results.values():
        assert_clean(r)
        assert "unexpected" not in (r.error or ""), f"{r.endpoint}: {r.error}"


@pytest.mark.parametrize("name", ["retry-after-huge", "retry-after-ms-inf", "retry-after-date-far", "remaining-inf"])
def test_an_absurd_rate_limit_header_on_a_429_is_still_throttled_and_flagged(results: dict[str, ProbeResult], name: str) -> None:
    r = results[name]
    assert r.outcome is Outcome.THROTTLED
    assert r.status_code == 429
    assert r.anomalies, name


def test_a_huge_or_infinite_retry_after_is_clamped_and_flagged(results: dict[str, ProbeResult]) -> None:
    for name, header in (
        ("retry-after-huge", "retry-after"),
        ("retry-after-date-far", "retry-after"),
        ("retry-after-ms-inf", "retry-after-ms"),
    ):
        r = results[name]
        assert r.retry_after_ms == MAX_RETRY_AFTER_MS, name
        assert r.anomalies and r.anomalies.startswith(header + ":") and "clamped" in r.anomalies, r.anomalies


def test_an_infinite_or_nan_count_is_recorded_as_unparseable(results: dict[str, ProbeResult]) -> None:
    assert results["remaining-inf"].remaining_tokens is None
    assert "x-ratelimit-remaining-tokens" in (results["remaining-inf"].anomalies or "")
    nan = results["nan"]
    assert nan.outcome is Outcome.OK
    assert nan.remaining_requests is None and nan.utilization_pct is None
    assert "x-ratelimit-remaining-requests" in (nan.anomalies or "")
    assert "azure-openai-deployment-utilization" in (nan.anomalies or "")


def test_a_huge_negative_remaining_is_clamped_to_zero_and_a_huge_limit_to_the_ceiling(results: dict[str, ProbeResult]) -> None:
    r = results["remaining-negative"]
    assert r.outcome is Outcome.OK
    assert r.remaining_tokens == 0
    assert r.limit_tokens == INT32_MAX
    assert "x-ratelimit-remaining-tokens" in (r.anomalies or "") and "x-ratelimit-limit-tokens" in (r.anomalies or "")
    assert results["utilization-huge"].utilization_pct == 100.0


def test_usage_numbers_that_overflow_are_dropped_not_raised(results: dict[str, ProbeResult]) -> None:
    r = results["usage-overflow"]
    assert r.outcome is Outcome.OK, r.error
    assert r.prompt_tokens is None and r.completion_tokens in (None, 0)
    assert "prompt_tokens" in (r.anomalies or "")


def test_nul_bytes_and_terminal_escapes_in_error_bodies_are_escaped(results: dict[str, ProbeResult]) -> None:
    r = results["nul-json-body"]
    assert r.outcome is Outcome.SERVER_ERROR
    assert r.error and "bad" in r.error and "\\x00" in r.error and "\\u202e" in r.error
    header = results["nul-header"]  # httpx refuses the header line itself: the server broke HTTP
    assert header.outcome is Outcome.CONNECT_ERROR and header.error and "\\x00" in header.error
    raw = results["nul-raw-body"]
    assert raw.outcome is Outcome.SERVER_ERROR and raw.error and "plain" in raw.error and "\\x1b" in raw.error


def test_header_text_is_escaped_and_cut_to_what_the_store_keeps(results: dict[str, ProbeResult]) -> None:
    r = results["escaped-headers"]
    assert r.outcome is Outcome.OK
    assert r.region_header and r.region_header.startswith("East\\u202eUS")
    assert r.apim_request_id and len(r.apim_request_id) <= 80
    assert r.request_id == "\\u2067id"
    long = results["long-finish-reason"]
    assert long.finish_reason is not None and len(long.finish_reason) <= 32


def test_a_stream_with_the_wrong_shapes_is_bad_content_not_an_internal_error(results: dict[str, ProbeResult]) -> None:
    for name in ("choices-not-objects", "content-not-text", "deep-json"):
        r = results[name]
        assert r.outcome in (Outcome.BAD_CONTENT, Outcome.TRUNCATED), f"{name}: {r.outcome} {r.error}"
        assert r.error and "unexpected" not in r.error


def test_a_wrong_answer_with_escapes_is_bad_content_shown_escaped(results: dict[str, ProbeResult]) -> None:
    r = results["escapes-in-content"]
    assert r.outcome is Outcome.BAD_CONTENT
    assert r.error and not _bad_chars(r.error)


# ---------------------------------------------------------------- storage and health


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


def test_every_hostile_result_is_stored_and_read_back_clean(results: dict[str, ProbeResult], url: str) -> None:
    store = open_store(url, migrate=True)
    try:
        assert store.add_probe_results(list(results.values())) == len(results)
        back = {r.endpoint: r for r in store.latest_results(per_endpoint=5)}
        assert set(back) == set(results)
        for r in back.values():
            assert_clean(r)
        assert back["retry-after-huge"].anomalies == results["retry-after-huge"].anomalies
        settings = hostile_settings_from(results)
        report = HealthEvaluator.from_results(settings, back.values(), max(r.started_at for r in back.values())).evaluate(
            max(r.started_at for r in back.values())
        )
        assert report.endpoints["eastus/healthy"].reason != "no probe results yet"
    finally:
        store.close()


def hostile_settings_from(results: dict[str, ProbeResult]) -> Settings:
    auth = {"kind": "api_key", "env": KEY_ENV}
    endpoints = [{"name": n, "base_url": "http://127.0.0.1:9", "deployment": n, "auth": auth} for n in results]
    return parse_settings({"regions": [{"name": "eastus", "azure_region": "eastus", "endpoints": endpoints}]})


# ---------------------------------------------------------------- what on-call sees


def test_the_probe_command_reports_every_endpoint_and_prints_no_control_characters(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, ENVIRON[KEY_ENV])
    text, code = probe_command(hostile_settings(server))
    assert code == 1
    for name in CASES:
        assert f"eastus/{name}" in text
    assert not _bad_chars(text), [c for c in _bad_chars(text)]
    text, _code = probe_command(hostile_settings(server), as_json=True)
    records = json.loads(text)
    assert len(records) == len(CASES)
    assert not _bad_chars(text)


# ---------------------------------------------------------------- the store's insert path


def _hand_built(i: int, **fields: Any) -> ProbeResult:
    from datetime import UTC, datetime, timedelta

    at = datetime(2026, 12, 2, 10, 0, tzinfo=UTC) + timedelta(seconds=i)
    return ProbeResult(endpoint_id=f"eastus/e{i}", region="eastus", vantage="v", started_at=at, outcome=Outcome.OK, **fields)


def test_one_bad_row_never_drops_a_batch_the_bad_fields_are_replaced_and_flagged(url: str) -> None:
    store = open_store(url, migrate=True)
    try:
        batch = [
            _hand_built(0, ttft_ms=120.0),
            _hand_built(1, remaining_tokens=-(10**30), limit_tokens=10**12, ttft_ms=math.nan, total_ms=math.inf),
            _hand_built(2, error="body\x00with NUL \x1b[31m\u202e", region_header="r" * 500, request_id="\ud800"),
            _hand_built(3, ttft_ms=130.0),
        ]
        assert store.add_probe_results(batch) == 4
        back = {r.endpoint: r for r in store.latest_results(per_endpoint=5)}
        assert back["e0"] == batch[0] and back["e3"] == batch[3]
        one, two = back["e1"], back["e2"]
        assert one.remaining_tokens == -(2**31) and one.limit_tokens == INT32_MAX
        assert one.ttft_ms is None and one.total_ms is None
        assert one.anomalies and "remaining_tokens" in one.anomalies and "ttft_ms" in one.anomalies
        assert two.error == "body\\x00with NUL \\x1b[31m\\u202e"
        assert two.region_header and len(two.region_header) <= 80 and two.request_id == "\\ud800"
        assert two.anomalies and "error" in two.anomalies and "region_header" in two.anomalies
    finally:
        store.close()


def test_a_row_the_database_refuses_is_kept_bare_and_flagged_and_the_rest_stored(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last line of defence: even with fitting switched off, only the refused row loses fields."""
    from controlplane.store import repo

    monkeypatch.setattr(repo, "fit_row", lambda table, values: (dict(values), []))
    store = open_store(url, migrate=True)
    try:
        batch = [_hand_built(0), _hand_built(1, remaining_tokens=10**30, error="kept?"), _hand_built(2)]
        assert store.add_probe_results(batch) == 3
        back = {r.endpoint: r for r in store.latest_results(per_endpoint=5)}
        assert back["e0"] == batch[0] and back["e2"] == batch[2]
        assert back["e1"].outcome is Outcome.OK and back["e1"].remaining_tokens is None and back["e1"].error is None
        assert back["e1"].anomalies and "refused" in back["e1"].anomalies
    finally:
        store.close()


# ---------------------------------------------------------------- the worker


def test_the_worker_stores_every_hostile_result_and_no_endpoint_stays_unknown_for_lack_of_results(
    server: HostileServer, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    from controlplane.runtime.worker import Worker

    settings = hostile_settings(server)
    store = open_store(sqlite_url, migrate=True)
    worker = Worker(settings, store, actuators={}, environ=ENVIRON, lease_ttl_s=5.0)
    try:
        worker.start()
        deadline = time.monotonic() + 20.0
        seen: set[str] = set()
        while time.monotonic() < deadline and len(seen) < len(CASES):
            seen = {r.endpoint for r in store.latest_results(per_endpoint=1)}
            time.sleep(0.1)
        assert seen == set(CASES)
        report = None
        while time.monotonic() < deadline and report is None:
            report = worker.reconcile_tick() and worker.last_report
            time.sleep(0.1)
        assert report is not None, "the worker never evaluated"
        for eid, eh in report.endpoints.items():
            assert "no probe results yet" not in eh.reason, eid
    finally:
        worker.stop(timeout=5.0)
        store.close()
    assert "Task exception was never retrieved" not in caplog.text
    assert "cannot store" not in caplog.text
