"""Probes against simulated Azure OpenAI regions on 127.0.0.1, for every fault mode.

Each test sets a fault on the shared simulator, probes through the real
runner (httpx over TCP), and asserts the outcome class and measured figures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken

from controlplane.cli.probe import probe_command
from controlplane.config import Settings, parse_settings
from controlplane.domain import LivenessFailure, LivenessResult, Outcome, ProbeResult
from controlplane.engine.cadence import MAX_OVERLAPPING
from controlplane.runtime import loops
from probes.runner import ProbeRunner, targets
from simulator.faults import Fault
from simulator.llm import LLMSimulator, SimDeployment, SimRegion

API_KEY = "sim-key-7f3a9c"
KEY_ENV = "RG_TEST_SIM_KEY"
ENVIRON = {KEY_ENV: API_KEY}
TOKENS = ("entra-token-one", "entra-token-two", "entra-token-three")
VANTAGE = "test-vantage"
REGIONS = ("eastus", "westeurope", "japaneast")


def _deployments() -> list[SimDeployment]:
    fast = {"ttft_ms": 20.0, "per_token_ms": 1.0, "jitter_ms": 2.0}
    return [
        SimDeployment("gpt-4o", **fast),
        SimDeployment("gpt-4o-mini", model="gpt-4o-mini-2024-07-18", **fast),
        SimDeployment("o3-mini", model="o3-mini-2025-01-31", reasoning=True, **fast),
        SimDeployment("gpt-4o-ptu", ptu=True, **fast),
    ]


@pytest.fixture(scope="module")
def sim() -> Iterator[LLMSimulator]:
    regions = [SimRegion(name, _deployments(), api_key=API_KEY) for name in REGIONS]
    with LLMSimulator(regions, seed=7, bearer_tokens=TOKENS) as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def no_faults(sim: LLMSimulator) -> Iterator[None]:
    sim.clear_faults()
    yield
    sim.clear_faults()


def endpoint(sim: LLMSimulator, region: str, name: str = "gpt-4o", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "base_url": sim.base_url(region),
        "deployment": name,
        "auth": {"kind": "api_key", "env": KEY_ENV},
        "pricing": {"input_per_1m": 2.5, "output_per_1m": 10.0},
    }
    data.update(overrides)
    return data


def settings(sim: LLMSimulator, endpoints: dict[str, list[dict[str, Any]]] | None = None, **probe: Any) -> Settings:
    endpoints = endpoints or {region: [endpoint(sim, region)] for region in REGIONS}
    probe = {"vantage": VANTAGE, "timeout": "2s", "interval": "30s", "fast_interval": "5s", **probe}
    return parse_settings(
        {
            "regions": [{"name": r, "azure_region": r, "endpoints": eps} for r, eps in endpoints.items()],
            "probe": probe,
        }
    )


def one(
    sim: LLMSimulator, region: str = "eastus", name: str = "gpt-4o", probe: dict[str, Any] | None = None, **overrides: Any
) -> ProbeResult:
    s = settings(sim, {region: [endpoint(sim, region, name, **overrides)]}, **(probe or {}))
    [result] = ProbeRunner(s, environ=ENVIRON).run_round_sync()
    return result


def rounds(s: Settings, n: int, **runner_kwargs: Any) -> list[list[ProbeResult]]:
    """``n`` rounds on one runner (the first warms the connections up)."""

    async def go() -> list[list[ProbeResult]]:
        async with ProbeRunner(s, environ=ENVIRON, **runner_kwargs) as runner:
            return [await runner.run_round() for _ in range(n)]

    return asyncio.run(go())


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


class CountingCredential:
    """A TokenCredential handing out TOKENS in turn, each valid for ``lifetime_s`` from the fake clock."""

    def __init__(self, clock: FakeClock, lifetime_s: float = 3600.0, fail: bool = False) -> None:
        self.clock = clock
        self.lifetime_s = lifetime_s
        self.fail = fail
        self.requests: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.requests.append(scopes)
        if self.fail:
            raise RuntimeError("no managed identity endpoint available (Bearer leaked-looking-token-123)")
        token = TOKENS[min(len(self.requests), len(TOKENS)) - 1]
        return AccessToken(token, int(self.clock.now().timestamp() + self.lifetime_s))


# ---------------------------------------------------------------- a healthy endpoint


def test_a_healthy_endpoint_is_ok_with_timings_usage_and_headers(sim: LLMSimulator) -> None:
    r = one(sim)
    assert r.outcome is Outcome.OK, r.error
    assert r.status_code == 200
    assert r.endpoint_id == "eastus/gpt-4o"
    assert r.vantage == VANTAGE
    assert r.headers_ms is not None and r.ttft_ms is not None and r.total_ms is not None
    assert 0 < r.headers_ms <= r.ttft_ms <= r.total_ms < 2000
    assert r.finished and r.finish_reason == "stop"
    assert r.output_chunks >= 1
    assert r.prompt_tokens and r.prompt_tokens > 0
    assert r.completion_tokens and r.completion_tokens > 0
    assert r.limit_requests == 600
    assert r.remaining_requests is not None and 0 <= r.remaining_requests < 600
    assert r.limit_tokens == 100_000
    assert r.remaining_tokens is not None and r.remaining_tokens < 100_000
    assert r.region_header == "East US"
    assert r.apim_request_id and r.request_id
    assert r.error is None


def test_a_ptu_deployment_reports_utilization_instead_of_remaining_tokens(sim: LLMSimulator) -> None:
    r = one(sim, name="gpt-4o-ptu")
    assert r.outcome is Outcome.OK, r.error
    assert r.utilization_pct is not None and 0.0 <= r.utilization_pct <= 100.0
    assert r.remaining_tokens is None


def test_the_v1_url_style_works_with_the_model_in_the_body(sim: LLMSimulator) -> None:
    r = one(sim, name="v1-mini", deployment="gpt-4o-mini", api_style="v1", model="gpt-4o-mini")
    assert r.outcome is Outcome.OK, r.error
    assert r.endpoint_id == "eastus/v1-mini"


def test_a_reasoning_deployment_works_with_max_completion_tokens(sim: LLMSimulator) -> None:
    r = one(sim, name="o3-mini", token_param="max_completion_tokens")
    assert r.outcome is Outcome.OK, r.error


# ---------------------------------------------------------------- latency


@pytest.mark.serial
def test_an_injected_800ms_ttft_is_measured_within_20ms_and_is_slow_over_the_threshold(sim: LLMSimulator) -> None:
    sim.set_fault("westeurope", Fault("slow", ttft_ms=800))
    s = settings(sim, {"westeurope": [endpoint(sim, "westeurope")]}, slow_ttft="500ms")
    measured = [rs[0] for rs in rounds(s, 3)[1:]]  # the first round opens the connection
    for r in measured:
        assert r.outcome is Outcome.SLOW, r.error
        assert r.ttft_ms is not None and r.ttft_ms >= 800.0 - 20.0, r.ttft_ms
        assert "TTFT" in (r.error or "")
    # the fastest round: a busy machine only ever adds time (840 ms seen with other suites running)
    assert abs(min(r.ttft_ms or 0.0 for r in measured) - 800.0) <= 20.0, [r.ttft_ms for r in measured]


@pytest.mark.serial
def test_an_injected_ttft_under_the_threshold_is_ok(sim: LLMSimulator) -> None:
    sim.set_fault("westeurope", Fault("slow", ttft_ms=300))
    s = settings(sim, {"westeurope": [endpoint(sim, "westeurope")]}, slow_ttft="1s")
    r = rounds(s, 2)[1][0]
    assert r.outcome is Outcome.OK, r.error
    assert r.ttft_ms is not None and abs(r.ttft_ms - 300.0) <= 20.0


# ---------------------------------------------------------------- service faults


def test_a_429_is_throttled_with_retry_after_recorded(sim: LLMSimulator) -> None:
    sim.set_fault("japaneast", Fault("throttle", retry_after_s=7))
    r = one(sim, region="japaneast")
    assert r.outcome is Outcome.THROTTLED
    assert r.status_code == 429
    assert r.retry_after_ms == 7000
    assert r.remaining_requests == 0
    assert "exceeded" in (r.error or "")


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_5xx_is_a_server_error_with_azures_message(sim: LLMSimulator, status: int) -> None:
    sim.set_fault("eastus", Fault("error", statuses=(status,)))
    r = one(sim)
    assert r.outcome is Outcome.SERVER_ERROR
    assert r.status_code == status
    assert (r.error or "").startswith(f"HTTP {status}")


def test_a_stream_that_ends_without_finish_is_truncated(sim: LLMSimulator) -> None:
    sim.set_fault("eastus", Fault("truncate"))
    r = one(sim)
    assert r.outcome is Outcome.TRUNCATED
    assert r.status_code == 200
    assert not r.finished
    assert r.finish_reason is None
    assert "without" in (r.error or "")


def test_a_wrong_answer_is_bad_content(sim: LLMSimulator) -> None:
    sim.set_fault("eastus", Fault("bad_content"))
    r = one(sim)
    assert r.outcome is Outcome.BAD_CONTENT
    assert r.finished
    assert (r.error or "").startswith("expected ")


def test_a_filtered_completion_is_content_filtered(sim: LLMSimulator) -> None:
    sim.set_fault("eastus", Fault("content_filter"))
    r = one(sim)
    assert r.outcome is Outcome.CONTENT_FILTERED
    assert r.finish_reason == "content_filter"


# ---------------------------------------------------------------- connection faults


@pytest.mark.serial
def test_a_hang_is_a_timeout_at_the_deadline_not_later(sim: LLMSimulator) -> None:
    sim.set_fault("eastus", Fault("hang"))
    s = settings(sim, {"eastus": [endpoint(sim, "eastus")]}, timeout="500ms", slow_total="400ms", slow_ttft="400ms")
    started = time.perf_counter()
    [r] = ProbeRunner(s, environ=ENVIRON).run_round_sync()
    elapsed = time.perf_counter() - started
    assert r.outcome is Outcome.TIMEOUT
    assert r.status_code is None
    assert r.total_ms is not None and 495.0 <= r.total_ms <= 560.0, r.total_ms
    assert elapsed < 0.65, elapsed
    assert "500ms" in (r.error or "") or "0.5s" in (r.error or "")


@pytest.mark.serial
def test_a_region_that_is_down_is_a_connect_error_without_waiting(sim: LLMSimulator) -> None:
    sim.set_fault("westeurope", Fault("down"))
    started = time.perf_counter()
    r = one(sim, region="westeurope")
    assert time.perf_counter() - started < 1.0
    assert r.outcome is Outcome.CONNECT_ERROR
    assert r.status_code is None
    assert r.error


def test_a_connection_reset_before_the_response_is_a_connect_error(sim: LLMSimulator) -> None:
    sim.set_fault("eastus", Fault("down"), deployment="gpt-4o")  # a deployment fault resets the connection
    r = one(sim)
    assert r.outcome is Outcome.CONNECT_ERROR
    assert r.error


def test_a_fault_limited_to_another_vantage_does_not_hit_this_prober(sim: LLMSimulator) -> None:
    sim.set_fault("eastus", Fault("error", statuses=(503,), vantages=("somewhere-else",)))
    assert one(sim).outcome is Outcome.OK
    sim.set_fault("eastus", Fault("error", statuses=(503,), vantages=(VANTAGE,)))
    assert one(sim).outcome is Outcome.SERVER_ERROR


# ---------------------------------------------------------------- configuration problems


def test_a_401_is_an_auth_error(sim: LLMSimulator) -> None:
    sim.set_fault("eastus", Fault("auth"))
    r = one(sim)
    assert r.outcome is Outcome.AUTH_ERROR
    assert r.status_code == 401


def test_a_wrong_api_key_is_an_auth_error_and_the_key_is_never_reported(sim: LLMSimulator) -> None:
    s = settings(sim, {"eastus": [endpoint(sim, "eastus")]})
    [r] = ProbeRunner(s, environ={KEY_ENV: "wrong-key-0123456789"}).run_round_sync()
    assert r.outcome is Outcome.AUTH_ERROR
    assert "wrong-key-0123456789" not in repr(r)


def test_a_missing_key_variable_is_an_auth_error_naming_it_without_a_request(sim: LLMSimulator) -> None:
    s = settings(sim, {"eastus": [endpoint(sim, "eastus")]})
    sim.reset_stats()
    [r] = ProbeRunner(s, environ={}).run_round_sync()
    assert r.outcome is Outcome.AUTH_ERROR
    assert KEY_ENV in (r.error or "")
    assert r.status_code is None
    assert r.total_ms is not None and 0 <= r.total_ms < 100
    assert sim.stats()["total"] == 0  # nothing was sent


def test_an_unknown_deployment_is_not_found(sim: LLMSimulator) -> None:
    r = one(sim, name="gpt-5-nowhere")
    assert r.outcome is Outcome.NOT_FOUND
    assert r.status_code == 404
    assert "DeploymentNotFound" in (r.error or "")


def test_an_unknown_v1_model_is_not_found(sim: LLMSimulator) -> None:
    r = one(sim, name="v1-nowhere", api_style="v1", model="gpt-5-nowhere")
    assert r.outcome is Outcome.NOT_FOUND


def test_max_tokens_on_a_reasoning_deployment_is_a_bad_request(sim: LLMSimulator) -> None:
    r = one(sim, name="o3-mini", token_param="max_tokens")
    assert r.outcome is Outcome.BAD_REQUEST
    assert r.status_code == 400
    assert "unsupported_parameter" in (r.error or "")


def test_an_exception_carrying_the_key_is_classified_and_scrubbed(sim: LLMSimulator) -> None:
    def explode(request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"proxy said no to api-key {request.headers['api-key']}")

    s = settings(sim, {"eastus": [endpoint(sim, "eastus")]})
    [r] = ProbeRunner(s, environ=ENVIRON, transport=httpx.MockTransport(explode)).run_round_sync()
    assert r.outcome is Outcome.CONNECT_ERROR
    assert "RuntimeError" in (r.error or "")
    assert API_KEY not in (r.error or "")
    assert len(r.error or "") <= 300


# ---------------------------------------------------------------- Entra ID


def test_entra_id_fetches_one_token_for_many_probes_and_refreshes_before_expiry(
    sim: LLMSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    credential = CountingCredential(clock, lifetime_s=3600)
    entra = {"kind": "entra_id"}
    s = settings(sim, {r: [endpoint(sim, r, auth=entra), endpoint(sim, r, "gpt-4o-mini", auth=entra)] for r in REGIONS})

    async def go() -> list[list[ProbeResult]]:
        out = []
        async with ProbeRunner(s, clock=clock, credential=credential) as runner:
            for _ in range(3):  # 18 probes, 6 of them at once
                out.append(await runner.run_round())
            assert len(credential.requests) == 1
            clock.advance(3600 - 400)  # 400 s left: still more than the 5-minute margin
            out.append(await runner.run_round())
            assert len(credential.requests) == 1
            clock.advance(200)  # 200 s left: inside the margin, refreshed once
            out.append(await runner.run_round())
            out.append(await runner.run_round())
        return out

    results = [r for batch in asyncio.run(go()) for r in batch]
    assert len(credential.requests) == 2
    assert credential.requests[0] == ("https://cognitiveservices.azure.com/.default",)
    assert all(r.outcome is Outcome.OK for r in results), [r.error for r in results]
    assert not any(token in caplog.text for token in TOKENS)


def test_a_failing_credential_is_an_auth_error_not_an_exception(sim: LLMSimulator) -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    s = settings(sim, {"eastus": [endpoint(sim, "eastus", auth={"kind": "entra_id"})]})
    [r] = ProbeRunner(s, clock=clock, credential=CountingCredential(clock, fail=True)).run_round_sync()
    assert r.outcome is Outcome.AUTH_ERROR
    assert "Entra ID" in (r.error or "")
    assert "leaked-looking-token-123" not in (r.error or "")


def test_a_token_the_service_rejects_is_an_auth_error(sim: LLMSimulator) -> None:
    class Stranger(CountingCredential):
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("not-a-token-the-region-knows", int(self.clock.now().timestamp() + 3600))

    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    s = settings(sim, {"eastus": [endpoint(sim, "eastus", auth={"kind": "entra_id"})]})
    [r] = ProbeRunner(s, clock=clock, credential=Stranger(clock)).run_round_sync()
    assert r.outcome is Outcome.AUTH_ERROR
    assert r.status_code == 401


# ---------------------------------------------------------------- the runner


def test_a_round_probes_every_endpoint_and_feeds_the_sink_one_batch(sim: LLMSimulator) -> None:
    sim.set_fault("japaneast", Fault("error", statuses=(503,)))
    batches: list[list[ProbeResult]] = []
    s = settings(sim)
    results = ProbeRunner(s, sink=batches.append, environ=ENVIRON).run_round_sync()
    assert [r.endpoint_id for r in results] == ["eastus/gpt-4o", "westeurope/gpt-4o", "japaneast/gpt-4o"]
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK, Outcome.SERVER_ERROR]
    assert batches == [results]


def test_a_round_can_be_limited_to_one_region_and_rejects_unknown_ones(sim: LLMSimulator) -> None:
    runner = ProbeRunner(settings(sim), environ=ENVIRON)
    assert [r.region for r in runner.run_round_sync("westeurope")] == ["westeurope"]
    assert len(runner.run_round_sync()) == 3  # a second event loop works too
    with pytest.raises(KeyError):
        runner.run_round_sync("mars")


@pytest.mark.serial  # times a round: 6 parallel probes of 200 ms must finish within 0.45 s
def test_probes_share_one_client_per_host_and_stay_within_the_concurrency_limit(sim: LLMSimulator) -> None:
    for region in REGIONS:
        sim.set_fault(region, Fault("slow", ttft_ms=200))
    eps = {r: [endpoint(sim, r), endpoint(sim, r, "gpt-4o-mini")] for r in REGIONS}

    async def timed_round(concurrency: int) -> tuple[float, int]:
        async with ProbeRunner(settings(sim, eps, concurrency=concurrency), environ=ENVIRON) as runner:
            await runner.run_round()  # warm up connections
            started = time.perf_counter()
            results = await runner.run_round()
            assert all(r.outcome is Outcome.OK for r in results)
            return time.perf_counter() - started, runner.client_hosts

    serial, hosts = asyncio.run(timed_round(2))  # 6 probes, 2 at a time: 3 waves of 200 ms
    parallel, _ = asyncio.run(timed_round(6))
    assert hosts == 3
    assert serial >= 0.6
    assert parallel < 0.45


def test_a_sink_that_raises_does_not_stop_probing(sim: LLMSimulator) -> None:
    def broken(batch: list[ProbeResult]) -> None:
        raise RuntimeError("database is gone")

    results = ProbeRunner(settings(sim), sink=broken, environ=ENVIRON).run_round_sync()
    assert len(results) == 3


def _tick(runner: ProbeRunner, now: float) -> list[ProbeResult]:
    return asyncio.run(runner.tick(now=now))


def test_undecided_evidence_is_probed_at_the_confirm_gap_until_decided_then_back_to_normal(sim: LLMSimulator) -> None:
    s = settings(sim, {"eastus": [endpoint(sim, "eastus")]}, jitter=0.0, interval="30s", fast_interval="5s", confirm_gap="1s")
    assert s.health.failures_to_down == 5 and s.health.successes_to_up == 3
    runner = ProbeRunner(s, environ=ENVIRON)
    eid = "eastus/gpt-4o"
    now = 1000.0
    for _ in range(3):  # healthy first
        [r] = _tick(runner, now)
        assert r.outcome is Outcome.OK
        assert runner.schedule(eid).next_due - now == pytest.approx(30)
        now = runner.schedule(eid).next_due
    assert not runner.is_suspect(eid)
    assert _tick(runner, now - 10) == []  # not due yet

    sim.set_fault("eastus", Fault("error", statuses=(503,)))
    gaps = []
    for _ in range(6):
        now = runner.schedule(eid).next_due
        [r] = _tick(runner, now)
        assert r.outcome is Outcome.SERVER_ERROR
        gaps.append(runner.schedule(eid).next_due - now)
    # undecided after the first failure: confirmations 1 s apart; down after the fifth: normal again
    # (the liveness checks watch a down endpoint)
    assert gaps == pytest.approx([1, 1, 1, 1, 30, 30])
    assert runner.schedule(eid).confirmed_down

    sim.clear_faults()
    gaps = []
    for _ in range(4):
        now = runner.schedule(eid).next_due
        [r] = _tick(runner, now)
        assert r.outcome is Outcome.OK
        gaps.append(runner.schedule(eid).next_due - now)
    # the first good result on a down endpoint: confirm at the gap until M in a row, then the fast interval during the dwell
    assert gaps == pytest.approx([1, 1, 5, 5])


def test_a_liveness_check_uses_the_models_list_in_both_url_styles(sim: LLMSimulator) -> None:
    eps = {"eastus": [endpoint(sim, "eastus")], "westeurope": [endpoint(sim, "westeurope", api_style="v1")]}
    s = settings(sim, eps, jitter=0.0)

    async def go() -> list[LivenessResult]:
        async with ProbeRunner(s, environ=ENVIRON) as runner:
            return await runner.check_round()

    sim.reset_stats()
    results = asyncio.run(go())
    assert [(r.region, r.ok, r.status_code) for r in results] == [("eastus", True, 200), ("westeurope", True, 200)]
    assert all(r.error is None and r.latency_ms is not None for r in results)
    sim.set_fault("eastus", Fault("error", statuses=(503,)))
    sim.set_fault("westeurope", Fault("throttle"))  # the model's quota: not the front end's
    results = asyncio.run(go())
    assert [(r.region, r.ok, r.status_code) for r in results] == [("eastus", False, 503), ("westeurope", True, 200)]
    assert results[0].error == "HTTP 503 from the models list"
    assert results[0].failure is LivenessFailure.SERVER_ERROR and results[1].failure is None
    sim.set_fault("eastus", Fault("down"))
    [east, _] = asyncio.run(go())
    assert not east.ok and east.status_code is None and east.error
    assert east.failure is LivenessFailure.CONNECT_ERROR


def test_a_failed_liveness_check_says_why_tls_or_timeout(sim: LLMSimulator) -> None:
    tls = endpoint(sim, "eastus", base_url=sim.base_url("eastus").replace("http://", "https://"))  # TLS to a plain-HTTP port
    s = settings(sim, {"eastus": [tls], "westeurope": [endpoint(sim, "westeurope")]}, jitter=0.0, liveness_timeout="300ms")
    sim.set_fault("westeurope", Fault("hang"))

    async def go() -> list[LivenessResult]:
        async with ProbeRunner(s, environ=ENVIRON) as runner:
            return await runner.check_round()

    east, west = asyncio.run(go())
    assert not east.ok and east.failure is LivenessFailure.TLS_ERROR, east
    assert not west.ok and west.failure is LivenessFailure.TIMEOUT, west


def test_a_failed_liveness_check_makes_the_llm_probe_due_at_once_and_never_drains(sim: LLMSimulator) -> None:
    s = settings(sim, {"eastus": [endpoint(sim, "eastus")]}, jitter=0.0, interval="30s", liveness_interval="5s")
    seen: list[LivenessResult] = []
    runner = ProbeRunner(s, environ=ENVIRON, liveness_sink=seen.append)
    eid = "eastus/gpt-4o"
    t0 = time.monotonic() + 1000.0  # the ticks' own times, ahead of the clock a liveness check reads
    for t in (0.0, 30.0, 60.0):
        _tick(runner, t0 + t)
    assert runner.schedule(eid).next_due == pytest.approx(t0 + 90.0)

    async def check() -> None:
        await runner.check_round()

    asyncio.run(check())  # a good check changes nothing: not due before its time
    assert seen and seen[-1].ok and runner.schedule(eid).next_due == pytest.approx(t0 + 90.0)
    sim.set_fault("eastus", Fault("error", statuses=(502,)))
    asyncio.run(check())
    assert not seen[-1].ok
    assert runner.schedule(eid).next_due <= time.monotonic()  # the LLM probe is due now, not at t0 + 90
    assert runner.view.evaluator.evaluate(datetime.now(UTC)).endpoints[eid].state.value == "healthy"


def test_one_liveness_check_per_resource_counts_for_each_deployment_and_a_failed_one_probes_them_all_at_once(
    sim: LLMSimulator,
) -> None:
    """The check reads the resource's models list, not a deployment's: one request per resource, its
    result each deployment's, so a resource that went down is confirmed on all its deployments in one
    moment, not a liveness phase apart (the region was degraded in between: weight halved, then drained)."""
    eastus = [endpoint(sim, "eastus"), endpoint(sim, "eastus", "gpt-4o-mini", api_style="v1")]
    s = settings(sim, {"eastus": eastus, "westeurope": [endpoint(sim, "westeurope")]}, jitter=0.0, interval="30s", liveness_interval="5s")
    runner = ProbeRunner(s, environ=ENVIRON)
    t0 = time.monotonic() + 1000.0  # the ticks' own times, ahead of the clock a liveness check reads
    for t in (0.0, 30.0, 60.0):
        _tick(runner, t0 + t)
    assert [runner.schedule(e).next_due - t0 for e in runner.endpoint_ids] == pytest.approx([90.0, 90.0, 90.0])

    async def check() -> list[tuple[str, bool]]:
        return [(r.endpoint_id, r.ok) for r in await runner.check_round()]

    sim.reset_stats()
    assert asyncio.run(check()) == [("eastus/gpt-4o", True), ("eastus/gpt-4o-mini", True), ("westeurope/gpt-4o", True)]
    models_lists = {region: counts["-"] for region, counts in sim.stats()["by_region"].items()}
    assert models_lists == {"eastus": {"200": 1}, "westeurope": {"200": 1}}
    sim.set_fault("eastus", Fault("down"))
    assert asyncio.run(check()) == [("eastus/gpt-4o", False), ("eastus/gpt-4o-mini", False), ("westeurope/gpt-4o", True)]
    now = time.monotonic()
    assert runner.schedule("eastus/gpt-4o").next_due <= now and runner.schedule("eastus/gpt-4o-mini").next_due <= now
    assert runner.schedule("westeurope/gpt-4o").next_due - t0 == pytest.approx(90.0)  # another resource: not
    asyncio.run(runner.aclose())


def test_a_resources_deployments_stay_in_one_round_with_jitter_and_a_connect_error_pulls_the_sibling_in(sim: LLMSimulator) -> None:
    """One jitter draw per resource and round: the deployments of a resource are probed together, not a
    drifting phase apart; the first connect error of one makes its sibling's probe due at once, in its round."""
    eastus = [endpoint(sim, "eastus"), endpoint(sim, "eastus", "gpt-4o-mini", api_style="v1")]
    s = settings(sim, {"eastus": eastus}, jitter=0.2, interval="10s", liveness_interval="0s")
    runner = ProbeRunner(s, environ=ENVIRON, rng=random.Random(5))
    a, b = runner.endpoint_ids
    t = time.monotonic() + 1000.0
    _tick(runner, t)  # starts: one first round for the resource
    gaps = []
    for _ in range(6):
        assert runner.schedule(a).next_due == runner.schedule(b).next_due
        nxt = runner.schedule(a).next_due
        assert len(_tick(runner, nxt)) == 2
        gaps.append(runner.schedule(a).next_due - nxt)
    assert all(8.0 <= g <= 12.0 for g in gaps) and len({round(g, 6) for g in gaps}) == len(gaps)  # still jittered
    runner.schedule(b).next_due = runner.schedule(b).round = runner.schedule(a).next_due + 4.0  # out of phase
    sim.set_fault("eastus", Fault("down"))
    due = runner.schedule(a).next_due
    [r] = _tick(runner, due)
    assert r.endpoint_id == a and r.outcome is Outcome.CONNECT_ERROR
    assert runner.schedule(b).next_due == due and runner.schedule(b).round == due  # pulled into a's round
    assert [x.endpoint_id for x in _tick(runner, due)] == [b]
    assert runner.schedule(a).next_due == runner.schedule(b).next_due  # confirmations in step
    asyncio.run(runner.aclose())


def test_a_config_problem_does_not_make_an_endpoint_suspect(sim: LLMSimulator) -> None:
    s = settings(sim, {"eastus": [endpoint(sim, "eastus")]}, jitter=0.0)
    sim.set_fault("eastus", Fault("auth"))
    runner = ProbeRunner(s, environ=ENVIRON)
    assert _tick(runner, 0.0)[0].outcome is Outcome.AUTH_ERROR
    assert not runner.is_suspect("eastus/gpt-4o")
    assert runner.schedule("eastus/gpt-4o").next_due == pytest.approx(30.0)


def test_the_health_engine_can_drive_the_fast_interval_through_the_suspect_hook(sim: LLMSimulator) -> None:
    s = settings(sim, jitter=0.0)
    runner = ProbeRunner(s, environ=ENVIRON, suspect=lambda eid: eid.startswith("westeurope/"))
    results = _tick(runner, 0.0)
    assert all(r.outcome is Outcome.OK for r in results)
    assert runner.schedule("eastus/gpt-4o").next_due == pytest.approx(30.0)
    assert runner.schedule("westeurope/gpt-4o").next_due == pytest.approx(5.0)


def test_jitter_spreads_the_first_probes_and_the_intervals(sim: LLMSimulator) -> None:
    s = settings(sim, jitter=0.2, interval="10s", fast_interval="2s")
    runner = ProbeRunner(s, environ=ENVIRON, rng=random.Random(3))
    assert _tick(runner, 0.0) == []  # the first tick spreads the start times over jitter * interval
    firsts = [runner.schedule(e).next_due for e in runner.endpoint_ids]
    assert all(0.0 <= t <= 2.0 for t in firsts)
    assert len({round(t, 6) for t in firsts}) == len(firsts)
    results = _tick(runner, 2.0)
    assert len(results) == 3
    nexts = [runner.schedule(e).next_due - runner_first for e, runner_first in zip(runner.endpoint_ids, firsts, strict=True)]
    assert all(8.0 <= gap <= 12.0 for gap in nexts)
    assert len({round(g, 6) for g in nexts}) == 3


@pytest.mark.serial
def test_run_forever_probes_on_schedule_hands_batches_to_the_sink_and_stops_promptly(sim: LLMSimulator) -> None:
    batches: list[list[ProbeResult]] = []
    sim.set_fault("japaneast", Fault("hang"))
    s = settings(sim, interval="300ms", fast_interval="100ms", timeout="250ms", jitter=0.1)

    def count(endpoint_id: str) -> int:
        return sum(1 for b in batches for r in b if r.endpoint_id == endpoint_id)

    async def go() -> tuple[float, float]:
        runner = ProbeRunner(s, sink=batches.append, environ=ENVIRON, batch_wait=0.2)
        stop = asyncio.Event()
        began = time.perf_counter()
        task = asyncio.create_task(runner.run_forever(stop))
        # run until the sink has seen enough (bounded), instead of a fixed 1.5 s that a loaded machine may not fill
        deadline = began + 15.0
        while time.perf_counter() < deadline:
            if len(batches) >= 3 and count("eastus/gpt-4o") >= 4 and count("japaneast/gpt-4o") >= 3:
                break
            await asyncio.sleep(0.05)
        stop.set()
        started = time.perf_counter()
        await asyncio.wait_for(task, timeout=2.0)
        await runner.aclose()
        return time.perf_counter() - started, time.perf_counter() - began

    stop_took, ran = asyncio.run(go())
    results = [r for b in batches for r in b]
    assert stop_took < 0.4  # in-flight probes end at their deadline
    assert len(batches) >= 3  # batched, not one call at the end
    by_endpoint: dict[str, list[ProbeResult]] = {}
    for r in results:
        by_endpoint.setdefault(r.endpoint_id, []).append(r)
    # every ~0.3 s (jitter 10 %: gaps of at least 0.27 s), so never more than the run allowed
    assert 4 <= len(by_endpoint["eastus/gpt-4o"]) <= ran / 0.27 + 1, (len(by_endpoint["eastus/gpt-4o"]), ran)
    assert all(r.outcome is Outcome.TIMEOUT for r in by_endpoint["japaneast/gpt-4o"])
    hung = by_endpoint["japaneast/gpt-4o"]
    # each ending at its 250 ms deadline; while the evidence is undecided, confirmations overlap (a hung
    # probe must not hold the verdict), at most 1 + MAX_OVERLAPPING in flight: never more per 250 ms
    assert 3 <= len(hung) <= (ran / 0.25 + 1) * (1 + MAX_OVERLAPPING), (len(hung), ran)


@pytest.mark.serial
def test_a_batch_with_news_waits_for_the_rest_of_its_moment_however_batch_wait_falls(sim: LLMSimulator) -> None:
    """The two endpoints of a region, probed together, reach the leader in one batch when one of them is
    news, even when the batch_wait deadline falls between their answers (batch_wait 0: it always does).
    Split, the leader judged the region on half a moment: one endpoint back, the other still down, so
    the region was degraded at score 0.5 and restored at half its weight for a tick (issue 13)."""
    sim.set_fault("eastus", Fault("slow", ttft_ms=120), deployment="gpt-4o-mini")  # answers ~100 ms after gpt-4o
    eps = {"eastus": [endpoint(sim, "eastus"), endpoint(sim, "eastus", "gpt-4o-mini")]}
    s = settings(sim, eps, jitter=0.0, interval="0.3s", fast_interval="0.3s", confirm_gap="0.3s", timeout="0.3s", liveness_interval="0s")
    batches: list[list[ProbeResult]] = []
    m = s.health.successes_to_up  # the M-th success in a row turns a new endpoint healthy: news

    def count(name: str) -> int:
        return sum(1 for b in batches for r in b if r.endpoint_id == f"eastus/{name}")

    async def go() -> None:
        runner = ProbeRunner(s, sink=batches.append, environ=ENVIRON, batch_wait=0.0)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run_forever(stop))
        deadline = time.perf_counter() + 10.0
        while time.perf_counter() < deadline and min(count("gpt-4o"), count("gpt-4o-mini")) < m:
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, timeout=3.0)
        await runner.aclose()

    asyncio.run(go())
    firsts = {name: [r for b in batches for r in b if r.endpoint_id == f"eastus/{name}"][:m] for name in ("gpt-4o", "gpt-4o-mini")}
    assert all(len(rs) == m and all(r.outcome is Outcome.OK for r in rs) for rs in firsts.values()), firsts
    news = firsts["gpt-4o"][m - 1]  # the faster endpoint's M-th success: its view turns healthy
    assert abs((firsts["gpt-4o-mini"][m - 1].started_at - news.started_at).total_seconds()) < 0.1  # probed together
    [batch] = [b for b in batches if news in b]
    assert firsts["gpt-4o-mini"][m - 1] in batch, [[(r.endpoint_id, r.started_at.time()) for r in b] for b in batches]


@pytest.mark.serial  # times the cancellation: over within 0.2 s
def test_cancelling_run_forever_hands_over_finished_results_and_abandons_hung_probes(sim: LLMSimulator) -> None:
    batches: list[list[ProbeResult]] = []
    sim.set_fault("japaneast", Fault("hang"))
    s = settings(sim, interval="10s", fast_interval="5s", timeout="5s", jitter=0.01)

    async def go() -> float:
        runner = ProbeRunner(s, sink=batches.append, environ=ENVIRON, batch_wait=30.0)
        task = asyncio.create_task(runner.run_forever(asyncio.Event()))

        # wait (bounded, well inside the hung probe's 5 s deadline) until both healthy endpoints have a
        # result and the hung one's probe is out: the first probes are spread over jitter * interval
        # (0.1 s), so japaneast's may start after the other two have answered (CI failed so once)
        def ready() -> bool:
            healthy = all(runner.schedule(eid).probes >= 1 for eid in ("eastus/gpt-4o", "westeurope/gpt-4o"))
            return healthy and runner.schedule("japaneast/gpt-4o").in_flight

        for _ in range(60):
            if ready():
                break
            await asyncio.sleep(0.05)
        assert ready(), "both healthy endpoints should have answered while the hung probe is still running"
        started = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await runner.aclose()
        return time.perf_counter() - started

    assert asyncio.run(go()) < 0.2  # not held up by the probe hanging until its 5 s deadline
    assert [sorted(r.endpoint_id for r in b) for b in batches] == [["eastus/gpt-4o", "westeurope/gpt-4o"]]


# ---------------------------------------------------------------- CLI


def test_the_probe_command_prints_one_line_per_endpoint_and_fails_when_one_is_not_ok(
    sim: LLMSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    sim.set_fault("japaneast", Fault("throttle", retry_after_s=4))
    s = settings(sim)
    text, code = probe_command(s)
    assert code == 1
    lines = text.splitlines()
    assert lines[0].startswith("ENDPOINT")
    assert any(line.startswith("eastus/gpt-4o") and " ok " in line and "x-ms-region=East US" in line for line in lines)
    throttled = next(line for line in lines if line.startswith("japaneast/gpt-4o"))
    assert "throttled" in throttled and "429" in throttled and "retry-after=4000ms" in throttled
    assert API_KEY not in text


def test_the_probe_command_renders_json_records_and_names_unknown_regions(sim: LLMSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    s = settings(sim)
    text, code = probe_command(s, region="eastus", as_json=True)
    assert code == 0
    [record] = json.loads(text)
    assert record["endpoint_id"] == "eastus/gpt-4o"
    assert record["outcome"] == "ok"
    assert record["status_code"] == 200
    assert record["ttft_ms"] > 0
    text, code = probe_command(s, region="mars")
    assert code == 2 and "mars" in text


# ---------------------------------------------------------------- the connection pool


def test_a_request_cancelled_while_it_waits_for_a_connection_does_not_poison_the_pool(sim: LLMSimulator) -> None:
    """httpcore 1.0 leaves a connection in the pool, neither idle nor closed nor used by any request, when a
    request is cancelled while it waits for a new connection (encode/httpcore#1093); a probe's deadline is
    such a cancellation. They pile up until the pool is full and every probe of that host times out (the soak
    found it: 64 per host within a few simulated hours under load)."""
    s = settings(sim, {"eastus": [endpoint(sim, "eastus")]}, concurrency=1, timeout="1s")  # one connection per host
    [target] = targets(s)

    async def go() -> tuple[int, ProbeResult]:
        async with ProbeRunner(s, environ=ENVIRON) as runner:
            client = runner._clients.client_for(sim.base_url("eastus"))
            url = sim.base_url("eastus") + "/openai/models?api-version=2024-10-21"
            tasks = [asyncio.create_task(client.get(url, headers={"api-key": API_KEY})) for _ in range(2)]
            await asyncio.sleep(0)  # both wait for the pool's one connection, the first one assigned it
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            left = len(client._transport._pool.connections)  # type: ignore[attr-defined]  # httpx's transport holds httpcore's pool
            return left, await runner._probe.run(target)

    left, result = asyncio.run(go())
    assert left == 1, f"httpcore left {left} connection(s) behind: this test no longer provokes the leak"
    assert result.outcome is Outcome.OK, f"the next probe of the host: {result.outcome.value} ({result.error})"


def test_a_deadline_that_fires_while_the_connection_is_closed_leaves_it_reusable(
    sim: LLMSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpcore closes a response inside a shield (anyio); a probe deadline that cancels the task natively
    (asyncio.timeout) breaks through it, the connection stays ACTIVE and its request stays in the pool,
    forever. Under load that fills the pool within hours (the soak's 64 connections per host). The
    deadline is an anyio one, which the shield holds back until the connection is put back."""
    import anyio
    from httpcore._async.http11 import AsyncHTTP11Connection

    closed = AsyncHTTP11Connection._response_closed

    async def slow_close(self: AsyncHTTP11Connection) -> None:
        await anyio.sleep(0.4)  # the probe's 0.3 s deadline passes while the connection is put back
        await closed(self)

    s = settings(sim, {"eastus": [endpoint(sim, "eastus")]}, concurrency=1, timeout="0.3s")  # one connection per host
    [target] = targets(s)

    async def go() -> tuple[ProbeResult, list[str], ProbeResult]:
        async with ProbeRunner(s, environ=ENVIRON) as runner:
            with monkeypatch.context() as patch:
                patch.setattr(AsyncHTTP11Connection, "_response_closed", slow_close)
                first = await runner._probe.run(target)
            client = runner._clients.client_for(sim.base_url("eastus"))
            pool = client._transport._pool  # type: ignore[attr-defined]  # httpx's transport holds httpcore's pool
            left = [c.info() for c in pool.connections if not c.is_idle()]
            return first, left, await runner._probe.run(target)

    first, busy, second = loops.run(go())
    assert busy == [], f"connections left busy after the probe: {busy} (first probe: {first.outcome.value})"
    assert second.outcome is Outcome.OK, f"the next probe of the host: {second.outcome.value} ({second.error})"


# ---------------------------------------------------------------- a hanging token endpoint


class HangingCredential:
    """A TokenCredential whose token endpoint never answers (until ``release``), like a stalled IMDS."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        self.release.wait(30.0)  # bounded: the test releases it at the end
        raise RuntimeError("the token endpoint gave up")


def test_a_hanging_token_endpoint_is_an_auth_error_of_ours_never_a_timeout_of_the_region(sim: LLMSimulator) -> None:
    """Our own identity stalling (IMDS, workload identity) says nothing about the region: every probe
    is an auth error (not counted against health), the liveness check passes it, and the hanging
    request is one, shared, not one more thread per probe. As a timeout, every region looked down at once."""
    eps = {r: [endpoint(sim, r, auth={"kind": "entra_id"})] for r in REGIONS}
    s = settings(sim, eps, timeout="0.5s", liveness_timeout="0.5s")
    credential = HangingCredential()
    runner = ProbeRunner(s, credential=credential, environ=ENVIRON)

    async def go() -> tuple[list[ProbeResult], list[ProbeResult], list[Any]]:
        try:
            return await runner.run_round(), await runner.run_round(), await runner.check_round()
        finally:
            await runner.aclose()

    try:
        first, second, checks = asyncio.run(go())
    finally:
        credential.release.set()
    for r in first + second:
        assert r.outcome is Outcome.AUTH_ERROR, (r.endpoint_id, r.outcome, r.error)
        assert Outcome.AUTH_ERROR not in s.probe.counts_against_health
        assert "token" in (r.error or "") and "0.5" in (r.error or ""), r.error
    assert all(c.ok for c in checks), checks
    assert credential.calls == 1  # one hanging request, shared by every probe that needed the token
