"""Server-rendered SVG line charts: no script, no style attribute (the panel's CSP allows
neither), only SVG presentation attributes; sized by the stylesheet (``svg.chart``).

Each chart has a title and a description for screen readers, a ``<title>`` on every data
point (the browser shows it on hover, no script needed) and the values as a table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.web.humanize import utc_text
from worker.web.pages import esc

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 28
INK, GRID, LINE = "#1d2330", "#c9ced6", "#1a5fb4"


@dataclass(frozen=True)
class Point:
    at: datetime
    value: float


def peaks(points: Sequence[Point], start: datetime, end: datetime, step: timedelta) -> list[Point]:
    """The highest value in each ``step`` from ``start`` to ``end``, at the bucket's end
    (empty buckets are left out: a gap in sampling is not a zero)."""
    buckets: dict[int, float] = {}
    for p in points:
        if start <= p.at <= end:
            index = min(int((p.at - start) / step), int((end - start) / step) - 1)
            buckets[index] = max(buckets.get(index, p.value), p.value)
    return [Point(start + step * (i + 1), v) for i, v in sorted(buckets.items())]


def _nice_max(value: float) -> float:
    """A round upper bound for the y axis (1, 2, 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10 if value >= 1 else 1.0
    for factor in (1, 2, 5, 10):
        if value <= factor * magnitude:
            return float(factor * magnitude)
    return float(10 * magnitude)


def line_chart(
    chart_id: str,
    title: str,
    points: Sequence[Point],
    start: datetime,
    end: datetime,
    fmt: Callable[[float], str],
    y_max: float | None = None,
) -> str:
    top = y_max if y_max is not None else _nice_max(max((p.value for p in points), default=0))
    span = (end - start).total_seconds() or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(at: datetime) -> float:
        return LEFT + plot_w * (at - start).total_seconds() / span

    def y(value: float) -> float:
        return TOP + plot_h * (1 - min(value, top) / top)

    grid = "".join(
        f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{WIDTH - RIGHT}" y2="{y(v):.1f}" '
        f'stroke="{GRID}" stroke-width="1"/>'
        f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end" fill="{INK}" '
        f'font-size="11">{esc(fmt(v))}</text>'
        for v in (0, top / 2, top)
    )
    ticks = "".join(
        f'<text x="{x(at):.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}" fill="{INK}" '
        f'font-size="11">{esc(label)}</text>'
        for at, label, anchor in (
            (start, "24 h ago", "start"),
            (start + (end - start) / 2, "12 h ago", "middle"),
            (end, "now", "end"),
        )
    )
    coords = " ".join(f"{x(p.at):.1f},{y(p.value):.1f}" for p in points)
    line = (
        f'<polyline points="{coords}" fill="none" stroke="{LINE}" stroke-width="2"/>'
        if len(points) > 1
        else ""
    )
    dots = "".join(
        f'<circle class="point" cx="{x(p.at):.1f}" cy="{y(p.value):.1f}" r="3" fill="{LINE}">'
        f"<title>{esc(fmt(p.value))} at {esc(utc_text(p.at))}</title></circle>"
        for p in points
    )
    latest = f"latest {fmt(points[-1].value)}, " if points else "no samples yet, "
    peak = f"peak {fmt(max(p.value for p in points))}" if points else "nothing to draw"
    return (
        f'<figure class="chart"><svg class="chart" id="{esc(chart_id)}" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" aria-labelledby="{esc(chart_id)}-t {esc(chart_id)}-d">'
        f'<title id="{esc(chart_id)}-t">{esc(title)}</title>'
        f'<desc id="{esc(chart_id)}-d">{esc(latest + peak)}; {len(points)} points.</desc>'
        f'{grid}<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="{INK}" '
        f'stroke-width="1"/>{ticks}{line}{dots}</svg>'
        f"<figcaption>{esc(title)}: {esc(latest + peak)}</figcaption></figure>"
    )


def data_table(
    caption: str, columns: Sequence[tuple[str, Sequence[Point], Callable[[float], str]]]
) -> str:
    """The charts' values by time, as a table (in a disclosure, for those who can't see
    the lines); every column is bucketed the same way."""
    times = sorted({p.at for _, points, _ in columns for p in points})
    by_column = [({p.at: p.value for p in points}, fmt) for _, points, fmt in columns]
    head = "".join(f'<th scope="col">{esc(name)}</th>' for name, _, _ in columns)
    rows = "".join(
        f'<tr><th scope="row">{esc(utc_text(at))}</th>'
        + "".join(
            f"<td>{esc(fmt(values[at])) if at in values else '-'}</td>" for values, fmt in by_column
        )
        + "</tr>"
        for at in reversed(times)
    )
    return (
        f"<details><summary>{esc(caption)}</summary><div class=scroll><table>"
        f'<tr><th scope="col">until</th>{head}</tr>{rows}</table></div></details>'
    )
