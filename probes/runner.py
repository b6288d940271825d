"""Probe every configured LLM endpoint, concurrently and on an adaptive schedule.

- One pooled HTTP/1.1 keep-alive ``httpx.AsyncClient`` per endpoint host,
  ``probe.concurrency`` probes at once at most, a hard deadline per probe.
- Each endpoint has its own next-due time; after every probe the next one is
  ``interval * (1 ± jitter)`` away so endpoints don't synchronise.
- The cadence -- normal interval, the fast interval while an endpoint is
  *suspect*, jitter, the first probes spread out -- is
  :mod:`controlplane.engine.cadence`, the rule replay runs too. The health
  engine can drive the fast interval instead through the ``suspect`` hook
  (endpoint id -> bool), which then replaces the built-in rule.

Results go to the ``sink`` in batches (a list's ``extend`` in tests, the store
in production). The sink is called on the event loop: a slow sink should
queue, not write synchronously.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from controlplane.config import Settings
from controlplane.domain import Clock, ProbeResult, SystemClock
from controlplane.engine.cadence import Cadence, ProbeSchedule
from probes.auth import ProbeAuth, TokenCache
from probes.base import ProbeTarget, failed_result
from probes.llm import ClientPool, LLMProbe

log = logging.getLogger(__name__)

Sink = Callable[[list[ProbeResult]], None]
SuspectHook = Callable[[str], bool]


@dataclass(slots=True, kw_only=True)
class EndpointSchedule(ProbeSchedule):
    """One endpoint's :class:`~controlplane.engine.cadence.ProbeSchedule` (``next_due`` in monotonic seconds)."""

    target: ProbeTarget
    in_flight: bool = False


class ProbeRunner:
    """Runs probes against every endpoint of ``settings`` and feeds a sink."""

    def __init__(
        self,
        settings: Settings,
        sink: Sink | None = None,
        clock: Clock | None = None,
        credential: Any | None = None,
        rng: random.Random | None = None,
        *,
        suspect: SuspectHook | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        environ: Mapping[str, str] | None = None,
        batch_max: int = 200,
        batch_wait: float = 1.0,
    ) -> None:
        self.settings = settings
        self._sink = sink
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._suspect_hook = suspect
        self._batch_max = batch_max
        self._batch_wait = batch_wait
        tokens = TokenCache(credential, now=lambda: self._clock.now().timestamp())
        self.auth = ProbeAuth(tokens, environ=environ)
        self._clients = ClientPool(settings.probe, transport)
        self._probe = LLMProbe(settings.probe, self._clients, self.auth, self._clock, self._rng)
        self._cadence = Cadence.of(settings)
        self._schedules = {t.id: EndpointSchedule(target=t) for t in targets(settings)}
        self._started = False
        self._semaphore: asyncio.Semaphore | None = None
        self._semaphore_loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ introspection

    @property
    def endpoint_ids(self) -> list[str]:
        return list(self._schedules)

    @property
    def client_hosts(self) -> int:
        """How many pooled HTTP clients (one per endpoint host) are open."""
        return self._clients.hosts

    def schedule(self, endpoint_id: str) -> EndpointSchedule:
        return self._schedules[endpoint_id]

    def is_suspect(self, endpoint_id: str) -> bool:
        if self._suspect_hook is not None:
            return bool(self._suspect_hook(endpoint_id))
        return self._schedules[endpoint_id].suspect

    def interval_for(self, endpoint_id: str) -> float:
        return self._schedules[endpoint_id].interval(self._cadence, self.is_suspect(endpoint_id))

    # ------------------------------------------------------------ one round

    async def run_round(self, region: str | None = None) -> list[ProbeResult]:
        """Probe every endpoint (of ``region``) now; results in config order."""
        if region is not None:
            self.settings.region(region)  # KeyError for an unknown region
        chosen = [s for s in self._schedules.values() if region is None or s.target.region == region]
        now = time.monotonic()
        results = list(await asyncio.gather(*(self._probe_one(s, now, time.monotonic) for s in chosen)))
        self._emit(results)
        return results

    def run_round_sync(self, region: str | None = None) -> list[ProbeResult]:
        """:meth:`run_round` for callers without an event loop (the CLI)."""

        async def round_and_close() -> list[ProbeResult]:
            try:
                return await self.run_round(region)
            finally:
                await self._clients.aclose()

        return asyncio.run(round_and_close())

    # ------------------------------------------------------------ scheduled

    async def tick(self, now: float | None = None) -> list[ProbeResult]:
        """Probe the endpoints due at ``now`` (monotonic seconds) and wait for them.

        For an external scheduler calling every second or so. The first call
        spreads the first probes over ``jitter * interval``.
        """
        clock: Callable[[], float] = time.monotonic
        if now is None:
            now = time.monotonic()
        else:
            fixed = now
            clock = lambda: fixed  # noqa: E731 - a caller-driven time stands still during the tick
        self._start(now)
        due = [s for s in self._schedules.values() if s.next_due <= now and not s.in_flight]
        results = list(await asyncio.gather(*(self._probe_one(s, s.next_due, clock) for s in due)))
        self._emit(results)
        return results

    def next_wake(self) -> float | None:
        """The earliest next-due time of an endpoint not being probed."""
        idle = [s.next_due for s in self._schedules.values() if not s.in_flight]
        return min(idle) if idle else None

    async def run_forever(self, stop_event: asyncio.Event) -> None:
        """Probe each endpoint when due until ``stop_event`` is set.

        Probes start when due (a slow probe holds up no other endpoint);
        results are handed to the sink when ``batch_max`` have gathered or
        the oldest has waited ``batch_wait`` seconds, and once more on stop,
        after the probes in flight have ended (each within its deadline).
        """
        loop = asyncio.get_running_loop()
        self._start(time.monotonic())
        wakeup = asyncio.Event()
        finished: list[ProbeResult] = []
        running: set[asyncio.Task[None]] = set()

        async def probe(s: EndpointSchedule) -> None:
            try:
                finished.append(await self._probe_one(s, s.next_due, time.monotonic))
            finally:
                wakeup.set()

        async def watch_stop() -> None:
            await stop_event.wait()
            wakeup.set()

        stopper = asyncio.create_task(watch_stop())
        batch: list[ProbeResult] = []
        batch_since = 0.0
        try:
            while not stop_event.is_set():
                now = time.monotonic()
                for s in self._schedules.values():
                    if s.next_due <= now and not s.in_flight:
                        s.in_flight = True  # before the task first runs, so it is launched once
                        task = asyncio.create_task(probe(s))
                        running.add(task)
                        task.add_done_callback(running.discard)
                if finished:
                    batch_since = batch_since if batch else now
                    batch += finished
                    finished.clear()
                if batch and (len(batch) >= self._batch_max or now - batch_since >= self._batch_wait):
                    self._emit(batch)
                    batch = []
                wake = self.next_wake()
                if batch:
                    flush_at = batch_since + self._batch_wait
                    wake = flush_at if wake is None else min(wake, flush_at)
                wakeup.clear()
                timer = loop.call_later(max(0.0, wake - time.monotonic()), wakeup.set) if wake is not None else None
                await wakeup.wait()
                if timer is not None:
                    timer.cancel()
            if running:
                await asyncio.gather(*running)
        finally:
            for task in (*running, stopper):  # only left when run_forever itself was cancelled
                task.cancel()
            self._emit(batch + finished)

    # ------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        await self._clients.aclose()
        self.auth.tokens.close()

    async def __aenter__(self) -> ProbeRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ internals

    def _start(self, now: float) -> None:
        if self._started:
            return
        self._started = True
        for s in self._schedules.values():
            s.next_due = self._cadence.first_due(now, self._rng)

    def _limit(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore_loop is not loop:
            self._semaphore = asyncio.Semaphore(self.settings.probe.concurrency)
            self._semaphore_loop = loop
        return self._semaphore

    async def _probe_one(self, s: EndpointSchedule, due: float, now: Callable[[], float]) -> ProbeResult:
        s.in_flight = True
        try:
            async with self._limit():
                try:
                    result = await self._probe.run(s.target)
                except Exception as exc:  # the Probe protocol says never; a bug must not cost the result or the schedule
                    result = failed_result(s.target, self.settings.probe.vantage, self._clock.now(), exc)
        finally:
            s.in_flight = False
        s.observe(result.outcome, self._cadence)
        s.schedule_next(self._cadence, due, now(), self._rng, self.is_suspect(s.target.id))
        return result

    def _emit(self, results: list[ProbeResult]) -> None:
        if not results or self._sink is None:
            return
        try:
            self._sink(list(results))
        except Exception:
            log.exception("probe result sink failed for %d result(s)", len(results))


def targets(settings: Settings) -> list[ProbeTarget]:
    """Every LLM endpoint of every region, in config order."""
    return [ProbeTarget(region.name, endpoint) for region in settings.regions for endpoint in region.endpoints]
