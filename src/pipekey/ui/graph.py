"""The access graph, pipeline -> key -> backend, as an SVG drawn on the server."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..inventory import KeyEntry

#: fill colour of a key's box by state
COLOURS = {"missing": "#f8b4b4", "stale": "#fde68a", "shadowed": "#e9d5ff", "orphan": "#bae6fd",
           "ok": "#bbf7d0", "optional": "#e5e7eb", "template": "#f3f4f6"}
_ROW, _BOX_H, _WIDTHS, _GAP = 26, 20, (190, 330, 130), 90


def svg(pipelines: list[str], keys: list[KeyEntry], chain: list[str], limit: int = 200) -> str:
    """An ``<svg>`` element: pipelines on the left, keys in the middle, backends on the right;
    an edge from each pipeline to each key it uses, and from each key to the backend it
    resolves from (dashed: shadowed copies). At most ``limit`` keys (the first ones)."""
    keys = keys[:limit]
    xs = (10, 10 + _WIDTHS[0] + _GAP, 10 + _WIDTHS[0] + _WIDTHS[1] + 2 * _GAP)
    height = max(len(pipelines), len(keys), len(chain), 1) * _ROW + 20
    width = xs[2] + _WIDTHS[2] + 10
    ys_p = {p: 10 + i * _ROW for i, p in enumerate(pipelines)}
    ys_k = {k.key: 10 + i * _ROW for i, k in enumerate(keys)}
    ys_b = {b: 10 + i * _ROW for i, b in enumerate(chain)}
    mid = _BOX_H // 2
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           'aria-label="access graph: pipelines, keys, backends">']
    for k in keys:
        y = ys_k[k.key] + mid
        for p in sorted({u.pipeline for u in k.uses} & ys_p.keys()):
            out.append(_edge(xs[0] + _WIDTHS[0], ys_p[p] + mid, xs[1], y, "#64748b"))
        for i, place in enumerate(k.places):
            if place.backend in ys_b:
                out.append(_edge(xs[1] + _WIDTHS[1], y, xs[2], ys_b[place.backend] + mid,
                                 "#16a34a" if i == 0 else "#a855f7", dashed=i > 0))
    for p, y in ys_p.items():
        out.append(_box(xs[0], y, _WIDTHS[0], p, "#dbeafe", "pipeline"))
    for k in keys:
        out.append(_box(xs[1], ys_k[k.key], _WIDTHS[1], k.key, COLOURS.get(k.state, "#fff"),
                        f"key {k.state}"))
    for b, y in ys_b.items():
        out.append(_box(xs[2], y, _WIDTHS[2], b, "#fef3c7", "backend"))
    out.append("</svg>")
    return "\n".join(out)


def _edge(x1: int, y1: int, x2: int, y2: int, colour: str, dashed: bool = False) -> str:
    dash = ' stroke-dasharray="4 3"' if dashed else ""
    c = (x1 + x2) // 2
    return (f'<path d="M{x1},{y1} C{c},{y1} {c},{y2} {x2},{y2}" fill="none" stroke="{colour}"'
            f' stroke-width="1.2"{dash}/>')


def _box(x: int, y: int, w: int, label: str, fill: str, kind: str) -> str:
    shown = label if len(label) * 6.6 < w - 8 else "…" + label[-int((w - 14) / 6.6):]
    return (f'<g class="{escape(kind)}"><title>{escape(label)}</title>'
            f'<rect x="{x}" y="{y}" width="{w}" height="{_BOX_H}" rx="4" fill="{fill}" '
            f'stroke="#475569" stroke-width="0.6"/><text x="{x + 5}" y="{y + 14}" '
            f'font-size="11" font-family="monospace">{escape(shown)}</text></g>')
