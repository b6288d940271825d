"""Where traffic goes: each region's share of a target, now and over the last 24 h.

A weighted target sends each enabled endpoint its weight over the sum of the
enabled endpoints' weights; a priority target sends everything to the enabled
endpoint with the lowest priority number, the others wait in standby order.
The 24 h history replays the applied changes backwards from the state read
from Azure now. Shapes only (no SQL, no Azure): the read model feeds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controlplane.domain import ChangeStatus, Field
from controlplane.store.records import ChangeRecord

PALETTE = 8  # css classes share-0 .. share-7, by the region's position in the target


@dataclass(frozen=True, slots=True)
class Slice:
    region: str
    pct: float
    css: str
    x: float  # where it starts on a 0..100 bar


@dataclass(frozen=True, slots=True)
class Shares:
    """One target's split of traffic on one side (actual or desired)."""

    slices: tuple[Slice, ...]  # only regions with a share > 0
    standby: tuple[str, ...]  # priority routing: enabled endpoints after the serving one, in order
    serving_nothing: bool  # no endpoint enabled (or every weight 0): nothing is served
    # the split in words, made once: the 24 h chart repeats it in every slice of every step (steps x regions)
    summary: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.serving_nothing:
            text = "no region serves traffic"
        else:
            text = ", ".join(f"{s.region} {s.pct:.0f}%" for s in self.slices)
            if self.standby:
                text += "; standby " + " then ".join(self.standby)
        object.__setattr__(self, "summary", text)

    def pct(self, region: str) -> float:
        return next((s.pct for s in self.slices if s.region == region), 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"shares": {s.region: round(s.pct, 2) for s in self.slices}, "standby": list(self.standby)}


def shares(routing: str, endpoints: Mapping[str, Mapping[str, Any]], order: list[str]) -> Shares:
    """``endpoints``: region -> {"enabled", "weight", "priority"}; ``order``: the target's regions (colour order)."""
    css = {r: f"share-{i % PALETTE}" for i, r in enumerate(order)}
    enabled = [r for r in order if endpoints.get(r, {}).get("enabled") is True]
    pcts: list[tuple[str, float]] = []
    standby: tuple[str, ...] = ()
    if routing == "priority":
        ranked = sorted(enabled, key=lambda r: (endpoints[r].get("priority") is None, endpoints[r].get("priority") or 0, order.index(r)))
        if ranked:
            pcts = [(ranked[0], 100.0)]
            standby = tuple(ranked[1:])
    else:
        weights = {r: max(0, int(endpoints[r].get("weight") or 0)) for r in enabled}
        total = sum(weights.values())
        if total == 0 and enabled:
            weights = dict.fromkeys(enabled, 1)  # no weights read: an even split is what the service does
            total = len(enabled)
        pcts = [(r, 100.0 * w / total) for r, w in weights.items() if w > 0] if total else []
    slices, x = [], 0.0
    for region, pct in pcts:
        slices.append(Slice(region, pct, css[region], x))
        x += pct
    return Shares(tuple(slices), standby, serving_nothing=not slices)


@dataclass(frozen=True, slots=True)
class Step:
    """The split from ``start`` until the next step (or now)."""

    start: datetime
    shares: Shares
    x: float  # 0..100 across the chart
    w: float


@dataclass(frozen=True, slots=True)
class History:
    steps: tuple[Step, ...]
    regions: tuple[tuple[str, str], ...]  # (region, css) for the key
    start: datetime
    end: datetime
    changes: int

    @property
    def summary(self) -> str:
        if not self.changes:
            return f"unchanged over the last 24 h: {self.steps[-1].shares.summary}" if self.steps else "no data"
        return f"{self.changes} applied change(s) in the last 24 h; now {self.steps[-1].shares.summary}"


_FIELD = {Field.ENABLED: "enabled", Field.WEIGHT: "weight", Field.PRIORITY: "priority"}


def history(
    routing: str,
    now_state: Mapping[str, Mapping[str, Any]],
    order: list[str],
    changes: Iterable[ChangeRecord],
    now: datetime,
    span: timedelta = timedelta(hours=24),
) -> History:
    """Replay applied changes newest first from ``now_state`` back to ``now - span``; one step per change."""
    start = now - span
    state = {r: dict(now_state.get(r, {})) for r in order}
    applied = sorted(
        (c for c in changes if c.status is ChangeStatus.APPLIED and c.created_at >= start and c.region in state),
        key=lambda c: c.created_at,
        reverse=True,
    )
    points: list[tuple[datetime, Shares]] = []
    for c in applied:  # newest first: the state after c holds from c on
        points.append((c.created_at, shares(routing, state, order)))
        state[c.region][_FIELD[c.field]] = c.before
    points.append((start, shares(routing, state, order)))
    points.reverse()
    span_s = span.total_seconds()
    steps = []
    for i, (at, sh) in enumerate(points):
        until = points[i + 1][0] if i + 1 < len(points) else now
        x = 100.0 * (at - start).total_seconds() / span_s
        w = 100.0 * (until - at).total_seconds() / span_s
        steps.append(Step(at, sh, x, max(w, 0.0)))
    key = tuple((r, f"share-{i % PALETTE}") for i, r in enumerate(order))
    return History(tuple(steps), key, start, now, len(applied))
