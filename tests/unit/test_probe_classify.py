"""The probe's pure parts: request building, header and stream parsing, classification."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from controlplane.config import LLMEndpoint, ProbeSettings, Settings, parse_settings
from controlplane.domain import Outcome, ProbeResult
from probes.base import error_text, scrub
from probes.cost import estimate_monthly, probe_tokens, render_costs
from probes.llm import (
    Failure,
    Observation,
    StreamParser,
    build_request,
    classify,
    classify_status,
    explain,
    headers_of_interest,
    normalize_answer,
    parse_error_body,
    parse_headers,
)

PROBE = ProbeSettings(vantage="eu-1", max_tokens=5, slow_ttft=3.0, slow_total=8.0)


def endpoint(**overrides: object) -> LLMEndpoint:
    data: dict[str, object] = {
        "name": "gpt-4o",
        "base_url": "https://contoso-eastus.openai.azure.com/",
        "deployment": "gpt-4o",
        "auth": {"kind": "api_key", "env": "AOAI_KEY"},
    }
    data.update(overrides)
    return LLMEndpoint.model_validate(data)


def finished(content: str = "4817", ttft_ms: float = 120.0, total_ms: float = 300.0) -> Observation:
    return Observation(
        status_code=200, ttft_ms=ttft_ms, total_ms=total_ms, content=content, finish_reason="stop", done=True, output_chunks=1
    )


def classify_default(obs: Observation, expected: str = "4817") -> Outcome:
    return classify(obs, expected, PROBE.slow_ttft, PROBE.slow_total)


# ---------------------------------------------------------------- request


def test_it_builds_a_deployments_url_with_the_api_version_and_a_streamed_body() -> None:
    req = build_request(endpoint(api_version="2024-10-21"), PROBE, 4817)
    assert req.url == "https://contoso-eastus.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
    assert req.params == {"api-version": "2024-10-21"}
    assert req.body["messages"] == [{"role": "user", "content": "Reply with only the number 4817"}]
    assert req.body["max_tokens"] == 5
    assert req.body["stream"] is True
    assert req.body["stream_options"] == {"include_usage": True}
    assert "model" not in req.body
    assert req.headers["x-regionguard-vantage"] == "eu-1"
    assert req.expected == "4817"


def test_it_builds_a_v1_url_with_the_model_in_the_body() -> None:
    req = build_request(endpoint(api_style="v1", model="gpt-4o-2024-08-06"), PROBE, 12)
    assert req.url == "https://contoso-eastus.openai.azure.com/openai/v1/chat/completions"
    assert req.params == {}
    assert req.body["model"] == "gpt-4o-2024-08-06"


def test_a_v1_endpoint_without_a_model_sends_the_deployment_name() -> None:
    assert build_request(endpoint(api_style="v1"), PROBE, 1).body["model"] == "gpt-4o"


def test_the_endpoint_token_param_overrides_the_probe_default() -> None:
    req = build_request(endpoint(token_param="max_completion_tokens"), PROBE, 1)
    assert req.body["max_completion_tokens"] == 5
    assert "max_tokens" not in req.body
    probe = PROBE.model_copy(update={"token_param": "max_completion_tokens"})
    assert "max_completion_tokens" in build_request(endpoint(), probe, 1).body
    assert "max_tokens" in build_request(endpoint(token_param="max_tokens"), probe, 1).body


def test_answers_compare_case_insensitively_without_punctuation_or_spaces() -> None:
    assert normalize_answer(" 4,817.\n") == "4817"
    assert normalize_answer("The Number") == "thenumber"


# ---------------------------------------------------------------- headers


def test_it_reads_rate_limit_and_identity_headers() -> None:
    fields = parse_headers(
        {
            "x-ratelimit-limit-requests": "100",
            "x-ratelimit-remaining-requests": "99",
            "x-ratelimit-limit-tokens": "10000",
            "x-ratelimit-remaining-tokens": "9985",
            "x-ms-region": "East US",
            "apim-request-id": "apim-1",
            "x-request-id": "req-1",
        }
    )
    assert fields["limit_requests"] == 100
    assert fields["remaining_requests"] == 99
    assert fields["limit_tokens"] == 10000
    assert fields["remaining_tokens"] == 9985
    assert fields["region_header"] == "East US"
    assert fields["apim_request_id"] == "apim-1"
    assert fields["request_id"] == "req-1"
    assert fields["utilization_pct"] is None
    assert fields["retry_after_ms"] is None


def test_it_keeps_only_the_headers_of_interest_case_insensitively_first_wins() -> None:
    raw = [
        (b"X-RateLimit-Remaining-Tokens", b"42"),
        (b"Set-Cookie", b"ARRAffinity=abc"),
        (b"x-ratelimit-remaining-tokens", b"7"),
        (b"X-Ms-Region", b"East US"),
    ]
    kept = headers_of_interest(raw)
    assert kept == {"x-ratelimit-remaining-tokens": "42", "x-ms-region": "East US"}
    assert parse_headers(kept)["remaining_tokens"] == 42


def test_it_reads_ptu_utilization_as_a_percentage() -> None:
    assert parse_headers({"azure-openai-deployment-utilization": "87.5%"})["utilization_pct"] == 87.5


def test_retry_after_ms_wins_over_retry_after_seconds() -> None:
    assert parse_headers({"retry-after-ms": "1500", "retry-after": "2"})["retry_after_ms"] == 1500
    assert parse_headers({"retry-after": "2"})["retry_after_ms"] == 2000


def test_garbage_headers_are_ignored_not_fatal() -> None:
    fields = parse_headers({"x-ratelimit-remaining-tokens": "lots", "retry-after": "soon", "azure-openai-deployment-utilization": "high"})
    assert fields["remaining_tokens"] is None
    assert fields["retry_after_ms"] is None
    assert fields["utilization_pct"] is None


def test_it_reads_the_code_and_message_of_an_azure_error_body() -> None:
    body = json.dumps({"error": {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist."}})
    assert parse_error_body(body.encode()) == ("DeploymentNotFound", "The API deployment for this resource does not exist.")
    assert parse_error_body(b"<html>bad gateway</html>") == (None, "<html>bad gateway</html>")


# ---------------------------------------------------------------- stream


def sse(*chunks: object) -> list[str]:
    lines: list[str] = []
    for chunk in chunks:
        lines += [f"data: {chunk if isinstance(chunk, str) else json.dumps(chunk)}", ""]
    return lines


AZURE_STREAM = sse(
    {"choices": [], "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]},
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": "48"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": "17"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"choices": [], "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16}},
    "[DONE]",
)


def test_ttft_is_the_first_non_empty_content_not_the_first_chunk() -> None:
    obs = Observation(status_code=200, t0=10.0)
    parser = StreamParser(obs)
    # Each line arrives 0.1 s after the previous one.
    for i, line in enumerate(AZURE_STREAM):
        parser.feed_line(line, 10.0 + 0.1 * (i + 1))
    parser.end()
    # The "48" data line is line index 4 -> arrives at 10.5 s (its event ends at 10.6 s).
    assert obs.ttft_ms == pytest.approx(500.0)
    assert obs.content == "4817"
    assert obs.output_chunks == 2
    assert obs.finish_reason == "stop"
    assert obs.done
    assert obs.finished
    assert (obs.prompt_tokens, obs.completion_tokens) == (14, 2)


def test_a_stream_without_done_is_not_finished() -> None:
    obs = Observation(status_code=200)
    parser = StreamParser(obs)
    for line in AZURE_STREAM[:-2]:
        parser.feed_line(line, 1.0)
    parser.end()
    assert obs.finish_reason == "stop"
    assert not obs.finished
    assert classify_default(obs) is Outcome.TRUNCATED


def test_a_non_json_chunk_is_reported_as_malformed() -> None:
    from probes.llm import MalformedStream

    parser = StreamParser(Observation(status_code=200))
    parser.feed_line("data: {not json", 1.0)
    with pytest.raises(MalformedStream):
        parser.feed_line("", 1.0)


# ---------------------------------------------------------------- classification


def test_a_correct_prompt_answer_in_time_is_ok() -> None:
    assert classify_default(finished()) is Outcome.OK


def test_a_wrong_answer_is_bad_content_even_when_fast() -> None:
    assert classify_default(finished(content="I cannot help with that")) is Outcome.BAD_CONTENT


def test_an_answer_with_punctuation_and_case_differences_is_still_ok() -> None:
    assert classify_default(finished(content=" 4,817.\n"), expected="4817") is Outcome.OK


def test_over_the_ttft_threshold_is_slow() -> None:
    assert classify_default(finished(ttft_ms=3001.0, total_ms=3100.0)) is Outcome.SLOW


def test_over_the_total_threshold_is_slow() -> None:
    assert classify_default(finished(ttft_ms=100.0, total_ms=8001.0)) is Outcome.SLOW


def test_a_wrong_and_slow_answer_is_bad_content() -> None:
    assert classify_default(finished(content="nope", ttft_ms=5000.0, total_ms=9000.0)) is Outcome.BAD_CONTENT


def test_content_filter_finish_reason_is_content_filtered() -> None:
    obs = finished(content="")
    obs.finish_reason = "content_filter"
    assert classify_default(obs) is Outcome.CONTENT_FILTERED


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (401, None, Outcome.AUTH_ERROR),
        (403, None, Outcome.AUTH_ERROR),
        (404, "DeploymentNotFound", Outcome.NOT_FOUND),
        (429, "429", Outcome.THROTTLED),
        (400, "unsupported_parameter", Outcome.BAD_REQUEST),
        (400, "content_filter", Outcome.CONTENT_FILTERED),
        (422, None, Outcome.BAD_REQUEST),
        (408, None, Outcome.TIMEOUT),
        (500, None, Outcome.SERVER_ERROR),
        (502, None, Outcome.SERVER_ERROR),
        (503, None, Outcome.SERVER_ERROR),
        (301, None, Outcome.BAD_REQUEST),
    ],
)
def test_http_statuses_map_to_one_outcome(status: int, code: str | None, outcome: Outcome) -> None:
    assert classify_status(status, code) is outcome
    assert classify_default(Observation(status_code=status, error_code=code)) is outcome


def test_a_status_beats_a_deadline_hit_while_reading_its_body() -> None:
    obs = Observation(status_code=429, failure=Failure.DEADLINE)
    assert classify_default(obs) is Outcome.THROTTLED


@pytest.mark.parametrize(
    ("obs", "outcome"),
    [
        (Observation(failure=Failure.DEADLINE), Outcome.TIMEOUT),
        (Observation(status_code=200, failure=Failure.DEADLINE, content="48"), Outcome.TIMEOUT),
        (Observation(failure=Failure.CONNECT), Outcome.CONNECT_ERROR),
        (Observation(failure=Failure.INTERNAL), Outcome.CONNECT_ERROR),
        (Observation(status_code=200, failure=Failure.STREAM, content="48"), Outcome.TRUNCATED),
        (Observation(status_code=200, failure=Failure.INTERNAL), Outcome.TRUNCATED),
        (Observation(status_code=200, failure=Failure.MALFORMED), Outcome.BAD_CONTENT),
        (Observation(failure=Failure.AUTH), Outcome.AUTH_ERROR),
        (Observation(failure=Failure.INVALID), Outcome.BAD_REQUEST),
    ],
)
def test_failures_without_a_full_response_are_classified(obs: Observation, outcome: Outcome) -> None:
    assert classify_default(obs) is outcome


def test_every_outcome_except_ok_gets_an_explanation() -> None:
    cases = {
        Outcome.SLOW: finished(ttft_ms=4000.0, total_ms=4100.0),
        Outcome.BAD_CONTENT: finished(content="nope"),
        Outcome.TRUNCATED: Observation(status_code=200, finish_reason="stop"),
        Outcome.THROTTLED: Observation(status_code=429, error_code="429", error_message="retry after 1 second"),
        Outcome.TIMEOUT: Observation(failure=Failure.DEADLINE, failure_text="no answer within the 1s deadline"),
    }
    for outcome, obs in cases.items():
        assert classify_default(obs) is outcome
        text = explain(outcome, obs, "4817", PROBE)
        assert text, outcome
    assert "without [DONE]" in (explain(Outcome.TRUNCATED, cases[Outcome.TRUNCATED], "4817", PROBE) or "")
    assert "HTTP 429" in (explain(Outcome.THROTTLED, cases[Outcome.THROTTLED], "4817", PROBE) or "")
    assert explain(Outcome.OK, finished(), "4817", PROBE) is None


# ---------------------------------------------------------------- error hygiene


def test_scrub_removes_known_secrets_bearer_tokens_and_key_assignments() -> None:
    text = "failed with key sk-secret-123 and Authorization: Bearer eyJhbGciOi.abc-def_ghi= and api-key=hunter22"
    clean = scrub(text, ["sk-secret-123"])
    assert "sk-secret-123" not in clean
    assert "eyJhbGciOi" not in clean
    assert "hunter22" not in clean
    assert "Bearer ***" in clean


def test_error_text_is_single_line_and_at_most_300_chars() -> None:
    text = error_text("boom\n" + "x" * 1000)
    assert len(text) <= 300
    assert "\n" not in text
    assert text.endswith("...")


def test_a_secret_is_scrubbed_before_truncation_so_no_prefix_survives() -> None:
    secret = "S" * 40
    text = error_text("y" * 280 + secret, [secret])
    assert "SSSS" not in text


# ---------------------------------------------------------------- cost


def _cost_settings() -> Settings:
    return parse_settings(
        {
            "regions": [
                {
                    "name": "eastus",
                    "azure_region": "eastus",
                    "endpoints": [
                        {
                            "name": "gpt-4o",
                            "base_url": "https://e.openai.azure.com",
                            "deployment": "gpt-4o",
                            "auth": {"kind": "entra_id"},
                            "pricing": {"input_per_1m": 2.5, "output_per_1m": 10.0},
                        },
                        {"name": "free", "base_url": "https://e.openai.azure.com", "deployment": "x", "auth": {"kind": "entra_id"}},
                    ],
                }
            ],
            "probe": {"interval": "30s", "max_tokens": 5},
        }
    )


def _result(eid: str, prompt: int | None, completion: int | None, outcome: Outcome = Outcome.OK) -> ProbeResult:
    return ProbeResult(
        eid, eid.split("/")[0], "v", datetime(2026, 1, 1, tzinfo=UTC), outcome, prompt_tokens=prompt, completion_tokens=completion
    )


def test_monthly_cost_comes_from_measured_usage_interval_and_pricing() -> None:
    results = [_result("eastus/gpt-4o", 14, 2), _result("eastus/gpt-4o", 16, 2), _result("eastus/gpt-4o", None, None, Outcome.THROTTLED)]
    est = estimate_monthly(_cost_settings(), results)["eastus/gpt-4o"]
    assert est.measured
    assert est.probes_per_month == pytest.approx(730 * 3600 / 30)  # 87,600
    assert est.prompt_tokens_per_probe == pytest.approx(15.0)
    assert est.completion_tokens_per_probe == pytest.approx(2.0)
    assert est.tokens_per_month == pytest.approx(87_600 * 17)
    assert est.cost_per_month == pytest.approx(87_600 * (15 * 2.5 + 2 * 10.0) / 1e6)
    assert est.to_dict()["cost_per_month"] == pytest.approx(est.cost_per_month)


def test_without_recorded_usage_the_cost_is_assumed_from_the_prompt_and_max_tokens() -> None:
    estimates = estimate_monthly(_cost_settings())
    assert set(estimates) == {"eastus/gpt-4o", "eastus/free"}
    est = estimates["eastus/gpt-4o"]
    assert not est.measured
    assert est.completion_tokens_per_probe == 5
    assert est.cost_per_month > 0
    assert estimates["eastus/free"].cost_per_month == 0.0
    assert any("eastus/gpt-4o" in line and "assumed" in line for line in render_costs(estimates))


def test_liveness_checks_are_counted_and_cost_no_tokens() -> None:
    estimates = estimate_monthly(_cost_settings())
    est = estimates["eastus/gpt-4o"]
    assert est.liveness_checks_per_month == pytest.approx(730 * 3600 / 5)  # one every 5 s by default
    assert estimates["eastus/free"].liveness_checks_per_month == 0  # same resource: its one check serves both
    assert est.tokens_per_month == pytest.approx(est.probes_per_month * (15 + 5))  # the checks add no tokens
    [line, _] = render_costs({"a": est, "b": est})
    assert line.endswith("; 525,600 liveness checks/month at 0 tokens")


def test_tokens_per_probe_add_prompt_and_completion() -> None:
    assert probe_tokens(_result("eastus/gpt-4o", 14, 2)) == 16
    assert probe_tokens(_result("eastus/gpt-4o", None, None)) == 0


# ---------------------------------------------------------------- adaptive interval (pure)


def _feed(outcomes: str, k: int = 3, m: int = 3) -> list[tuple[bool, bool]]:
    """F = counted failure, G = good; returns (suspect, confirmed_down) after each."""
    from probes.runner import EndpointSchedule

    s = EndpointSchedule(target=None)  # type: ignore[arg-type]  # the schedule never reads its target here
    seen = []
    for o in outcomes:
        s.record(o == "F", k, m)
        seen.append((s.suspect, s.confirmed_down))
    return seen


def test_one_failure_makes_an_up_endpoint_suspect_until_k_failures_confirm_it_down() -> None:
    assert _feed("FFFF") == [(True, False), (True, False), (False, True), (False, True)]


def test_a_flapping_endpoint_stays_suspect_until_m_good_results_in_a_row() -> None:
    assert _feed("FGFGGG") == [(True, False)] * 5 + [(False, False)]


def test_a_good_result_makes_a_down_endpoint_suspect_until_settled() -> None:
    seen = _feed("FFF" + "GF" + "FF" + "GGG")
    assert seen[3:5] == [(True, True), (True, True)]  # G then F: still unsettled
    assert seen[5:7] == [(True, True), (False, True)]  # three failures in a row: settled down
    assert seen[7:] == [(True, True), (True, True), (False, False)]  # three good: up
