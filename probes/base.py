"""What every probe kind shares: the Probe protocol and error hygiene.

A probe never raises. Whatever goes wrong (refused connection, hang, a bug
in the parser, a missing secret) becomes a :class:`~controlplane.domain.ProbeResult`
with an :class:`~controlplane.domain.Outcome` and a short error text from
which secrets have been removed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from controlplane.config import LLMEndpoint
from controlplane.domain import Outcome, ProbeResult, endpoint_id
from controlplane.textsafe import bounded_text

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 300
REDACTED = "***"

# "Bearer eyJ0eXAi..." anywhere in a text, and "api-key: abc" / "api_key=abc".
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*")
_KEY_ASSIGNMENT = re.compile(r"(?i)\b(api[-_]?key|access[-_]?token|client[-_]?secret)(\s*[:=]\s*)['\"]?[^\s'\",;&]+")


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """One LLM endpoint of one region: what a probe is pointed at."""

    region: str
    endpoint: LLMEndpoint

    @property
    def id(self) -> str:
        return endpoint_id(self.region, self.endpoint.name)


class Probe(Protocol):
    """A probe kind. ``run`` returns a classified result and never raises."""

    async def run(self, target: ProbeTarget) -> ProbeResult: ...


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove secret values, bearer tokens and ``api-key=...`` pairs from ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _BEARER.sub(f"Bearer {REDACTED}", text)
    return _KEY_ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def error_text(text: str, secrets: Iterable[str] = (), limit: int = MAX_ERROR_CHARS) -> str:
    """Scrubbed, single-line, control characters escaped, and at most ``limit`` characters."""
    return bounded_text(" ".join(scrub(text, secrets).split()), limit)


def describe_exception(exc: BaseException) -> str:
    """``TypeName: message`` (the type alone when the message is empty)."""
    message = str(exc)
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def failed_result(target: ProbeTarget, vantage: str, started_at: datetime, exc: BaseException) -> ProbeResult:
    """The result of a probe that raised (which a probe must never do): counted as a failure, and saying why."""
    log.warning("probe of %s raised %s: recorded as a failure", target.id, type(exc).__name__)
    return ProbeResult(
        endpoint_id=target.id,
        region=target.region,
        vantage=vantage,
        started_at=started_at,
        outcome=Outcome.BAD_CONTENT,
        error=error_text(f"the probe could not be evaluated: {describe_exception(exc)}"),
        anomalies="probe raised instead of returning a result",
    )
