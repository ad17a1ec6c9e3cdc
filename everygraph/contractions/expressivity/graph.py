"""The view of a pattern that the expressivity deciders work on.

A basis element is a multigraph ``H`` with 0, 1 or 2 special (output) vertices
(Puny et al., "Equivariant Polynomials for Graph Neural Networks", ICML 2023,
https://arxiv.org/abs/2302.11556). The deciders only need its vertex count, its edge list
(loops and parallel edges kept, orientation kept for replay on directed inputs) and the
special tuple, so they accept a :class:`~everygraph.contractions.Pattern`, an einsum-like
string such as ``"ab,bc,ca->"``, or a plain ``(num_vertices, edges, special)`` triple.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx

__all__ = ["PatternGraph", "as_pattern_graph"]


@dataclass(frozen=True)
class PatternGraph:
    """Vertices ``0..num_vertices-1``, edges ``(u, v)`` (``u == v`` is a loop), special tuple.

    ``output`` is ``"invariant"``, ``"node"`` or ``"edge"`` (by the length of ``special``);
    an edge output with ``a == b`` (the diagonal) is kept as ``special = (a, a)``.
    """

    num_vertices: int
    edges: tuple[tuple[int, int], ...]
    special: tuple[int, ...]
    names: tuple[str, ...]
    source: Any = None
    directed: bool = False
    channels: tuple[int, ...] = ()

    @property
    def output(self) -> str:
        return ("invariant", "node", "edge")[len(self.special)]

    @property
    def degree(self) -> int:
        return len(self.edges)

    @property
    def distinct_special(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(self.special))

    def simple_graph(self, join_specials: bool = False) -> nx.Graph:
        """Underlying simple graph: loops dropped, parallel edges merged, orientation ignored.

        With ``join_specials`` the special vertices are joined into a clique (the edge ``ab``
        of an edge output), the graph whose treewidth decides k-FWL computability.
        """
        g = nx.Graph()
        g.add_nodes_from(range(self.num_vertices))
        g.add_edges_from((u, v) for u, v in self.edges if u != v)
        if join_specials:
            s = self.distinct_special
            g.add_edges_from((s[i], s[j]) for i in range(len(s)) for j in range(i + 1, len(s)))
        return g

    def __str__(self) -> str:
        touched = {x for e in self.edges for x in e}
        chans = self.channels or (0,) * len(self.edges)
        terms = [self.names[u] + self.names[v] + (f"@{c}" if c else "") for (u, v), c in zip(self.edges, chans)]
        terms += [self.names[v] for v in range(self.num_vertices) if v not in touched]
        return ",".join(terms) + "->" + "".join(self.names[s] for s in self.special)


# Same letters as everygraph.contractions.pattern.VERTEX_LETTERS (vertex i -> letter i), so that
# certificates name vertices as the pattern string does.
_LETTERS = "abcdefghijklmnopqrstuvwxy" + "ABCDEFGHIJKLMNOPQRSTUVWXY"


def _default_names(n: int) -> tuple[str, ...]:
    return tuple(_LETTERS[i] if n <= len(_LETTERS) else f"v{i}" for i in range(n))


def as_pattern_graph(pattern: Any) -> PatternGraph:
    """Normalise a ``Pattern``, an einsum-like string or a ``(n, edges, special)`` triple."""
    if isinstance(pattern, PatternGraph):
        return pattern
    if isinstance(pattern, str):
        from ..pattern import Pattern

        text = pattern
        pattern = Pattern.from_string(text)
        # name the vertices by the letters the user typed (Pattern numbers them by first appearance)
        lhs = text.split("->")[0]
        letters = [ch for i, ch in enumerate(lhs) if ch.isascii() and ch.isalpha()]
        names = tuple(dict.fromkeys(letters))
        g = as_pattern_graph(pattern)
        if len(names) == g.num_vertices:
            return PatternGraph(g.num_vertices, g.edges, g.special, names, pattern, g.directed, g.channels)
        return g
    if isinstance(pattern, tuple) and len(pattern) == 3:
        n, edges, special = pattern
        edges = tuple((int(u), int(v)) for u, v in edges)
        special = tuple(int(s) for s in special)
        _check(int(n), edges, special)
        return PatternGraph(int(n), edges, special, _default_names(int(n)), None, False, (0,) * len(edges))
    if all(hasattr(pattern, a) for a in ("num_vertices", "edges", "special")):
        n = int(pattern.num_vertices)
        edges = tuple((int(u), int(v)) for u, v in pattern.edges)
        special = tuple(int(s) for s in pattern.special)
        _check(n, edges, special)
        channels = tuple(int(c) for c in getattr(pattern, "channels", (0,) * len(edges)))
        directed = bool(getattr(pattern, "directed", False))
        return PatternGraph(n, edges, special, _default_names(n), pattern, directed, channels)
    raise TypeError(
        f"pattern must be a Pattern, an einsum-like string such as 'ab,bc,ca->' or a (num_vertices, edges, special) "
        f"triple, got {type(pattern).__name__}"
    )


def _check(n: int, edges: tuple, special: tuple) -> None:
    if n < 0:
        raise ValueError(f"num_vertices must be >= 0, got {n}")
    for u, v in edges:
        if not (0 <= u < n and 0 <= v < n):
            raise ValueError(f"edge ({u}, {v}) has an endpoint outside 0..{n - 1}")
    if len(special) > 2:
        raise ValueError(f"a pattern has at most two special vertices, got {special}")
    for s in special:
        if not 0 <= s < n:
            raise ValueError(f"special vertex {s} outside 0..{n - 1}")
