"""Simulated Azure OpenAI regions with fault injection.

Each simulated region listens on its own port on 127.0.0.1 and answers chat
completions the way Azure OpenAI does on the wire:

- ``POST /openai/deployments/{deployment}/chat/completions?api-version=...``
  (a missing ``api-version`` is Azure's 404 "Resource not found", a malformed
  or pre-2023 one its 400 "API version not supported") and
  ``POST /openai/v1/chat/completions`` (the ``model`` in the body names the
  deployment);
- the zero-token models list in both URL styles, ``GET /openai/models?api-version=...``
  (Azure's "Models - List") and ``GET /openai/v1/models``: regionguard's
  liveness check. It honours the region-wide ``down``, ``hang``, ``auth`` and
  ``error`` faults, not the model's (throttle, slow, wrong answers);
- auth by ``api-key`` header (the region's key) or ``Authorization: Bearer``
  (any non-empty token, or only the configured ones); else 401;
- non-streaming JSON and SSE streaming in Azure's shape (first chunk with
  ``choices: []`` and ``prompt_filter_results``, a role chunk, content
  deltas, a ``finish_reason`` chunk, the usage chunk when
  ``stream_options.include_usage``, ``data: [DONE]``);
- "Reply with only the number N" is answered with N;
- per-deployment token buckets (requests/min and tokens/min) behind the
  ``x-ratelimit-*`` headers and 429s, PTU deployments reporting
  ``azure-openai-deployment-utilization`` instead of remaining tokens;
- a latency model (TTFT + per-token time + jitter) on ``asyncio.sleep``.

Faults (see :mod:`simulator.faults`) are set per region or per
deployment from Python (:meth:`LLMSimulator.set_fault`), from the admin API
under ``/_sim/`` (on every region port and on a separate admin port) or from
a scripted timeline (:meth:`LLMSimulator.run_timeline`). How they show:

- ``down`` on a whole region, for every vantage, at rate 1: the region's
  listening socket is closed (new connections are *refused*: the port stays
  bound without listening, so nothing else can take it) and open connections
  to it are reset; lifting it listens on the same port again. ``down`` on a
  deployment, limited to vantages, or at a rate below 1: the connection is
  *reset* (RST) after the request is read, with no response.
- ``hang``: the request is read and never answered (until the client gives
  up or the simulator stops).
- ``slow``: fixed TTFT (``ttft_ms``, no jitter) and/or a latency multiplier.
- ``throttle``: 429 with ``retry-after``/``retry-after-ms`` and Azure's body.
- ``error``: 500/502/503/504 with Azure-like bodies.
- ``bad_content``: a wrong answer (N+1 for the number prompt).
- ``truncate``: a stream ends cleanly after about half the content, with no
  finish chunk and no ``[DONE]``; a non-streaming body is cut in half and the
  connection closed (the client sees an incomplete body).
- ``content_filter``: ``finish_reason: content_filter`` with filtered
  ``content_filter_results``, content cut at about half.
- ``auth``: 401 whatever the credentials.

The servers run on an event loop in a background thread, so synchronous code
(tests, the demo, the CLI) can start and stop them::

    with LLMSimulator(default_regions(), seed=1) as sim:
        url = sim.base_url("eastus")
        sim.set_fault("eastus", Fault("slow", ttft_ms=800))

``python -m simulator.llm --help`` runs one as a process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import random
import re
import secrets
import signal
import socket
import string
import struct
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from aiohttp import web

from controlplane.runtime import loops
from simulator.faults import (
    ALL_REGIONS,
    Fault,
    FaultBook,
    TimelineEvent,
    choose_status,
    fault_fires,
    parse_timeline,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

VANTAGE_HEADER = "x-regionguard-vantage"
"""Request header naming the prober's vantage point; vantage-limited faults match on it."""
DEFAULT_API_KEY = "sim-key"
ADMIN_PREFIX = "/_sim"

# --------------------------------------------------------------------------- configuration values

_REGION_LABELS: tuple[tuple[str, str], ...] = (
    ("eastus", "East US"),
    ("westeurope", "West Europe"),
    ("japaneast", "Japan East"),
    ("swedencentral", "Sweden Central"),
    ("australiaeast", "Australia East"),
    ("canadaeast", "Canada East"),
    ("francecentral", "France Central"),
    ("uksouth", "UK South"),
    ("westus3", "West US 3"),
    ("northcentralus", "North Central US"),
    ("southindia", "South India"),
    ("switzerlandnorth", "Switzerland North"),
    ("norwayeast", "Norway East"),
    ("koreacentral", "Korea Central"),
    ("brazilsouth", "Brazil South"),
    ("eastus2", "East US 2"),
)
_LABEL_BY_NAME = dict(_REGION_LABELS)


@dataclass(frozen=True)
class SimDeployment:
    """One model deployment in a simulated region.

    ``rpm``/``tpm`` size its token buckets; ``ttft_ms``, ``per_token_ms`` and
    ``jitter_ms`` (uniform, +/-) its latency. A ``reasoning`` deployment
    rejects ``max_tokens`` (and a non-default ``temperature``) like Azure's
    o-series, and spends ``reasoning_tokens`` hidden tokens of the
    ``max_completion_tokens`` budget (and their time) before answering. A
    ``ptu`` deployment reports ``azure-openai-deployment-utilization``.
    """

    name: str
    model: str = "gpt-4o-2024-08-06"
    reasoning: bool = False
    ptu: bool = False
    rpm: int = 600
    tpm: int = 100_000
    ttft_ms: float = 250.0
    per_token_ms: float = 10.0
    jitter_ms: float = 25.0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"deployment name: {self.name!r} is not a valid name")
        for name in ("rpm", "tpm"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1 (deployment {self.name!r})")
        for name in ("ttft_ms", "per_token_ms", "jitter_ms", "reasoning_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0 (deployment {self.name!r})")


@dataclass(frozen=True)
class SimRegion:
    """A simulated Azure OpenAI resource in one region, served on its own port.

    ``azure_region`` is the label sent as ``x-ms-region`` (defaults to the
    display name of ``name``, e.g. "East US"); ``port`` 0 binds an ephemeral
    port.
    """

    name: str
    deployments: Sequence[SimDeployment]
    azure_region: str = ""
    api_key: str = DEFAULT_API_KEY
    port: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "deployments", tuple(self.deployments))
        if not self.name or self.name == ALL_REGIONS:
            raise ValueError(f"region name: {self.name!r} is not a valid name")
        if not self.deployments:
            raise ValueError(f"deployments: region {self.name!r} has none")
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError(f"deployments: region {self.name!r} names a deployment twice")
        if not self.azure_region:
            object.__setattr__(self, "azure_region", _LABEL_BY_NAME.get(self.name, self.name))
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} is out of range (region {self.name!r})")

    def deployment(self, name: str) -> SimDeployment | None:
        for deployment in self.deployments:
            if deployment.name == name:
                return deployment
        return None


_DEPLOYMENT_TEMPLATES: tuple[SimDeployment, ...] = (
    SimDeployment("gpt-4o", model="gpt-4o-2024-08-06", rpm=600, tpm=100_000, ttft_ms=300, per_token_ms=12, jitter_ms=40),
    SimDeployment("gpt-4o-mini", model="gpt-4o-mini-2024-07-18", rpm=1200, tpm=200_000, ttft_ms=200, per_token_ms=8, jitter_ms=30),
    SimDeployment("o3-mini", model="o3-mini-2025-01-31", reasoning=True, rpm=300, tpm=50_000, ttft_ms=600, per_token_ms=10, jitter_ms=60),
)


def default_regions(
    n_regions: int = 3,
    deployments_per_region: int = 2,
    *,
    ttft_ms: float | None = None,
    per_token_ms: float | None = None,
    jitter_ms: float | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
) -> list[SimRegion]:
    """Regions eastus, westeurope, japaneast, ... (``regionN`` past the known names).

    Deployments are gpt-4o, gpt-4o-mini, o3-mini (a reasoning model), then
    gpt-4o-4, gpt-4o-5, ...; the keyword arguments override every deployment.
    """
    if n_regions < 1 or deployments_per_region < 1:
        raise ValueError("n_regions and deployments_per_region must be >= 1")
    given: dict[str, Any] = {"ttft_ms": ttft_ms, "per_token_ms": per_token_ms, "jitter_ms": jitter_ms, "rpm": rpm, "tpm": tpm}
    overrides = {key: value for key, value in given.items() if value is not None}
    deployments = [replace(_deployment_template(i), **overrides) for i in range(deployments_per_region)]
    regions = []
    for i in range(n_regions):
        name, label = _REGION_LABELS[i] if i < len(_REGION_LABELS) else (f"region{i + 1}", f"Region {i + 1}")
        regions.append(SimRegion(name, deployments, azure_region=label))
    return regions


def _deployment_template(index: int) -> SimDeployment:
    if index < len(_DEPLOYMENT_TEMPLATES):
        return _DEPLOYMENT_TEMPLATES[index]
    return replace(_DEPLOYMENT_TEMPLATES[0], name=f"gpt-4o-{index + 1}")


# --------------------------------------------------------------------------- rate limits


class _Bucket:
    """A token bucket holding up to ``per_minute`` units, refilled continuously."""

    __slots__ = ("capacity", "level", "updated")

    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.capacity / 60.0)
            self.updated = now

    def seconds_until(self, amount: float) -> float:
        deficit = min(amount, self.capacity) - self.level
        return 0.0 if deficit <= 0 else deficit * 60.0 / self.capacity


@dataclass(frozen=True)
class Admission:
    """What the limiter decided for one request."""

    ok: bool
    retry_after_s: float = 0.0
    limit: str = ""  # "call" (requests) or "token" when not ok


class DeploymentLimiter:
    """Requests-per-minute and tokens-per-minute buckets of one deployment."""

    def __init__(self, deployment: SimDeployment, clock: Callable[[], float]) -> None:
        self._deployment = deployment
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        now = self._clock()
        self._requests = _Bucket(self._deployment.rpm, now)
        self._tokens = _Bucket(self._deployment.tpm, now)

    def admit(self, tokens: int) -> Admission:
        now = self._clock()
        self._requests.refill(now)
        self._tokens.refill(now)
        wait_requests = self._requests.seconds_until(1)
        wait_tokens = self._tokens.seconds_until(tokens)
        if wait_requests > 0 or wait_tokens > 0:
            limit = "call" if wait_requests >= wait_tokens else "token"
            return Admission(False, max(wait_requests, wait_tokens), limit)
        self._requests.level -= 1
        self._tokens.level -= min(tokens, self._tokens.capacity)
        return Admission(True)

    def headers(self, exhausted: bool = False) -> dict[str, str]:
        """The ``x-ratelimit-*`` (or PTU utilization) headers as of now."""
        now = self._clock()
        self._requests.refill(now)
        self._tokens.refill(now)
        d = self._deployment
        out = {
            "x-ratelimit-limit-requests": str(d.rpm),
            "x-ratelimit-remaining-requests": "0" if exhausted else str(int(self._requests.level)),
        }
        if d.ptu:
            used = 100.0 if exhausted else 100.0 * (1.0 - self._tokens.level / self._tokens.capacity)
            out["azure-openai-deployment-utilization"] = f"{used:.1f}%"
        else:
            out["x-ratelimit-limit-tokens"] = str(d.tpm)
            out["x-ratelimit-remaining-tokens"] = "0" if exhausted else str(int(self._tokens.level))
        return out

    def remaining(self) -> dict[str, float]:
        now = self._clock()
        self._requests.refill(now)
        self._tokens.refill(now)
        return {"requests": round(self._requests.level, 3), "tokens": round(self._tokens.level, 3)}


# --------------------------------------------------------------------------- wire formats

_SAFE = {"filtered": False, "severity": "safe"}
_CONTENT_FILTER_SAFE = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
_CONTENT_FILTER_HIT = {**_CONTENT_FILTER_SAFE, "violence": {"filtered": True, "severity": "medium"}}
_PROMPT_FILTER_RESULTS = [
    {
        "prompt_index": 0,
        "content_filter_results": {**_CONTENT_FILTER_SAFE, "jailbreak": {"filtered": False, "detected": False}},
    }
]
_DONE = b"data: [DONE]\n\n"
_NUMBER_PROMPT = re.compile(r"reply with only the number\s+(-?\d+)", re.IGNORECASE)
_API_VERSION = re.compile(r"^(\d{4})-\d{2}-\d{2}(-preview)?$")
_V1_API_VERSIONS = frozenset({"preview", "latest", "v1"})
DEFAULT_REPLY = "Hello! This is a simulated reply from the regionguard Azure OpenAI simulator."
BAD_REPLY = "Banana. I cannot recall what you asked."

_MSG_NOT_FOUND = "Resource not found"
_MSG_DEPLOYMENT_NOT_FOUND = (
    "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, "
    "please wait a moment and try again."
)
_MSG_KEY_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)
_MSG_TOKEN_DENIED = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired."
)
_SERVER_ERRORS: dict[int, tuple[str, str]] = {
    500: ("InternalServerError", "The server had an error while processing your request. Sorry about that!"),
    502: ("BadGateway", "Bad gateway: the backend returned an invalid response."),
    503: ("ServiceUnavailable", "The service is temporarily unable to process your request. Please try again later."),
    504: ("Timeout", "The operation was timeout."),
}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _azure_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _invalid_request(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def rate_limit_message(api_version: str, limit: str, retry_after_s: int, ptu: bool = False) -> str:
    """Azure's 429 text, e.g. "... have exceeded token rate limit of your current OpenAI S0 pricing tier ..."."""
    tier = "ProvisionedManaged" if ptu else "OpenAI S0"
    unit = "second" if retry_after_s == 1 else "seconds"
    return (
        f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {api_version} have exceeded "
        f"{limit} rate limit of your current {tier} pricing tier. Please retry after {retry_after_s} {unit}. "
        "Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
    )


class _Reject(Exception):
    """Short-circuits a request with an error response."""

    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def _message_text(message: Any) -> str:
    if not isinstance(message, Mapping):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def estimate_prompt_tokens(messages: Sequence[Any]) -> int:
    """About 4 characters a token plus a few per message, like the service's pre-count."""
    return 3 + sum(4 + math.ceil(len(_message_text(m)) / 4) for m in messages)


def answer_for(messages: Sequence[Any], wrong: bool = False) -> str:
    """N for "Reply with only the number N" (N+1 when ``wrong``), else a fixed reply."""
    users = [m for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
    text = _message_text(users[-1]) if users else ""
    match = _NUMBER_PROMPT.search(text)
    if match:
        number = int(match.group(1))
        return str(number + 1 if wrong else number)
    return BAD_REPLY if wrong else DEFAULT_REPLY


def tokenize(text: str) -> list[str]:
    """Word-ish tokens, each keeping its leading whitespace (so they join back to ``text``)."""
    return re.findall(r"\s*\S+", text)


@dataclass(frozen=True)
class _Completion:
    tokens: tuple[str, ...]  # visible tokens the client gets
    finish_reason: str | None  # None: the stream is cut (truncate)
    filtered: bool
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int

    def usage(self) -> dict[str, Any]:
        return {
            "completion_tokens": self.completion_tokens,
            "completion_tokens_details": {
                "accepted_prediction_tokens": 0,
                "audio_tokens": 0,
                "reasoning_tokens": self.reasoning_tokens,
                "rejected_prediction_tokens": 0,
            },
            "prompt_tokens": self.prompt_tokens,
            "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


class _ChunkMaker:
    """Serializes the SSE events of one streamed completion."""

    def __init__(self, completion_id: str, created: int, model: str, fingerprint: str) -> None:
        self._common = {
            "created": created,
            "id": completion_id,
            "model": model,
            "object": "chat.completion.chunk",
            "system_fingerprint": fingerprint,
        }

    @staticmethod
    def _event(payload: dict[str, Any]) -> bytes:
        return b"data: " + _dumps(payload) + b"\n\n"

    def prompt_filter(self) -> bytes:
        return self._event(
            {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": _PROMPT_FILTER_RESULTS}
        )

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None, cfr: dict[str, Any] | None = None) -> bytes:
        choice = {
            "content_filter_results": cfr or {},
            "delta": delta,
            "finish_reason": finish_reason,
            "index": 0,
            "logprobs": None,
        }
        return self._event({"choices": [choice], **self._common})

    def usage(self, usage: dict[str, Any]) -> bytes:
        return self._event({"choices": [], **self._common, "usage": usage})


# --------------------------------------------------------------------------- runtime state


class _Stats:
    """Request counts by region, deployment and status ("200", "429", "reset", "hang", ...)."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def record(self, region: str, deployment: str | None, status: int | str) -> None:
        self._counts[(region, deployment or "-", str(status))] += 1

    def reset(self) -> None:
        self._counts.clear()

    def to_dict(self) -> dict[str, Any]:
        by_region: dict[str, dict[str, dict[str, int]]] = {}
        for (region, deployment, status), count in sorted(self._counts.items()):
            by_region.setdefault(region, {}).setdefault(deployment, {})[status] = count
        return {"total": sum(self._counts.values()), "by_region": by_region}


@dataclass
class _RegionRuntime:
    region: SimRegion
    limiters: dict[str, DeploymentLimiter]
    port: int = 0
    runner: web.AppRunner | None = None
    site: web.SockSite | None = None
    placeholder: socket.socket | None = None  # bound, not listening: connections are refused

    @property
    def name(self) -> str:
        return self.region.name

    @property
    def listening(self) -> bool:
        return self.site is not None


_RUNTIME_KEY = web.AppKey("regionguard_sim_region", _RegionRuntime)


@dataclass
class _Call:
    """One chat request as parsed so far."""

    runtime: _RegionRuntime
    deployment_name: str | None
    api_version: str
    v1: bool
    vantage: str | None
    headers: dict[str, str]
    arrived: float  # loop time the request came in: latency is counted from here
    faults: dict[str, Fault]
    body: dict[str, Any] = field(default_factory=dict)
    deployment: SimDeployment | None = None


class TimelineRun:
    """A scripted timeline running on the simulator's loop; cancellable and awaitable from any thread."""

    def __init__(self, events: tuple[TimelineEvent, ...]) -> None:
        self.events = events
        self.applied: list[TimelineEvent] = []
        self._future: Future[None] | None = None

    def _attach(self, future: Future[None]) -> None:
        self._future = future

    def cancel(self) -> None:
        if self._future is not None:
            self._future.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every event is applied (or the run is cancelled); False on timeout."""
        if self._future is None:
            return True
        try:
            self._future.result(timeout=timeout)
        except TimeoutError:
            return False
        except Exception:  # cancelled or failed: it is over either way
            return True
        return True

    @property
    def done(self) -> bool:
        return self._future is None or self._future.done()


# --------------------------------------------------------------------------- the simulator


class LLMSimulator:
    """Simulated Azure OpenAI regions, one port per region, on a background event loop.

    ``seed`` makes fault decisions and latency jitter reproducible.
    ``bearer_tokens``: ``None`` accepts any non-empty bearer token; otherwise
    only these (and the region's api key used as a bearer token, as Azure's
    v1 API allows). ``admin_port``: a port serving only ``/_sim/`` (0 =
    ephemeral, ``None`` = none), reachable even when every region is down.
    ``clock`` drives the rate-limit buckets (monotonic seconds).
    """

    def __init__(
        self,
        regions: Sequence[SimRegion],
        host: str = "127.0.0.1",
        seed: int | str | None = None,
        *,
        admin_port: int | None = 0,
        bearer_tokens: Iterable[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [r.name for r in regions]
        if not names:
            raise ValueError("regions: at least one region is needed")
        if len(set(names)) != len(names):
            raise ValueError("regions: a region name is used twice")
        ports = [r.port for r in regions if r.port]
        if len(set(ports)) != len(ports):
            raise ValueError("regions: two regions ask for the same port")
        self._regions = {r.name: r for r in regions}
        self._host = host
        self._admin_port_wanted = admin_port
        self._book = FaultBook()
        self._stats = _Stats()
        self._service = _ChatService(
            self._book,
            self._stats,
            fault_rng=random.Random(seed),
            latency_rng=random.Random(None if seed is None else f"{seed}:latency"),
            bearer_tokens=None if bearer_tokens is None else frozenset(bearer_tokens),
        )
        self._runtimes = {
            r.name: _RegionRuntime(r, {d.name: DeploymentLimiter(d, clock) for d in r.deployments}, port=r.port) for r in regions
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._admin_runner: web.AppRunner | None = None
        self._admin_port: int | None = None
        self._stopping: asyncio.Event | None = None
        self._timeline_tasks: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- construction helpers

    @classmethod
    def from_config(cls, cfg: Any, **kwargs: Any) -> LLMSimulator:
        """Regions from a regionguard config (``controlplane.config.Settings``).

        Each configured region becomes a simulated region serving the
        deployments its endpoints name (a ``max_completion_tokens`` endpoint
        is taken as a reasoning deployment); a loopback ``base_url`` with a
        port fixes the region's port. The api key is read from the endpoint's
        ``auth.env`` variable when set, else :data:`DEFAULT_API_KEY`.
        """
        return cls(_regions_from_config(cfg), **kwargs)

    # ----------------------------------------------------------------- lifecycle (sync)

    def start(self) -> LLMSimulator:
        """Bind every region (and the admin port) and serve on a background thread."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        loop = loops.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name="llm-simulator", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._astart(), loop).result(timeout=30)
        except BaseException:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout=30)
            self._shutdown_loop()
            raise
        log.info("LLM simulator serving %d regions on %s", len(self._regions), self._host)
        return self

    def stop(self) -> None:
        """Stop serving, reset open connections and join the thread. Idempotent."""
        if self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._astop(), self._loop).result(timeout=30)
        finally:
            self._shutdown_loop()
        log.info("LLM simulator stopped")

    def __enter__(self) -> LLMSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=30)

    def _call_soon(self, coro: Any, timeout: float = 30) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("simulator is not running")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("LLMSimulator's blocking methods cannot run on its own event loop")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    # ----------------------------------------------------------------- public API (sync)

    @property
    def regions(self) -> list[SimRegion]:
        return list(self._regions.values())

    def base_url(self, region: str) -> str:
        """``http://HOST:PORT`` of a region (the Azure ``azure_endpoint``)."""
        runtime = self._runtime(region)
        if not runtime.port:
            raise RuntimeError("simulator is not started")
        return f"http://{self._url_host}:{runtime.port}"

    @property
    def admin_url(self) -> str | None:
        return None if self._admin_port is None else f"http://{self._url_host}:{self._admin_port}"

    @property
    def _url_host(self) -> str:
        return f"[{self._host}]" if ":" in self._host else self._host

    def set_fault(self, region: str | None, fault: Fault | Mapping[str, Any] | str, deployment: str | None = None) -> None:
        """Put a fault on a region (``None`` or ``"*"``: every region) or one of its deployments.

        ``fault`` is a :class:`Fault`, its mapping form, or a bare kind
        ("down", "none", ...). A ``none`` fault lifts that scope's faults.
        Returns once the fault is in force (a downed listener is closed).
        """
        fault = _as_fault(fault)
        if self._loop is None:
            self._apply_fault(region, fault, deployment)
            return
        self._call_soon(self._aset_fault(region, fault, deployment))

    def clear_faults(self, region: str | None = None, deployment: str | None = None) -> None:
        """Lift every fault, or those of a region (and its deployments), or of one deployment."""
        if self._loop is None:
            self._clear(region, deployment)
            return
        self._call_soon(self._aclear_faults(region, deployment))

    def faults(self) -> list[dict[str, Any]]:
        """The faults in force: ``[{"region", "deployment", "fault", ...}]``."""
        return self._on_loop(self._fault_list)

    def _fault_list(self) -> list[dict[str, Any]]:
        return [entry.to_dict() for entry in self._book.entries()]

    def stats(self) -> dict[str, Any]:
        """``{"total": n, "by_region": {region: {deployment: {status: count}}}}``."""
        return self._on_loop(self._stats.to_dict)

    def reset_stats(self) -> None:
        """Zero the request counts and refill every rate-limit bucket."""
        self._on_loop(self._reset_counters)

    def state(self) -> dict[str, Any]:
        """What ``GET /_sim/state`` answers: regions, ports, buckets, faults."""
        return self._on_loop(self._state)

    def run_timeline(self, events: Iterable[Mapping[str, Any] | TimelineEvent], time_scale: float = 1.0) -> TimelineRun:
        """Apply ``events`` at ``at * time_scale`` seconds from now, in the background.

        Validates every event (and its region/deployment) first. The run ends
        after the last event, on :meth:`TimelineRun.cancel` or on :meth:`stop`.
        """
        if self._loop is None:
            raise RuntimeError("simulator is not running")
        run = self._prepare_timeline(events, time_scale)
        run._attach(asyncio.run_coroutine_threadsafe(self._atimeline(run, time_scale), self._loop))
        return run

    # ----------------------------------------------------------------- state helpers (loop thread)

    def _on_loop(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the simulator's loop (directly when it is not running)."""
        if self._loop is None:
            return fn()

        async def call() -> _T:
            return fn()

        result: _T = self._call_soon(call())
        return result

    def _runtime(self, region: str) -> _RegionRuntime:
        try:
            return self._runtimes[region]
        except KeyError:
            raise KeyError(f"region: no simulated region named {region!r}") from None

    def _scopes(self, region: str | None, deployment: str | None) -> list[str]:
        if region is None or region == ALL_REGIONS:
            if deployment is not None:
                raise ValueError("deployment: a deployment fault needs a region")
            return list(self._regions)
        runtime = self._runtime(region)
        if deployment is not None and runtime.region.deployment(deployment) is None:
            raise KeyError(f"deployment: region {region!r} has no deployment {deployment!r}")
        return [region]

    def _apply_fault(self, region: str | None, fault: Fault, deployment: str | None) -> None:
        for name in self._scopes(region, deployment):
            self._book.set(name, fault, deployment)
            log.info("fault %s on %s%s", fault.kind, name, f"/{deployment}" if deployment else "")

    def _clear(self, region: str | None, deployment: str | None) -> None:
        if region is not None and region != ALL_REGIONS:
            self._scopes(region, deployment)
            self._book.clear(region, deployment)
        else:
            self._book.clear()
        log.info("faults cleared on %s", region or "every region")

    def _reset_counters(self) -> None:
        self._stats.reset()
        for runtime in self._runtimes.values():
            for limiter in runtime.limiters.values():
                limiter.reset()

    def _state(self) -> dict[str, Any]:
        regions = []
        for runtime in self._runtimes.values():
            r = runtime.region
            regions.append(
                {
                    "name": r.name,
                    "azure_region": r.azure_region,
                    "base_url": f"http://{self._url_host}:{runtime.port}" if runtime.port else None,
                    "listening": runtime.listening,
                    "deployments": [
                        {
                            "name": d.name,
                            "model": d.model,
                            "reasoning": d.reasoning,
                            "ptu": d.ptu,
                            "rpm": d.rpm,
                            "tpm": d.tpm,
                            "ttft_ms": d.ttft_ms,
                            "per_token_ms": d.per_token_ms,
                            "jitter_ms": d.jitter_ms,
                            "remaining": runtime.limiters[d.name].remaining(),
                        }
                        for d in r.deployments
                    ],
                }
            )
        return {"regions": regions, "faults": self._fault_list(), "admin_url": self.admin_url}

    def _prepare_timeline(self, events: Iterable[Mapping[str, Any] | TimelineEvent], time_scale: float) -> TimelineRun:
        if not (isinstance(time_scale, int | float) and math.isfinite(time_scale) and time_scale >= 0):
            raise ValueError(f"time_scale: {time_scale!r} must be a finite number >= 0")
        parsed = parse_timeline(events)
        for index, event in enumerate(parsed):
            try:
                self._scopes(event.region, event.deployment)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"events[{index}].{exc.args[0]}") from None
        return TimelineRun(parsed)

    # ----------------------------------------------------------------- async internals

    async def _astart(self) -> None:
        self._stopping = asyncio.Event()
        self._service.started(self._stopping)
        for runtime in self._runtimes.values():
            runtime.runner = web.AppRunner(self._region_app(runtime), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
            await runtime.runner.setup()
            runtime.placeholder = self._bind(runtime.port)
            runtime.port = runtime.placeholder.getsockname()[1]
        await self._sync_listeners()
        if self._admin_port_wanted is not None:
            self._admin_runner = web.AppRunner(self._admin_app(), access_log=None, shutdown_timeout=1.0)
            await self._admin_runner.setup()
            sock = self._bind(self._admin_port_wanted)
            site = web.SockSite(self._admin_runner, sock)
            await site.start()
            self._admin_port = sock.getsockname()[1]

    async def _astop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        for task in list(self._timeline_tasks):
            task.cancel()
        for runtime in self._runtimes.values():
            if runtime.runner is None:
                continue
            if runtime.site is not None:
                await runtime.site.stop()
                runtime.site = None
            self._reset_connections(runtime)
            await runtime.runner.cleanup()
            runtime.runner = None
            if runtime.placeholder is not None:
                runtime.placeholder.close()
                runtime.placeholder = None
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None

    def _bind(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def _sync_listeners(self) -> None:
        """Listen on every region without a hard ``down``; refuse connections on the others."""
        for runtime in self._runtimes.values():
            if runtime.runner is None:
                continue
            want_up = not self._book.hard_down(runtime.name)
            if want_up and not runtime.listening:
                sock, runtime.placeholder = runtime.placeholder, None
                assert sock is not None
                site = web.SockSite(runtime.runner, sock, backlog=1024)
                await site.start()
                runtime.site = site
                log.info("region %s listening on port %d", runtime.name, runtime.port)
            elif not want_up and runtime.listening:
                assert runtime.site is not None
                await runtime.site.stop()
                runtime.site = None
                runtime.placeholder = self._bind(runtime.port)
                self._reset_connections(runtime)
                log.info("region %s down: port %d refuses connections", runtime.name, runtime.port)

    @staticmethod
    def _reset_connections(runtime: _RegionRuntime) -> None:
        server = runtime.runner.server if runtime.runner is not None else None
        if server is None:
            return
        for handler in server.connections:
            _reset_transport(handler.transport)

    async def _aset_fault(self, region: str | None, fault: Fault, deployment: str | None) -> None:
        self._apply_fault(region, fault, deployment)
        await self._sync_listeners()

    async def _aclear_faults(self, region: str | None, deployment: str | None) -> None:
        self._clear(region, deployment)
        await self._sync_listeners()

    async def _atimeline(self, run: TimelineRun, time_scale: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._timeline_tasks.add(task)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            for event in run.events:
                delay = started + event.at_s * time_scale - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._aset_fault(event.region, event.fault, event.deployment)
                run.applied.append(event)
        finally:
            self._timeline_tasks.discard(task)

    # ----------------------------------------------------------------- apps and routes

    def _region_app(self, runtime: _RegionRuntime) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app[_RUNTIME_KEY] = runtime
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._service.chat_deployments)
        app.router.add_post("/openai/v1/chat/completions", self._service.chat_v1)
        app.router.add_get("/openai/models", self._service.models_deployments)
        app.router.add_get("/openai/v1/models", self._service.models_v1)
        self._add_admin_routes(app)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    def _admin_app(self) -> web.Application:
        app = web.Application()
        self._add_admin_routes(app)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    def _add_admin_routes(self, app: web.Application) -> None:
        app.router.add_get(f"{ADMIN_PREFIX}/state", self._admin_state)
        app.router.add_get(f"{ADMIN_PREFIX}/faults", self._admin_faults)
        app.router.add_post(f"{ADMIN_PREFIX}/faults", self._admin_set_fault)
        app.router.add_delete(f"{ADMIN_PREFIX}/faults", self._admin_clear_faults)
        app.router.add_get(f"{ADMIN_PREFIX}/stats", self._admin_stats)
        app.router.add_delete(f"{ADMIN_PREFIX}/stats", self._admin_reset_stats)
        app.router.add_post(f"{ADMIN_PREFIX}/timeline", self._admin_timeline)
        app.router.add_delete(f"{ADMIN_PREFIX}/timeline", self._admin_cancel_timelines)

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.json_response(_azure_error("404", _MSG_NOT_FOUND), status=404)

    # ----------------------------------------------------------------- admin handlers

    async def _admin_state(self, request: web.Request) -> web.Response:
        return web.json_response(self._state())

    async def _admin_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": self._fault_list()})

    async def _admin_set_fault(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body: expected a JSON object")
            region = body.pop("region", None)
            deployment = body.pop("deployment", None)
            fault = Fault.from_dict(body)
            await self._aset_fault(region, fault, deployment)
        except KeyError as exc:
            return _admin_error(404, "NotFound", str(exc.args[0]))
        except ValueError as exc:  # includes JSON decoding errors
            return _admin_error(400, "InvalidFault", str(exc))
        return web.json_response({"faults": self._fault_list()})

    async def _admin_clear_faults(self, request: web.Request) -> web.Response:
        try:
            await self._aclear_faults(request.query.get("region"), request.query.get("deployment"))
        except KeyError as exc:
            return _admin_error(404, "NotFound", str(exc.args[0]))
        return web.json_response({"faults": self._fault_list()})

    async def _admin_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._stats.to_dict())

    async def _admin_reset_stats(self, request: web.Request) -> web.Response:
        self._reset_counters()
        return web.json_response(self._stats.to_dict())

    async def _admin_timeline(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("events"), list):
                raise ValueError('events: expected {"events": [...], "time_scale": 1.0}')
            time_scale = body.get("time_scale", 1.0)
            run = self._prepare_timeline(body["events"], time_scale)
        except ValueError as exc:
            return _admin_error(400, "InvalidTimeline", str(exc))
        run._attach(asyncio.run_coroutine_threadsafe(self._atimeline(run, time_scale), asyncio.get_running_loop()))
        return web.json_response({"events": [e.to_dict() for e in run.events]}, status=202)

    async def _admin_cancel_timelines(self, request: web.Request) -> web.Response:
        cancelled = len(self._timeline_tasks)
        for task in list(self._timeline_tasks):
            task.cancel()
        return web.json_response({"cancelled": cancelled})


class _ChatService:
    """Answers chat completions for every region, applying the faults in force.

    Shares the fault book, the stats and the random generators with its
    :class:`LLMSimulator`; runs only on the simulator's loop.
    """

    def __init__(
        self,
        book: FaultBook,
        stats: _Stats,
        fault_rng: random.Random,
        latency_rng: random.Random,
        bearer_tokens: frozenset[str] | None,
    ) -> None:
        self._book = book
        self._stats = stats
        self._fault_rng = fault_rng
        self._latency_rng = latency_rng
        self._bearer_tokens = bearer_tokens
        self._stopping: asyncio.Event | None = None

    def started(self, stopping: asyncio.Event) -> None:
        """Called on the loop at start: hung requests end when ``stopping`` is set."""
        self._stopping = stopping

    async def chat_deployments(self, request: web.Request) -> web.StreamResponse:
        api_version = request.query.get("api-version")
        if api_version is None:
            return self._reply_error(request, None, _Reject(404, _azure_error("404", _MSG_NOT_FOUND)))
        if not _supported_api_version(api_version):
            return self._reply_error(request, None, _Reject(400, _azure_error("BadRequest", "API version not supported")))
        return await self._chat(request, request.match_info["deployment"], api_version, v1=False)

    async def chat_v1(self, request: web.Request) -> web.StreamResponse:
        api_version = request.query.get("api-version", "v1")
        if api_version not in _V1_API_VERSIONS:
            return self._reply_error(request, None, _Reject(400, _azure_error("BadRequest", "API version not supported")))
        return await self._chat(request, None, api_version, v1=True)

    async def models_deployments(self, request: web.Request) -> web.StreamResponse:
        """``GET /openai/models?api-version=...``: Azure's Models - List, zero tokens (the liveness check)."""
        api_version = request.query.get("api-version")
        if api_version is None:
            return self._reply_error(request, None, _Reject(404, _azure_error("404", _MSG_NOT_FOUND)))
        if not _supported_api_version(api_version):
            return self._reply_error(request, None, _Reject(400, _azure_error("BadRequest", "API version not supported")))
        return await self._models(request, api_version)

    async def models_v1(self, request: web.Request) -> web.StreamResponse:
        """``GET /openai/v1/models``: the v1 API's list of models (api-version optional)."""
        api_version = request.query.get("api-version", "v1")
        if api_version not in _V1_API_VERSIONS:
            return self._reply_error(request, None, _Reject(400, _azure_error("BadRequest", "API version not supported")))
        return await self._models(request, api_version)

    async def _models(self, request: web.Request, api_version: str) -> web.StreamResponse:
        """The models the region serves. Honours the region-wide faults that reach the service's
        front end (down, hang, auth, error); throttling, slowness and wrong answers are the model's
        and do not show here, as on Azure where this list is not metered by a deployment's quota."""
        runtime = request.app[_RUNTIME_KEY]
        call = _Call(
            runtime=runtime,
            deployment_name=None,
            api_version=api_version,
            v1=api_version in _V1_API_VERSIONS,
            vantage=request.headers.get(VANTAGE_HEADER),
            headers=self._base_headers(runtime),
            arrived=asyncio.get_running_loop().time(),
            faults=self._book.for_request(runtime.name, None) if self._book else {},
        )
        try:
            await self._connection_faults(request, call)
            self._check_auth(request, call)
            error = self._fires(call, "error")
            if error is not None:
                status = choose_status(error, self._fault_rng)
                code, message = _SERVER_ERRORS[status]
                raise _Reject(status, _azure_error(code, message))
        except _Reject as reject:
            return self._reply_error(request, call, reject)
        created = int(time.time())
        data = [
            {
                "id": d.model,
                "object": "model",
                "created": created,
                "created_at": created,
                "status": "succeeded",
                "lifecycle_status": "generally-available",
                "capabilities": {"chat_completion": True, "completion": False, "embeddings": False, "fine_tune": False, "inference": True},
            }
            for d in runtime.region.deployments
        ]
        self._stats.record(runtime.name, None, 200)
        return web.Response(
            body=_dumps({"data": data, "object": "list"}), status=200, headers=call.headers, content_type="application/json"
        )

    def _reply_error(self, request: web.Request, call: _Call | None, reject: _Reject) -> web.Response:
        runtime = request.app[_RUNTIME_KEY]
        headers = call.headers if call is not None else self._base_headers(runtime)
        self._stats.record(runtime.name, call.deployment_name if call else None, reject.status)
        return web.Response(
            body=_dumps(reject.body), status=reject.status, headers={**headers, **reject.headers}, content_type="application/json"
        )

    def _base_headers(self, runtime: _RegionRuntime) -> dict[str, str]:
        return {
            "apim-request-id": str(uuid.uuid4()),
            "x-request-id": str(uuid.uuid4()),
            "x-ms-region": runtime.region.azure_region,
            "x-content-type-options": "nosniff",
        }

    async def _chat(self, request: web.Request, deployment_name: str | None, api_version: str, v1: bool) -> web.StreamResponse:
        runtime = request.app[_RUNTIME_KEY]
        arrived = asyncio.get_running_loop().time()
        raw = await request.read()
        body = _parse_body(raw)
        if v1 and body is not None and isinstance(body.get("model"), str):
            deployment_name = body["model"]
        call = _Call(
            runtime=runtime,
            deployment_name=deployment_name,
            api_version=api_version,
            v1=v1,
            vantage=request.headers.get(VANTAGE_HEADER),
            headers=self._base_headers(runtime),
            arrived=arrived,
            faults=self._book.for_request(runtime.name, deployment_name) if self._book else {},
        )
        try:
            await self._connection_faults(request, call)
            self._check_auth(request, call)
            self._resolve(call, body)
            self._validate(call)
            self._service_faults(call)
            completion = self._plan(call)
            self._admit(call, completion)
        except _Reject as reject:
            return self._reply_error(request, call, reject)
        ttft_s, per_token_s = self._latency(call, completion)
        if call.body.get("stream") is True:
            return await self._stream(request, call, completion, ttft_s, per_token_s)
        return await self._respond_json(request, call, completion, ttft_s, per_token_s)

    def _fires(self, call: _Call, kind: str) -> Fault | None:
        fault = call.faults.get(kind)
        if fault is not None and fault_fires(fault, call.vantage, self._fault_rng):
            return fault
        return None

    async def _connection_faults(self, request: web.Request, call: _Call) -> None:
        if self._fires(call, "down"):
            self._stats.record(call.runtime.name, call.deployment_name, "reset")
            _reset_transport(request.transport)
            await _wait_forever()
        if self._fires(call, "hang"):
            self._stats.record(call.runtime.name, call.deployment_name, "hang")
            assert self._stopping is not None
            await self._stopping.wait()
            _reset_transport(request.transport)
            await _wait_forever()

    def _check_auth(self, request: web.Request, call: _Call) -> None:
        uses_key = "api-key" in request.headers
        if self._fires(call, "auth") or not self._authorized(request, call.runtime):
            message = _MSG_KEY_DENIED if uses_key or "Authorization" not in request.headers else _MSG_TOKEN_DENIED
            raise _Reject(401, _azure_error("401", message))

    def _authorized(self, request: web.Request, runtime: _RegionRuntime) -> bool:
        key = request.headers.get("api-key")
        if key is not None:
            return hmac.compare_digest(key.encode(), runtime.region.api_key.encode())
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        if self._bearer_tokens is None:
            return True
        return token in self._bearer_tokens or hmac.compare_digest(token.encode(), runtime.region.api_key.encode())

    def _resolve(self, call: _Call, body: dict[str, Any] | None) -> None:
        region = call.runtime.region
        if not call.v1 and region.deployment(call.deployment_name or "") is None:
            raise _Reject(404, _azure_error("DeploymentNotFound", _MSG_DEPLOYMENT_NOT_FOUND))
        if body is None:
            raise _Reject(400, _invalid_request("We could not parse the JSON body of your request."))
        call.body = body
        if call.deployment_name is None:
            raise _Reject(400, _invalid_request("you must provide a model parameter", param="model"))
        call.deployment = region.deployment(call.deployment_name)
        if call.deployment is None:
            raise _Reject(404, _azure_error("DeploymentNotFound", _MSG_DEPLOYMENT_NOT_FOUND))
        call.headers["x-ms-deployment-name"] = call.deployment.name

    def _validate(self, call: _Call) -> None:
        body, deployment = call.body, call.deployment
        assert deployment is not None
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Reject(400, _invalid_request("'messages' is a required property and must be a non-empty array", "messages"))
        if deployment.reasoning and body.get("max_tokens") is not None:
            raise _Reject(
                400,
                _invalid_request(
                    "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                    "max_tokens",
                    "unsupported_parameter",
                ),
            )
        temperature = body.get("temperature")
        if deployment.reasoning and temperature is not None and temperature != 1:
            raise _Reject(
                400,
                _invalid_request(
                    f"Unsupported value: 'temperature' does not support {temperature} with this model. "
                    "Only the default (1) value is supported.",
                    "temperature",
                    "unsupported_value",
                ),
            )
        for name in ("max_tokens", "max_completion_tokens"):
            _check_positive_int(body, name)
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            message = f"Invalid type for 'stream': expected a boolean, but got {type(stream).__name__} instead."
            raise _Reject(400, _invalid_request(message, "stream", "invalid_type"))
        if body.get("stream_options") is not None and stream is not True:
            message = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
            raise _Reject(400, _invalid_request(message, "stream_options"))

    def _service_faults(self, call: _Call) -> None:
        throttle = self._fires(call, "throttle")
        if throttle is not None:
            if call.deployment is None:
                raise RuntimeError("service faults are checked after _resolve has found the deployment")
            limiter = call.runtime.limiters[call.deployment.name]
            raise self._too_many(call, throttle.retry_after_s, "token", limiter.headers(exhausted=True))
        error = self._fires(call, "error")
        if error is not None:
            status = choose_status(error, self._fault_rng)
            code, message = _SERVER_ERRORS[status]
            raise _Reject(status, _azure_error(code, message))

    def _too_many(self, call: _Call, retry_after_s: float, limit: str, headers: dict[str, str]) -> _Reject:
        seconds = max(1, math.ceil(retry_after_s))
        assert call.deployment is not None
        message = rate_limit_message(call.api_version, limit, seconds, call.deployment.ptu)
        return _Reject(
            429,
            _azure_error("429", message),
            {**headers, "retry-after": str(seconds), "retry-after-ms": str(max(1, math.ceil(retry_after_s * 1000)))},
        )

    def _plan(self, call: _Call) -> _Completion:
        deployment, body = call.deployment, call.body
        assert deployment is not None
        messages = body["messages"]
        tokens = tokenize(answer_for(messages, wrong=self._fires(call, "bad_content") is not None))
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        reasoning = deployment.reasoning_tokens if deployment.reasoning else 0
        finish: str | None = "stop"
        if limit is not None:
            reasoning = min(reasoning, limit)
            if len(tokens) > limit - reasoning:
                tokens, finish = tokens[: limit - reasoning], "length"
        completion_tokens = reasoning + len(tokens)
        filtered = self._fires(call, "content_filter") is not None
        if filtered:
            tokens, finish = tokens[: len(tokens) // 2], "content_filter"
        elif self._fires(call, "truncate") is not None:
            tokens, finish = tokens[: math.ceil(len(tokens) / 2)], None
        return _Completion(
            tokens=tuple(tokens),
            finish_reason=finish,
            filtered=filtered,
            prompt_tokens=estimate_prompt_tokens(messages),
            completion_tokens=completion_tokens,
            reasoning_tokens=reasoning,
        )

    def _admit(self, call: _Call, completion: _Completion) -> None:
        assert call.deployment is not None
        limiter = call.runtime.limiters[call.deployment.name]
        admission = limiter.admit(completion.prompt_tokens + completion.completion_tokens)
        headers = limiter.headers()
        if not admission.ok:
            raise self._too_many(call, admission.retry_after_s, admission.limit, headers)
        call.headers.update(headers)

    def _latency(self, call: _Call, completion: _Completion) -> tuple[float, float]:
        """(seconds to the first token, seconds per further token)."""
        deployment = call.deployment
        assert deployment is not None
        ttft_ms, per_token_ms = deployment.ttft_ms, deployment.per_token_ms
        if deployment.jitter_ms:
            ttft_ms = max(0.0, ttft_ms + self._latency_rng.uniform(-deployment.jitter_ms, deployment.jitter_ms))
        ttft_ms += completion.reasoning_tokens * per_token_ms
        slow = self._fires(call, "slow")
        if slow is not None:
            if slow.multiplier is not None:
                ttft_ms, per_token_ms = ttft_ms * slow.multiplier, per_token_ms * slow.multiplier
            if slow.ttft_ms is not None:
                ttft_ms = slow.ttft_ms
        return ttft_ms / 1000.0, per_token_ms / 1000.0

    async def _respond_json(
        self, request: web.Request, call: _Call, completion: _Completion, ttft_s: float, per_token_s: float
    ) -> web.StreamResponse:
        await _sleep_until(call.arrived + ttft_s + per_token_s * max(0, len(completion.tokens) - 1))
        body = _dumps(self._completion_body(call, completion))
        runtime = call.runtime
        if completion.finish_reason is None:  # truncate: half a body, then the connection closes
            self._stats.record(runtime.name, call.deployment_name, "truncated")
            response = web.StreamResponse(status=200, headers=call.headers)
            response.content_type = "application/json"
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            if request.transport is not None:
                request.transport.close()
            await _wait_forever()
        self._stats.record(runtime.name, call.deployment_name, 200)
        return web.Response(body=body, status=200, headers=call.headers, content_type="application/json")

    def _completion_body(self, call: _Call, completion: _Completion) -> dict[str, Any]:
        assert call.deployment is not None
        return {
            "choices": [
                {
                    "content_filter_results": _CONTENT_FILTER_HIT if completion.filtered else _CONTENT_FILTER_SAFE,
                    "finish_reason": completion.finish_reason or "stop",
                    "index": 0,
                    "logprobs": None,
                    "message": {"annotations": [], "content": "".join(completion.tokens), "refusal": None, "role": "assistant"},
                }
            ],
            "created": int(time.time()),
            "id": _completion_id(),
            "model": call.deployment.model,
            "object": "chat.completion",
            "prompt_filter_results": _PROMPT_FILTER_RESULTS,
            "system_fingerprint": _FINGERPRINT,
            "usage": completion.usage(),
        }

    async def _stream(
        self, request: web.Request, call: _Call, completion: _Completion, ttft_s: float, per_token_s: float
    ) -> web.StreamResponse:
        assert call.deployment is not None
        await _sleep_until(call.arrived + ttft_s)
        response = web.StreamResponse(status=200, headers=call.headers)
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        await response.prepare(request)
        for index, group in enumerate(self._stream_groups(call, completion, per_token_s > 0)):
            if index > 0 and per_token_s > 0:
                await asyncio.sleep(per_token_s)
            await response.write(group)
        self._stats.record(call.runtime.name, call.deployment_name, 200 if completion.finish_reason else "truncated")
        await response.write_eof()
        return response

    def _stream_groups(self, call: _Call, completion: _Completion, paced: bool) -> list[bytes]:
        """SSE events grouped by write: the first token comes with the head, then one token per write when paced."""
        assert call.deployment is not None
        maker = _ChunkMaker(_completion_id(), int(time.time()), call.deployment.model, _FINGERPRINT)
        head = [maker.prompt_filter(), maker.delta({"content": "", "refusal": None, "role": "assistant"})]
        tokens = [maker.delta({"content": t}, cfr=_CONTENT_FILTER_SAFE) for t in completion.tokens]
        tail: list[bytes] = []
        if completion.finish_reason is not None:
            cfr = _CONTENT_FILTER_HIT if completion.filtered else {}
            tail.append(maker.delta({}, completion.finish_reason, cfr))
            options = call.body.get("stream_options")
            if isinstance(options, Mapping) and options.get("include_usage") is True:
                tail.append(maker.usage(completion.usage()))
            tail.append(_DONE)
        if not paced:
            return [b"".join(head + tokens + tail)]
        groups = [b"".join(head + tokens[:1]), *tokens[1:]]
        groups[-1] += b"".join(tail)
        return groups


_FINGERPRINT = "fp_" + secrets.token_hex(5)


_ID_ALPHABET = string.ascii_letters + string.digits
_ID_RNG = random.Random()


def _completion_id() -> str:
    return "chatcmpl-" + "".join(_ID_RNG.choices(_ID_ALPHABET, k=29))


def _supported_api_version(value: str) -> bool:
    match = _API_VERSION.match(value)
    return match is not None and int(match.group(1)) >= 2023


def _parse_body(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _check_positive_int(body: Mapping[str, Any], name: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Reject(
            400,
            _invalid_request(
                f"Invalid type for '{name}': expected an integer, but got {type(value).__name__} instead.", name, "invalid_type"
            ),
        )
    if value < 1:
        raise _Reject(
            400,
            _invalid_request(
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got {value} instead.",
                name,
                "integer_below_min_value",
            ),
        )


def _reset_transport(transport: asyncio.BaseTransport | None) -> None:
    """Close a connection with a TCP reset (SO_LINGER 0), not a graceful FIN."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    else:
        transport.close()


async def _sleep_until(deadline: float) -> None:
    """Sleep until a loop time (not for a duration, so time spent parsing is not added on top)."""
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _wait_forever() -> NoReturn:
    """Park a handler whose connection is gone; aiohttp cancels it when the connection is lost."""
    while True:
        await asyncio.sleep(3600)


def _admin_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _as_fault(fault: Fault | Mapping[str, Any] | str) -> Fault:
    if isinstance(fault, Fault):
        return fault
    if isinstance(fault, str):
        return Fault(fault)
    return Fault.from_dict(fault)


def _regions_from_config(cfg: Any) -> list[SimRegion]:
    regions: list[SimRegion] = []
    for region in cfg.regions:
        deployments: dict[str, SimDeployment] = {}
        port = 0
        api_key = DEFAULT_API_KEY
        for endpoint in region.endpoints:
            name = (endpoint.model or endpoint.deployment) if endpoint.api_style == "v1" else endpoint.deployment
            reasoning = getattr(endpoint, "token_param", None) == "max_completion_tokens"
            template = _DEPLOYMENT_TEMPLATES[2] if reasoning else _DEPLOYMENT_TEMPLATES[0]
            deployments.setdefault(name, replace(template, name=name))
            parts = urlsplit(endpoint.base_url)
            if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.port:
                port = port or parts.port
            env = getattr(endpoint.auth, "env", None)
            if env and os.environ.get(env):
                api_key = os.environ[env]
        label = _LABEL_BY_NAME.get(region.azure_region, region.azure_region)
        regions.append(SimRegion(region.name, list(deployments.values()), azure_region=label, api_key=api_key, port=port))
    return regions


# --------------------------------------------------------------------------- process entry point


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="regionguard sim llm", description="Simulated Azure OpenAI regions.")
    p.add_argument("--config", help="regionguard config file to take the regions from")
    p.add_argument("--regions", type=int, default=3, help="number of regions when no --config (default 3)")
    p.add_argument("--deployments", type=int, default=2, help="deployments per region when no --config (default 2)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--base-port", type=int, default=0, help="first region port (0 = ephemeral ports)")
    p.add_argument("--admin-port", type=int, default=0, help="admin-only port (0 = ephemeral)")
    p.add_argument("--seed", default=None)
    p.add_argument("--api-key", default=None, help=f"api key of every region (default {DEFAULT_API_KEY!r})")
    p.add_argument("--zero-latency", action="store_true", help="TTFT, per-token time and jitter all 0")
    p.add_argument("--rpm", type=int, default=None, help="requests/min of every deployment")
    p.add_argument("--tpm", type=int, default=None, help="tokens/min of every deployment")
    p.add_argument("--timeline", help="YAML/JSON file: a list of timeline events to run")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    return p


def _regions_from_args(args: argparse.Namespace) -> list[SimRegion]:
    if args.config:
        from controlplane.config import load_settings  # imported late: only the CLI path needs it

        regions = _regions_from_config(load_settings(args.config))
    else:
        regions = default_regions(args.regions, args.deployments)
    out = []
    for index, region in enumerate(regions):
        overrides: dict[str, Any] = {}
        if args.zero_latency:
            overrides.update(ttft_ms=0.0, per_token_ms=0.0, jitter_ms=0.0)
        if args.rpm is not None:
            overrides["rpm"] = args.rpm
        if args.tpm is not None:
            overrides["tpm"] = args.tpm
        deployments = [replace(d, **overrides) for d in region.deployments]
        port = args.base_port + index if args.base_port else region.port
        out.append(replace(region, deployments=deployments, port=port, api_key=args.api_key or region.api_key))
    return out


def _load_timeline(path: str) -> list[Any]:
    import yaml  # pyyaml reads JSON too

    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    events = data.get("events") if isinstance(data, dict) else data
    if not isinstance(events, list):
        raise ValueError(f"{path}: expected a list of events (or a mapping with 'events')")
    return events


def main(argv: Sequence[str] | None = None) -> int:
    """Run simulated regions until SIGINT/SIGTERM (or ``--duration``).

    Writes one JSON line to stdout once serving:
    ``{"admin_url": ..., "regions": {name: base_url}}``.
    """
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        regions = _regions_from_args(args)
        events = _load_timeline(args.timeline) if args.timeline else None
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    stop = threading.Event()
    _install_signal_handlers(stop)
    with LLMSimulator(regions, host=args.host, seed=args.seed, admin_port=args.admin_port) as sim:
        if events is not None:
            sim.run_timeline(events, time_scale=args.time_scale)
        ready = {"admin_url": sim.admin_url, "regions": {r.name: sim.base_url(r.name) for r in regions}}
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        stop.wait(timeout=args.duration)
    return 0


def _install_signal_handlers(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())


if __name__ == "__main__":
    sys.exit(main())
