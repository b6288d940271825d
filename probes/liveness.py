"""The liveness check: a zero-token request between the paid LLM probes.

``GET {base}/openai/models?api-version=...`` for the deployments URL style
(Azure OpenAI's data-plane "Models - List", GA since 2024-10-21) and
``GET {base}/openai/v1/models`` for the v1 style: both are served by the
resource's front end, are not metered in tokens, and answer within
milliseconds. A connect/TLS error, a timeout or a 5xx fails the check; any
other answer (200, and also 401/403/404/429: the service is there) passes.

A failed check never drains: the runner asks for LLM confirmation probes at
once, and only their outcomes move health. The check is as cheap as it gets:
no request body, the response body is read up to a small cap and dropped.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import anyio
import httpx

from controlplane.config import LLMEndpoint, ProbeSettings
from controlplane.domain import Clock, LivenessFailure, LivenessResult, SystemClock
from probes.auth import AuthFailure, ProbeAuth
from probes.base import ProbeTarget, describe_exception, error_text
from probes.llm import USER_AGENT, VANTAGE_HEADER, ClientPool

MAX_BODY = 256 * 1024


@dataclass(frozen=True, slots=True)
class LivenessRequest:
    url: str
    params: dict[str, str]
    headers: dict[str, str]


def build_liveness_request(endpoint: LLMEndpoint, probe: ProbeSettings) -> LivenessRequest:
    """URL, query and headers (without auth) of one liveness check."""
    base = endpoint.base_url.rstrip("/")
    headers = {VANTAGE_HEADER: probe.vantage, "user-agent": USER_AGENT, "accept": "application/json"}
    if endpoint.api_style == "v1":
        return LivenessRequest(f"{base}/openai/v1/models", {}, headers)
    return LivenessRequest(f"{base}/openai/models", {"api-version": endpoint.api_version}, headers)


def failed_status(status: int) -> bool:
    """Does this HTTP status mean the endpoint cannot serve? (5xx; 408 is the service timing out)."""
    return status >= 500 or status == 408


def failure_of(exc: BaseException) -> LivenessFailure:
    """A transport failure before any answer: a TLS error when the handshake broke (httpx wraps the
    ``ssl.SSLError`` in a ConnectError), else a connect error (DNS, refused, reset)."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain is short; bounded all the same
        if seen is None:
            break
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return LivenessFailure.TLS_ERROR
        seen = seen.__cause__ or seen.__context__
    return LivenessFailure.CONNECT_ERROR


class LivenessCheck:
    """Runs one liveness check against one endpoint; :meth:`run` never raises."""

    def __init__(self, probe: ProbeSettings, clients: ClientPool, auth: ProbeAuth | None = None, clock: Clock | None = None) -> None:
        self._probe = probe
        self._clients = clients
        self._auth = auth or ProbeAuth()
        self._clock = clock or SystemClock()

    @property
    def deadline(self) -> float:
        """``liveness_timeout``, never longer than an LLM probe's own deadline."""
        return min(self._probe.liveness_timeout, self._probe.timeout)

    async def run(self, target: ProbeTarget) -> LivenessResult:
        started_at = self._clock.now()
        begun = time.perf_counter()
        status: int | None = None
        error: str | None = None
        failure: LivenessFailure | None = None
        secrets: tuple[str, ...] = ()
        ok = False
        try:
            auth = await self._auth.headers(target.endpoint)  # under its own deadline: a stalled token is not the endpoint's
            secrets = auth.secrets
            # anyio's deadline, not asyncio.timeout: httpcore puts a connection back inside an anyio shield,
            # which asyncio's cancellation breaks through, leaving it busy in the pool forever (test_probes)
            with anyio.fail_after(self.deadline):
                request = build_liveness_request(target.endpoint, self._probe)
                begun = time.perf_counter()
                client = self._clients.client_for(request.url)
                async with client.stream(
                    "GET", request.url, params=request.params, headers={**request.headers, **auth.headers}
                ) as response:
                    status = response.status_code
                    read = 0
                    async for chunk in response.aiter_bytes():
                        read += len(chunk)
                        if read >= MAX_BODY:
                            break
            ok = not failed_status(status)
            if not ok:
                error = f"HTTP {status} from the models list"
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            if isinstance(exc, AuthFailure):
                ok, error = True, f"no credential for the liveness check: {exc}"  # not the endpoint's fault
            elif isinstance(exc, TimeoutError | httpx.TimeoutException):
                error, failure = f"no answer within the {self.deadline:g}s liveness deadline", LivenessFailure.TIMEOUT
            else:
                error, failure = describe_exception(exc), failure_of(exc)
            if status is not None and not failed_status(status):
                ok = True  # it answered; the body broke off: still alive
        if ok:
            failure = None
        elif status is not None and failed_status(status):
            failure = LivenessFailure.SERVER_ERROR
        return LivenessResult(
            endpoint_id=target.id,
            region=target.region,
            vantage=self._probe.vantage,
            started_at=started_at,
            ok=ok,
            status_code=status,
            latency_ms=round((time.perf_counter() - begun) * 1000.0, 3),
            error=error_text(error, secrets) if error else None,
            failure=failure,
        )
