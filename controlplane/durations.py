"""The one duration grammar: config values, CLI ``--for`` / ``--since``, timelines.

A duration is a number of seconds, or text made of one or more
``<number><unit>`` parts with units ``ms``, ``s``, ``m``, ``h`` and ``d``:
``250ms``, ``30s``, ``5m``, ``1h``, ``7d``, ``1m30s``, ``1d12h``. A bare number
in text (``"90"``) is seconds. It must be finite, not negative and at most
:data:`MAX_SECONDS` (one year): longer values are typos that would overflow a
timer or a timestamp later, so they are refused here, where the input is.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

MAX_SECONDS = 366 * 86400.0
"""The longest duration accepted anywhere (a year and a day)."""

UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_HINT = "use e.g. 30s, 5m, 1h, 7d or 1m30s"


def parse_duration(value: Any, field_name: str | None = None) -> float:
    """Seconds from a duration; ``ValueError`` naming the value (and ``field_name``, when given)."""
    seconds = _seconds(value, field_name)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(_message(field_name, f"{value!r} must be a finite, non-negative duration"))
    if seconds > MAX_SECONDS:
        raise ValueError(_message(field_name, f"{value!r} is longer than the longest duration accepted ({MAX_SECONDS / 86400:.0f}d)"))
    return seconds


def _seconds(value: Any, field_name: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(_message(field_name, f"{value!r} is not a duration ({_HINT})"))
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(_message(field_name, f"{value!r} must be a finite, non-negative duration"))
    if _NUMBER.match(text):
        return float(text)
    parts = _PART.findall(text)
    if not parts or _PART.sub("", text).strip():
        raise ValueError(_message(field_name, f"{value!r} is not a duration ({_HINT})"))
    return sum(float(number) * UNIT_SECONDS[unit] for number, unit in parts)


def _message(field_name: str | None, text: str) -> str:
    return f"{field_name}: {text}" if field_name else text


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A config field holding a duration, parsed by :func:`parse_duration`."""
