"""Health: windows of probe results -> per-vantage states with hysteresis ->
endpoint states after vantage quorum -> region health with a score.

Pure code: time comes from the results (``started_at``) and from the ``now``
given to :meth:`HealthEvaluator.evaluate`; nothing here reads a clock.

Per (endpoint, vantage)
-----------------------
Each result falls in one class, from ``settings.probe``:

* **ok** -- not in ``counts_against_health`` (``ok``, ``content_filtered`` ...);
* **slow** -- ``slow`` when it counts: served, but badly (a *soft* failure);
* **failure** -- every other counted outcome (timeout, connect_error,
  server_error, throttled, truncated, bad_content): a *hard* failure;
* **config problem** -- ``auth_error``, ``not_found``, ``bad_request``: it
  raises ``config_problem`` and an alert but is neither a success nor a
  failure, so it never drains a region by itself.

The window keeps the last ``health.window`` results with running counters
(no re-scan per tick). The state machine:

* ``unhealthy`` (down) after ``failures_to_down`` (K) consecutive failures,
  or when failures make up ``failure_ratio_down`` of the window (at least two
  of them, with the window at least half full);
* ``degraded`` when counted results (failures + slow) make up
  ``degraded_ratio`` of the window and at least two of the last max(3, K)
  results counted (recent, not a stale pile of single losses), or when the
  median TTFT / total time is over ``probe.slow_ttft`` / ``probe.slow_total``;
* up (``unhealthy``/``degraded`` -> better) only after ``successes_to_up``
  (M) consecutive successes **and** ``min_dwell`` seconds since the rule that
  made it bad last held (one stray loss while recovering restarts the M
  count, not the dwell);
* flap damping: going down again within 4 dwells of coming back doubles the
  dwell for the next recovery (up to 8x); a stable spell resets it;
* ``unknown`` until M consecutive successes, or a down/degraded rule, say
  otherwise. One lost probe moves nothing as long as K >= 2.

When to probe (normal or fast interval) is not decided here: that rule is
:mod:`controlplane.engine.cadence`, run by every prober on its own results.

Across vantages
---------------
A vantage that sees ``suspect_vantage_ratio`` of its endpoints (at least two)
failing at once is discounted: its own network is the likelier cause. (When
every vantage is in that position nothing is discounted, so fail-open can see
it.) Results older than ``health.stale_after`` (default two probe intervals)
do not vote. Of the vantages left, ``required = min(n, max(vantage_quorum,
n // 2 + 1))`` must agree: a strict majority, and at least
``vantage_quorum`` of them. So with three vantages, a fault only one of them
sees changes nothing. The endpoint score is the ``required``-th lowest
vantage score (the best score a quorum agrees the endpoint is at most).

Score in [0, 1] = the mean quality of the window's results: a success
counts 1, a failure (throttling included) 0, a slow answer
``(limit / observed)^2`` for its TTFT or total time, whichever is worse. So
30 % throttling scores 0.7 and a 2x TTFT brownout 0.25. Medians are lower
medians: with an even count a single outlier never moves them.

A region is ``unhealthy`` when every endpoint with data is, ``healthy`` when
every one is, ``degraded`` in between, ``unknown`` with no data; its score is
the mean of its endpoints' scores, an unhealthy endpoint counting 0 (it is
not serving, however its last results look).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controlplane.config import Settings
from controlplane.domain import (
    EndpointHealth,
    HealthStateName,
    Outcome,
    ProbeResult,
    RegionHealth,
    Transition,
    as_jsonable,
    endpoint_id,
)
from controlplane.stats import percentile

log = logging.getLogger(__name__)

H = HealthStateName
OK, SOFT, HARD, CONFIG = 0, 1, 2, 3
SOFT_OUTCOMES = frozenset({Outcome.SLOW})
FLAP_WINDOW_DWELLS = 4  # down again within 4 dwells of coming back = a flap
MAX_FLAP_LEVEL = 3

_NAMES: dict[Outcome, tuple[str, str]] = {
    Outcome.OK: ("ok", "ok"),
    Outcome.SLOW: ("slow answer", "slow answers"),
    Outcome.THROTTLED: ("throttled (429)", "throttled (429)"),
    Outcome.SERVER_ERROR: ("server error", "server errors"),
    Outcome.TIMEOUT: ("timeout", "timeouts"),
    Outcome.CONNECT_ERROR: ("connect error", "connect errors"),
    Outcome.TRUNCATED: ("truncated stream", "truncated streams"),
    Outcome.BAD_CONTENT: ("wrong answer", "wrong answers"),
    Outcome.CONTENT_FILTERED: ("content filtered", "content filtered"),
    Outcome.AUTH_ERROR: ("auth error", "auth errors"),
    Outcome.NOT_FOUND: ("not found (404)", "not found (404)"),
    Outcome.BAD_REQUEST: ("bad request (400)", "bad requests (400)"),
}


def outcome_words(outcome: Outcome, n: int = 1) -> str:
    """'timeout' / '3 timeouts' style words for on-call."""
    one, many = _NAMES.get(outcome, (outcome.value, outcome.value))
    return one if n == 1 else many


def _secs(ms: float) -> str:
    s = ms / 1000.0
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"


class _Sample:
    __slots__ = ("at", "code", "error", "outcome", "q", "retry_ms", "status", "total", "ttft")

    def __init__(self, r: ProbeResult, code: int, p: _Policy) -> None:
        self.at = r.started_at
        self.code = code
        self.outcome = r.outcome
        self.ttft = r.ttft_ms if code in (OK, SOFT) else None
        self.total = r.total_ms if code in (OK, SOFT) else None
        self.retry_ms = r.retry_after_ms
        self.status = r.status_code
        self.error = r.error
        self.q = 0.0 if code == HARD else 1.0
        if code in (OK, SOFT):
            for value, limit in ((self.ttft, p.slow_ttft_ms), (self.total, p.slow_total_ms)):
                if value is not None and limit > 0 and value > limit:
                    self.q = min(self.q, (limit / value) ** 2)

    def describe(self) -> str:
        parts = [f"{self.at:%H:%M:%S}", self.outcome.value]
        if self.status is not None:
            parts.append(str(self.status))
        if self.ttft is not None:
            parts.append(f"ttft {self.ttft:.0f} ms")
        if self.retry_ms:
            parts.append(f"retry-after {self.retry_ms} ms")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class _Policy:
    """The health settings flattened for the hot path."""

    size: int
    k: int
    m: int
    recent: int
    min_ratio_n: int
    down_ratio: float
    degraded_ratio: float
    min_dwell: float
    slow_ttft_ms: float
    slow_total_ms: float
    counted: frozenset[Outcome]
    config: frozenset[Outcome]

    @classmethod
    def of(cls, s: Settings) -> _Policy:
        h, p = s.health, s.probe
        return cls(
            size=h.window,
            k=h.failures_to_down,
            m=h.successes_to_up,
            recent=max(3, h.failures_to_down, h.successes_to_up),
            min_ratio_n=max(2, math.ceil(h.window / 2)),
            down_ratio=h.failure_ratio_down,
            degraded_ratio=h.degraded_ratio,
            min_dwell=h.min_dwell,
            slow_ttft_ms=p.slow_ttft * 1000.0,
            slow_total_ms=p.slow_total * 1000.0,
            counted=frozenset(p.counts_against_health),
            config=frozenset(p.config_problems),
        )

    def classify(self, outcome: Outcome) -> int:
        if outcome in self.config:
            return CONFIG
        if outcome in self.counted:
            return SOFT if outcome in SOFT_OUTCOMES else HARD
        return OK


class _Window:
    """Recent results of one endpoint from one vantage, with running counters."""

    __slots__ = (
        "by_outcome",
        "cause",
        "config_problem",
        "consec_hard",
        "consec_ok",
        "counted",
        "degraded_at",
        "down_at",
        "eid",
        "flap_level",
        "hard",
        "headroom",
        "last_at",
        "last_code",
        "n",
        "reason",
        "recent",
        "region",
        "retry_ms",
        "samples",
        "score",
        "since",
        "state",
        "sum_q",
        "totals",
        "ttfts",
        "up_at",
        "vantage",
        "version",
    )

    def __init__(self, eid: str, region: str, vantage: str, recent: int) -> None:
        self.eid, self.region, self.vantage = eid, region, vantage
        self.samples: deque[_Sample] = deque()
        self.n = self.counted = self.hard = 0
        self.by_outcome: dict[Outcome, int] = {}
        self.ttfts: list[float] = []
        self.totals: list[float] = []
        self.consec_hard = self.consec_ok = 0
        self.recent: deque[int] = deque(maxlen=recent)
        self.state = H.UNKNOWN
        self.since: datetime | None = None
        self.reason = "waiting for probe results"
        self.cause = ""  # what put it in its current bad state, kept while it recovers
        self.sum_q = 0.0  # sum of per-result quality over the window (score = sum_q / n)
        self.down_at: datetime | None = None  # last result at which the down rule held
        self.degraded_at: datetime | None = None  # last result at which the degraded rule held
        self.up_at: datetime | None = None  # when it last came back from unhealthy
        self.flap_level = 0  # flap damping: the dwell is min_dwell x 2^flap_level
        self.score = 1.0
        self.last_at: datetime | None = None
        self.last_code = OK
        self.headroom: float | None = None
        self.retry_ms: int | None = None
        self.config_problem: str | None = None
        self.version = 0

    # -- counters
    def _count(self, s: _Sample, sign: int) -> None:
        self.by_outcome[s.outcome] = self.by_outcome.get(s.outcome, 0) + sign
        if s.code == CONFIG:
            return
        self.n += sign
        self.sum_q += sign * s.q
        if s.code != OK:
            self.counted += sign
        if s.code == HARD:
            self.hard += sign
        for value, values in ((s.ttft, self.ttfts), (s.total, self.totals)):
            if value is None:
                continue
            if sign > 0:
                bisect.insort(values, value)
            else:
                i = bisect.bisect_left(values, value)
                if i < len(values) and values[i] == value:
                    del values[i]

    def add(self, r: ProbeResult, code: int, p: _Policy) -> None:
        size = p.size
        s = _Sample(r, code, p)
        self.samples.append(s)
        self._count(s, +1)
        while len(self.samples) > size:
            self._count(self.samples.popleft(), -1)
        self.last_at = r.started_at
        self.last_code = code
        self.version += 1
        headroom = r.quota_headroom()
        if headroom is not None:
            self.headroom = headroom
        if code == CONFIG:
            return
        self.recent.append(code)
        if code == HARD:
            self.consec_hard += 1
            if r.outcome is Outcome.THROTTLED and r.retry_after_ms is not None:
                self.retry_ms = r.retry_after_ms
        else:
            self.consec_hard = 0
        self.consec_ok = self.consec_ok + 1 if code == OK else 0

    # -- derived figures
    def p50_ttft(self) -> float | None:
        return percentile(self.ttfts, 0.5)

    def p50_total(self) -> float | None:
        return percentile(self.totals, 0.5)

    def compute_score(self) -> float:
        if self.n <= 0:
            return 1.0
        return round(max(0.0, min(1.0, self.sum_q / self.n)), 3)

    def slow_now(self, p: _Policy) -> str | None:
        if len(self.ttfts) < p.min_ratio_n and len(self.totals) < p.min_ratio_n:
            return None
        ttft, total = self.p50_ttft(), self.p50_total()
        if len(self.ttfts) >= p.min_ratio_n and ttft is not None and ttft > p.slow_ttft_ms:
            p95 = percentile(self.ttfts, 0.95)
            return f"slow: median TTFT {_secs(ttft)} over the {_secs(p.slow_ttft_ms)} limit (p95 {_secs(p95 or ttft)})"
        if len(self.totals) >= p.min_ratio_n and total is not None and total > p.slow_total_ms:
            p95 = percentile(self.totals, 0.95)
            return f"slow: median total time {_secs(total)} over the {_secs(p.slow_total_ms)} limit (p95 {_secs(p95 or total)})"
        return None

    def down_rule(self, p: _Policy) -> str | None:
        if self.consec_hard >= p.k:
            return self._consecutive_text()
        if self.n >= p.min_ratio_n and self.hard >= 2 and self.hard / self.n >= p.down_ratio:
            return self._ratio_text(p, self.hard, hard_only=True)
        return None

    def degraded_rule(self, p: _Policy) -> str | None:
        if self.n >= p.min_ratio_n and self.counted >= 2 and self.counted / self.n >= p.degraded_ratio:
            recent = list(self.recent)[-max(3, p.k) :]
            if sum(1 for c in recent if c != OK) >= 2:
                return self._ratio_text(p, self.counted, hard_only=False)
        return self.slow_now(p)

    # -- words
    def _retry_text(self) -> str:
        return f", retry-after {_secs(self.retry_ms)}" if self.retry_ms else ""

    def _consecutive_text(self) -> str:
        last = [s for s in self.samples if s.code != CONFIG][-self.consec_hard :]
        kinds: dict[Outcome, int] = {}
        for s in last:
            kinds[s.outcome] = kinds.get(s.outcome, 0) + 1
        n = self.consec_hard
        if len(kinds) == 1:
            (outcome,) = kinds
            text = f"{n} consecutive {outcome_words(outcome, n)}"
        else:
            detail = ", ".join(f"{c} {outcome_words(o, c)}" for o, c in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0].value)))
            shown = f"last {len(last)}: " if len(last) < n else ""
            text = f"{n} consecutive failures ({shown}{detail})"
        if Outcome.THROTTLED in kinds:
            text += self._retry_text()
        status = [s.status for s in last if s.status]
        if status and Outcome.SERVER_ERROR in kinds:
            text += f", last status {status[-1]}"
        return text

    def _ratio_text(self, p: _Policy, bad: int, hard_only: bool) -> str:
        kinds = {o: c for o, c in self.by_outcome.items() if c and o in p.counted and not (hard_only and o in SOFT_OUTCOMES)}
        if len(kinds) == 1:
            (outcome,) = kinds
            what = outcome_words(outcome, bad)
            text = f"{bad} of last {self.n} probes {what}" if outcome is Outcome.THROTTLED else f"{bad} of last {self.n} probes were {what}"
        else:
            detail = ", ".join(f"{c} {outcome_words(o, c)}" for o, c in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0].value)))
            text = f"{bad} of last {self.n} probes failed ({detail})"
        if kinds.get(Outcome.THROTTLED):
            text += self._retry_text()
        return text

    def healthy_text(self, p: _Policy) -> str:
        ok = self.n - self.counted
        text = f"{ok} of last {self.n} probes ok"
        bad = {o: c for o, c in self.by_outcome.items() if c and o in p.counted}
        if bad:
            text += " (" + ", ".join(f"{c} {outcome_words(o, c)}" for o, c in sorted(bad.items(), key=lambda kv: kv[0].value)) + ")"
        ttft = self.p50_ttft()
        if ttft is not None:
            text += f", median TTFT {_secs(ttft)}"
        return text

    def evidence(self, limit: int = 5) -> tuple[str, ...]:
        return tuple(s.describe() for s in list(self.samples)[-limit:])


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What :meth:`HealthEvaluator.evaluate` says at ``at``."""

    at: datetime
    endpoints: dict[str, EndpointHealth]
    regions: dict[str, RegionHealth]
    transitions: list[Transition] = field(default_factory=list)
    config_problems: list[str] = field(default_factory=list)
    suspect_vantages: tuple[str, ...] = ()
    vantages: dict[str, dict[str, HealthStateName]] = field(default_factory=dict)  # endpoint -> vantage -> state

    def region_state(self, region: str) -> HealthStateName:
        rh = self.regions.get(region)
        return rh.state if rh else H.UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "endpoints": {k: as_jsonable(v) for k, v in self.endpoints.items()},
            "regions": {k: as_jsonable(v) for k, v in self.regions.items()},
            "transitions": [as_jsonable(t) for t in self.transitions],
            "config_problems": list(self.config_problems),
            "suspect_vantages": list(self.suspect_vantages),
            "vantages": {e: {v: s.value for v, s in d.items()} for e, d in self.vantages.items()},
        }


class HealthEvaluator:
    """Keeps the windows and hysteresis state; turns results into health.

    ``observe`` is called for every result (cheap, incremental) and returns
    the per-vantage transitions it caused; ``evaluate(now)`` is called once per
    tick and aggregates across vantages and endpoints.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._p = _Policy.of(settings)
        self._stale_after = settings.health.stale_after or 2 * settings.probe.interval
        self._quorum = settings.health.vantage_quorum
        self._suspect_ratio = settings.health.suspect_vantage_ratio
        self._regions: dict[str, list[str]] = {r.name: [endpoint_id(r.name, e.name) for e in r.endpoints] for r in settings.regions}
        self._region_of: dict[str, str] = {eid: r for r, eids in self._regions.items() for eid in eids}
        self._windows: dict[tuple[str, str], _Window] = {}
        self._by_endpoint: dict[str, list[_Window]] = {eid: [] for eid in self._region_of}
        self._by_vantage: dict[str, list[_Window]] = {}
        self._endpoint_state: dict[str, tuple[HealthStateName, datetime | None]] = {}
        self._region_state: dict[str, tuple[HealthStateName, datetime | None]] = {}
        self._ignored: set[str] = set()
        self._unevaluable: dict[str, str] = {}  # endpoint -> why its last result could not be evaluated
        # evaluate() keeps its last answer and recomputes only what got news
        self._dirty: set[str] = set()
        self._fresh_until: dict[str, datetime | None] = {}  # oldest fresh result per endpoint
        self._last_discounted: frozenset[str] = frozenset()
        self._endpoints: dict[str, EndpointHealth] = {}
        self._views: dict[str, dict[str, HealthStateName]] = {}
        self._region_out: dict[str, RegionHealth] = {}

    # ------------------------------------------------------------ building
    @classmethod
    def from_results(cls, settings: Settings, results: Iterable[ProbeResult], now: datetime | None = None) -> HealthEvaluator:
        """A warm evaluator: replays stored results in time order.

        With ``now``, one evaluation is run and its transitions dropped, so a
        new leader does not announce changes the old one already did.
        """
        ev = cls(settings)
        for r in sorted(results, key=_when):
            ev.observe(r)
        if now is not None:
            ev.evaluate(now)
        return ev

    @property
    def vantages(self) -> list[str]:
        return sorted(self._by_vantage)

    def _window(self, r: ProbeResult) -> _Window | None:
        key = (r.endpoint_id, r.vantage)
        w = self._windows.get(key)
        if w is None:
            if r.endpoint_id not in self._region_of:
                if r.endpoint_id not in self._ignored:
                    self._ignored.add(r.endpoint_id)
                    log.info("ignoring results for %s: not in the config", r.endpoint_id)
                return None
            w = _Window(r.endpoint_id, self._region_of[r.endpoint_id], r.vantage, self._p.recent)
            self._windows[key] = w
            self._by_endpoint[r.endpoint_id].append(w)
            self._by_endpoint[r.endpoint_id].sort(key=lambda x: x.vantage)
            self._by_vantage.setdefault(r.vantage, []).append(w)
        return w

    # ------------------------------------------------------------ per vantage
    def observe(self, result: ProbeResult) -> list[Transition]:
        """Add one result; return the per-vantage transition it caused (if any).

        A result that cannot be evaluated (a value no rule can read) never
        stops the others: its endpoint is marked with a problem that the
        dashboard, ``status`` and the alerts show instead of "unknown".
        """
        try:
            return self._observe(result)
        except Exception as exc:
            eid = str(getattr(result, "endpoint_id", "?"))
            if eid in self._region_of:
                self._unevaluable[eid] = f"probe results cannot be evaluated: {type(exc).__name__}: {str(exc)[:120]}"
                self._dirty.add(eid)
            log.warning("a probe result for %s cannot be evaluated: %s", eid[:160], type(exc).__name__)
            return []

    def _observe(self, result: ProbeResult) -> list[Transition]:
        _check_readable(result)  # before any window changes
        w = self._window(result)
        if w is None:
            return []
        self._unevaluable.pop(w.eid, None)
        p = self._p
        code = p.classify(result.outcome)
        w.add(result, code, p)
        self._dirty.add(w.eid)
        w.config_problem = self._config_text(w, result) if code == CONFIG else None
        old = w.state
        new, reason = self._next_state(w, result.started_at)
        w.score = w.compute_score()
        w.reason = reason
        self._damp(w, old, new, result.started_at)
        if new is old:
            return []
        w.state = new
        w.since = result.started_at
        return [Transition("endpoint", w.eid, old, new, reason, result.started_at, vantage=w.vantage, evidence=w.evidence())]

    def observe_many(self, results: Iterable[ProbeResult]) -> list[Transition]:
        out: list[Transition] = []
        for r in results:
            out += self.observe(r)
        return out

    def _config_text(self, w: _Window, r: ProbeResult) -> str:
        count = sum(w.by_outcome.get(o, 0) for o in self._p.config)
        status = f" {r.status_code}" if r.status_code else ""
        err = f": {r.error}" if r.error else ""
        return f"{r.outcome.value}{status} in {count} of last {len(w.samples)} probes{err}"

    def _next_state(self, w: _Window, at: datetime) -> tuple[HealthStateName, str]:
        p, state = self._p, w.state
        down = w.down_rule(p)
        if down:
            w.cause, w.down_at = down, at
            return H.UNHEALTHY, down
        degraded = w.degraded_rule(p)
        if degraded:
            w.degraded_at = at
            if state is not H.UNHEALTHY:
                w.cause = degraded
        if state is H.UNKNOWN:
            if degraded:
                return H.DEGRADED, degraded
            if w.consec_ok >= p.m:
                return H.HEALTHY, w.healthy_text(p)
            return H.UNKNOWN, f"waiting for data: {w.consec_ok} of {p.m} successes in a row"
        if state is H.HEALTHY:
            return (H.DEGRADED, degraded) if degraded else (H.HEALTHY, w.healthy_text(p))
        if state is H.UNHEALTHY:
            if self._up_ready(w, at, w.down_at):
                if degraded:
                    w.cause = degraded
                    return H.DEGRADED, degraded
                return H.HEALTHY, f"recovered: {w.healthy_text(p)}"
            return H.UNHEALTHY, self._recovering_text(w, at, w.down_at)
        last_bad = max((t for t in (w.degraded_at, w.down_at) if t is not None), default=None)
        if degraded is None and self._up_ready(w, at, last_bad):
            return H.HEALTHY, f"recovered: {w.healthy_text(p)}"
        return H.DEGRADED, self._recovering_text(w, at, last_bad) if degraded is None else degraded

    def _dwell(self, w: _Window) -> float:
        return self._p.min_dwell * (2.0**w.flap_level)

    def _up_ready(self, w: _Window, at: datetime, last_bad: datetime | None) -> bool:
        """M successes in a row, and the dwell since the rule that made it bad last held."""
        if w.consec_ok < self._p.m:
            return False
        return last_bad is None or (at - last_bad).total_seconds() >= self._dwell(w)

    def _recovering_text(self, w: _Window, at: datetime, last_bad: datetime | None) -> str:
        if not w.consec_ok:
            return w.cause
        quiet = (at - last_bad).total_seconds() if last_bad is not None else 0.0
        p = self._p
        damped = f", doubled {w.flap_level}x for flapping" if w.flap_level else ""
        return (
            f"recovering: {w.consec_ok} ok in a row (needs {p.m}), {quiet:.0f} s of the {self._dwell(w):.0f} s dwell{damped}; "
            f"was: {w.cause}"
        )

    def _damp(self, w: _Window, old: HealthStateName, new: HealthStateName, at: datetime) -> None:
        """Flap damping: going down again soon after coming back doubles the next dwell (up to 8x)."""
        window = FLAP_WINDOW_DWELLS * self._dwell(w)
        if new is H.UNHEALTHY and old is not H.UNHEALTHY:
            if w.up_at is not None and (at - w.up_at).total_seconds() < window:
                w.flap_level = min(w.flap_level + 1, MAX_FLAP_LEVEL)
        elif old is H.UNHEALTHY:
            w.up_at = at
        elif w.flap_level and new is H.HEALTHY and w.up_at is not None and (at - w.up_at).total_seconds() >= window:
            w.flap_level = 0

    # ------------------------------------------------------------ aggregate
    def evaluate(self, now: datetime) -> HealthReport:
        """Aggregate across vantages and endpoints at ``now``.

        Only endpoints that got results since the last call, or whose
        freshness changed, or all of them when the set of discounted vantages
        changed, are recomputed; the rest keep last tick's value. So a tick
        costs about the number of endpoints that got news.
        """
        cutoff = now - timedelta(seconds=self._stale_after)
        discounted = self._suspect_vantages(cutoff)
        disc_key = frozenset(discounted)
        if disc_key != self._last_discounted or not self._endpoints:
            todo: Iterable[str] = list(self._by_endpoint)
        else:
            stale = {eid for eid, deadline in self._fresh_until.items() if deadline is not None and deadline < cutoff}
            todo = [eid for eid in self._by_endpoint if eid in self._dirty or eid in stale]
        self._last_discounted = disc_key
        self._dirty.clear()
        transitions: list[Transition] = []
        touched: set[str] = set()
        for eid in todo:
            windows = self._by_endpoint[eid]
            eh, view = self._endpoint_changed(eid, windows, now, cutoff, discounted, transitions)
            self._endpoints[eid] = eh
            self._views[eid] = view
            fresh = [w.last_at for w in windows if w.last_at is not None and self._fresh(w, cutoff)]
            self._fresh_until[eid] = min(fresh) if fresh else None
            touched.add(self._region_of[eid])
        endpoints = dict(self._endpoints)
        for region in self._regions:
            if region in touched or region not in self._region_out:
                self._region_out[region] = self._region_changed(region, [endpoints[e] for e in self._regions[region]], now, transitions)
        config_problems = [f"{eid}: {eh.config_problem}" for eid, eh in endpoints.items() if eh.config_problem]
        if config_problems and len(config_problems) == len(endpoints) > 1:
            config_problems.insert(0, "every endpoint reports a configuration problem: check the probe's credentials and deployment names")
        for v in discounted:
            log.warning("vantage %s discounted: it sees nearly every endpoint failing at once", v)
        return HealthReport(
            at=now,
            endpoints=endpoints,
            regions=dict(self._region_out),
            transitions=transitions,
            config_problems=config_problems,
            suspect_vantages=tuple(sorted(discounted)),
            vantages=dict(self._views),
        )

    def _endpoint_changed(
        self, eid: str, windows: list[_Window], now: datetime, cutoff: datetime, discounted: set[str], transitions: list[Transition]
    ) -> tuple[EndpointHealth, dict[str, HealthStateName]]:
        eh, deciding = self._endpoint(eid, windows, cutoff, discounted)
        view = {w.vantage: (w.state if self._fresh(w, cutoff) else H.UNKNOWN) for w in windows}
        prev = self._endpoint_state.get(eid)
        if prev is None or prev[0] is not eh.state:
            self._endpoint_state[eid] = (eh.state, eh.since or now)
            if prev is not None or eh.state is not H.UNKNOWN:
                evidence = tuple(f"{w.vantage} {e}" for w in deciding for e in w.evidence(3))
                transitions.append(Transition("endpoint", eid, prev[0] if prev else H.UNKNOWN, eh.state, eh.reason, now, evidence=evidence))
        return _with_since(eh, self._endpoint_state[eid][1]), view

    def _region_changed(self, region: str, eps: list[EndpointHealth], now: datetime, transitions: list[Transition]) -> RegionHealth:
        rh = _region(region, eps)
        prev = self._region_state.get(region)
        if prev is None or prev[0] is not rh.state:
            known = [e.since for e in eps if e.state is rh.state and e.since]
            self._region_state[region] = (rh.state, max(known) if known else now)
            if prev is not None or rh.state is not H.UNKNOWN:
                transitions.append(Transition("region", region, prev[0] if prev else H.UNKNOWN, rh.state, "; ".join(rh.reasons), now))
        return RegionHealth(
            region=rh.region,
            state=rh.state,
            score=rh.score,
            reasons=rh.reasons,
            endpoints=rh.endpoints,
            quota_headroom=rh.quota_headroom,
            since=self._region_state[region][1],
        )

    @staticmethod
    def _fresh(w: _Window, cutoff: datetime) -> bool:
        return w.last_at is not None and w.last_at >= cutoff

    def _suspect_vantages(self, cutoff: datetime) -> set[str]:
        suspect = set()
        with_data = 0
        for v, windows in self._by_vantage.items():
            known = failing = 0
            for w in windows:
                if not self._fresh(w, cutoff):
                    continue
                known += 1
                if w.state is H.UNHEALTHY or w.last_code == HARD:
                    failing += 1
            if known:
                with_data += 1
            if known >= 2 and failing / known >= self._suspect_ratio:
                suspect.add(v)
        if suspect and len(suspect) >= with_data:
            return set()  # every vantage says so: do not hide it, let fail-open see it
        return suspect

    def _endpoint(self, eid: str, windows: list[_Window], cutoff: datetime, discounted: set[str]) -> tuple[EndpointHealth, list[_Window]]:
        region = self._region_of[eid]
        views = [w for w in windows if self._fresh(w, cutoff) and w.vantage not in discounted]
        known = [w for w in views if w.state is not H.UNKNOWN]
        headroom = min((w.headroom for w in views if w.headroom is not None), default=None)
        problem = next(
            (f"{w.config_problem}" if len(windows) == 1 else f"{w.vantage}: {w.config_problem}" for w in windows if w.config_problem), None
        )
        problem = problem or self._unevaluable.get(eid)
        notes = ""
        if discounted and any(w.vantage in discounted for w in windows):
            notes = f" (discounted vantage {', '.join(sorted(discounted))}: it sees nearly every endpoint failing)"
        if not known:
            reason = views[0].reason if views else ("no fresh probe results" if windows else "no probe results yet")
            if eid in self._unevaluable:
                reason = self._unevaluable[eid]
            return EndpointHealth(eid, region, H.UNKNOWN, views[0].score if views else 1.0, reason + notes, None, headroom, problem), []
        n = len(known)
        required = min(n, max(self._quorum, n // 2 + 1))
        unhealthy = [w for w in known if w.state is H.UNHEALTHY]
        bad = [w for w in known if w.state is H.UNHEALTHY or w.state is H.DEGRADED]
        if len(unhealthy) >= required:
            state, deciding = H.UNHEALTHY, unhealthy
        elif len(bad) >= required:
            state, deciding = H.DEGRADED, bad
        else:
            state, deciding = H.HEALTHY, [w for w in known if w.state is H.HEALTHY]
        score = known[0].score if n == 1 else sorted(w.score for w in known)[required - 1]
        if n == 1:
            reason = known[0].reason
        else:
            dissent = [w for w in known if w not in deciding]
            if not dissent:
                reason = (
                    f"{deciding[0].reason} (all {n} vantages agree)"
                    if state is H.HEALTHY
                    else "; ".join(f"{w.vantage}: {w.reason}" for w in deciding)
                )
            else:
                reason = f"{len(deciding)} of {n} vantages agree: " + "; ".join(f"{w.vantage}: {w.reason}" for w in deciding)
                reason += "; " + "; ".join(f"{w.vantage} sees {w.state.value}: {w.reason}" for w in dissent)
        sinces = [w.since for w in deciding if w.since is not None]
        since = max(sinces) if sinces else None
        return EndpointHealth(eid, region, state, score, reason + notes, since, headroom, problem), deciding


def _check_readable(r: ProbeResult) -> None:
    """Raise ValueError unless every field the rules read has a usable type and value."""
    if not isinstance(r.started_at, datetime) or r.started_at.tzinfo is None:
        raise ValueError(f"started_at {r.started_at!r} is not an aware time")
    if not isinstance(r.outcome, Outcome):
        raise ValueError(f"outcome {r.outcome!r} is not an outcome")
    for name in ("ttft_ms", "total_ms", "utilization_pct"):
        value = getattr(r, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)):
            raise ValueError(f"{name} {value!r} is not a finite number")
    for name in ("retry_after_ms", "remaining_tokens", "limit_tokens", "remaining_requests", "limit_requests", "status_code"):
        value = getattr(r, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} {value!r} is not an integer")


def _when(r: ProbeResult) -> float:
    """Sort key for replaying results; one with an unusable time sorts first (observe then flags it)."""
    try:
        return r.started_at.timestamp()
    except Exception:
        return -math.inf


def _with_since(eh: EndpointHealth, since: datetime | None) -> EndpointHealth:
    if eh.since == since:
        return eh
    return EndpointHealth(eh.endpoint_id, eh.region, eh.state, eh.score, eh.reason, since, eh.quota_headroom, eh.config_problem)


def _region(region: str, endpoints: list[EndpointHealth]) -> RegionHealth:
    known = [e for e in endpoints if e.state is not H.UNKNOWN]
    headroom = min((e.quota_headroom for e in endpoints if e.quota_headroom is not None), default=None)
    if not known:
        problems = [e for e in endpoints if e.config_problem]
        if problems:  # a problem on our side, not "no data yet": say so first
            reasons = tuple(f"config problem: {e.endpoint_id.split('/', 1)[1]}: {e.config_problem}" for e in problems)
        else:
            reasons = tuple(f"{e.endpoint_id.split('/', 1)[1]}: {e.reason}" for e in endpoints) or ("no endpoints",)
        return RegionHealth(region, H.UNKNOWN, 1.0, reasons, tuple(endpoints), headroom)
    states = {e.state for e in known}
    if states == {H.UNHEALTHY}:
        state = H.UNHEALTHY
    elif states == {H.HEALTHY}:
        state = H.HEALTHY
    else:
        state = H.DEGRADED
    score = round(sum(0.0 if e.state is H.UNHEALTHY else e.score for e in known) / len(known), 3)
    if len(endpoints) == 1:
        reasons = (endpoints[0].reason,)
    else:
        shown = [e for e in endpoints if e.state is not H.HEALTHY] or endpoints
        reasons = tuple(f"{e.endpoint_id.split('/', 1)[1]}: {e.reason}" for e in shown)
    return RegionHealth(region, state, score, reasons, tuple(endpoints), headroom)
