"""Small charts drawn by the server as inline SVG: no script, no external asset, readable
with JavaScript off (the /monitor page)."""
from __future__ import annotations

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 360, 90, 4


def _svg(body: str, title: str, height: int = HEIGHT) -> Markup:
    return Markup(f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
                  f'height="{height}" role="img" aria-label="{escape(title)}">'
                  f'<title>{escape(title)}</title>{body}</svg>')


def line_chart(values: list[float | None], y_max: float, title: str,
               threshold: float | None = None) -> Markup:
    """One point per value, left (oldest) to right (now), 0 at the bottom and `y_max` at the
    top (values above it are drawn at the top); gaps (None) break the line; `threshold` is a
    dashed red line."""
    y_max = y_max or 1.0
    step = (WIDTH - 2 * PAD) / max(len(values) - 1, 1)

    def y(v: float) -> float:
        return round(HEIGHT - PAD - (HEIGHT - 2 * PAD) * min(v, y_max) / y_max, 1)

    lines, run = [], []
    for i, value in enumerate(values + [None]):
        if value is None:
            if run:
                lines.append(run)
            run = []
        else:
            run.append(f"{round(PAD + i * step, 1)},{y(value)}")
    body = [f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" class="frame"/>']
    if threshold is not None:
        body.append(f'<line class="threshold" x1="0" x2="{WIDTH}" y1="{y(threshold)}" '
                    f'y2="{y(threshold)}"/>')
    for points in lines:
        if len(points) == 1:
            x, y1 = points[0].split(",")
            body.append(f'<circle class="point" cx="{x}" cy="{y1}" r="2"/>')
        else:
            body.append(f'<polyline class="line" points="{" ".join(points)}"/>')
    body.append(f'<text x="{WIDTH - PAD}" y="12" text-anchor="end">{y_max:.3g}</text>')
    return _svg("".join(body), title)


def paired_bars(labels: list[str], reference: list[float], live: list[float] | None,
                title: str) -> Markup:
    """Shares (0..1) side by side, one row per label: the reference's bar above the live one."""
    row, label_width = 22, 110
    height = row * len(labels) + PAD
    span = WIDTH - label_width - 50
    body = []
    for i, label in enumerate(labels):
        top = PAD + i * row
        body.append(f'<text x="0" y="{top + 14}">{escape(label[:16])}</text>')
        for j, (name, shares) in enumerate((("reference", reference), ("live", live))):
            if shares is None:
                continue
            share = shares[i]
            body.append(f'<rect class="{name}" x="{label_width}" y="{top + j * 9}" '
                        f'width="{round(span * share, 1)}" height="8"/>')
            body.append(f'<text x="{label_width + span * share + 4:.1f}" y="{top + j * 9 + 8}" '
                        f'class="small">{share:.0%}</text>')
    return _svg("".join(body), title, height)
