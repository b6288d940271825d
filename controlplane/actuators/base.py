"""The actuator contract, its error classes and the one retry loop.

An actuator reads the actual state of one target and applies a :class:`Plan`
to it. Implementations: Traffic Manager, Front Door classic, Front Door
Standard/Premium (all through the real Azure SDKs) and an in-memory one for
tests. Nothing above this package knows about Azure.

Errors are classified once, here: :class:`TransientError` (throttling, 5xx,
timeouts, "another operation is in progress": retried with backoff within
the tick's deadline, and again next tick) and :class:`PermanentError`
(validation, authorization, not found: shown on the dashboard and audited,
never retried in a loop). Both carry ARM's error code and message.

Retries: the SDK clients are built with ``retry_total=0`` so that
:func:`call_with_retry` is the only place a request is repeated. It honours
``Retry-After`` but never sleeps past the deadline, so retries never multiply
(SDK x ours) and a tick cannot overrun.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from controlplane.config import (
    APIMBackendPoolTarget,
    FrontDoorCdnTarget,
    FrontDoorTarget,
    Target,
    TrafficManagerTarget,
    azure_name,
)
from controlplane.domain import Change, EndpointSetting, Field, Plan, TargetState
from controlplane.retry_after import retry_after_seconds

log = logging.getLogger(__name__)

T = TypeVar("T")

# Change outcomes reported through ``on_result``.
APPLIED = "applied"
FAILED = "failed"
SKIPPED = "skipped"

# ARM error codes that mean "try again later" whatever the status code says.
TRANSIENT_CODES = frozenset(
    {
        "RetryableErrorDueToAnotherOperation",
        "AnotherOperationInProgress",
        "SubscriptionRequestsThrottled",
        "TooManyRequests",
        "ResourceGroupRequestsThrottled",
        "TenantRequestsThrottled",
        "OperationNotAllowedBecauseAnotherOperationInProgress",
        "ServerTimeout",
        "InternalServerError",
        "ServiceUnavailable",
        "GatewayTimeout",
    }
)
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

_MAX_MESSAGE = 500


class ActuatorError(Exception):
    """A failed Azure call, classified. ``code`` and ``message`` are ARM's."""

    transient: bool = False

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, retry_after: float | None = None) -> None:
        self.message = message[:_MAX_MESSAGE]
        self.code = code
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{code or type(self).__name__}: {self.message}")


class TransientError(ActuatorError):
    """Worth retrying: throttled, busy, 5xx, timeout, connection failure."""

    transient = True


class PermanentError(ActuatorError):
    """Retrying cannot help: validation, authorization, not found, not owned."""

    transient = False


class FencedError(ActuatorError):
    """Not sent: this worker's lease would not outlive the write (docs/adr/0012). Not a failure of the write."""

    transient = False


MALFORMED = "MalformedResponse"


def _arm_code_and_message(exc: Any) -> tuple[str | None, str]:
    """ARM's ``error.code`` / ``error.message`` from an azure-core HttpResponseError."""
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None)
    message = getattr(err, "message", None)
    if not code or not message:
        body: Any = None
        response = getattr(exc, "response", None)
        try:
            body = response.json() if response is not None else None
        except Exception:
            body = None
        inner = body.get("error") if isinstance(body, dict) else None
        if isinstance(inner, dict):
            code = code or inner.get("code")
            message = message or inner.get("message")
    if not message:
        message = str(getattr(exc, "reason", None) or getattr(exc, "message", None) or exc)
    return (str(code) if code else None), str(message)


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    return retry_after_seconds(getattr(response, "headers", None))


def classify(exc: BaseException) -> ActuatorError:
    """Map any exception from an SDK call to a Transient- or PermanentError."""
    if isinstance(exc, ActuatorError):
        return exc
    from azure.core.exceptions import (
        ClientAuthenticationError,
        DecodeError,
        DeserializationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    from controlplane.actuators.credentials import TokenDeadlineExceeded
    from controlplane.actuators.transport import CallDeadlineExceeded, ResponseTooLarge

    if isinstance(exc, TokenDeadlineExceeded):  # before ClientAuthenticationError: a hanging token endpoint is not a bad credential
        return TransientError(_short(exc), code="TokenTimeout")
    if isinstance(exc, ResponseTooLarge):
        return TransientError(_short(exc), code="ResponseTooLarge")
    if isinstance(exc, CallDeadlineExceeded):
        return TransientError(_short(exc), code="Timeout")
    if isinstance(exc, DecodeError | DeserializationError) or type(exc).__name__ in ("DeserializationError", "DecodeError"):
        # a 2xx whose body is not what ARM sends (truncated, garbage, a proxy's page): the write may or
        # may not have landed; retried, and settled by read-back, never taken as a final answer
        return TransientError(f"the answer could not be read: {_short(exc)}", code=MALFORMED)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        kind = "Timeout" if "timeout" in type(exc).__name__.lower() or "timed out" in str(exc).lower() else "ConnectionError"
        return TransientError(_short(exc), code=kind)
    if isinstance(exc, ClientAuthenticationError) and getattr(exc, "status_code", None) is None:
        return PermanentError(_short(exc), code="AuthenticationFailed")  # the credential itself failed
    if isinstance(exc, HttpResponseError):
        status = getattr(exc, "status_code", None)
        code, message = _arm_code_and_message(exc)
        retry_after = _retry_after(exc)
        if (code in TRANSIENT_CODES) or (status in TRANSIENT_STATUSES):
            return TransientError(message, code=code or f"HTTP{status}", status=status, retry_after=retry_after)
        if status is None:  # e.g. a long-running operation that ended "Failed"
            return PermanentError(message, code=code or "OperationFailed")
        return PermanentError(message, code=code or f"HTTP{status}", status=status)
    if isinstance(exc, TimeoutError | ConnectionError | OSError):
        return TransientError(_short(exc), code="Timeout" if isinstance(exc, TimeoutError) else "ConnectionError")
    return PermanentError(_short(exc), code=type(exc).__name__)


CREDENTIAL_CODES = frozenset({"TokenTimeout", "AuthenticationFailed"})  # what classify() names a credential that gave no token


def credential_failure(error: ActuatorError) -> bool:
    """The call failed on this worker's credential, not on Azure: no token (the token endpoint hangs or refuses,
    the credential is unavailable or misconfigured) or ARM turned the token down (401).

    ARM's 5xx, 429 and throttling are not: every replica would meet them too,
    so they say nothing about whether another worker could do better
    (docs/adr/0016).
    """
    return error.code in CREDENTIAL_CODES or error.status == 401


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:_MAX_MESSAGE]


# ---------------------------------------------------------------- retry loop


@dataclass(frozen=True)
class RetryPolicy:
    """Our one retry loop's figures: exponential backoff with full jitter, capped."""

    attempts: int = 4  # tries per call, the first included
    backoff: float = 0.5  # first backoff, seconds
    backoff_max: float = 8.0
    retry_after_max: float = 30.0  # never wait longer than this for one Retry-After

    def delay(self, attempt: int, error: ActuatorError, rng: random.Random) -> float:
        if error.retry_after is not None:
            return min(error.retry_after, self.retry_after_max)
        return rng.uniform(0.5, 1.0) * min(self.backoff_max, self.backoff * (2 ** (attempt - 1)))


class DeadlineExceeded(TransientError):
    """The tick's deadline passed before the call could complete."""


class SdkActuator:
    """What the Azure actuators share: an SDK client per subscription, the one
    retry loop (bounded by the deadline) and per-request timeouts that never
    reach past it."""

    kind = ""

    def __init__(self, client_for: Callable[[str], Any], *, request_timeout: float = 30.0, retry: RetryPolicy | None = None) -> None:
        self._client_for = client_for
        self._request_timeout = request_timeout
        self._retry = retry or RetryPolicy()

    def _deadline(self, deadline: float | None) -> float:
        return deadline if deadline is not None else time.monotonic() + 2 * self._request_timeout

    def _opts(self, left: float) -> dict[str, float]:
        return request_options(left, self._request_timeout)

    def _retrying(self, fn: Callable[[float], T], deadline: float, what: str) -> T:
        return call_with_retry(fn, deadline=deadline, policy=self._retry, what=what)


def remaining(deadline: float) -> float:
    return deadline - time.monotonic()


def request_options(left: float, request_timeout: float) -> dict[str, float]:
    """Per-request azure-core options: connect/read timeouts never reach past the deadline."""
    t = max(0.05, min(request_timeout, left))
    return {"connection_timeout": t, "read_timeout": t}


def call_with_retry(
    fn: Callable[[float], T],
    *,
    deadline: float,
    policy: RetryPolicy,
    what: str,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn(seconds_left)``; retry transient errors with backoff until ``deadline``.

    ``fn`` gets the seconds left so it can bound its own request timeouts.
    Raises the last classified error (``PermanentError`` at once).
    """
    rng = rng or random.Random()
    attempt = 0
    while True:
        attempt += 1
        left = remaining(deadline)
        if left <= 0:
            raise DeadlineExceeded(f"{what}: deadline passed before attempt {attempt}", code="DeadlineExceeded")
        try:
            return fn(left)
        except Exception as exc:
            error = classify(exc)
        if not error.transient or attempt >= policy.attempts:
            raise error
        wait = policy.delay(attempt, error, rng)
        if wait >= remaining(deadline):
            log.info("%s: %s; no time left to retry", what, error.code)
            raise error
        log.info("%s: %s (attempt %d/%d); retrying in %.2fs", what, error.code, attempt, policy.attempts, wait)
        if wait > 0:
            sleep(wait)


# ---------------------------------------------------------------- the protocol


OnResult = Callable[[Change, str, ActuatorError | None], None]


@dataclass
class ApplyReport:
    """What one ``apply`` did: per change, and the number of Azure writes sent."""

    target: str
    applied: list[Change] = field(default_factory=list)
    failed: list[tuple[Change, ActuatorError]] = field(default_factory=list)
    writes: int = 0  # write requests that reached Azure (retries included)

    @property
    def ok(self) -> bool:
        return not self.failed


@runtime_checkable
class Actuator(Protocol):
    """Reads and changes one kind of Azure traffic object."""

    kind: str

    def read_actual(self, target: Target, *, deadline: float | None = None) -> TargetState:
        """Azure's view, keyed by region; only config-named endpoints; others in ``unmanaged``."""
        ...

    def apply(self, target: Target, plan: Plan, *, deadline: float, on_result: OnResult | None = None) -> ApplyReport:
        """Apply the target's changes, one write per endpoint, and report each change."""
        ...


# ---------------------------------------------------------------- helpers shared by implementations


_K = TypeVar("_K", TrafficManagerTarget, FrontDoorTarget, FrontDoorCdnTarget, APIMBackendPoolTarget)


def target_of_kind(target: Target, kind: type[_K]) -> _K:
    """``target`` as the one kind an actuator manages; a permanent error for any other kind."""
    if not isinstance(target, kind):
        raise PermanentError(f"target {target.name!r} is {target.kind}, not a {kind.__name__}", code="WrongTargetKind")
    return target


def group_by_endpoint(target: Target, plan: Plan) -> tuple[dict[str, list[Change]], list[tuple[Change, PermanentError]]]:
    """The target's changes grouped per region (plan order kept), and the changes it refuses.

    Ownership: a change is accepted only if it names the Azure endpoint the
    config maps its region to; anything else is refused without a write.
    """
    groups: dict[str, list[Change]] = {}
    refused: list[tuple[Change, PermanentError]] = []
    for change in plan.changes:
        if change.target != target.name:
            continue
        owned = change.region in target.endpoints and azure_name(target, change.region).lower() == change.endpoint.lower()
        if not owned:
            refused.append(
                (
                    change,
                    PermanentError(
                        f"{change.endpoint!r} ({change.region}) is not an endpoint of target {target.name!r} in the config", code="NotOwned"
                    ),
                )
            )
            continue
        groups.setdefault(change.region, []).append(change)
    return groups, refused


def start_apply(target: Target, plan: Plan, on_result: OnResult | None) -> tuple[ApplyReport, dict[str, list[Change]]]:
    """Begin an actuator's apply: a fresh report, the owned changes grouped per
    region, and every change the target does not own already reported failed."""
    report = ApplyReport(target=target.name)
    groups, refused = group_by_endpoint(target, plan)
    for change, error in refused:
        report_group(report, [change], error, on_result)
    return report, groups


def enabled_state(value: bool) -> str:
    return "Enabled" if value else "Disabled"


class UnreadableEndpoint(ValueError):
    """An ARM answer for one endpoint whose fields do not have the types Azure documents."""


_STATES = {"enabled": True, "disabled": False}


def checked_int(value: Any, name: str, optional: bool = True) -> int | None:
    """An integer field of an ARM answer, or :class:`UnreadableEndpoint` (a bool, a float, a string are not)."""
    return _whole(value, name, optional)


def _whole(value: Any, name: str, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnreadableEndpoint(f"{name} {_show(value)} is not an integer")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_setting(weight: Any, priority: Any, state: Any, state_name: str) -> EndpointSetting:
    """An endpoint's setting from ARM's answer, type-checked: never "enabled" by default.

    ``state`` is Traffic Manager's ``endpointStatus`` or Front Door's
    ``enabledState`` (a str or the SDK's str enum); only Enabled and Disabled
    are understood. Anything else raises :class:`UnreadableEndpoint`, so the
    endpoint is a read error for this tick and nothing is stored as actual.
    """
    raw = getattr(state, "value", state)
    enabled = _STATES.get(raw.lower()) if isinstance(raw, str) else None
    if enabled is None:
        raise UnreadableEndpoint(f"{state_name} {_show(raw)} is neither Enabled nor Disabled")
    return EndpointSetting(weight=_whole(weight, "weight", True), priority=_whole(priority, "priority", True), enabled=enabled)


def observed_fields(weight: Any, priority: Any, state: Any, state_name: str) -> dict[Field, int | bool | None]:
    """What a write's answer says, for :func:`verify`; an unreadable answer raises :class:`UnreadableEndpoint`."""
    s = read_setting(weight, priority, state, state_name)
    return {Field.WEIGHT: s.weight, Field.PRIORITY: s.priority, Field.ENABLED: s.enabled}


def unreadable_error(error: UnreadableEndpoint) -> ActuatorError:
    return TransientError(f"read back after the write: {error}", code="UnreadableAnswer")


def sdk_fields(wanted: dict[Field, Any], enabled_key: str) -> dict[str, Any]:
    """Our fields as SDK model attributes: weight, priority, and the resource's own
    name for the enabled state (``endpoint_status`` for Traffic Manager,
    ``enabled_state`` for Front Door backends and origins), as Enabled/Disabled."""
    names = {Field.WEIGHT: "weight", Field.PRIORITY: "priority", Field.ENABLED: enabled_key}
    return {names[f]: enabled_state(bool(v)) if f is Field.ENABLED else v for f, v in wanted.items()}


def desired_fields(changes: list[Change]) -> dict[Field, int | bool | None]:
    """field -> desired value for one endpoint (a later change of a field wins)."""
    return {c.field: c.desired for c in changes}


def verify(wanted: dict[Field, int | bool | None], observed: dict[Field, int | bool | None]) -> ActuatorError | None:
    """None when every written field now reads as wanted."""
    wrong = [f"{f.value} is {observed.get(f)!r}, wanted {v!r}" for f, v in wanted.items() if observed.get(f) != v]
    if wrong:
        return TransientError("read back after the write: " + "; ".join(wrong), code="VerifyMismatch")
    return None


def malformed(what: str, exc: BaseException) -> TransientError:
    """A 2xx answer without the fields every answer of this kind has: transient, like garbage."""
    return TransientError(f"{what}: the answer lacks what ARM always sends ({type(exc).__name__}: {_short(exc)})", code=MALFORMED)


def report_group(report: ApplyReport, changes: list[Change], error: ActuatorError | None, on_result: OnResult | None) -> None:
    for change in changes:
        if error is None:
            report.applied.append(change)
        else:
            report.failed.append((change, error))
        if on_result is not None:
            on_result(change, APPLIED if error is None else FAILED, error)


__all__ = [
    "APPLIED",
    "CREDENTIAL_CODES",
    "FAILED",
    "MALFORMED",
    "SKIPPED",
    "Actuator",
    "ActuatorError",
    "ApplyReport",
    "DeadlineExceeded",
    "FencedError",
    "OnResult",
    "PermanentError",
    "RetryPolicy",
    "SdkActuator",
    "Step",
    "TransientError",
    "call_with_retry",
    "classify",
    "credential_failure",
    "desired_fields",
    "enabled_state",
    "group_by_endpoint",
    "malformed",
    "order_for_unique_priorities",
    "remaining",
    "report_group",
    "request_options",
    "sdk_fields",
    "start_apply",
    "verify",
]


# ---------------------------------------------------------------- unique priorities (Traffic Manager)


@dataclass(frozen=True)
class Step:
    """One endpoint write in an ordered apply: its region and the fields it sets."""

    region: str
    fields: dict[Field, int | bool | None]
    park: bool = False  # a temporary priority to break a cycle (swap); the real write follows


def order_for_unique_priorities(
    groups: dict[str, list[Change]],
    names: dict[str, str],
    current: dict[str, int | None],
    priority_range: tuple[int, int],
) -> tuple[list[Step], dict[str, PermanentError]]:
    """Order per-endpoint writes so that no write ever makes two priorities equal.

    ``groups``: region -> changes (already in importance order); ``names``:
    region -> Azure name; ``current``: Azure name (lower case) -> priority of
    EVERY endpoint of the profile, managed or not. A desired priority held by
    an endpoint the plan does not move is refused (``PriorityConflict``); a
    cycle (e.g. a swap) is broken by parking one endpoint on a free priority.
    """
    occupied = {name: p for name, p in current.items() if p is not None}
    refused: dict[str, PermanentError] = {}
    final: dict[str, int | None] = dict(occupied)
    for region, changes in groups.items():
        wanted = desired_fields(changes).get(Field.PRIORITY)
        if wanted is not None:
            final[names[region].lower()] = int(wanted)
    for region, changes in groups.items():
        wanted = desired_fields(changes).get(Field.PRIORITY)
        me = names[region].lower()
        if wanted is None:
            continue
        holders = [n for n, p in final.items() if p == wanted and n != me]
        if holders:
            refused[region] = PermanentError(
                f"priority {wanted} would also be held by {', '.join(sorted(holders))}; Traffic Manager priorities must be unique",
                code="PriorityConflict",
            )
    pending = [r for r in groups if r not in refused]
    steps: list[Step] = []
    lo, hi = priority_range
    guard = 0
    while pending and guard < 4 * len(groups) + 4:
        guard += 1
        for region in pending:
            fields = desired_fields(groups[region])
            wanted = fields.get(Field.PRIORITY)
            me = names[region].lower()
            if wanted is None or all(p != wanted or n == me for n, p in occupied.items()):
                steps.append(Step(region, fields))
                if wanted is not None:
                    occupied[me] = int(wanted)
                pending.remove(region)
                break
        else:  # every remaining move is blocked: park the first one on a free priority
            region = pending[0]
            me = names[region].lower()
            used = set(occupied.values()) | {p for p in final.values() if p is not None}
            free = next((p for p in range(hi, lo - 1, -1) if p not in used), None)
            if free is None:
                refused[region] = PermanentError("no free priority to reorder endpoints through", code="PriorityConflict")
                pending.remove(region)
                continue
            steps.append(Step(region, {Field.PRIORITY: free}, park=True))
            occupied[me] = free
    return steps, refused
