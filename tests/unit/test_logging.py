"""Structured logs: JSON lines and key=value, request ids, and secrets masked everywhere."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from controlplane.logging_setup import LoggingSettings, configure_from_settings, configure_logging, register_secret, request_context, scrub

log = logging.getLogger("regionguard.test")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buf = io.StringIO()
    yield buf
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


def lines(buf: io.StringIO) -> list[str]:
    return [line for line in buf.getvalue().splitlines() if line]


def test_json_lines_carry_ts_level_logger_msg_and_extra_fields(stream: io.StringIO) -> None:
    configure_logging("json", "INFO", stream=stream)
    with request_context("req-7f3a"):
        log.info("drained %s from %s", "eastus", "tm-prod", extra={"target": "tm-prod", "changes": 2})
    log.debug("not shown at INFO")
    [line] = lines(stream)
    doc = json.loads(line)
    assert doc["level"] == "INFO" and doc["logger"] == "regionguard.test"
    assert doc["msg"] == "drained eastus from tm-prod"
    assert doc["request_id"] == "req-7f3a" and doc["target"] == "tm-prod" and doc["changes"] == 2
    assert doc["ts"].endswith("Z") and "T" in doc["ts"]


def test_text_lines_are_key_value_with_quoting(stream: io.StringIO) -> None:
    configure_from_settings(LoggingSettings(format="text", level="debug"), stream=stream)
    log.debug("region eastus is unhealthy", extra={"region": "eastus", "reason": 'error ratio 0.8 "2m"'})
    [line] = lines(stream)
    assert " level=DEBUG logger=regionguard.test " in line
    assert 'msg="region eastus is unhealthy"' in line
    assert "region=eastus" in line
    assert 'reason="error ratio 0.8 \\"2m\\""' in line
    assert "request_id" not in line  # none bound outside a request


def test_configuring_twice_replaces_the_handler_instead_of_doubling_lines(stream: io.StringIO) -> None:
    configure_logging("text", "INFO", stream=io.StringIO())
    configure_logging("json", "INFO", stream=stream)
    log.info("once")
    assert len(lines(stream)) == 1


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        ("request headers {'api-key': 'a1b2c3d4e5f6a7b8c9d0'}", "a1b2c3d4e5f6a7b8c9d0"),
        ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "eyJhbGciOiJSUzI1NiJ9"),
        (
            "calling https://prod-12.westus.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sig=Zm9vYmFyYmF6",
            "Zm9vYmFyYmF6",
        ),
        ("GET https://x.blob.core.windows.net/c/b?sv=2022&se=2026&sig=AbCdEf%2Bgh", "AbCdEf%2Bgh"),
        ("POST https://hooks.slack.com/services/T0001/B0002/XyZsecret", "XyZsecret"),
        ("function url https://fn.azurewebsites.net/api/x?code=s3cr3tc0de&key=k3yv4lue", "s3cr3tc0de"),
        ("login with password=hunter22 failed", "hunter22"),
    ],
)
def test_secrets_are_masked_in_messages(stream: io.StringIO, message: str, secret: str) -> None:
    configure_logging("json", "INFO", stream=stream)
    log.warning(message)
    out = stream.getvalue()
    assert secret not in out
    assert "***" in json.loads(lines(stream)[0])["msg"]


def test_secrets_are_masked_in_args_extras_and_tracebacks(stream: io.StringIO) -> None:
    configure_logging("text", "INFO", stream=stream)
    register_secret("the-routing-key-0123456789")
    try:
        raise RuntimeError("PagerDuty said no to the-routing-key-0123456789")
    except RuntimeError:
        log.exception(
            "delivery failed for %s",
            "Bearer abcdefghijklmnop",
            extra={"api_key": "plain-value-123", "headers": {"api-key": "hdr-secret-999"}},
        )
    out = stream.getvalue()
    for secret in ("the-routing-key-0123456789", "abcdefghijklmnop", "plain-value-123", "hdr-secret-999"):
        assert secret not in out
    assert "RuntimeError" in out  # the traceback itself is kept


def test_scrub_leaves_ordinary_text_alone() -> None:
    text = "drained eastus from tm-prod: weight 500 -> 0 (key=region/eastus)"
    assert scrub("drained eastus from tm-prod: weight 500 -> 0") == "drained eastus from tm-prod: weight 500 -> 0"
    assert "region/eastus" in scrub(text)  # 'key=' only masks as a query parameter


def test_logging_settings_reject_unknown_levels_and_formats() -> None:
    assert LoggingSettings(level="warning").level == "WARNING"
    with pytest.raises(ValidationError):
        LoggingSettings(level="loud")
    with pytest.raises(ValidationError):
        LoggingSettings(format="xml")  # type: ignore[arg-type]  # a value the type forbids, on purpose
