"""Bar charts as inline SVG: hours and counts in, escaped markup out; pure, no I/O.

The charts of the operator's overview are drawn on the server: no script, and no style
attribute (the Content-Security-Policy allows only the stylesheet), so the shapes carry
presentation attributes and classes of static/portal.css. They read without colour: the
bars are hatched and outlined, the axes are labelled with counts and hours, and the
highest bar carries its figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 18, 40  # room for the axes' labels
TICK_HOURS = 6  # an hour label every this many hours


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 times a power of ten that is at least `value` (at least 1)."""
    if value <= 1:
        return 1
    power: int = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def hourly_bars(
    hours: Sequence[datetime], values: Sequence[int], *, key: str, title: str, label: str
) -> Markup:
    """One bar per hour, hours oldest first; `key` makes the ids unique on the page,
    `title` names the chart and `label` says in words what it shows (for screen readers)."""
    if len(hours) != len(values) or not hours:
        raise ValueError("a chart needs one value per hour, and at least one hour")
    top = nice_ceiling(max(values))
    slot = (WIDTH - LEFT - RIGHT) / len(values)
    pattern = f"hatch-{key}"
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-label="{escape(label)}" focusable="false" data-peak="{max(values)}">',
        f"<title>{escape(title)}</title>",
        f'<defs><pattern id="{escape(pattern)}" width="6" height="6"'
        ' patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect class="chart-bar-ground" width="6" height="6"/>'
        '<line class="chart-hatch" x1="0" y1="0" x2="0" y2="6"/></pattern></defs>',
        *_value_axis(top),
        *_bars(values, top, slot, pattern),
        *_hour_axis(hours, slot),
        "</svg>",
    ]
    return Markup("".join(parts))  # noqa: S704 (every text in it went through escape())


def _y(value: float, top: int) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - value / top)


def _value_axis(top: int) -> list[str]:
    """Grid lines at 0, half and the top, each with its figure."""
    marks = sorted({0, top // 2, top}) if top >= 2 else [0, top]
    lines = []
    for mark in marks:
        y = _y(mark, top)
        lines.append(
            f'<line class="chart-grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}"'
            f' y2="{y:.1f}"/><text class="chart-label" x="{LEFT - 6}" y="{y + 4:.1f}"'
            f' text-anchor="end">{mark}</text>'
        )
    return lines


def _bars(values: Sequence[int], top: int, slot: float, pattern: str) -> list[str]:
    bars = []
    peak = max(values)
    peak_at = values.index(peak)
    for n, value in enumerate(values):
        if value <= 0:
            continue
        x, y = LEFT + n * slot + 1, _y(value, top)
        height = max(_y(0, top) - y, 1.0)
        bars.append(
            f'<rect class="chart-bar" x="{x:.1f}" y="{y:.1f}" width="{slot - 2:.1f}"'
            f' height="{height:.1f}" fill="url(#{escape(pattern)})"/>'
        )
        if n == peak_at:
            bars.append(
                f'<text class="chart-label chart-peak" x="{x + (slot - 2) / 2:.1f}"'
                f' y="{y - 4:.1f}" text-anchor="middle">{value}</text>'
            )
    return bars


def _hour_axis(hours: Sequence[datetime], slot: float) -> list[str]:
    """The base line, and a tick with its hour every TICK_HOURS hours (the date at 00:00)."""
    base = _y(0, 1)
    marks = [
        f'<line class="chart-axis" x1="{LEFT}" y1="{base:.1f}" x2="{WIDTH - RIGHT}"'
        f' y2="{base:.1f}"/>'
    ]
    for n, hour in enumerate(hours):
        if hour.hour % TICK_HOURS:
            continue
        x = LEFT + n * slot
        # A label near an edge is anchored inwards: the SVG cuts off what passes its box.
        anchor = "start" if x < LEFT + 40 else "end" if x > WIDTH - RIGHT - 40 else "middle"
        marks.append(
            f'<line class="chart-axis" x1="{x:.1f}" y1="{base:.1f}" x2="{x:.1f}"'
            f' y2="{base + 5:.1f}"/><text class="chart-label" x="{x:.1f}" y="{base + 18:.1f}"'
            f' text-anchor="{anchor}">{hour:%H:%M}</text>'
        )
        if hour.hour == 0:
            marks.append(
                f'<text class="chart-label" x="{x:.1f}" y="{base + 33:.1f}"'
                f' text-anchor="{anchor}">{hour:%Y-%m-%d}</text>'
            )
    return marks
