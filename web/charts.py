"""Server-side SVG chart geometry: numbers in, polyline points out.

The templates draw the SVG (so everything stays autoescaped and there is no
chart library or inline script); this module only maps time buckets to
coordinates. A gap in the data breaks the line instead of bridging it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from controlplane.store.records import Bucket  # per-minute rollups aggregated over one time bucket


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    css: str  # class name: line-a | line-b
    segments: tuple[str, ...]  # polyline "x,y x,y ..." per unbroken run
    last: float | None


@dataclass(frozen=True, slots=True)
class Mark:
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    unit: str
    width: int
    height: int
    left: int
    bottom: int
    series: tuple[Series, ...]
    y_ticks: tuple[tuple[float, str], ...]
    x_labels: tuple[tuple[float, str], ...]
    marks: tuple[Mark, ...]
    summary: str

    @property
    def empty(self) -> bool:
        return not any(s.segments for s in self.series)

    @property
    def plot_right(self) -> int:
        return self.width

    @property
    def plot_bottom(self) -> int:
        return self.height - self.bottom


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp  # pragma: no cover


def _fmt(v: float, unit: str) -> str:
    if unit == "%":
        return f"{v:.0f}%"
    if v >= 1000:
        return f"{v / 1000:.1f}s"
    return f"{v:.0f}ms"


def _segments(
    buckets: list[Bucket], value: Callable[[Bucket], float | None], x_of: Callable[[int], float], y_of: Callable[[float], float], step: int
) -> tuple[str, ...]:
    segments: list[list[str]] = []
    prev_start: int | None = None
    for b in buckets:
        v = value(b)
        if v is None:
            prev_start = None
            continue
        point = f"{x_of(b.start):.1f},{y_of(v):.1f}"
        if prev_start is None or b.start - prev_start > step:
            segments.append([point])
        else:
            segments[-1].append(point)
        prev_start = b.start
    # a lone point needs two to be visible as a polyline: draw a short tick
    out = []
    for seg in segments:
        if len(seg) == 1:
            x, y = seg[0].split(",")
            seg = [f"{float(x) - 1:.1f},{y}", f"{float(x) + 1:.1f},{y}"]
        out.append(" ".join(seg))
    return tuple(out)


def _chart(
    title: str,
    unit: str,
    buckets: list[Bucket],
    lines: list[tuple[str, str, Callable[[Bucket], float | None]]],
    start: datetime,
    end: datetime,
    step: int,
    width: int = 640,
    height: int = 170,
) -> Chart:
    left, bottom = 48, 20
    plot_w, plot_h = width - left - 4, height - bottom - 6
    t0, t1 = start.timestamp(), max(end.timestamp(), start.timestamp() + step)
    values = [v for _, _, f in lines for b in buckets if (v := f(b)) is not None]
    y_max = 100.0 if unit == "%" else _nice_max(max(values, default=0.0))

    def x_of(ts: int) -> float:
        return left + plot_w * min(1.0, max(0.0, (ts + step / 2 - t0) / (t1 - t0)))

    def y_of(v: float) -> float:
        return 6 + plot_h * (1.0 - min(1.0, max(0.0, v / y_max)))

    series = tuple(
        Series(name, css, _segments(buckets, f, x_of, y_of, step), next((f(b) for b in reversed(buckets) if f(b) is not None), None))
        for name, css, f in lines
    )
    y_ticks = tuple((y_of(y_max * k / 4), _fmt(y_max * k / 4, unit)) for k in range(5))
    fmt = "%H:%M" if (t1 - t0) <= 86400 else "%d %b"
    x_labels = tuple((left + plot_w * k / 4, datetime.fromtimestamp(t0 + (t1 - t0) * k / 4, UTC).strftime(fmt)) for k in range(5))
    parts = [f"{s.name} latest {_fmt(s.last, unit)}" for s in series if s.last is not None]
    summary = f"{title}: " + (", ".join(parts) if parts else "no data in this range")
    return Chart(title, unit, width, height, left, bottom, series, y_ticks, x_labels, (), summary)


def region_charts(buckets: list[Bucket], start: datetime, end: datetime, step: int) -> list[Chart]:
    """TTFT, total latency, success and throttle rates for the region page."""
    return [
        _chart(
            "Time to first token",
            "ms",
            buckets,
            [("p50", "line-a", lambda b: b.ttft_p50), ("p95", "line-b", lambda b: b.ttft_p95)],
            start,
            end,
            step,
        ),
        _chart(
            "Total latency",
            "ms",
            buckets,
            [("p50", "line-a", lambda b: b.total_p50), ("p95", "line-b", lambda b: b.total_p95)],
            start,
            end,
            step,
        ),
        _chart("Success rate", "%", buckets, [("success", "line-a", lambda b: b.success_pct)], start, end, step),
        _chart("Throttle rate (429)", "%", buckets, [("throttled", "line-b", lambda b: b.throttle_pct)], start, end, step),
    ]


def sparkline(buckets: list[Bucket], start: datetime, end: datetime, step: int, width: int = 240, height: int = 40) -> Chart:
    """60-minute TTFT p50 line, with a red tick under each minute that had failed or throttled probes."""
    t0, t1 = start.timestamp(), max(end.timestamp(), start.timestamp() + step)
    values = [b.ttft_p50 for b in buckets if b.ttft_p50 is not None]
    y_max = _nice_max(max(values, default=0.0))
    plot_h = height - 10

    def x_of(ts: int) -> float:
        return width * min(1.0, max(0.0, (ts + step / 2 - t0) / (t1 - t0)))

    def y_of(v: float) -> float:
        return 2 + plot_h * (1.0 - min(1.0, v / y_max))

    segs = _segments(buckets, lambda b: b.ttft_p50, x_of, y_of, step)
    bar_w = max(1.0, width * step / (t1 - t0) - 0.5)
    marks = tuple(Mark(x_of(b.start) - bar_w / 2, height - 1 - 7 * b.bad_ratio, bar_w, 7 * b.bad_ratio) for b in buckets if b.bad_ratio > 0)
    last = next((b.ttft_p50 for b in reversed(buckets) if b.ttft_p50 is not None), None)
    bad = sum(1 for b in buckets if b.bad_ratio > 0)
    summary = (
        f"TTFT p50 over 60 min, latest {_fmt(last, 'ms') if last is not None else 'none'}; {bad} minute(s) with failed or throttled probes"
    )
    return Chart("60 min", "ms", width, height, 0, 0, (Series("ttft p50", "line-a", segs, last),), (), (), marks, summary)
