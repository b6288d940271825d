"""The one reading of "when may I ask again": Retry-After and its millisecond cousins.

Azure answers a 429 (or a 503) with any of ``retry-after-ms``,
``x-ms-retry-after-ms`` and ``retry-after``; the last may be delta-seconds or
an HTTP-date (RFC 9110, 10.2.3). The millisecond headers are the more precise,
so they win. Whatever arrives, the answer is ``None`` (nothing usable) or a
finite number of seconds between 0 and :data:`MAX_SECONDS`: a hostile
``retry-after: 1e308`` must not overflow a timer or a stored integer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

MAX_SECONDS = 3600.0
"""No answer makes us wait longer than an hour; callers cap it further."""

_HEADERS = (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001), ("retry-after", 1.0))


def retry_after_seconds(headers: Mapping[str, str] | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a response's headers, or ``None`` when none is usable.

    ``headers`` is looked up case-insensitively (any mapping: httpx, aiohttp,
    azure-core or a plain dict). ``now`` (UTC) is only needed for an HTTP-date.
    """
    if not headers:
        return None
    lowered = {str(k).lower(): v for k, v in headers.items()}
    for name, scale in _HEADERS:
        value = lowered.get(name)
        if value is None or not str(value).strip():
            continue
        seconds = _seconds(str(value).strip(), scale, now)
        if seconds is not None:
            return seconds
    return None


def _seconds(text: str, scale: float, now: datetime | None) -> float | None:
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        if math.isnan(number):
            return None
        return _clamp(number * scale)
    if scale != 1.0:
        return None  # the millisecond headers carry numbers only
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _clamp((when - (now or datetime.now(UTC))).total_seconds())


def _clamp(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_SECONDS)
