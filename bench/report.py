"""How a benchmark shows its results: markdown tables, and hand-written SVG line charts (no
plotting library to install): a grid of panels, a line per series."""

from __future__ import annotations

from pathlib import Path


def markdown_table(columns: list[tuple[str, str]], rows: list[dict]) -> str:
    """A markdown table: each column a (header, format) pair, the format filled from a row
    (`"{seq_per_s:.1f}"`); the first column left-aligned, the others right-aligned."""
    head = "| " + " | ".join(h for h, _ in columns) + " |"
    rule = "|---|" + "---:|" * (len(columns) - 1)
    body = ["| " + " | ".join(f.format(**r) for _, f in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


PALETTE = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]
W, H, PAD = 330, 230, 48


def _panel(out: list[str], i: int, label: str, points: dict[str, list[tuple]]) -> None:
    """One panel: x is the position of each distinct x value, y from 0 to the top value."""
    x0, y0 = (i % 2) * W, 30 + (i // 2) * H
    top = max((v for pts in points.values() for _, v in pts), default=1) * 1.1 or 1
    xs = sorted({c for pts in points.values() for c, _ in pts})

    def px(c):
        return x0 + PAD + (W - PAD - 35) * xs.index(c) / max(1, len(xs) - 1)

    def py(v):
        return y0 + H - PAD + 10 - (H - PAD - 20) * v / top

    base_y = py(0)
    out.append(f'<text x="{x0 + W / 2}" y="{y0 + 12}" text-anchor="middle">{label}</text>')
    out.append(
        f'<line x1="{x0 + PAD}" y1="{base_y}" x2="{x0 + W - 35}" y2="{base_y}" stroke="#444"/>'
    )
    out.append(
        f'<line x1="{x0 + PAD}" y1="{base_y}" x2="{x0 + PAD}" y2="{py(top)}" stroke="#444"/>'
    )
    for frac in (0, 0.5, 1):
        v = top / 1.1 * frac
        out.append(f'<text x="{x0 + PAD - 4}" y="{py(v) + 4}" text-anchor="end">{v:.0f}</text>')
    for c in xs:
        out.append(f'<text x="{px(c)}" y="{base_y + 14}" text-anchor="middle">{c}</text>')
    for j, pts in enumerate(points.values()):
        color = PALETTE[j % len(PALETTE)]
        line = " ".join(f"{px(c):.1f},{py(v):.1f}" for c, v in pts)
        out.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        for c, v in pts:
            out.append(f'<circle cx="{px(c):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>')


def line_charts(path: Path, title: str, panels: list[tuple[str, dict[str, list[tuple]]]]) -> None:
    """Write an SVG of `panels`, two a row: each (label, {series: [(x, y), ...]})."""
    series = list(dict.fromkeys(s for _, points in panels for s in points))
    rows = (len(panels) + 1) // 2
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" '
        f'height="{rows * H + 50 + 16 * len(series)}" font-family="sans-serif" font-size="11">',
        f'<text x="{W}" y="18" text-anchor="middle" font-size="14">{title}</text>',
    ]
    for i, (label, points) in enumerate(panels):
        _panel(out, i, label, {s: points.get(s, []) for s in series})
    for j, s in enumerate(series):
        y = rows * H + 50 + 16 * j
        out.append(
            f'<rect x="{PAD}" y="{y - 9}" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>'
        )
        out.append(f'<text x="{PAD + 14}" y="{y}">{s}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out))
