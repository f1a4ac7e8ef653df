"""Charts as server-rendered SVG: the geometry here (pure), the markup in
``templates/_chart.html`` (autoescaped like every page), no JavaScript at all.

A chart is a row of bars, one per label (a week, a service), on a linear scale from 0 to
the largest value (or the target, when that is larger), with a dashed target line where
the metric has a target (docs/metrics.md, "Targets"). A missing value (``None``: nothing
to divide by) is drawn as no bar and labelled "n/a", never as 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH = 560
HEIGHT = 220
_LEFT = 56  # room for the y-axis labels
_RIGHT = 12
_TOP = 16
_BOTTOM = 40  # room for the x-axis labels


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # the x-axis label
    value: str  # the value as text ("n/a" when missing)
    missing: bool
    missed_target: bool  # the value is on the wrong side of the target


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    """Everything the template needs; coordinates in SVG user units."""

    id: str
    title: str
    width: int
    height: int
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    target_y: float | None
    target_label: str | None
    baseline_y: float
    left: float
    right: float

    @property
    def summary(self) -> str:
        """The chart in words, for screen readers (the SVG's ``<desc>``)."""
        values = "; ".join(f"{b.label}: {b.value}" for b in self.bars) or "no data"
        target = f" (target {self.target_label})" if self.target_label else ""
        return f"{self.title}{target}: {values}"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value``."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value - 1e-12:
            return float(step * power)
    return float(10 * power)


def bar_chart(
    chart_id: str,
    title: str,
    points: Sequence[tuple[str, float | None]],
    *,
    fmt: Callable[[float], str] = lambda v: f"{v:g}",
    target: float | None = None,
    higher_is_better: bool = True,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Chart:
    """One bar per ``(label, value)``; ``target`` draws its line and flags the bars on the
    wrong side of it (below it when ``higher_is_better``, else at or above it)."""
    present = [v for _, v in points if v is not None and math.isfinite(v)]
    top = nice_ceiling(max([*present, target or 0.0, 0.0]))
    plot_w = width - _LEFT - _RIGHT
    plot_h = height - _TOP - _BOTTOM
    baseline = _TOP + plot_h

    def y_of(value: float) -> float:
        return round(baseline - plot_h * max(0.0, min(value, top)) / top, 2)

    slot = plot_w / max(1, len(points))
    bar_w = round(max(2.0, min(48.0, slot * 0.7)), 2)
    bars = []
    for index, (label, value) in enumerate(points):
        x = round(_LEFT + slot * index + (slot - bar_w) / 2, 2)
        missing = value is None or not math.isfinite(value)
        y = baseline if missing else y_of(value)  # type: ignore[arg-type]
        missed = False
        if not missing and target is not None:
            assert value is not None
            missed = value < target if higher_is_better else value >= target
        bars.append(
            Bar(
                x=x,
                y=y,
                width=bar_w,
                height=round(baseline - y, 2),
                label=label,
                value="n/a" if missing else fmt(value),  # type: ignore[arg-type]
                missing=missing,
                missed_target=missed,
            )
        )
    ticks = tuple(Tick(y_of(top * i / 4), fmt(top * i / 4)) for i in range(5))
    return Chart(
        id=chart_id,
        title=title,
        width=width,
        height=height,
        bars=tuple(bars),
        ticks=ticks,
        target_y=y_of(target) if target is not None else None,
        target_label=fmt(target) if target is not None else None,
        baseline_y=baseline,
        left=_LEFT,
        right=width - _RIGHT,
    )


def percent(value: float) -> str:
    return f"{value * 100:.3g} %"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.3g} min"


def count(value: float) -> str:
    return f"{value:.3g}"
