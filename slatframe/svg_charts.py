"""Charts as inline SVG text, drawn in pure Python (no matplotlib), for the HTML report.

Every mark carries its data: a bar ``data-label``/``data-value`` (and ``data-series``
in a grouped chart), a line point ``data-series``/``data-x``/``data-y``; values are
written with ``repr(float)``, so they read back exactly. All text is escaped.
"""
from __future__ import annotations

import math
from html import escape
from typing import Any, Sequence

WIDTH, HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 34, 58
LEGEND_W = 170
COLORS = ("#3366cc", "#dc7633", "#2e8b57", "#b03a8e", "#7f6a00", "#17a2b8", "#8e44ad", "#c0392b")
#: The charts' own style rules (the HTML report's page includes them).
CHART_CSS = """svg.chart{font-family:system-ui,Helvetica,Arial,sans-serif}.chart-title{font-size:14px;font-weight:600}
.tick{font-size:11px;fill:#444}.value{font-size:11px;fill:#222}.axis-label{font-size:12px;fill:#333}
.legend{font-size:12px}.legend-title{font-size:12px;font-weight:600}.grid{stroke:#e8e8e8}.axis{stroke:#888}
"""


def esc(value: Any) -> str:
    """Text (or any value) escaped for HTML element content and quoted attributes."""
    return escape(str(value), quote=True)


def number(value: float) -> str:
    """A value for a ``data-*`` attribute: exact (``repr``) for floats, digits for ints."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else repr(float(value))


def short(value: float) -> str:
    """A compact tick or bar label: 0.25, 1.5k, 12M, 3.2G."""
    a = abs(value)
    for limit, unit, suffix in ((1e12, 1e12, "T"), (1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if a >= limit:
            return f"{value / unit:.3g}{suffix}"
    return f"{value:.4g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (about ``count`` of them)."""
    if not (math.isfinite(low) and math.isfinite(high)) or max(abs(low), abs(high)) > 1e300:
        low, high = 0.0, 1.0  # (no axis shows such numbers; and steps of them would overflow)
    if high - low <= max(1e-12 * max(abs(low), abs(high)), 1e-300):  # one value, or two a float barely parts
        high = low + (abs(low) if abs(low) > 1e-300 else 1.0)
    raw = (high - low) / count
    step = 10.0 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if step * m >= raw)
    start = math.floor(low / step) * step
    start -= step if start > low else 0.0  # (low / step rounded up to a whole number)
    # the ticks from start up to the first at or above high, counted (a step added in a loop
    # can be lost in rounding at a large magnitude, and the loop would never end); each to 15
    # significant digits (0.1 + 0.2 is 0.3, and a tick of 1e-23 stays one)
    n = math.ceil((high - start) / step) + 1
    n += 1 if start + (n - 1) * step < high else 0  # (high - start rounded down)
    return [float(f"{start + i * step:.15g}") for i in range(n)]


def _svg(title: str, width: int, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{HEIGHT}" '
            f'viewBox="0 0 {width} {HEIGHT}" role="img" aria-label="{esc(title)}">'
            f"<title>{esc(title)}</title>"
            f'<text x="{width / 2:.1f}" y="18" text-anchor="middle" class="chart-title">{esc(title)}</text>'
            + "".join(body) + "</svg>")


def standalone(svg: str) -> str:
    """A chart as an SVG file of its own: its style rules and a white ground inside it."""
    head, _, rest = svg.partition(">")
    return f'{head}><style>{CHART_CSS}</style><rect width="100%" height="100%" fill="#fff"/>{rest}\n'


def _y_axis(ticks: list[float], y_of: Any, right: float, label: str) -> list[str]:
    out = []
    for t in ticks:
        y = y_of(t)
        out.append(f'<line x1="{LEFT}" x2="{right:.1f}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{esc(short(t))}</text>')
    mid = (TOP + HEIGHT - BOTTOM) / 2
    out.append(f'<text x="14" y="{mid:.1f}" transform="rotate(-90 14 {mid:.1f})" text-anchor="middle" '
               f'class="axis-label">{esc(label)}</text>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" class="axis"/>'
               f'<line x1="{LEFT}" x2="{right:.1f}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}" class="axis"/>')
    return out


def _y_scale(values: Sequence[float], y_max: float | None) -> tuple[list[float], Any]:
    finite = [v for v in values if math.isfinite(v)]
    low = min([0.0, *finite])
    high = y_max if y_max is not None else max([0.0, *finite]) * 1.08  # room for the value labels
    ticks = nice_ticks(low, high)
    lo, hi = ticks[0], ticks[-1]
    span = HEIGHT - BOTTOM - TOP
    return ticks, lambda v: HEIGHT - BOTTOM - (v - lo) / (hi - lo) * span


def _legend(names: Sequence[str], x: float, title: str | None) -> list[str]:
    out = []
    y = TOP + 4
    if title:
        out.append(f'<text x="{x:.1f}" y="{y + 8:.1f}" class="legend-title">{esc(title)}</text>')
        y += 16
    for i, name in enumerate(names):
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="10" height="10" fill="{COLORS[i % len(COLORS)]}"/>'
                   f'<text x="{x + 14:.1f}" y="{y + 9:.1f}" class="legend">{esc(name)}</text>')
        y += 16
    return out


def bar_chart(bars: Sequence[tuple[str, float]], title: str, y_label: str, y_max: float | None = None) -> str:
    """One bar per (label, value); ``y_max`` fixes the top of the scale (1 for rates)."""
    return grouped_bar_chart([b[0] for b in bars], {"": [b[1] for b in bars]}, title, "", y_label, y_max)


def grouped_bar_chart(categories: Sequence[Any], series: dict[str, Sequence[float | None]], title: str,
                      x_label: str, y_label: str, y_max: float | None = None, legend_title: str | None = None) -> str:
    """Bars per category, one bar per series in each (a None value draws no bar)."""
    legend = len(series) > 1 or any(series)
    width = WIDTH + (LEGEND_W if legend else 0)
    right = width - RIGHT - (LEGEND_W if legend else 0)
    values = [v for vs in series.values() for v in vs if v is not None]
    ticks, y_of = _y_scale(values, y_max)
    body = _y_axis(ticks, y_of, right, y_label)
    slot = (right - LEFT) / max(1, len(categories))
    bar_w = slot * 0.8 / max(1, len(series))
    base = y_of(max(ticks[0], 0.0))
    for c, cat in enumerate(categories):
        cx = LEFT + slot * (c + 0.5)
        body.append(f'<text x="{cx:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" class="tick">'
                    f'{esc(cat)}</text>')
        for s, (name, vs) in enumerate(series.items()):
            v = vs[c]
            if v is None:
                continue
            x = cx - slot * 0.4 + s * bar_w
            y = y_of(v)
            top, h = min(y, base), max(abs(base - y), 0.5)  # a zero still shows as a hairline
            tag = f' data-series="{esc(name)}"' if name else ""
            body.append(f'<rect class="bar"{tag} data-label="{esc(cat)}" data-value="{number(v)}" '
                        f'x="{x:.1f}" y="{top:.1f}" width="{bar_w * 0.95:.1f}" height="{h:.1f}" '
                        f'fill="{COLORS[s % len(COLORS)]}"><title>{esc(name + " " if name else "")}{esc(cat)}: '
                        f'{esc(short(v))}</title></rect>')
            if len(series) == 1:
                body.append(f'<text x="{x + bar_w * 0.475:.1f}" y="{top - 4:.1f}" text-anchor="middle" '
                            f'class="value">{esc(short(v))}</text>')
    if x_label:
        body.append(f'<text x="{(LEFT + right) / 2:.1f}" y="{HEIGHT - 12}" text-anchor="middle" '
                    f'class="axis-label">{esc(x_label)}</text>')
    if legend:
        body += _legend(list(series), right + 16, legend_title)
    return _svg(title, width, body)


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, x_label: str,
               y_label: str, log_x: bool = False, legend_title: str | None = None) -> str:
    """One line with point markers per series of (x values, y values); x numeric."""
    legend = len(series) > 1
    width = WIDTH + (LEGEND_W if legend else 0)
    right = width - RIGHT - (LEGEND_W if legend else 0)
    xs = [x for xv, _ in series.values() for x in xv]
    ticks, y_of = _y_scale([y for _, yv in series.values() for y in yv], None)
    body = _y_axis(ticks, y_of, right, y_label)
    f = (lambda v: math.log10(v)) if log_x else (lambda v: float(v))
    lo, hi = (min(map(f, xs)), max(map(f, xs))) if xs else (0.0, 1.0)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    pad = 12

    def x_of(v: float) -> float:
        return LEFT + pad + (f(v) - lo) / (hi - lo) * (right - LEFT - 2 * pad)

    shown = sorted(set(xs)) if len(set(xs)) <= 12 else None
    x_ticks = shown if shown is not None else (
        [10 ** e for e in range(math.ceil(lo), math.floor(hi) + 1)] if log_x else nice_ticks(lo, hi))
    for t in x_ticks:
        if (lo <= f(t) <= hi) if not log_x or t > 0 else False:
            x = x_of(t)
            body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM + 4}" '
                        f'class="axis"/><text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                        f'class="tick">{esc(short(t))}</text>')
    body.append(f'<text x="{(LEFT + right) / 2:.1f}" y="{HEIGHT - 12}" text-anchor="middle" '
                f'class="axis-label">{esc(x_label + (" (log scale)" if log_x else ""))}</text>')
    for s, (name, (xv, yv)) in enumerate(series.items()):
        color = COLORS[s % len(COLORS)]
        pts = [(x_of(x), y_of(y), x, y) for x, y in zip(xv, yv)]
        body.append(f'<g class="series" data-series="{esc(name)}">')
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                    + " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in pts) + '"/>')
        for px, py, x, y in pts:
            body.append(f'<circle class="point" data-series="{esc(name)}" data-x="{number(x)}" '
                        f'data-y="{number(y)}" cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{color}">'
                        f'<title>{esc(name)}: {esc(short(x))}, {esc(short(y))}</title></circle>')
        body.append("</g>")
    if legend:
        body += _legend(list(series), right + 16, legend_title)
    return _svg(title, width, body)
