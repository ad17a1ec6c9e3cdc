"""Drawing patterns with matplotlib: special vertices coloured, parallel edges and loops visible.

Example:
    >>> from everygraph.contractions import basis
    >>> from everygraph.contractions.draw import draw_basis
    >>> fig = draw_basis(basis(2, "node"), columns=5)  # doctest: +SKIP
    >>> fig.savefig("basis.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

from .pattern import VERTEX_LETTERS, Pattern

__all__ = ["draw_pattern", "draw_basis", "SPECIAL_COLORS"]

#: Fill colours of the first and second special vertex, and of the other vertices.
SPECIAL_COLORS = ("#d62728", "#1f77b4", "#dddddd")


def _positions(p: Pattern) -> dict[int, tuple[float, float]]:
    n = p.num_vertices
    if n == 1:
        return {0: (0.0, 0.0)}
    return {v: (math.cos(2 * math.pi * v / n + math.pi / 2), math.sin(2 * math.pi * v / n + math.pi / 2)) for v in range(n)}


def draw_pattern(p: Pattern, ax: Any, title: bool = True, node_size: float = 0.16) -> None:
    """Draw one pattern on a matplotlib axis: vertices on a circle (letters as in the
    pattern string), special ``a`` red and ``b`` blue (a diagonal pair ``(a, a)`` gets a
    red/blue ring), parallel edges as separate arcs, loops as small circles, directed edges
    with arrows, channels > 0 as edge labels."""
    from matplotlib.patches import Circle, FancyArrowPatch

    pos = _positions(p)
    seen: Counter = Counter()
    multiplicity = Counter((min(u, v), max(u, v)) if not p.directed else (u, v) for u, v in p.edges)
    for (u, v), c in zip(p.edges, p.channels):
        key = (min(u, v), max(u, v)) if not p.directed else (u, v)
        k = seen[key]
        seen[key] += 1
        if u == v:
            x, y = pos[u]
            norm = math.hypot(x, y) or 1.0
            r = 0.22 + 0.1 * k
            cx, cy = x + (x / norm if norm else 0) * r, y + (y / norm if norm else 1) * r
            ax.add_patch(Circle((cx, cy), r, fill=False, lw=1.4, color="black"))
            continue
        m = multiplicity[key]
        rad = 0.0 if m == 1 else (k - (m - 1) / 2) * 0.35
        arrow = FancyArrowPatch(
            pos[u],
            pos[v],
            connectionstyle=f"arc3,rad={rad}",
            arrowstyle="-|>" if p.directed else "-",
            mutation_scale=12,
            lw=1.4,
            color="black" if c == 0 else "#2ca02c",
            shrinkA=9,
            shrinkB=9,
        )
        ax.add_patch(arrow)
        if c:
            mx, my = (pos[u][0] + pos[v][0]) / 2, (pos[u][1] + pos[v][1]) / 2
            ax.text(mx, my, str(c), fontsize=7, color="#2ca02c")
    for v, (x, y) in pos.items():
        color = SPECIAL_COLORS[p.special.index(v)] if v in p.special else SPECIAL_COLORS[2]
        ax.add_patch(Circle((x, y), node_size, color=color, zorder=3))
        if p.is_diagonal and v == p.special[0]:
            ax.add_patch(Circle((x, y), node_size * 1.35, fill=False, color=SPECIAL_COLORS[1], lw=2, zorder=3))
        ax.text(x, y, VERTEX_LETTERS[v], ha="center", va="center", fontsize=8, zorder=4)
    ax.set_xlim(-1.7, 1.7)
    ax.set_ylim(-1.7, 1.7)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(p.to_string(), fontsize=7)


def draw_basis(patterns: Sequence[Pattern], columns: int = 6, size: float = 1.6, suptitle: str | None = None):
    """A grid of pattern drawings; returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    rows = max(1, math.ceil(len(patterns) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p in zip(axes.flat, patterns):
        draw_pattern(p, ax)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
