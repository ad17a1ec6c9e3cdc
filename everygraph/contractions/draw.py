"""Drawings of patterns (multigraphs with special vertices) with matplotlib.

Special vertices are coloured (``a`` red, ``b`` blue; a diagonal edge output ``(a, a)`` is
purple), parallel edges are drawn as separate arcs, loops as small circles beside their
vertex, directed edges with arrows. Used by ``everygraph basis --draw`` and
``everygraph explain --draw`` and by the examples.

Example:
    >>> from everygraph.contractions import basis
    >>> from everygraph.contractions.draw import draw_patterns
    >>> draw_patterns(basis(3, "node"), "basis.png")        # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

__all__ = ["draw_pattern", "draw_patterns", "SPECIAL_COLORS"]

SPECIAL_COLORS = ("#d62728", "#1f77b4")
_DIAGONAL_COLOR = "#9467bd"
_PLAIN_COLOR = "#cfcfcf"


def _layout(n: int, edges: Sequence[tuple[int, int]], special: Sequence[int]) -> dict[int, tuple[float, float]]:
    import networkx as nx

    if n == 1:
        return {0: (0.0, 0.0)}
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from((u, v) for u, v in edges if u != v)
    if nx.is_connected(g) and g.number_of_edges() >= n:
        pos = nx.spring_layout(g, seed=0)  # numpy only; kamada_kawai would need scipy
    else:
        pos = nx.circular_layout(g) if n > 2 else {0: (-0.6, 0.0), 1: (0.6, 0.0)}
    return {v: (float(x), float(y)) for v, (x, y) in pos.items()}


def draw_pattern(pattern: Any, ax: Any = None, title: Optional[str] = None, labels: bool = True) -> Any:
    """Draw one pattern on a matplotlib axis (a new figure when ``ax`` is None). Returns the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, FancyArrowPatch

    from .expressivity.graph import as_pattern_graph

    p = as_pattern_graph(pattern)
    if ax is None:
        _, ax = plt.subplots(figsize=(2.2, 2.2))
    pos = _layout(p.num_vertices, p.edges, p.special)
    seen: dict[frozenset, int] = {}
    loops: dict[int, int] = {}
    for u, v in p.edges:
        if u == v:
            k = loops.get(u, 0)
            loops[u] = k + 1
            x, y = pos[u]
            cx, cy = x, y
            norm = math.hypot(cx, cy) or 1.0
            dx, dy = (cx / norm, cy / norm) if (cx or cy) else (0.0, 1.0)
            r = 0.16 + 0.07 * k
            ax.add_patch(Circle((x + dx * (r + 0.07), y + dy * (r + 0.07)), r, fill=False, lw=1.4, color="k", zorder=1))
            continue
        key = frozenset((u, v))
        k = seen.get(key, 0)
        seen[key] = k + 1
        rad = 0.0 if k == 0 else (0.25 * ((k + 1) // 2)) * (1 if k % 2 else -1)
        if u > v:
            rad = -rad
        arrow = FancyArrowPatch(pos[u], pos[v], connectionstyle=f"arc3,rad={rad}",
                                arrowstyle="-|>" if p.directed else "-", mutation_scale=12,
                                lw=1.4, color="k", shrinkA=9, shrinkB=9, zorder=1)
        ax.add_patch(arrow)
    for v in range(p.num_vertices):
        if p.output == "edge" and p.special[0] == p.special[1] and v == p.special[0]:
            color = _DIAGONAL_COLOR
        elif v in p.special:
            color = SPECIAL_COLORS[p.special.index(v)]
        else:
            color = _PLAIN_COLOR
        x, y = pos[v]
        ax.scatter([x], [y], s=260, c=color, edgecolors="k", zorder=2)
        if labels:
            ax.text(x, y, p.names[v], ha="center", va="center", fontsize=8, zorder=3,
                    color="white" if v in p.special else "black")
    xs = [q[0] for q in pos.values()] or [0.0]
    ys = [q[1] for q in pos.values()] or [0.0]
    ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    ax.set_ylim(min(ys) - 0.5, max(ys) + 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title if title is not None else str(p), fontsize=7)
    return ax


def draw_patterns(patterns: Sequence[Any], path: str, ncols: int = 8, titles: Optional[Sequence[str]] = None,
                  suptitle: Optional[str] = None, max_patterns: int = 400) -> str:
    """Grid of pattern drawings saved to ``path`` (PNG). At most ``max_patterns`` are drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(patterns, str) or not hasattr(patterns, "__iter__"):
        raise TypeError(f"patterns must be a sequence of patterns, got {type(patterns).__name__}")
    patterns = list(patterns)[:max_patterns]
    n = max(1, len(patterns))
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 1.9 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < len(patterns):
            draw_pattern(patterns[i], ax, title=None if titles is None else titles[i])
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
