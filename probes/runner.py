"""Probe every configured LLM endpoint, concurrently and on an adaptive schedule.

- One pooled HTTP/1.1 keep-alive ``httpx.AsyncClient`` per endpoint host,
  ``probe.concurrency`` probes at once at most, a hard deadline per probe.
- Each endpoint has its own next-due time; the cadence -- the step from the
  evidence (confirmations ``confirm_gap`` apart while undecided, Retry-After,
  fast while degraded, normal otherwise), jitter, the first probes spread
  out -- is :mod:`controlplane.engine.cadence`, the rule replay runs too,
  with this runner's own :class:`~controlplane.engine.cadence.ProberView`.
  The ``suspect`` hook (endpoint id -> bool) replaces it with "fast or
  normal interval" when given.
- **Liveness checks**: every ``liveness_interval`` each Azure OpenAI resource
  also gets a zero-token models-list request (:mod:`probes.liveness`) whose
  result counts for every deployment on it; one that
  disagrees with the view makes the LLM probe due at once. Liveness results
  go to ``liveness_sink``; they never change a state by themselves.
- **A resource's deployments together**
  (:class:`~controlplane.engine.cadence.ResourceRounds`, the rule replay runs
  too): one jitter draw per resource and round; the first connect error,
  timeout or 5xx of a run pulls the siblings into its round; a sibling whose
  probe of the round is still out gets one overlapping confirmation (a hedge).
- **Overlapping confirmations**: while undecided, the next confirmation goes
  out ``confirm_gap`` after the last even if that one has not answered (at
  most ``MAX_OVERLAPPING`` more), so a hung probe does not hold the verdict
  for a whole probe timeout. Replay does the same.
- **News**: a batch with a result that changed the view is handed to the
  sink ``NEWS_SETTLE_S`` (0.25 s) after it, neither after ``batch_wait`` nor
  sooner, so the results of that moment (the other endpoints of the region)
  come with it; then ``on_news`` is called. When a batch goes is
  :class:`~controlplane.engine.cadence.Handover`, the rule replay runs too.

Results go to the ``sink`` in batches (a list's ``extend`` in tests, the store
in production). The sink is called on the event loop: a slow sink should
queue, not write synchronously.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from controlplane.config import Settings
from controlplane.domain import Clock, LivenessResult, ProbeResult, SystemClock
from controlplane.engine.cadence import (
    BATCH_MAX,
    BATCH_WAIT_S,
    MAX_OVERLAPPING,
    Cadence,
    Handover,
    LivenessGroups,
    ProberView,
    ProbeSchedule,
    ResourceRounds,
)
from probes.auth import ProbeAuth, TokenCache
from probes.base import ProbeTarget, failed_result
from probes.liveness import LivenessCheck
from probes.llm import ClientPool, LLMProbe

log = logging.getLogger(__name__)

Sink = Callable[[list[ProbeResult]], None]
LivenessSink = Callable[[LivenessResult], None]
SuspectHook = Callable[[str], bool]


@dataclass(slots=True, kw_only=True)
class EndpointSchedule(ProbeSchedule):
    """One endpoint's :class:`~controlplane.engine.cadence.ProbeSchedule` (``next_due`` in monotonic seconds)."""

    target: ProbeTarget
    liveness_in_flight: bool = False
    overlaps: int = 0  # overlapping confirmations in flight (they do not own the schedule)
    last_launch: float = 0.0  # monotonic seconds: the last LLM probe launched


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
        batch_max: int = BATCH_MAX,
        batch_wait: float = BATCH_WAIT_S,
        liveness_sink: LivenessSink | None = None,
        on_news: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._sink = sink
        self._liveness_sink = liveness_sink
        self._on_news = on_news
        self.view = ProberView(settings)  # this vantage's own view of its endpoints: it sets the cadence
        self._news = False
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._suspect_hook = suspect
        self._batch_max = batch_max
        self._batch_wait = batch_wait
        tokens = TokenCache(credential, now=lambda: self._clock.now().timestamp(), deadline_s=settings.probe.timeout)
        self.auth = ProbeAuth(tokens, environ=environ)
        self._clients = ClientPool(settings.probe, transport)
        self._probe = LLMProbe(settings.probe, self._clients, self.auth, self._clock, self._rng)
        self._liveness = LivenessCheck(settings.probe, self._clients, self.auth, self._clock)
        self._cadence = Cadence.of(settings)
        self._schedules = {t.id: EndpointSchedule(target=t) for t in targets(settings)}
        self._liveness_groups = LivenessGroups.of(settings)  # the endpoint that checks a resource -> all on it
        # a resource's deployments probed together: one jitter draw per round, pulled into a sibling's failing round
        self._rounds = ResourceRounds(self._cadence, self._liveness_groups, dict(self._schedules), self.view)
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

    @property
    def pooled_connections(self) -> tuple[int, int]:
        """How many connections those clients' pools hold, and how many of them are idle."""
        return self._clients.pooled_connections()

    def schedule(self, endpoint_id: str) -> EndpointSchedule:
        return self._schedules[endpoint_id]

    def _hook(self, endpoint_id: str) -> bool | None:
        return None if self._suspect_hook is None else bool(self._suspect_hook(endpoint_id))

    def is_suspect(self, endpoint_id: str) -> bool:
        """Is this endpoint probed sooner than the normal interval?"""
        return self.interval_for(endpoint_id) < self._cadence.interval - 1e-9

    def interval_for(self, endpoint_id: str) -> float:
        """Seconds from this endpoint's last probe to its next one (before jitter)."""
        return self._schedules[endpoint_id].interval(self._cadence, self._hook(endpoint_id), self.view.step(endpoint_id))

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
        results = list(await asyncio.gather(*(self._probe_one(s, s.round, clock) for s in due)))
        self._emit(results)
        return results

    def next_wake(self) -> float | None:
        """The earliest next-due time (LLM probe or liveness check) of an endpoint not being probed."""
        idle = [s.next_due for s in self._schedules.values() if not s.in_flight]
        if self._liveness_on:
            idle += [s.liveness_due for s in self._checkers() if not s.liveness_in_flight and not s.in_flight]
        idle += [s.last_launch + self._cadence.confirm_gap for s in self._schedules.values() if self._overlap_due(s, math.inf)]
        idle += [s.hedge_at for s in self._schedules.values() if s.hedge_at is not None and s.hedge_due(math.inf)]
        return min(idle) if idle else None

    def _overlap_due(self, s: EndpointSchedule, now: float) -> bool:
        """While the evidence is undecided, the next confirmation goes out ``confirm_gap`` after the last
        one even if that one has not answered (a hung probe must not hold the verdict for a timeout)."""
        gap = self._cadence.confirm_gap
        return (
            s.in_flight
            and s.overlaps < MAX_OVERLAPPING
            and now - s.last_launch >= gap
            and self._suspect_hook is None
            and self.view.step(s.target.id) <= gap + 1e-9
        )

    async def _overlap_one(self, s: EndpointSchedule, launched: float | None = None) -> ProbeResult:
        launched = s.last_launch if launched is None else launched  # its own round: it does not own the schedule
        try:
            async with self._limit():
                try:
                    result = await self._probe.run(s.target)
                except Exception as exc:  # the Probe protocol says never
                    result = failed_result(s.target, self.settings.probe.vantage, self._clock.now(), exc)
        finally:
            s.overlaps -= 1
        done = self._rounds.finished(result, launched, time.monotonic(), self._rng, owner=False)
        self._news = self._news or done.news
        return result

    @property
    def _liveness_on(self) -> bool:
        return self._cadence.liveness_interval > 0

    def _checkers(self) -> list[EndpointSchedule]:
        """The schedules that run the liveness checks: one endpoint per Azure OpenAI resource."""
        return [self._schedules[eid] for eid in self._liveness_groups]

    async def check_round(self) -> list[LivenessResult]:
        """One liveness check of every resource now, as the result of each endpoint (for the CLI and tests)."""
        done = await asyncio.gather(*(self._check_one(s) for s in self._checkers()))
        by_endpoint = {r.endpoint_id: r for results in done for r in results}
        return [by_endpoint[eid] for eid in self._schedules]

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

        async def probe(s: EndpointSchedule, round_: float) -> None:
            try:
                finished.append(await self._probe_one(s, round_, time.monotonic))
            finally:
                wakeup.set()

        async def check(s: EndpointSchedule) -> None:
            try:
                await self._check_one(s)
            finally:
                wakeup.set()

        async def confirm(s: EndpointSchedule, launched: float | None = None) -> None:
            try:
                finished.append(await self._overlap_one(s, launched))
            finally:
                wakeup.set()

        async def watch_stop() -> None:
            await stop_event.wait()
            wakeup.set()

        stopper = asyncio.create_task(watch_stop())
        handover = Handover(self._batch_max, self._batch_wait)
        try:
            while not stop_event.is_set():
                now = time.monotonic()
                for s in self._schedules.values():
                    if s.next_due <= now and not s.in_flight:
                        s.in_flight = True  # before the task first runs, so it is launched once
                        s.last_launch = now
                        task = asyncio.create_task(probe(s, s.round))
                        running.add(task)
                        task.add_done_callback(running.discard)
                    elif self._overlap_due(s, now):
                        s.overlaps += 1
                        s.last_launch = now
                        task = asyncio.create_task(confirm(s))
                        running.add(task)
                        task.add_done_callback(running.discard)
                    elif s.hedge_due(now) and s.overlaps < MAX_OVERLAPPING:
                        s.hedge_at = None  # once: a confirmation off the overlap chain (last_launch stays)
                        s.overlaps += 1
                        task = asyncio.create_task(confirm(s, now))
                        running.add(task)
                        task.add_done_callback(running.discard)
                    if (
                        self._liveness_on
                        and s.liveness_due <= now
                        and not s.liveness_in_flight
                        and not s.in_flight
                        and s.target.id in self._liveness_groups
                    ):
                        s.liveness_in_flight = True
                        task = asyncio.create_task(check(s))
                        running.add(task)
                        task.add_done_callback(running.discard)
                if finished:
                    handover.add(finished, now, news=self._news)
                    finished.clear()
                    self._news = False
                due = handover.take(now)
                if due is not None:
                    self._emit(*due)
                wake = self.next_wake()
                flush_at = handover.due_at()
                if flush_at is not None:
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
            batch, news = handover.take_all()
            self._emit(batch + finished, news or self._news)

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
        self._rounds.start(now, self._rng)

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
        # a sibling pulled into this round is due now, a hedge at its hedge_at: the loop launches them when it wakes
        done = self._rounds.finished(result, due, now(), self._rng, suspect=self._hook(s.target.id))
        self._news = self._news or done.news  # this vantage's view changed: the batch goes once the results of this moment are in
        return result

    async def _check_one(self, s: EndpointSchedule) -> list[LivenessResult]:
        """Check ``s``'s resource; the result, as each of its endpoints' (``s`` first)."""
        s.liveness_in_flight = True
        try:
            result = await self._liveness.run(s.target)
        finally:
            s.liveness_in_flight = False
        # the deployments it disagrees with get an LLM probe at once, in one round: only it can move health
        results, _ = self._rounds.checked(result, time.monotonic(), self._rng)
        for each in results:
            if self._liveness_sink is not None:
                try:
                    self._liveness_sink(each)
                except Exception:
                    log.exception("liveness sink failed")
        return results

    def _emit(self, results: list[ProbeResult], news: bool | None = None) -> None:
        """Hand ``results`` to the sink; then, when they hold news (by default: any since the last
        hand-over), call ``on_news``."""
        if news is None:
            news, self._news = self._news, False
        if not results or self._sink is None:
            return
        try:
            self._sink(list(results))
        except Exception:
            log.exception("probe result sink failed for %d result(s)", len(results))
        if news and self._on_news is not None:
            try:
                self._on_news()
            except Exception:
                log.exception("on_news callback failed")


def targets(settings: Settings) -> list[ProbeTarget]:
    """Every LLM endpoint of every region, in config order."""
    return [ProbeTarget(region.name, endpoint) for region in settings.regions for endpoint in region.endpoints]
