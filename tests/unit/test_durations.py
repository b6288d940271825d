"""One duration grammar for config, CLI flags and timelines."""

from __future__ import annotations

import math
from typing import Any

import pytest

from controlplane.config import parse_settings
from controlplane.durations import MAX_SECONDS, parse_duration
from simulator.faults import parse_timeline


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("7d", 604800),
        ("1m30s", 90),
        ("1d12h", 129600),
        (" 2h 30m ", 9000),
        ("90", 90),
        ("1.5s", 1.5),
        (12, 12),
        (0.5, 0.5),
    ],
)
def test_it_accepts_every_unit_and_compound_durations(value: Any, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    ["", "5 minutes", "-3s", "-1", True, None, [], "1e300", "10x", "1m30", math.nan, math.inf, -1, 1e300, "999999999999d"],
)
def test_it_refuses_nonsense_naming_the_value(value: Any) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert repr(value) in str(info.value)


def test_it_names_the_field_when_given() -> None:
    with pytest.raises(ValueError, match=r"^expires_in: '10x' is not a duration"):
        parse_duration("10x", "expires_in")


def test_the_longest_duration_is_accepted_and_one_more_second_is_not() -> None:
    assert parse_duration(MAX_SECONDS) == MAX_SECONDS
    with pytest.raises(ValueError, match="longer than"):
        parse_duration(MAX_SECONDS + 1)


def test_config_and_timelines_share_the_grammar() -> None:
    # a compound duration is valid in both places, a day unit too
    (event,) = parse_timeline([{"at": "1d1m30s", "fault": "down"}])
    assert event.at_s == 86490
    settings = parse_settings(
        {
            "regions": [
                {
                    "name": "eastus",
                    "azure_region": "eastus",
                    "endpoints": [
                        {
                            "name": "gpt",
                            "base_url": "https://eastus.example.com",
                            "deployment": "gpt",
                            "auth": {"kind": "api_key", "env": "K"},
                        }
                    ],
                }
            ],
            "probe": {"interval": "1m30s"},
        }
    )
    assert settings.probe.interval == 90
