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

Verdicts need evidence (docs/adr/0011-decide-on-evidence.md has the numbers):

* **the sequential test** -- a CUSUM (Page's repeated form of Wald's SPRT)
  of the log-likelihood ratio "failure rate ``fault_rate``" against
  "failure rate ``noise_rate``": each counted result adds ln(p1/p0), each
  success ln((1-p1)/(1-p0)), floored at 0 and capped at the threshold
  ln(``decision_odds``). At the threshold the endpoint is ``degraded``
  (weight by score). While the sum is between 0 and the threshold the
  evidence is undecided and the endpoint is probed every ``confirm_gap``.
  With the defaults random 3 % loss crosses it about once in 9 million
  probes; a 30 % error rate crosses it after about 30 probes.
* ``unhealthy`` (drained) needs more: ``failures_to_down`` (K) consecutive
  hard failures other than 429s, or hard failures making up
  ``failure_ratio_down`` of a full window while the test says so, or
  ``throttled_to_down`` consecutive 429s (it serves nothing). Partial
  throttling is a capacity signal: degraded, scored by the share served.
* ``degraded`` also when the median TTFT / total time is over
  ``probe.slow_ttft`` / ``probe.slow_total``;
* up (``unhealthy``/``degraded`` -> better) only after ``successes_to_up``
  (M) consecutive successes **and** ``min_dwell`` seconds since a bad rule
  last held (one stray loss while recovering restarts the M count, and the
  dwell only if it tips the test again);
* flap damping with memory, like BGP route-flap damping: each time the
  endpoint leaves healthy it gains a penalty (1 when it goes down, half when
  degraded), and 1 when it fails twice in a row after M successes while still
  in its dwell (a relapse); the penalty halves every ``flap_half_life``. When a flap lifts it to
  ``flap_hold`` the endpoint is held out (stays in its bad state) until the
  penalty is under ``flap_reuse`` and it has had no failure for ``flap_stable``; the
  penalty is capped so a stable endpoint is held ``flap_max_hold`` at most;
* ``unknown`` until M consecutive successes, or a down/degraded rule, say
  otherwise.

When to probe is the cadence rule (:mod:`controlplane.engine.cadence`, run by
every prober on its own results), which asks this module's
:meth:`HealthEvaluator.next_probe_in`: every ``confirm_gap`` while the
evidence is undecided (the test between 0 and its threshold, or recovering
short of M successes); no sooner than a 429's Retry-After (capped at
``fast_interval`` while undecided, at ``interval`` once decided);
``fast_interval`` while degraded; the normal ``interval`` otherwise, also
while confirmed down (the liveness checks watch for its return). A failed
liveness check on an endpoint not known to be down, or a good one on an
endpoint that is, asks for an LLM probe at once (:meth:`on_liveness`); it
never changes a state by itself.

Across vantages
---------------
A vantage that sees ``suspect_vantage_ratio`` of its endpoints (at least two)
failing at once is discounted: its own network is the likelier cause. (When
every vantage is in that position nothing is discounted, so fail-open can see
it.) Results older than ``health.stale_after``
do not vote (default two probe intervals and a probe timeout). Of the vantages left, ``required = min(n, max(vantage_quorum,
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
    LivenessResult,
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
FLAP_DOWN = 1.0  # penalty for leaving healthy for unhealthy (an episode costs 1 in all)
FLAP_DEGRADED = 0.5  # for leaving healthy for degraded; degraded -> unhealthy adds the other half
FLAP_TEXT_HALF_LIVES = 4  # the reason text of a held endpoint counts its flaps within this many half-lives

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


def _latest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _mins(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


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
    min_dwell: float
    slow_ttft_ms: float
    slow_total_ms: float
    counted: frozenset[Outcome]
    config: frozenset[Outcome]
    # the sequential test
    p0: float
    p1: float
    llr_fail: float
    llr_ok: float
    h: float
    throttled_to_down: int
    # cadence
    interval: float
    fast: float
    gap: float
    liveness: bool
    # flap damping
    half_life: float
    hold: float
    reuse: float
    stable: float
    max_penalty: float

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
            min_dwell=h.min_dwell,
            slow_ttft_ms=p.slow_ttft * 1000.0,
            slow_total_ms=p.slow_total * 1000.0,
            counted=frozenset(p.counts_against_health),
            config=frozenset(p.config_problems),
            p0=h.noise_rate,
            p1=h.fault_rate,
            llr_fail=math.log(h.fault_rate / h.noise_rate),
            llr_ok=math.log((1.0 - h.fault_rate) / (1.0 - h.noise_rate)),
            h=math.log(h.decision_odds),
            throttled_to_down=h.throttled_to_down,
            interval=p.interval,
            fast=p.fast_interval,
            gap=min(p.confirm_gap, p.fast_interval),
            liveness=p.liveness_interval > 0,
            half_life=h.flap_half_life,
            hold=h.flap_hold,
            reuse=h.flap_reuse,
            stable=h.flap_stable,
            max_penalty=max(h.flap_hold, h.flap_reuse * 2 ** (h.flap_max_hold / h.flap_half_life)),
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
        "consec_429",
        "consec_hard",
        "consec_ok",
        "counted",
        "degraded_at",
        "down_at",
        "eid",
        "failing_since",
        "flaps",
        "hard",
        "headroom",
        "held",
        "last_at",
        "last_code",
        "last_fail_at",
        "last_ok_at",
        "last_outcome",
        "liveness_at",
        "liveness_fail",
        "liveness_last_ok",
        "liveness_ok",
        "n",
        "peak",
        "penalty",
        "penalty_at",
        "reason",
        "recent",
        "region",
        "retry_ms",
        "samples",
        "score",
        "since",
        "state",
        "sum_q",
        "test",
        "totals",
        "ttfts",
        "vantage",
        "version",
        "was_back",
    )

    def __init__(self, eid: str, region: str, vantage: str, recent: int) -> None:
        self.eid, self.region, self.vantage = eid, region, vantage
        self.samples: deque[_Sample] = deque()
        self.n = self.counted = self.hard = 0
        self.by_outcome: dict[Outcome, int] = {}
        self.ttfts: list[float] = []
        self.totals: list[float] = []
        self.consec_hard = self.consec_ok = self.consec_429 = 0
        self.recent: deque[int] = deque(maxlen=recent)
        self.state = H.UNKNOWN
        self.since: datetime | None = None
        self.reason = "waiting for probe results"
        self.cause = ""  # what put it in its current bad state, kept while it recovers
        self.sum_q = 0.0  # sum of per-result quality over the window (score = sum_q / n)
        self.test = 0.0  # the CUSUM: log-likelihood ratio fault vs noise, in [0, h]
        self.peak = 0.0  # its highest value since it was last 0
        self.down_at: datetime | None = None  # last result at which the down rule held
        self.degraded_at: datetime | None = None  # last result at which the degraded rule held
        self.penalty = 0.0  # flap penalty at penalty_at (decays with the half-life)
        self.penalty_at: datetime | None = None
        self.flaps: deque[datetime] = deque(maxlen=64)  # when it left healthy, for the reason text
        self.held = False  # held out by flap damping
        self.score = 1.0
        self.last_at: datetime | None = None
        self.last_code = OK
        self.last_outcome: Outcome | None = None
        self.headroom: float | None = None
        self.retry_ms: int | None = None
        self.config_problem: str | None = None
        self.version = 0
        self.last_ok_at: datetime | None = None  # the last answer that was served (LLM probe or liveness check)
        self.last_fail_at: datetime | None = None  # the last hard failure (LLM probe or liveness check)
        self.was_back = False  # unhealthy, but M successes in a row since: a relapse now would be a flap
        self.failing_since: datetime | None = None  # first failure of the current bad run (cleared by a good LLM result)
        self.liveness_at: datetime | None = None
        self.liveness_ok = self.liveness_fail = 0
        self.liveness_last_ok: bool | None = None

    # -- counters
    def _count(self, s: _Sample, sign: int) -> None:
        count = self.by_outcome.get(s.outcome, 0) + sign
        if count:
            self.by_outcome[s.outcome] = count
        else:
            del self.by_outcome[s.outcome]  # only the outcomes the window holds: no key left at zero
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
        self.last_outcome = r.outcome
        self.version += 1
        headroom = r.quota_headroom()
        if headroom is not None:
            self.headroom = headroom
        if code == CONFIG:
            return
        self.recent.append(code)
        if code == OK:
            self.failing_since = None
        elif code == HARD and self.failing_since is None:
            self.failing_since = r.started_at
        if code == HARD:
            self.last_fail_at = _latest(self.last_fail_at, r.started_at)
        if code != HARD:
            self.last_ok_at = _latest(self.last_ok_at, r.started_at)
        self.test = min(p.h, max(0.0, self.test + (p.llr_fail if code != OK else p.llr_ok)))
        self.peak = 0.0 if self.test <= 0.0 else max(self.peak, self.test)
        throttled = r.outcome is Outcome.THROTTLED
        self.consec_hard = self.consec_hard + 1 if code == HARD and not throttled else 0
        self.consec_429 = self.consec_429 + 1 if throttled else 0
        if throttled:
            self.retry_ms = r.retry_after_ms
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

    def decided(self, p: _Policy) -> bool:
        """Has the sequential test reached its threshold?"""
        return self.test >= p.h - 1e-9

    def undecided(self, p: _Policy) -> bool:
        return 0.0 < self.test < p.h - 1e-9

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

    def hard_not_429(self) -> int:
        return self.hard - self.by_outcome.get(Outcome.THROTTLED, 0)

    def down_rule(self, p: _Policy) -> str | None:
        if self.consec_hard >= p.k:
            return self._consecutive_text()
        if self.consec_429 >= p.throttled_to_down:
            return f"serves nothing: {self.consec_429} consecutive 429s{self._retry_text()}"
        if self.n >= p.size and self.decided(p) and self.hard_not_429() >= p.down_ratio * self.n:
            return self._ratio_text(p, self.hard_not_429(), hard_only=True) + self._odds_text(p)
        return None

    def degraded_rule(self, p: _Policy) -> str | None:
        if self.decided(p):
            throttled = self.by_outcome.get(Outcome.THROTTLED, 0)
            if throttled and throttled * 2 >= self.counted:
                served = 1.0 - throttled / self.n if self.n else 0.0
                return (
                    f"throttled: {throttled} of last {self.n} probes 429 (serves about {served:.0%}){self._retry_text()}"
                    + self._odds_text(p)
                )
            return self._ratio_text(p, self.counted, hard_only=False) + self._odds_text(p)
        return self.slow_now(p)

    # -- words
    def _odds_text(self, p: _Policy) -> str:
        return f"; {_odds(self.peak)}:1 odds of a {p.p1:.0%} fault over {p.p0:.0%} noise"

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
        status = [s.status for s in last if s.status]
        if status and Outcome.SERVER_ERROR in kinds:
            text += f", last status {status[-1]}"
        return text

    def _ratio_text(self, p: _Policy, bad: int, hard_only: bool) -> str:
        kinds = {
            o: c
            for o, c in self.by_outcome.items()
            if c and o in p.counted and not (hard_only and (o in SOFT_OUTCOMES or o is Outcome.THROTTLED))
        }
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

    # -- flap damping
    def penalty_now(self, p: _Policy, at: datetime) -> float:
        if self.penalty_at is None or self.penalty <= 0:
            return 0.0
        age = max(0.0, (at - self.penalty_at).total_seconds())
        return self.penalty * math.pow(0.5, age / p.half_life)

    def add_penalty(self, p: _Policy, amount: float, at: datetime) -> None:
        self.penalty = min(p.max_penalty, self.penalty_now(p, at) + amount)
        self.penalty_at = at

    def note_flap(self, p: _Policy, at: datetime) -> None:
        """Remember when it flapped, for the reason text, which counts the last FLAP_TEXT_HALF_LIVES half-lives:
        older flap times are dropped (they would pile up, 64 per window, over a long run)."""
        self.flaps.append(at)
        while self.flaps and (at - self.flaps[0]).total_seconds() > FLAP_TEXT_HALF_LIVES * p.half_life:
            self.flaps.popleft()


def _odds(llr: float) -> str:
    """exp(llr) for on-call: '2.1e+06' style above 10,000."""
    value = math.exp(llr)
    return f"{value:,.0f}" if value < 10_000 else f"{value:.1e}"


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
    # corroboration, for the guardrail that holds a drain until another region answered since it began failing:
    last_ok: dict[str, datetime] = field(default_factory=dict)  # region -> its last served answer (any vantage)
    failing_since: dict[str, datetime] = field(default_factory=dict)  # region -> start of its current failing run
    down_now: frozenset[str] | None = None  # regions whose down rule held at their last result (None: not known)
    # endpoint -> start of its current run of hard failures (not 429s; failed liveness checks count), for the
    # guardrail that holds a region's weight step while a sibling of its down endpoint is being confirmed:
    failing_endpoints: dict[str, datetime] = field(default_factory=dict)

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
        self._stale_after = settings.health.stale_after or 2 * settings.probe.interval + settings.probe.timeout
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
        if new is not H.UNHEALTHY:
            w.was_back = False
        elif w.consec_ok >= p.m:
            w.was_back = True
        elif old is H.UNHEALTHY and w.was_back and code == HARD and w.consec_hard + w.consec_429 >= 2:
            w.was_back = False  # two failures in a row after coming back: not a stray loss
            self._relapse(w, result.started_at)
        if new is old:
            return []
        w.state = new
        w.since = result.started_at
        return [Transition("endpoint", w.eid, old, new, reason, result.started_at, vantage=w.vantage, evidence=w.evidence())]

    def observe_with_liveness(self, results: Iterable[ProbeResult], checks: Iterable[LivenessResult]) -> list[Transition]:
        """LLM results and liveness checks, in the order they started (a leader gets both in batches)."""
        merged: list[tuple[datetime, int, ProbeResult | LivenessResult]] = [(r.started_at, 0, r) for r in results]
        merged += [(c.started_at, 1, c) for c in checks]
        merged.sort(key=lambda x: (x[0], x[1]))
        out: list[Transition] = []
        for _, _kind, item in merged:
            if isinstance(item, LivenessResult):
                self.on_liveness(item.endpoint_id, item.vantage, item.ok, item.started_at)
            else:
                out += self.observe(item)
        return out

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
            last_bad = _latest(w.down_at, w.degraded_at)
            if self._up_ready(w, at, last_bad):
                if degraded:
                    w.cause = degraded
                    return H.DEGRADED, degraded
                return H.HEALTHY, f"recovered: {w.healthy_text(p)}"
            return H.UNHEALTHY, self._recovering_text(w, at, last_bad)
        last_bad = _latest(w.degraded_at, w.down_at)
        if degraded is None and self._up_ready(w, at, last_bad):
            return H.HEALTHY, f"recovered: {w.healthy_text(p)}"
        return H.DEGRADED, self._recovering_text(w, at, last_bad) if degraded is None else degraded

    def _up_ready(self, w: _Window, at: datetime, last_bad: datetime | None) -> bool:
        """M successes in a row, the dwell since a bad rule last held, and not held out for flapping."""
        p = self._p
        if w.consec_ok < p.m:
            return False
        stable = (at - last_bad).total_seconds() if last_bad is not None else math.inf
        if stable < p.min_dwell:
            return False
        if w.held:
            # held out: stable means no failure at all (a sparse probe of a flapping endpoint may not tip a rule)
            quiet = (at - w.last_fail_at).total_seconds() if w.last_fail_at is not None else math.inf
            if w.penalty_now(p, at) >= p.reuse or min(stable, quiet) < p.stable:
                return False
            w.held = False
        return True

    def _recovering_text(self, w: _Window, at: datetime, last_bad: datetime | None) -> str:
        p = self._p
        quiet = (at - last_bad).total_seconds() if last_bad is not None else 0.0
        if w.held and w.consec_ok:
            calm = (at - w.last_fail_at).total_seconds() if w.last_fail_at is not None else quiet
            return f"held out: {self._held_text(w, at, min(quiet, calm))}; was: {w.cause}"
        if not w.consec_ok:
            return w.cause
        return f"recovering: {w.consec_ok} ok in a row (needs {p.m}), {quiet:.0f} s of the {p.min_dwell:.0f} s dwell; was: {w.cause}"

    def _held_text(self, w: _Window, at: datetime, stable: float) -> str:
        p = self._p
        recent = [t for t in w.flaps if (at - t).total_seconds() <= FLAP_TEXT_HALF_LIVES * p.half_life]
        span = (at - recent[0]).total_seconds() if recent else 0.0
        penalty = w.penalty_now(p, at)
        wait = p.half_life * math.log2(penalty / p.reuse) if penalty > p.reuse else 0.0
        return (
            f"{len(recent)} flaps in {_mins(span)}, stable for {_mins(stable)} of the {_mins(p.stable)} needed"
            f" (flap penalty {penalty:.2f}, back under {p.reuse:g} in {_mins(wait)})"
        )

    def _damp(self, w: _Window, old: HealthStateName, new: HealthStateName, at: datetime) -> None:
        """Flap damping: leaving healthy costs a penalty that decays; enough of it holds the endpoint out."""
        p = self._p
        if new is old:
            return
        amount = 0.0
        if old is H.HEALTHY and new is H.UNHEALTHY:
            amount = FLAP_DOWN
        elif old is H.HEALTHY and new is H.DEGRADED:
            amount = FLAP_DEGRADED
        elif old is H.DEGRADED and new is H.UNHEALTHY:
            amount = FLAP_DOWN - FLAP_DEGRADED
        if not amount:
            return
        if old is H.HEALTHY:
            w.note_flap(p, at)
        w.add_penalty(p, amount, at)
        if not w.held and w.penalty >= p.hold - 1e-9:
            w.held = True
            log.info("%s from %s held out for flapping (penalty %.2f)", w.eid, w.vantage, w.penalty)

    def _relapse(self, w: _Window, at: datetime) -> None:
        """Failing again after coming back (M successes) but before the dwell let it return is a flap
        too: a region flapping faster than the dwell would otherwise never earn a penalty."""
        p = self._p
        w.note_flap(p, at)
        w.add_penalty(p, FLAP_DOWN, at)
        if not w.held and w.penalty >= p.hold - 1e-9:
            w.held = True
            log.info("%s from %s held out for flapping (penalty %.2f)", w.eid, w.vantage, w.penalty)

    def _cadence(self, w: _Window, state: HealthStateName) -> float:
        """Seconds until the next LLM probe of this endpoint from this vantage (one home for the rule)."""
        p = self._p
        if w.last_code == CONFIG:
            return p.interval
        recovering = state in (H.UNHEALTHY, H.DEGRADED) and w.last_code == OK and w.consec_ok < p.m
        detecting = state in (H.HEALTHY, H.UNKNOWN) and w.undecided(p)
        step = p.gap if (recovering or detecting) else p.interval
        if state is H.DEGRADED and not recovering:
            step = p.fast
        elif state is H.UNHEALTHY and not recovering:
            step = p.interval if p.liveness and w.last_code != OK else p.fast
            if w.was_back and w.last_code == HARD:
                step = p.gap  # it had come back and fails again: confirm (a relapse, or a stray loss)
        if w.last_outcome is Outcome.THROTTLED and w.retry_ms:
            # Retry-After sets when to look again: no sooner, but while undecided no later than the
            # fast interval (one tiny probe is not the load it asks us to hold back), else the interval
            step = min(p.fast if step < p.fast else p.interval, max(step, w.retry_ms / 1000.0))
        return step

    def next_probe_in(self, endpoint_id: str, vantage: str) -> float:
        """Seconds from the last result until this endpoint's next LLM probe from ``vantage``."""
        w = self._windows.get((endpoint_id, vantage))
        return self._p.interval if w is None else self._cadence(w, w.state)

    def may_pull(self, endpoint_id: str, vantage: str) -> bool:
        """May a sibling's failure bring this endpoint's next LLM probe forward? Not when it is known down
        (the liveness checks watch it) or a 429's Retry-After asks us to hold back."""
        w = self._windows.get((endpoint_id, vantage))
        if w is None:
            return True
        return w.state is not H.UNHEALTHY and not (w.last_outcome is Outcome.THROTTLED and w.retry_ms)

    def on_liveness(self, endpoint_id: str, vantage: str, ok: bool, at: datetime) -> bool:
        """Note a liveness check; True when it disagrees with what we believe, so an LLM probe should run now.

        A liveness check never changes a state by itself.
        """
        key = (endpoint_id, vantage)
        w = self._windows.get(key)
        if w is None:
            if endpoint_id not in self._region_of:
                return False
            w = _Window(endpoint_id, self._region_of[endpoint_id], vantage, self._p.recent)
            self._windows[key] = w
            self._by_endpoint[endpoint_id].append(w)
            self._by_endpoint[endpoint_id].sort(key=lambda x: x.vantage)
            self._by_vantage.setdefault(vantage, []).append(w)
        w.liveness_at = at
        if ok:
            w.liveness_ok += 1
            w.last_ok_at = _latest(w.last_ok_at, at)
        else:
            w.liveness_fail += 1
            w.last_fail_at = _latest(w.last_fail_at, at)
            if w.failing_since is None and (w.last_at is None or at >= w.last_at):  # not older than the last LLM result
                w.failing_since = at
        changed = w.liveness_last_ok is not None and w.liveness_last_ok != ok
        w.liveness_last_ok = ok
        if ok:
            return w.state is H.UNHEALTHY and (changed or w.last_code != OK)
        return w.state is not H.UNHEALTHY

    def liveness(self) -> dict[str, dict[str, Any]]:
        """Per endpoint and vantage: the liveness checks seen (for the dashboard and replay)."""
        out: dict[str, dict[str, Any]] = {}
        for (eid, vantage), w in self._windows.items():
            if w.liveness_at is None:
                continue
            out.setdefault(eid, {})[vantage] = {
                "at": w.liveness_at.isoformat(),
                "ok": w.liveness_last_ok,
                "checks_ok": w.liveness_ok,
                "checks_failed": w.liveness_fail,
            }
        return out

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
            last_ok=self._last_ok(),
            failing_since=self._failing_since(),
            down_now=self._down_now(),
            failing_endpoints=self._failing_endpoints(),
        )

    def _down_now(self) -> frozenset[str]:
        out = set()
        for region, eids in self._regions.items():
            known = [eid for eid in eids if self._by_endpoint[eid]]
            if known and all(any(w.down_at is not None and w.down_at == w.last_at for w in self._by_endpoint[eid]) for eid in known):
                out.add(region)
        return frozenset(out)

    def _last_ok(self) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        for w in self._windows.values():
            if w.last_ok_at is not None and (w.region not in out or w.last_ok_at > out[w.region]):
                out[w.region] = w.last_ok_at
        return out

    def _failing_since(self) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        for w in self._windows.values():
            if w.failing_since is not None and (w.region not in out or w.failing_since < out[w.region]):
                out[w.region] = w.failing_since
        return out

    def _failing_endpoints(self) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        for w in self._windows.values():
            if w.failing_since is None or w.last_outcome is Outcome.THROTTLED:
                continue  # a 429 is the deployment's own capacity, not the resource failing
            if w.eid not in out or w.failing_since < out[w.eid]:
                out[w.eid] = w.failing_since
        return out

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
        # a region judged healthy is explained by its healthy endpoints, not by one still waiting for data
        shown = (known if state is H.HEALTHY else [e for e in endpoints if e.state is not H.HEALTHY]) or endpoints
        reasons = tuple(f"{e.endpoint_id.split('/', 1)[1]}: {e.reason}" for e in shown)
        reasons += tuple(
            f"{e.endpoint_id.split('/', 1)[1]} not judged yet ({e.reason})" for e in endpoints if e.state is H.UNKNOWN and e not in shown
        )
    return RegionHealth(region, state, score, reasons, tuple(endpoints), headroom)
