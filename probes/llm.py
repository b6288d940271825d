"""The synthetic LLM probe: one tiny streamed chat completion, measured and classified.

The prompt has a checkable answer ("Reply with only the number 4817", a new
number each probe). The completion is streamed so time to response headers,
time to first token (first non-empty ``delta.content``; Azure's first chunk has
``choices: []``) and total time are measured apart, and the rate-limit headers
are recorded. No client-side retries: a retry hides the failure being measured.
Response timings count from when the request goes out on the wire (the TCP
connect for a new connection, else the write of the request body); the
probe's hard deadline counts from when it began.

Split into pure parts that tests drive without a network
(:func:`build_request`, :func:`parse_headers`, :class:`StreamParser`,
:func:`classify`, :func:`explain`) and :class:`LLMProbe`, which does the I/O
under one hard deadline (connect + headers + whole stream) and never raises.
"""

from __future__ import annotations

import asyncio
import functools
import http.cookiejar
import json
import logging
import math
import random
import re
import ssl
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from controlplane.config import LLMEndpoint, ProbeSettings
from controlplane.domain import Clock, Outcome, ProbeResult, SystemClock
from controlplane.retry_after import MAX_SECONDS, retry_after_seconds
from controlplane.textsafe import bounded_text
from probes.auth import AuthFailure, ProbeAuth
from probes.base import ProbeTarget, describe_exception, error_text

log = logging.getLogger(__name__)

PROMPT = "Reply with only the number {number}"
VANTAGE_HEADER = "x-regionguard-vantage"
USER_AGENT = "regionguard-probe/0.1"
MAX_ERROR_BODY = 64 * 1024  # bytes of a non-200 body worth reading
MAX_ERROR_CODE = 120
MAX_ERROR_MESSAGE = 1000
_PUNCTUATION_AND_SPACE = re.compile(f"[{re.escape(string.punctuation)}\\s]+")


class Failure(StrEnum):
    """Why an attempt did not run to the end of a response."""

    DEADLINE = "deadline"  # the probe's hard deadline passed
    CONNECT = "connect"  # DNS / connect / TLS / reset before any response
    STREAM = "stream"  # connection broke after the headers
    MALFORMED = "malformed"  # the stream was not parseable SSE / JSON
    AUTH = "auth"  # no credential (missing env var, token request failed)
    INVALID = "invalid"  # the request could not be built (bad URL in config)
    INTERNAL = "internal"  # anything unexpected


class Phase(StrEnum):
    AUTH = "getting credentials"
    HEADERS = "waiting for response headers"
    BODY = "reading the response"


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]
    expected: str  # the answer the model should give


@dataclass(slots=True)
class Observation:
    """Everything one attempt saw; filled in as the attempt goes."""

    phase: Phase = Phase.AUTH
    begun: float = 0.0  # perf_counter when the probe began (after credentials)
    t0: float = 0.0  # perf_counter when the request started going out; response timings count from here
    status_code: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    headers_ms: float | None = None
    ttft_ms: float | None = None
    total_ms: float | None = None
    output_chunks: int = 0
    content: str = ""
    finish_reason: str | None = None
    done: bool = False  # data: [DONE] received
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error_code: str | None = None  # from an error body
    error_message: str | None = None
    failure: Failure | None = None
    failure_text: str | None = None
    notes: Anomalies = field(default_factory=lambda: Anomalies())

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None and self.done


# ---------------------------------------------------------------- request


def token_param(endpoint: LLMEndpoint, probe: ProbeSettings) -> str:
    return endpoint.token_param or probe.token_param


def build_request(endpoint: LLMEndpoint, probe: ProbeSettings, number: int) -> ProbeRequest:
    """URL, query, headers (without auth) and body of one probe."""
    base = endpoint.base_url.rstrip("/")
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": PROMPT.format(number=number)}],
        token_param(endpoint, probe): probe.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if endpoint.api_style == "v1":
        url, params = f"{base}/openai/v1/chat/completions", {}
        body["model"] = endpoint.model or endpoint.deployment
    else:
        url = f"{base}/openai/deployments/{quote(endpoint.deployment, safe='')}/chat/completions"
        params = {"api-version": endpoint.api_version}
    headers = {VANTAGE_HEADER: probe.vantage, "user-agent": USER_AGENT, "accept": "text/event-stream"}
    return ProbeRequest(url, params, headers, body, str(number))


def normalize_answer(text: str) -> str:
    """Case-insensitive, punctuation and whitespace stripped."""
    return _PUNCTUATION_AND_SPACE.sub("", text).lower()


# ---------------------------------------------------------------- headers


MAX_COUNT = 2**31 - 1  # rate-limit and token counts: what the store's INTEGER columns hold
MAX_RETRY_AFTER_MS = round(MAX_SECONDS * 1000)
MAX_UTILIZATION_PCT = 100.0
MAX_HEADER_TEXT = 80  # x-ms-region, request ids: the store's column width
MAX_FINISH_REASON = 32
MAX_CONTENT_CHARS = 4096  # the answer is a 4-digit number; more is wrong anyway
MAX_ANOMALIES_CHARS = 1000


class Anomalies:
    """What arrived out of bounds or unparseable, one short note each (kept with the result)."""

    __slots__ = ("notes",)

    def __init__(self) -> None:
        self.notes: list[str] = []

    def add(self, source: str, raw: Any, what: str) -> None:
        note = f"{source}: {_show(raw)} {what}"
        if note not in self.notes and len(self.notes) < 20:
            self.notes.append(note)

    def text(self) -> str | None:
        return bounded_text("; ".join(self.notes), MAX_ANOMALIES_CHARS) if self.notes else None


def _show(raw: Any) -> str:
    return repr(bounded_text(str(raw), 40))


def _number(raw: Any, source: str, notes: Anomalies | None) -> float | None:
    """A finite number from a header or JSON value; None (and a note) for anything else."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        value: float | None = None
    elif isinstance(raw, int):
        value = float(max(-(10**300), min(10**300, raw)))  # an integer is finite, however long
    elif isinstance(raw, float):
        value = raw
    else:
        try:
            value = float(str(raw).strip())
        except (ValueError, OverflowError):
            value = None
    if value is None or not math.isfinite(value):
        if notes is not None:
            notes.add(source, raw, "is not a finite number")
        return None
    return value


def _clamped(value: float, low: float, high: float, raw: Any, source: str, notes: Anomalies | None) -> float:
    if low <= value <= high:
        return value
    bounded = min(high, max(low, value))
    if notes is not None:
        notes.add(source, raw, f"out of range, clamped to {bounded:g}")
    return bounded


def _count(raw: Any, source: str = "count", notes: Anomalies | None = None) -> int | None:
    """A non-negative count in [0, MAX_COUNT]."""
    value = _number(raw, source, notes)
    if value is None:
        return None
    return int(_clamped(value, 0, MAX_COUNT, raw, source, notes))


def _int(value: Any) -> int | None:
    """A bounded count, without notes (kept for callers that only want the number)."""
    return _count(value)


def _retry_after_ms(headers: Mapping[str, str], now: datetime | None = None, notes: Anomalies | None = None) -> int | None:
    """Milliseconds to wait, from :func:`~controlplane.retry_after.retry_after_seconds` (finite, clamped);
    a header it could not use, or had to clamp, is noted."""
    seconds = retry_after_seconds(headers, now)
    if notes is not None:  # the same order as retry_after_seconds: the first usable header wins
        for name, scale in (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001), ("retry-after", 1.0)):
            raw = headers.get(name)
            if raw is None or not raw.strip():
                continue
            try:
                number: float | None = float(raw.strip()) * scale
            except ValueError:
                number = None
            if number is not None and not math.isnan(number):  # used, maybe clamped (inf included)
                if not 0 <= number <= MAX_SECONDS:
                    notes.add(name, raw, f"out of range, clamped to {seconds:g} s")
                break
            if number is None and scale == 1.0 and seconds is not None:  # an HTTP date
                if seconds >= MAX_SECONDS:
                    notes.add(name, raw, f"clamped to {MAX_SECONDS:g} s")
                break
            notes.add(name, raw, "is not a number" if scale != 1.0 else "is neither seconds nor an HTTP date")
    return None if seconds is None else round(seconds * 1000)


def _utilization(value: str | None, notes: Anomalies | None = None) -> float | None:
    if value is None:
        return None
    source = "azure-openai-deployment-utilization"
    number = _number(value.strip().rstrip("%"), source, None)
    if number is None:
        if notes is not None:
            notes.add(source, value, "is not a finite number")
        return None
    return _clamped(number, 0.0, MAX_UTILIZATION_PCT, value, source, notes)


def _text(value: str | None, source: str, limit: int, notes: Anomalies | None) -> str | None:
    """Header or body text: control and format characters escaped, cut to ``limit``."""
    if value is None:
        return None
    clean = bounded_text(value, limit)
    if notes is not None and clean != value:
        notes.add(source, value, "escaped or cut to fit")
    return clean


_INTERESTING_HEADERS = frozenset(
    {
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "azure-openai-deployment-utilization",
        "retry-after-ms",
        "retry-after",
        "x-ms-region",
        "apim-request-id",
        "x-request-id",
    }
)


def headers_of_interest(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers :func:`parse_headers` reads, lower-cased, from raw header pairs (first wins)."""
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        if key in _INTERESTING_HEADERS and key not in out:
            try:
                out[key] = value.decode("utf-8")
            except UnicodeDecodeError:
                out[key] = value.decode("latin-1")
    return out


def parse_headers(headers: Mapping[str, str], notes: Anomalies | None = None) -> dict[str, Any]:
    """The headers of interest, as ProbeResult fields. All optional. Keys lower-case.

    Every number is finite and clamped to a sane range and every text escaped
    and cut; what had to be changed or dropped is noted in ``notes`` (and in
    the ``anomalies`` field when no ``notes`` are given). Never raises.
    """
    own = notes is None
    notes = Anomalies() if notes is None else notes

    def count(name: str) -> int | None:
        return _count(headers.get(name), name, notes)

    fields: dict[str, Any] = {
        "limit_requests": count("x-ratelimit-limit-requests"),
        "remaining_requests": count("x-ratelimit-remaining-requests"),
        "limit_tokens": count("x-ratelimit-limit-tokens"),
        "remaining_tokens": count("x-ratelimit-remaining-tokens"),
        "utilization_pct": _utilization(headers.get("azure-openai-deployment-utilization"), notes),
        "retry_after_ms": _retry_after_ms(headers, notes=notes),
        "region_header": _text(headers.get("x-ms-region"), "x-ms-region", MAX_HEADER_TEXT, notes),
        "apim_request_id": _text(headers.get("apim-request-id"), "apim-request-id", MAX_HEADER_TEXT, notes),
        "request_id": _text(headers.get("x-request-id"), "x-request-id", MAX_HEADER_TEXT, notes),
    }
    if own:
        fields["anomalies"] = notes.text()
    return fields


def parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    """(code, message) from an Azure/OpenAI error body; raw text when not JSON."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None, bounded_text(text.strip(), MAX_ERROR_MESSAGE) or None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, bounded_text(text.strip(), MAX_ERROR_MESSAGE) or None
    code = error.get("code") or error.get("type")
    inner = error.get("innererror")
    if isinstance(inner, dict) and inner.get("code"):
        code = f"{code}/{inner['code']}" if code else inner["code"]
    message = error.get("message")
    return (
        bounded_text(str(code), MAX_ERROR_CODE) if code else None,
        bounded_text(str(message), MAX_ERROR_MESSAGE) if message else None,
    )


# ---------------------------------------------------------------- stream


class MalformedStream(Exception):
    pass


class StreamParser:
    """Feeds SSE lines into an Observation, timing the first token."""

    def __init__(self, obs: Observation) -> None:
        self._obs = obs
        self._t0 = obs.t0
        self._data: list[str] = []
        self._data_at = obs.t0  # when the last data line of the pending event arrived

    def feed_line(self, line: str, now: float) -> None:
        if not line:
            self._dispatch()
        elif line.startswith("data:"):
            self._data.append(line[5:].lstrip(" "))
            self._data_at = now
        # "event:", "id:", "retry:" and ":comment" lines carry nothing we need

    def end(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        now = self._data_at
        if not self._data:
            return
        payload, self._data = "\n".join(self._data), []
        if payload.strip() == "[DONE]":
            self._obs.done = True
            return
        try:
            chunk = json.loads(payload)
        except (ValueError, RecursionError):
            raise MalformedStream(f"stream chunk is not JSON: {_show(payload[:80])}") from None
        if not isinstance(chunk, dict):
            raise MalformedStream(f"stream chunk is not an object: {_show(payload[:80])}")
        self._chunk(chunk, now)

    def _chunk(self, chunk: dict[str, Any], now: float) -> None:
        obs = self._obs
        choices = chunk.get("choices")
        if choices is not None and not isinstance(choices, list):
            raise MalformedStream(f"'choices' is not a list: {_show(choices)}")
        for choice in choices or ():
            if not isinstance(choice, dict):
                raise MalformedStream(f"a choice is not an object: {_show(choice)}")
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise MalformedStream(f"'delta' is not an object: {_show(delta)}")
            text = delta.get("content")
            if text is not None and not isinstance(text, str):
                raise MalformedStream(f"'delta.content' is not text: {_show(text)}")
            if text:
                if obs.ttft_ms is None:
                    obs.ttft_ms = (now - self._t0) * 1000.0
                obs.output_chunks += 1
                if len(obs.content) < MAX_CONTENT_CHARS:
                    obs.content += text[: MAX_CONTENT_CHARS - len(obs.content)]
            reason = choice.get("finish_reason")
            if reason is not None and not isinstance(reason, str):
                raise MalformedStream(f"'finish_reason' is not text: {_show(reason)}")
            if reason:
                obs.finish_reason = _text(reason, "finish_reason", MAX_FINISH_REASON, obs.notes)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            obs.prompt_tokens = _count(usage.get("prompt_tokens"), "usage.prompt_tokens", obs.notes)
            obs.completion_tokens = _count(usage.get("completion_tokens"), "usage.completion_tokens", obs.notes)
        elif usage is not None:
            obs.notes.add("usage", usage, "is not an object")
        error = chunk.get("error")
        if isinstance(error, dict):
            obs.error_code = bounded_text(str(error.get("code") or ""), MAX_ERROR_CODE) or None
            obs.error_message = bounded_text(str(error.get("message") or ""), MAX_ERROR_MESSAGE) or None


# ---------------------------------------------------------------- classification


def classify_status(status: int, error_code: str | None = None) -> Outcome:
    """The outcome of a non-200 response."""
    if status in (401, 403):
        return Outcome.AUTH_ERROR
    if status == 404:
        return Outcome.NOT_FOUND
    if status == 429:
        return Outcome.THROTTLED
    if status == 408:  # the service gave up waiting: an availability problem, not ours
        return Outcome.TIMEOUT
    if status == 400 and error_code and "content_filter" in error_code:
        return Outcome.CONTENT_FILTERED  # the prompt itself was filtered
    if 500 <= status <= 599:
        return Outcome.SERVER_ERROR
    return Outcome.BAD_REQUEST  # other 4xx (unsupported_parameter ...), and 1xx/3xx: wrong URL in config


def classify(obs: Observation, expected: str, slow_ttft_s: float, slow_total_s: float) -> Outcome:
    """Exactly one outcome for what an attempt saw. Pure."""
    if obs.failure is Failure.AUTH:
        return Outcome.AUTH_ERROR
    if obs.failure is Failure.INVALID:
        return Outcome.BAD_REQUEST
    if obs.status_code is not None and obs.status_code != 200:
        return classify_status(obs.status_code, obs.error_code)  # even if its body then broke or hung
    if obs.failure is Failure.DEADLINE:
        return Outcome.TIMEOUT
    if obs.status_code is None:
        return Outcome.CONNECT_ERROR
    if obs.finish_reason == "content_filter":
        return Outcome.CONTENT_FILTERED
    if obs.failure is Failure.MALFORMED:
        return Outcome.BAD_CONTENT
    if obs.failure is not None or not obs.finished:
        return Outcome.TRUNCATED
    if normalize_answer(obs.content) != normalize_answer(expected):
        return Outcome.BAD_CONTENT
    if _over(obs.ttft_ms, slow_ttft_s) or _over(obs.total_ms, slow_total_s):
        return Outcome.SLOW
    return Outcome.OK


def _over(ms: float | None, limit_s: float) -> bool:
    return ms is not None and ms > limit_s * 1000.0


def explain(outcome: Outcome, obs: Observation, expected: str, probe: ProbeSettings) -> str | None:
    """A one-line reason for anything but ``ok`` (not yet scrubbed or truncated)."""
    if outcome is Outcome.OK:
        return None
    if obs.failure_text and obs.failure not in (None, Failure.MALFORMED) and obs.status_code in (None, 200):
        return obs.failure_text
    if obs.status_code is not None and obs.status_code != 200:
        code = obs.error_code if obs.error_code != str(obs.status_code) else None
        detail = ": ".join(p for p in (code, obs.error_message) if p)
        return f"HTTP {obs.status_code}" + (f" {detail}" if detail else "")
    if obs.error_message:  # an error event inside a 200 stream
        return f"error in stream: {': '.join(p for p in (obs.error_code, obs.error_message) if p)}"
    if outcome is Outcome.CONTENT_FILTERED:
        return "finish_reason content_filter"
    if outcome is Outcome.BAD_CONTENT:
        return obs.failure_text or f"expected {expected!r}, got {obs.content[:80]!r}"
    if outcome is Outcome.TRUNCATED:
        missing = [m for m, seen in (("finish_reason", obs.finish_reason), ("[DONE]", obs.done)) if not seen]
        return f"stream ended without {' and '.join(missing)} after {obs.output_chunks} content chunk(s)"
    if outcome is Outcome.SLOW:
        return (
            f"TTFT {_ms(obs.ttft_ms)}, total {_ms(obs.total_ms)} (limits {probe.slow_ttft * 1000:.0f} / {probe.slow_total * 1000:.0f} ms)"
        )
    return obs.failure_text


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


# ---------------------------------------------------------------- I/O


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every client: loading the CA store takes ~50 ms each time."""
    return httpx.create_ssl_context()


class _NoCookies(http.cookiejar.CookieJar):
    """Probes are independent: keep no cookie (an affinity cookie would pin probes to one backend)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None


def keepalive_s(interval: float) -> float:
    """How long an idle connection is kept: four probe intervals, at most a minute, but never under two
    intervals (the next probe reuses it). A minute for the default 15 s; a burst of connections (confirmations
    overlapping, a region coming back) is given back within a few intervals, not kept for a minute regardless."""
    return max(2 * interval, min(60.0, 4 * interval))


class ClientPool:
    """One pooled HTTP/1.1 keep-alive client per endpoint host (scheme, host, port).

    Clients belong to one event loop; when used from another loop (each
    ``asyncio.run``), the old ones are dropped and new ones built.
    """

    def __init__(self, probe: ProbeSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._probe = probe
        self._transport = transport
        self._clients: dict[tuple[str, str, int | None], httpx.AsyncClient] = {}
        self._by_url: dict[str, httpx.AsyncClient] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: set[asyncio.Task[None]] = set()  # orphaned connections being closed (see _reap)
        self.reaped = 0

    def client_for(self, url: str) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._clients, self._by_url, self._loop = {}, {}, loop
        client = self._by_url.get(url)
        if client is None:
            u = httpx.URL(url)
            key = (u.scheme, u.host, u.port)
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = self._new_client()
            self._by_url[url] = client
        self._reap(client)
        return client

    def _reap(self, client: httpx.AsyncClient) -> None:
        """Take out of the client's pool, and close, every connection no request holds that is neither idle
        nor closed. httpcore 1.0 leaves one behind when a request is cancelled while it waits for a new
        connection (encode/httpcore#1093): a probe's deadline does that under load. Nothing would ever use
        or close it, and they pile up until the pool is full and every probe of the host times out.

        Runs on the loop before each request (no await between the check and the removal); reads httpcore's
        pool, and does nothing where it looks different.
        """
        pool = getattr(getattr(client, "_transport", None), "_pool", None)
        connections, requests = getattr(pool, "_connections", None), getattr(pool, "_requests", None)
        if not isinstance(connections, list) or not isinstance(requests, list):
            return
        held = {id(getattr(r, "connection", None)) for r in requests}
        orphans = [c for c in connections if id(c) not in held and not c.is_idle() and not c.is_closed()]
        for connection in orphans:
            connections.remove(connection)
            closing = asyncio.get_running_loop().create_task(connection.aclose())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        if orphans:
            self.reaped += len(orphans)
            log.debug("closed %d pooled connection(s) a cancelled request left behind (%d so far)", len(orphans), self.reaped)

    def _new_client(self) -> httpx.AsyncClient:
        n = self._probe.concurrency
        # The probe's own asyncio deadline is the one that fires; httpx's are a backstop.
        backstop = self._probe.timeout + 5.0
        return httpx.AsyncClient(
            http1=True,
            http2=False,
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=keepalive_s(self._probe.interval)),
            timeout=httpx.Timeout(backstop),
            follow_redirects=False,
            transport=self._transport,
            verify=_ssl_context(),
            cookies=_NoCookies(),
        )

    @property
    def hosts(self) -> int:
        return len(self._clients)

    def pooled_connections(self) -> tuple[int, int]:
        """(connections the clients' pools hold, how many of them are idle): httpcore's pools; (0, 0) without."""
        total = idle = 0
        for client in list(self._clients.values()):
            pool = getattr(getattr(client, "_transport", None), "_pool", None)
            connections = list(getattr(pool, "connections", ()))
            total += len(connections)
            idle += sum(1 for c in connections if c.is_idle())
        return total, idle

    async def aclose(self) -> None:
        clients, self._clients, self._by_url = list(self._clients.values()), {}, {}
        for client in clients:
            try:
                await client.aclose()
            except Exception as exc:
                log.debug("closing probe client: %s", type(exc).__name__)


class _WireClock:
    """Starts the probe's clock when the request goes out on the wire.

    That is the TCP connect when a new connection is opened (connect and TLS
    time are the endpoint's), else the write of the request body, right after
    which the service can start answering (headers were written just before;
    the event loop may run other probes in between). Waiting for a pooled
    connection or for the event loop before the request is out is thus not
    charged to the endpoint. Falls back to the time before the call when the
    transport reports no trace events.
    """

    __slots__ = ("_obs", "_set")

    _STARTS = frozenset({"connection.connect_tcp.started", "http11.send_request_body.started"})

    def __init__(self, obs: Observation) -> None:
        self._obs = obs
        self._set = False

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        if not self._set and event in self._STARTS:
            self._obs.t0 = time.perf_counter()
            self._set = True


class LLMProbe:
    """Runs one probe against one endpoint; :meth:`run` never raises."""

    def __init__(
        self,
        probe: ProbeSettings,
        clients: ClientPool,
        auth: ProbeAuth | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._probe = probe
        self._clients = clients
        self._auth = auth or ProbeAuth()
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._urls: dict[tuple[str, tuple[tuple[str, str], ...]], httpx.URL] = {}  # parsed once per endpoint

    async def run(self, target: ProbeTarget) -> ProbeResult:
        started_at = self._clock.now()
        request = None
        obs = Observation()
        obs.begun = obs.t0 = time.perf_counter()
        secrets: tuple[str, ...] = ()
        try:
            # the token first, under the token cache's own deadline: a stalled token endpoint is an auth
            # error of ours, never the endpoint's timeout, and its time is not the endpoint's latency
            auth = await self._auth.headers(target.endpoint)
            secrets = auth.secrets
            # anyio's deadline, not asyncio.timeout: httpcore puts a connection back inside an anyio shield,
            # which asyncio's cancellation breaks through, leaving it busy in the pool forever (test_probes)
            with anyio.fail_after(self._probe.timeout):
                request = build_request(target.endpoint, self._probe, self._rng.randint(1000, 9999))
                obs.begun = obs.t0 = time.perf_counter()
                await self._exchange(request, auth.headers, obs)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            self._record_failure(obs, exc)
        if obs.total_ms is None:  # no complete response: how long the attempt took (a timeout: the deadline)
            obs.total_ms = (time.perf_counter() - obs.begun) * 1000.0
        expected = request.expected if request else ""
        try:
            return self._result(target, started_at, obs, expected, secrets)
        except Exception as exc:  # a probe never raises, whatever arrived
            return self._unevaluable(target, started_at, obs, exc)

    async def _exchange(self, request: ProbeRequest, auth_headers: dict[str, str], obs: Observation) -> None:
        client = self._clients.client_for(request.url)
        obs.phase = Phase.HEADERS
        headers = {**request.headers, **auth_headers}
        clock = _WireClock(obs)
        async with client.stream(
            "POST", self._url(request), headers=headers, json=request.body, extensions={"trace": clock.trace}
        ) as response:
            obs.headers_ms = (time.perf_counter() - obs.t0) * 1000.0
            obs.status_code = response.status_code
            obs.headers = headers_of_interest(response.headers.raw)
            obs.phase = Phase.BODY
            if response.status_code != 200:
                body = await _read_capped(response, MAX_ERROR_BODY)
                obs.error_code, obs.error_message = parse_error_body(body)
                obs.total_ms = (time.perf_counter() - obs.t0) * 1000.0
                return
            parser = StreamParser(obs)
            async for line in response.aiter_lines():
                parser.feed_line(line, time.perf_counter())
            parser.end()
        obs.total_ms = (time.perf_counter() - obs.t0) * 1000.0

    def _url(self, request: ProbeRequest) -> httpx.URL:
        key = (request.url, tuple(sorted(request.params.items())))
        url = self._urls.get(key)
        if url is None:
            url = self._urls[key] = httpx.URL(request.url, params=request.params)
        return url

    def _record_failure(self, obs: Observation, exc: BaseException) -> None:
        timeout = self._probe.timeout
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            obs.failure, obs.failure_text = Failure.DEADLINE, f"no answer within the {timeout:g}s deadline ({obs.phase.value})"
        elif isinstance(exc, AuthFailure):
            obs.failure, obs.failure_text = Failure.AUTH, str(exc)
        elif isinstance(exc, MalformedStream):
            obs.failure, obs.failure_text = Failure.MALFORMED, str(exc)
        elif isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            obs.failure, obs.failure_text = Failure.INVALID, f"cannot build the request: {describe_exception(exc)}"
        elif isinstance(exc, httpx.TransportError | OSError):
            kind = Failure.CONNECT if obs.status_code is None else Failure.STREAM
            obs.failure, obs.failure_text = kind, f"{describe_exception(exc)} ({obs.phase.value})"
        else:
            log.warning("unexpected probe failure (%s) while %s", type(exc).__name__, obs.phase.value)
            obs.failure, obs.failure_text = Failure.INTERNAL, f"unexpected {describe_exception(exc)} ({obs.phase.value})"

    def _result(self, target: ProbeTarget, started_at: datetime, obs: Observation, expected: str, secrets: tuple[str, ...]) -> ProbeResult:
        header_fields = parse_headers(obs.headers, obs.notes)
        outcome = classify(obs, expected, self._probe.slow_ttft, self._probe.slow_total)
        reason = explain(outcome, obs, expected, self._probe)
        return ProbeResult(
            endpoint_id=target.id,
            region=target.region,
            vantage=self._probe.vantage,
            started_at=started_at,
            outcome=outcome,
            status_code=obs.status_code,
            headers_ms=_round(obs.headers_ms),
            ttft_ms=_round(obs.ttft_ms),
            total_ms=_round(obs.total_ms),
            output_chunks=obs.output_chunks,
            prompt_tokens=obs.prompt_tokens,
            completion_tokens=obs.completion_tokens,
            finished=obs.finished,
            finish_reason=obs.finish_reason,
            error=error_text(reason, secrets) if reason else None,
            anomalies=obs.notes.text(),
            **header_fields,
        )

    def _unevaluable(self, target: ProbeTarget, started_at: datetime, obs: Observation, exc: Exception) -> ProbeResult:
        """The last resort when a result cannot even be built: a failure that says so, never an exception."""
        log.warning("probe result for %s could not be evaluated (%s)", target.id, type(exc).__name__)
        status = obs.status_code if isinstance(obs.status_code, int) and 100 <= obs.status_code <= 999 else None
        return ProbeResult(
            endpoint_id=target.id,
            region=target.region,
            vantage=self._probe.vantage,
            started_at=started_at,
            outcome=Outcome.BAD_CONTENT,
            status_code=status,
            error=error_text(f"the answer could not be evaluated: {describe_exception(exc)}"),
            anomalies="result could not be evaluated",
        )


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 3)


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return bytes(body[:limit])
