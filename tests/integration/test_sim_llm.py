"""The simulated Azure OpenAI regions, driven over HTTP by the official `openai` client and raw httpx."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from controlplane.durations import parse_duration
from simulator.faults import (
    Fault,
    FaultBook,
    TimelineEvent,
    choose_status,
    fault_fires,
    parse_timeline,
)
from simulator.llm import (
    DEFAULT_API_KEY,
    VANTAGE_HEADER,
    LLMSimulator,
    SimDeployment,
    SimRegion,
    default_regions,
)
from tests.waiting import wait_until

API_VERSION = "2024-10-21"
NUMBER_PROMPT = [{"role": "user", "content": "Reply with only the number 42"}]
CHAT = "/openai/deployments/{d}/chat/completions?api-version=" + API_VERSION
FAST = {"ttft_ms": 5.0, "per_token_ms": 1.0, "jitter_ms": 0.0}


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _regions() -> list[SimRegion]:
    deployments = [
        SimDeployment("gpt-4o", **FAST),
        SimDeployment("o3-mini", model="o3-mini-2025-01-31", reasoning=True, **FAST),
        SimDeployment("ptu-4o", ptu=True, tpm=1000, **FAST),
        SimDeployment("tiny", rpm=2, tpm=100_000, **FAST),
        SimDeployment("few-tokens", rpm=100, tpm=40, **FAST),
    ]
    return [
        SimRegion("eastus", deployments, azure_region="East US"),
        SimRegion("westeurope", deployments, azure_region="West Europe"),
    ]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(clock: ManualClock) -> Iterator[LLMSimulator]:
    with LLMSimulator(_regions(), seed=7, clock=clock) as s:
        yield s


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2.0) as client:
        yield client


def _post(http: httpx.Client, sim: LLMSimulator, region: str = "eastus", deployment: str = "gpt-4o", **kw: Any) -> httpx.Response:
    headers = {"api-key": DEFAULT_API_KEY, **kw.pop("headers", {})}
    body = {"messages": NUMBER_PROMPT, **kw.pop("json", {})}
    return http.post(sim.base_url(region) + CHAT.format(d=deployment), headers=headers, json=body, **kw)


def _azure(sim: LLMSimulator, region: str = "eastus", timeout: float = 2.0) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=sim.base_url(region), api_key=DEFAULT_API_KEY, api_version=API_VERSION, max_retries=0, timeout=timeout
    )


def _sse(response: httpx.Response) -> list[Any]:
    """Parsed `data:` payloads of an SSE body ("[DONE]" kept as a string)."""
    events = []
    for block in response.text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            payload = block[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def _stream(http: httpx.Client, sim: LLMSimulator, deployment: str = "gpt-4o", **body: Any) -> httpx.Response:
    return _post(http, sim, deployment=deployment, json={"stream": True, **body})


# --------------------------------------------------------------------------- happy paths


def test_azure_client_gets_the_number_back(sim: LLMSimulator) -> None:
    result = _azure(sim).chat.completions.create(model="gpt-4o", messages=NUMBER_PROMPT, max_tokens=5)
    assert result.choices[0].message.content == "42"
    assert result.choices[0].finish_reason == "stop"
    assert result.model == "gpt-4o-2024-08-06"
    assert result.object == "chat.completion"
    assert re.fullmatch(r"chatcmpl-[A-Za-z0-9]{29}", result.id)
    assert result.usage is not None and result.usage.completion_tokens == 1
    assert result.usage.total_tokens == result.usage.prompt_tokens + 1


def test_openai_v1_client_names_the_deployment_in_the_body(sim: LLMSimulator) -> None:
    client = openai.OpenAI(base_url=sim.base_url("westeurope") + "/openai/v1/", api_key="any-token", max_retries=0, timeout=2.0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Reply with only the number 7"}]
    )
    assert raw.headers["x-ms-region"] == "West Europe"
    assert raw.parse().choices[0].message.content == "7"


def test_other_prompts_get_a_short_fixed_reply(sim: LLMSimulator, http: httpx.Client) -> None:
    reply = _post(http, sim, json={"messages": [{"role": "user", "content": "Tell me a story"}]}).json()
    content = reply["choices"][0]["message"]["content"]
    assert content and "42" not in content


def test_stream_has_azure_shape_with_usage_and_done(sim: LLMSimulator, http: httpx.Client) -> None:
    response = _stream(http, sim, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _sse(response)
    first, role, *middle, finish, usage, done = events
    assert first["choices"] == [] and first["prompt_filter_results"][0]["prompt_index"] == 0
    assert role["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(e["choices"][0]["delta"]["content"] for e in middle) == "42"
    assert all(e["choices"][0]["finish_reason"] is None for e in [role, *middle])
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["choices"][0]["delta"] == {}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 1
    assert done == "[DONE]"
    assert {e["id"] for e in events[1:-1]} == {role["id"]}


def test_stream_without_include_usage_has_no_usage_chunk(sim: LLMSimulator, http: httpx.Client) -> None:
    events = _sse(_stream(http, sim))
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert not any(isinstance(e, dict) and e.get("usage") for e in events)


def test_azure_client_streams_the_answer(sim: LLMSimulator) -> None:
    stream = _azure(sim).chat.completions.create(
        model="gpt-4o", messages=NUMBER_PROMPT, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices == []
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "42"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 1


def test_max_tokens_truncates_with_finish_reason_length(sim: LLMSimulator, http: httpx.Client) -> None:
    story = [{"role": "user", "content": "Tell me a story"}]
    reply = _post(http, sim, json={"messages": story, "max_tokens": 3}).json()
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 3
    assert len(reply["choices"][0]["message"]["content"].split()) == 3
    events = _sse(_stream(http, sim, messages=story, max_completion_tokens=2))
    contents = [e["choices"][0]["delta"].get("content") for e in events[2:-2]]
    assert len(contents) == 2 and events[-2]["choices"][0]["finish_reason"] == "length"


def test_reasoning_deployment_rejects_max_tokens_like_azure(sim: LLMSimulator) -> None:
    client = _azure(sim)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="o3-mini", messages=NUMBER_PROMPT, max_tokens=5)
    assert caught.value.status_code == 400
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.param == "max_tokens"
    ok = client.chat.completions.create(model="o3-mini", messages=NUMBER_PROMPT, max_completion_tokens=5)
    assert ok.choices[0].message.content == "42"


def test_reasoning_tokens_use_up_a_small_completion_budget(http: httpx.Client) -> None:
    thinker = SimDeployment("o1", reasoning=True, reasoning_tokens=20, **FAST)
    with LLMSimulator([SimRegion("eastus", [thinker])]) as sim:
        reply = _post(http, sim, deployment="o1", json={"max_completion_tokens": 5}).json()
    assert reply["choices"][0]["message"]["content"] == ""
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5


# --------------------------------------------------------------------------- errors without faults


def test_unknown_deployment_is_404_deployment_not_found_in_both_url_styles(sim: LLMSimulator, http: httpx.Client) -> None:
    response = _post(http, sim, deployment="gpt-5")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "DeploymentNotFound"
    client = openai.OpenAI(base_url=sim.base_url("eastus") + "/openai/v1/", api_key="t", max_retries=0, timeout=2.0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-5", messages=NUMBER_PROMPT)
    assert caught.value.code == "DeploymentNotFound"


def test_api_version_is_required_and_must_be_supported(sim: LLMSimulator, http: httpx.Client) -> None:
    url = sim.base_url("eastus") + "/openai/deployments/gpt-4o/chat/completions"
    headers = {"api-key": DEFAULT_API_KEY}
    missing = http.post(url, headers=headers, json={"messages": NUMBER_PROMPT})
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "404", "message": "Resource not found"}}
    bad = http.post(url + "?api-version=2021-01-01", headers=headers, json={"messages": NUMBER_PROMPT})
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "API version not supported"


def test_wrong_or_missing_credentials_get_401(sim: LLMSimulator, http: httpx.Client) -> None:
    wrong = _post(http, sim, headers={"api-key": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "401"
    assert "Access denied" in wrong.json()["error"]["message"]
    url = sim.base_url("eastus") + CHAT.format(d="gpt-4o")
    assert http.post(url, json={"messages": NUMBER_PROMPT}).status_code == 401
    assert http.post(url, headers={"Authorization": "Basic dXNlcjpwdw=="}, json={"messages": NUMBER_PROMPT}).status_code == 401
    assert http.post(url, headers={"Authorization": "Bearer entra-token"}, json={"messages": NUMBER_PROMPT}).status_code == 200


def test_configured_bearer_tokens_reject_other_tokens(http: httpx.Client) -> None:
    with LLMSimulator(_regions(), bearer_tokens={"good-token"}) as sim:
        url = sim.base_url("eastus") + CHAT.format(d="gpt-4o")
        good = http.post(url, headers={"Authorization": "Bearer good-token"}, json={"messages": NUMBER_PROMPT})
        bad = http.post(url, headers={"Authorization": "Bearer other"}, json={"messages": NUMBER_PROMPT})
    assert good.status_code == 200
    assert bad.status_code == 401
    assert "Access token" in bad.json()["error"]["message"]


# --------------------------------------------------------------------------- headers and rate limits


def test_it_sends_region_request_ids_and_rate_limit_headers(sim: LLMSimulator, http: httpx.Client) -> None:
    first, second = _post(http, sim), _post(http, sim)
    h = second.headers
    assert h["x-ms-region"] == "East US"
    uuid.UUID(h["apim-request-id"])
    uuid.UUID(h["x-request-id"])
    assert h["apim-request-id"] != first.headers["apim-request-id"]
    assert h["x-ratelimit-limit-requests"] == "600"
    assert h["x-ratelimit-limit-tokens"] == "100000"
    assert int(h["x-ratelimit-remaining-requests"]) == int(first.headers["x-ratelimit-remaining-requests"]) - 1 == 598
    assert int(h["x-ratelimit-remaining-tokens"]) < int(first.headers["x-ratelimit-remaining-tokens"]) < 100000


def test_ptu_deployment_reports_utilization_instead_of_remaining_tokens(sim: LLMSimulator, http: httpx.Client) -> None:
    h = _post(http, sim, deployment="ptu-4o").headers
    assert "x-ratelimit-remaining-tokens" not in h
    utilization = h["azure-openai-deployment-utilization"]
    assert re.fullmatch(r"\d+\.\d%", utilization)
    assert 0 < float(utilization[:-1]) < 10


def test_it_returns_429_with_retry_after_when_the_bucket_is_empty(sim: LLMSimulator, clock: ManualClock) -> None:
    client = _azure(sim)
    for _ in range(2):
        client.chat.completions.create(model="tiny", messages=NUMBER_PROMPT)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="tiny", messages=NUMBER_PROMPT)
    response = caught.value.response
    assert response.headers["retry-after"] == "30"  # one request of 2/min refills in 30 s
    assert response.headers["retry-after-ms"] == "30000"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    error = response.json()["error"]
    assert error["code"] == "429"
    assert error["message"].startswith(
        f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {API_VERSION} "
        "have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after 30 seconds."
    )
    clock.now += 30
    assert client.chat.completions.create(model="tiny", messages=NUMBER_PROMPT).choices[0].message.content == "42"


def test_token_bucket_429_says_token_rate_limit(sim: LLMSimulator, http: httpx.Client) -> None:
    assert _post(http, sim, deployment="few-tokens").status_code == 200  # 16 of 40 tokens
    assert _post(http, sim, deployment="few-tokens").status_code == 200
    third = _post(http, sim, deployment="few-tokens")
    assert third.status_code == 429
    assert "exceeded token rate limit" in third.json()["error"]["message"]
    assert int(third.headers["retry-after"]) >= 1


# --------------------------------------------------------------------------- faults


def test_region_down_refuses_connections_then_recovers_on_the_same_port(sim: LLMSimulator, http: httpx.Client) -> None:
    url = sim.base_url("eastus")
    sim.set_fault("eastus", "down")
    with pytest.raises(httpx.ConnectError):
        _post(http, sim)
    with pytest.raises(openai.APIConnectionError):
        _azure(sim).chat.completions.create(model="gpt-4o", messages=NUMBER_PROMPT)
    assert _post(http, sim, region="westeurope").status_code == 200
    sim.set_fault("eastus", "none")
    assert sim.base_url("eastus") == url
    assert _post(http, sim).status_code == 200


def test_region_down_resets_open_streams(sim: LLMSimulator) -> None:
    sim.set_fault("eastus", Fault("slow", ttft_ms=5, multiplier=400))  # 400 ms between tokens
    story = {"messages": [{"role": "user", "content": "Tell me a story"}], "stream": True}
    url = sim.base_url("eastus") + CHAT.format(d="gpt-4o")
    headers = {"api-key": DEFAULT_API_KEY}
    with httpx.Client(timeout=2.0) as client, client.stream("POST", url, headers=headers, json=story) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        sim.set_fault("eastus", "down")
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            list(lines)


def test_deployment_down_resets_the_connection_but_not_its_neighbours(sim: LLMSimulator, http: httpx.Client) -> None:
    sim.set_fault("eastus", "down", deployment="gpt-4o")
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        _post(http, sim)
    assert _post(http, sim, deployment="ptu-4o").status_code == 200
    assert sim.stats()["by_region"]["eastus"]["gpt-4o"]["reset"] == 1


@pytest.mark.serial
def test_hang_accepts_and_never_answers(sim: LLMSimulator) -> None:
    sim.set_fault("eastus", "hang")
    with httpx.Client(timeout=httpx.Timeout(0.3, connect=1.0)) as client:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            _post(client, sim)
        assert time.monotonic() - started < 1.0
    with pytest.raises(openai.APITimeoutError):
        _azure(sim, timeout=0.3).chat.completions.create(model="gpt-4o", messages=NUMBER_PROMPT)


def test_stop_does_not_wait_for_hung_requests() -> None:
    import threading

    sim = LLMSimulator(_regions()).start()
    sim.set_fault("eastus", "hang")
    errors: list[BaseException] = []

    def call() -> None:
        # a client that would wait 60 s: only the simulator's stop can end this request in time
        with httpx.Client(timeout=60.0) as patient:
            try:
                _post(patient, sim)
            except httpx.HTTPError as exc:
                errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    wait_until(lambda: sim.stats()["by_region"].get("eastus", {}).get("gpt-4o", {}).get("hang"), 5, "the request to be held by the hang")
    started = time.monotonic()
    sim.stop()
    worker.join(timeout=20)
    assert not worker.is_alive(), "the hung request was still open 20 s after stop"
    assert time.monotonic() - started < 20
    assert errors and not isinstance(errors[0], httpx.TimeoutException), errors  # ended by the stop, not by the client


def _measured_ttft(sim: LLMSimulator, http: httpx.Client) -> float:
    started = time.perf_counter()
    with http.stream(
        "POST",
        sim.base_url("eastus") + CHAT.format(d="gpt-4o"),
        headers={"api-key": DEFAULT_API_KEY},
        json={"messages": NUMBER_PROMPT, "stream": True},
    ) as response:
        for line in response.iter_lines():
            if '"content":"4' in line:
                return time.perf_counter() - started
    raise AssertionError("no content chunk")


def _fastest_ttft(sim: LLMSimulator, http: httpx.Client, n: int = 3) -> float:
    """The fastest of ``n`` measurements: a busy machine only ever adds time, so the minimum is the simulator's own."""
    return min(_measured_ttft(sim, http) for _ in range(n))


@pytest.mark.serial
def test_slow_with_fixed_ttft_is_measured_accurately(sim: LLMSimulator, http: httpx.Client) -> None:
    _post(http, sim)  # warm the connection
    sim.set_fault("eastus", {"fault": "slow", "ttft_ms": 400})
    ttft = _fastest_ttft(sim, http)
    assert 0.400 <= ttft < 0.500


@pytest.mark.serial
def test_slow_multiplier_scales_latency(http: httpx.Client) -> None:
    deployment = SimDeployment("gpt-4o", ttft_ms=50, per_token_ms=1, jitter_ms=0)
    with LLMSimulator([SimRegion("eastus", [deployment])]) as sim:
        base = _fastest_ttft(sim, http)
        sim.set_fault("eastus", Fault("slow", multiplier=4))
        slow = _fastest_ttft(sim, http)
    assert 0.050 <= base < 0.100
    assert 0.200 <= slow < 0.300  # 4 x 50 ms: 3x would be under, 6x over
    assert slow - base >= 0.140


def test_throttle_answers_429_with_the_faults_retry_after(sim: LLMSimulator, http: httpx.Client) -> None:
    sim.set_fault("eastus", {"fault": "throttle", "retry_after_s": 7})
    response = _post(http, sim)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["retry-after-ms"] == "7000"
    assert "Please retry after 7 seconds" in response.json()["error"]["message"]


def test_throttle_rate_hits_about_that_fraction_reproducibly(http: httpx.Client) -> None:
    def statuses(seed: int) -> list[int]:
        with LLMSimulator(_regions(), seed=seed) as sim:
            sim.set_fault("eastus", Fault("throttle", rate=0.5))
            return [_post(http, sim).status_code for _ in range(40)]

    first = statuses(3)
    assert 8 <= first.count(429) <= 32 and first.count(200) + first.count(429) == 40
    assert statuses(3) == first


def test_error_fault_answers_azure_like_5xx(sim: LLMSimulator, http: httpx.Client) -> None:
    sim.set_fault("eastus", {"fault": "error", "statuses": [503]})
    response = _post(http, sim)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "ServiceUnavailable"
    assert "temporarily unable to process your request" in response.json()["error"]["message"]
    sim.set_fault("eastus", Fault("error"))
    seen = {_post(http, sim).status_code for _ in range(20)}
    assert seen <= {500, 502, 503} and len(seen) >= 2
    with pytest.raises(openai.InternalServerError):
        _azure(sim).chat.completions.create(model="gpt-4o", messages=NUMBER_PROMPT)


def test_bad_content_gives_a_wrong_answer(sim: LLMSimulator) -> None:
    sim.set_fault("eastus", "bad_content")
    result = _azure(sim).chat.completions.create(model="gpt-4o", messages=NUMBER_PROMPT)
    assert result.choices[0].message.content == "43"


def test_truncate_ends_the_stream_without_finish_or_done(sim: LLMSimulator, http: httpx.Client) -> None:
    sim.set_fault("eastus", "truncate")
    response = _stream(http, sim, messages=[{"role": "user", "content": "Tell me a story"}])
    events = _sse(response)
    assert response.status_code == 200
    assert events[-1] != "[DONE]"
    assert all(e["choices"] == [] or e["choices"][0]["finish_reason"] is None for e in events)
    assert len(events) > 3
    with pytest.raises(httpx.RemoteProtocolError):
        _post(http, sim)


def test_content_filter_fault_finishes_with_content_filter(sim: LLMSimulator, http: httpx.Client) -> None:
    sim.set_fault("eastus", "content_filter", deployment="gpt-4o")
    reply = _post(http, sim).json()["choices"][0]
    assert reply["finish_reason"] == "content_filter"
    assert any(v["filtered"] for v in reply["content_filter_results"].values())
    finish = _sse(_stream(http, sim))[-2]["choices"][0]
    assert finish["finish_reason"] == "content_filter"


def test_auth_fault_rejects_good_keys_with_401(sim: LLMSimulator) -> None:
    sim.set_fault("eastus", "auth")
    with pytest.raises(openai.AuthenticationError) as caught:
        _azure(sim).chat.completions.create(model="gpt-4o", messages=NUMBER_PROMPT)
    assert caught.value.status_code == 401
    assert _azure(sim, region="westeurope").chat.completions.create(model="gpt-4o", messages=NUMBER_PROMPT)


def test_vantage_limited_fault_is_only_seen_by_that_vantage(sim: LLMSimulator, http: httpx.Client) -> None:
    sim.set_fault("eastus", {"fault": "down", "vantages": ["eu"]})
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        _post(http, sim, headers={VANTAGE_HEADER: "eu"})
    assert _post(http, sim, headers={VANTAGE_HEADER: "us"}).status_code == 200
    assert _post(http, sim).status_code == 200
    sim.set_fault("eastus", {"fault": "error", "statuses": [502], "vantages": ["us"]})
    assert _post(http, sim, headers={VANTAGE_HEADER: "us"}).status_code == 502


def test_deployment_fault_overrides_the_region_fault_of_the_same_kind(sim: LLMSimulator, http: httpx.Client) -> None:
    sim.set_fault("eastus", {"fault": "error", "statuses": [500]})
    sim.set_fault("eastus", {"fault": "error", "statuses": [503]}, deployment="gpt-4o")
    assert _post(http, sim).status_code == 503
    assert _post(http, sim, deployment="ptu-4o").status_code == 500
    sim.clear_faults("eastus", "gpt-4o")
    assert _post(http, sim).status_code == 500


# --------------------------------------------------------------------------- admin API and timeline


def test_admin_api_sets_lists_and_clears_faults(sim: LLMSimulator, http: httpx.Client) -> None:
    admin = sim.base_url("westeurope") + "/_sim"
    set_ = http.post(admin + "/faults", json={"region": "eastus", "fault": "throttle", "rate": 1.0, "retry_after_s": 3})
    assert set_.status_code == 200
    assert set_.json()["faults"] == [{"region": "eastus", "deployment": None, "fault": "throttle", "retry_after_s": 3.0}]
    assert _post(http, sim).status_code == 429
    state = http.get(sim.admin_url + "/_sim/state").json()
    assert [r["name"] for r in state["regions"]] == ["eastus", "westeurope"]
    assert state["faults"][0]["fault"] == "throttle"
    assert http.delete(admin + "/faults").json() == {"faults": []}
    assert _post(http, sim).status_code == 200


def test_admin_api_names_the_bad_field(sim: LLMSimulator, http: httpx.Client) -> None:
    admin = sim.base_url("eastus") + "/_sim/faults"
    bad_rate = http.post(admin, json={"region": "eastus", "fault": "throttle", "rate": 1.5})
    assert bad_rate.status_code == 400 and bad_rate.json()["error"]["message"].startswith("rate:")
    misplaced = http.post(admin, json={"region": "eastus", "fault": "down", "ttft_ms": 5})
    assert misplaced.status_code == 400 and misplaced.json()["error"]["message"].startswith("ttft_ms:")
    unknown = http.post(admin, json={"region": "mars", "fault": "down"})
    assert unknown.status_code == 404


def test_admin_port_can_lift_a_down_region(sim: LLMSimulator, http: httpx.Client) -> None:
    assert sim.admin_url is not None
    http.post(sim.admin_url + "/_sim/faults", json={"region": "*", "fault": "down"})
    with pytest.raises(httpx.ConnectError):
        _post(http, sim, region="westeurope")
    http.delete(sim.admin_url + "/_sim/faults")
    assert _post(http, sim, region="westeurope").status_code == 200


def test_stats_count_requests_by_region_deployment_and_status(sim: LLMSimulator, http: httpx.Client) -> None:
    _post(http, sim)
    _post(http, sim, headers={"api-key": "wrong"})
    _post(http, sim, region="westeurope", deployment="ptu-4o")
    stats = http.get(sim.base_url("eastus") + "/_sim/stats").json()
    assert stats["total"] == 3
    assert stats["by_region"]["eastus"]["gpt-4o"] == {"200": 1, "401": 1}
    assert stats["by_region"]["westeurope"]["ptu-4o"] == {"200": 1}


def test_timeline_applies_events_at_their_offsets(sim: LLMSimulator, http: httpx.Client) -> None:
    # At 1/100 speed: the error at 0.2 s, its end at 1.2 s. Each event must not apply before its
    # offset (a lower bound on elapsed time holds on any machine); between them the fault is in force.
    started = time.monotonic()
    run = sim.run_timeline(
        [
            {"at": "20s", "region": "eastus", "fault": "error", "statuses": [502]},
            {"at": "120s", "region": "eastus", "fault": "none"},
        ],
        time_scale=0.01,
    )
    wait_until(lambda: run.applied, 5, "the first event to apply")
    assert time.monotonic() - started >= 0.2
    assert _post(http, sim).status_code == 502
    assert [e.fault.kind for e in run.applied] == ["error"], "the error ended before it could be observed"
    assert run.wait(timeout=5.0)
    assert time.monotonic() - started >= 1.2
    assert [e.fault.kind for e in run.applied] == ["error", "none"]
    assert _post(http, sim).status_code == 200


def test_timeline_can_be_cancelled_and_rejects_unknown_regions(sim: LLMSimulator) -> None:
    run = sim.run_timeline([{"at": "1h", "region": "eastus", "fault": "down"}])
    run.cancel()
    assert run.wait(timeout=1.0) and run.applied == []
    with pytest.raises(ValueError, match=r"events\[0\]\.region"):
        sim.run_timeline([{"at": 0, "region": "mars", "fault": "down"}])


def test_admin_api_runs_a_timeline(sim: LLMSimulator, http: httpx.Client) -> None:
    events = [{"at": "5s", "region": "westeurope", "fault": "auth"}]
    bad = http.post(sim.admin_url + "/_sim/timeline", json={"events": [{"at": "5s", "fault": "nap"}]})
    assert bad.status_code == 400 and "events[0].fault" in bad.json()["error"]["message"]
    started = http.post(sim.admin_url + "/_sim/timeline", json={"events": events, "time_scale": 0.01})
    assert started.status_code == 202
    wait_until(sim.faults, 10, "the timeline's event (at 50 ms) to apply")
    assert sim.faults() == [{"region": "westeurope", "deployment": None, "fault": "auth"}]
    assert _post(http, sim, region="westeurope").status_code == 401


def test_the_module_runs_as_a_process_and_reports_its_urls(http: httpx.Client) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.llm", "--regions", "2", "--zero-latency", "--duration", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        url = ready["regions"]["westeurope"] + CHAT.format(d="gpt-4o-mini")
        reply = http.post(url, headers={"api-key": DEFAULT_API_KEY}, json={"messages": NUMBER_PROMPT})
        assert reply.json()["choices"][0]["message"]["content"] == "42"
        assert http.get(ready["admin_url"] + "/_sim/stats").json()["total"] == 1
    finally:
        proc.terminate()
        code = proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0


def test_default_regions_are_named_like_azure_regions() -> None:
    regions = default_regions(12, 3)
    assert [r.name for r in regions[:3]] == ["eastus", "westeurope", "japaneast"]
    assert len({r.name for r in regions}) == 12
    assert [d.name for d in regions[0].deployments] == ["gpt-4o", "gpt-4o-mini", "o3-mini"]
    assert regions[0].deployments[2].reasoning


# --------------------------------------------------------------------------- the pure fault model


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"fault": "explode"}, "fault"),
        ({"fault": "throttle", "rate": 2}, "rate"),
        ({"fault": "throttle", "rate": "often"}, "rate"),
        ({"fault": "slow"}, "ttft_ms"),
        ({"fault": "slow", "multiplier": 0}, "multiplier"),
        ({"fault": "error", "statuses": [404]}, "statuses"),
        ({"fault": "down", "statuses": [500]}, "statuses"),
        ({"fault": "down", "vantages": []}, "vantages"),
        ({"fault": "down", "colour": "red"}, "colour"),
    ],
)
def test_fault_from_dict_names_the_bad_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        Fault.from_dict(data)


def test_fault_round_trips_through_its_dict_form() -> None:
    for fault in [
        Fault("slow", ttft_ms=9000),
        Fault("throttle", rate=0.7, retry_after_s=5),
        Fault("down", vantages=("eu",)),
        Fault("error", statuses=(503,)),
    ]:
        assert Fault.from_dict(fault.to_dict()) == fault


def test_timeline_events_parse_durations_and_sort() -> None:
    events = parse_timeline(
        [
            {"at": "10m", "region": "eastus", "fault": "none"},
            {"at": "600s", "fault": "slow", "ttft_ms": 9000},
            {"at": "1m30s", "region": "eastus", "deployment": "gpt-4o", "fault": "down", "vantages": ["eu"]},
        ]
    )
    assert [e.at_s for e in events] == [90.0, 600.0, 600.0]
    assert events[0] == TimelineEvent(90.0, Fault("down", vantages=("eu",)), "eastus", "gpt-4o")
    assert (events[1].region, events[2].region) == ("eastus", None)  # equal times keep their order
    assert parse_duration("250ms") == 0.25
    with pytest.raises(ValueError, match=r"events\[0\]\.at:"):
        parse_timeline([{"at": "soon", "fault": "down"}])


def test_fault_decisions_are_reproducible_with_a_seeded_random() -> None:
    fault = Fault("error", rate=0.3, statuses=(500, 502, 503))

    def decide(seed: int) -> list[int | None]:
        rng = random.Random(seed)
        return [choose_status(fault, rng) if fault_fires(fault, "eu", rng) else None for _ in range(50)]

    assert decide(1) == decide(1)
    assert 3 <= sum(s is not None for s in decide(1)) <= 30
    assert not fault_fires(Fault("down", vantages=("eu",)), "us", random.Random(1))
    assert not fault_fires(Fault("down", vantages=("eu",)), None, random.Random(1))


def test_fault_book_keeps_one_fault_per_kind_and_scope() -> None:
    book = FaultBook()
    book.set("eastus", Fault("slow", ttft_ms=100))
    book.set("eastus", Fault("slow", ttft_ms=200))
    book.set("eastus", Fault("throttle"))
    book.set("eastus", Fault("down"), deployment="gpt-4o")
    assert book.for_request("eastus", "gpt-4o").keys() == {"slow", "throttle", "down"}
    assert book.for_request("eastus", None)["slow"].ttft_ms == 200
    assert not book.hard_down("eastus")
    book.set("eastus", Fault("none"))
    assert book.for_request("eastus", "other") == {}
    assert book.for_request("eastus", "gpt-4o").keys() == {"down"}


def test_from_config_serves_the_regions_and_keys_a_config_names(http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from controlplane.config import load_settings

    monkeypatch.setenv("AOAI_KEY_EASTUS", "key-from-env")
    settings = load_settings(Path(__file__).resolve().parents[2] / "examples" / "regionguard.yaml")
    with LLMSimulator.from_config(settings, seed=1) as sim:
        assert [r.name for r in sim.regions] == settings.region_names
        deployment = settings.regions[0].endpoints[0].deployment
        url = sim.base_url("eastus") + CHAT.format(d=deployment)
        reply = http.post(url, headers={"api-key": "key-from-env"}, json={"messages": NUMBER_PROMPT})
        assert reply.status_code == 200
        assert reply.headers["x-ms-region"] == "East US"
        assert http.post(url, headers={"api-key": DEFAULT_API_KEY}, json={"messages": NUMBER_PROMPT}).status_code == 401


def test_a_port_already_taken_fails_start_cleanly() -> None:
    with LLMSimulator(_regions()) as first:
        taken = int(first.base_url("eastus").rsplit(":", 1)[1])
        second = LLMSimulator([SimRegion("eastus", [SimDeployment("gpt-4o")], port=taken)])
        with pytest.raises(OSError):
            second.start()
        second.stop()
