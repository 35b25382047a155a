"""Server-side SVG charts: stacked bars of passes, misses and fails. Pure functions, no script;
colours come from classes in ``static/dashboard.css`` (the Content-Security-Policy allows no
inline style)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

SERIES = (("passes", "pass"), ("misses", "miss"), ("fails", "fail"))


def _nice(value: float) -> int:
    """The smallest whole 1, 2, 2.5 or 5 × 10^k at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1
    k = 1
    while True:
        for step in (k, 2 * k, 5 * k // 2, 5 * k):
            if step * 2 == 5 * k and k < 10:
                continue  # 2.5: not a whole number
            if step >= value:
                return step
        k *= 10


def whole_axis(peak: int, ticks: int = 4) -> tuple[int, int]:
    """``(top, step)`` of a y axis for whole counts up to ``peak``: ``step`` a whole 1, 2 or 5 ×
    10^k, so every tick is a whole number, and ``top`` the first multiple of it at or above ``peak``
    (at most ``ticks`` steps)."""
    step = _nice(peak / ticks)
    return max(step * -(-peak // step), step), step


def results_chart(chart_id: str, title: str, buckets: Sequence, label: Callable[[float], str],
                  every: int = 1, width: int = 720, height: int = 220) -> str:
    """An SVG stacked bar chart of ``buckets`` (objects with start, passes, misses, fails); every
    ``every``-th bar gets an axis label. Each bar has a ``<title>`` with its numbers."""
    left, right, top, bottom = 48, 8, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(buckets), 1)
    peak, step = whole_axis(max((b.passes + b.misses + b.fails for b in buckets), default=0))
    slot = plot_w / n
    bar = max(slot * 0.7, 1.0)
    out = [f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {width} {height}" role="img" '
           f'aria-labelledby="{escape(chart_id)}-title" xmlns="http://www.w3.org/2000/svg">',
           f'<title id="{escape(chart_id)}-title">{escape(title)}</title>']
    for value in range(0, peak + 1, step):
        y = top + plot_h - plot_h * value / peak
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value}</text>')
    for i, b in enumerate(buckets):
        x = left + i * slot + (slot - bar) / 2
        y = top + plot_h
        tip = f"{label(b.start)}: {b.passes} passes, {b.misses} misses, {b.fails} fails"
        out.append(f'<g class="bar" data-start="{int(b.start)}"><title>{escape(tip)}</title>')
        for attr, css in SERIES:
            value = getattr(b, attr)
            if value <= 0:
                continue
            h = plot_h * value / peak
            y -= h
            out.append(f'<rect class="{css}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}"/>')
        out.append("</g>")
        if i % every == 0:
            out.append(f'<text class="axis" x="{x + bar / 2:.1f}" y="{height - 8}" text-anchor="middle">'
                       f'{escape(label(b.start))}</text>')
    out.append("</svg>")
    return "".join(out)
