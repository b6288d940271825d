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

from markupsafe import Markup, escape

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

    def mark_svg(self) -> Markup:
        """The marks as SVG rects, joined here: a template loop escaped four attributes per mark, 20 sparklines a refresh."""
        return Markup(
            "".join(f'<rect class="spark-bad" x="{m.x:.1f}" y="{m.y:.1f}" width="{m.w:.1f}" height="{m.h:.1f}"></rect>' for m in self.marks)
        )

    def line_svg(self) -> Markup:
        """Each series' unbroken runs as SVG polylines (the class and points escaped here, once)."""
        return Markup(
            "".join(f'<polyline class="{escape(s.css)}" points="{escape(seg)}"></polyline>' for s in self.series for seg in s.segments)
        )

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
        _extend(segments, point, prev_start is None or b.start - prev_start > step)
        prev_start = b.start
    return _joined(segments)


def _extend(segments: list[list[str]], point: str, gap: bool) -> None:
    """A point continues the current run, or after a gap in the data starts a new one (the line breaks, never bridges)."""
    if gap:
        segments.append([point])
    else:
        segments[-1].append(point)


def _joined(segments: list[list[str]]) -> tuple[str, ...]:
    """Each unbroken run as polyline points; a lone point needs two to be visible as a polyline: draw a short tick."""
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
    """60-minute TTFT p50 line, with a red tick under each minute that had failed or throttled probes.

    The overview draws one per region on every refresh: each bucket's x is computed
    once, in one pass, for its point and its mark (no per-point closures).
    """
    t0, t1 = start.timestamp(), max(end.timestamp(), start.timestamp() + step)
    span, half = t1 - t0, step / 2
    values = [b.ttft_p50 for b in buckets if b.ttft_p50 is not None]
    y_max = _nice_max(max(values, default=0.0))
    plot_h = height - 10
    bar_w = max(1.0, width * step / span - 0.5)
    segments: list[list[str]] = []
    marks: list[Mark] = []
    prev_start: int | None = None
    last: float | None = None
    for b in buckets:
        f = (b.start + half - t0) / span
        x = width * (1.0 if f >= 1.0 else (f if f > 0.0 else 0.0))
        if b.ok < b.count:  # bad_ratio > 0
            bad = (b.count - b.ok) / b.count
            marks.append(Mark(x - bar_w / 2, height - 1 - 7 * bad, bar_w, 7 * bad))
        v = b.ttft_p50
        if v is None:
            prev_start = None
            continue
        last = v
        r = v / y_max
        point = f"{x:.1f},{2 + plot_h * (1.0 - (r if r < 1.0 else 1.0)):.1f}"
        _extend(segments, point, prev_start is None or b.start - prev_start > step)
        prev_start = b.start
    summary = f"TTFT p50 over 60 min, latest {_fmt(last, 'ms') if last is not None else 'none'}; {len(marks)} minute(s) with failed or throttled probes"
    return Chart(
        "60 min", "ms", width, height, 0, 0, (Series("ttft p50", "line-a", _joined(segments), last),), (), (), tuple(marks), summary
    )
