"""Pairs of strongly regular graphs with the same parameters ``(n, k, lambda, mu)``.

On such a graph the three relations "equal", "adjacent", "not adjacent" already form a
coherent configuration: for two nodes ``u, v`` the number of ``w`` with given relations to
``u`` and to ``v`` depends only on the relation of ``u`` and ``v`` (that is what ``lambda``
and ``mu`` say). So 2-FWL refinement is stable from the start and gives both graphs the same
colour histogram: no 2-FWL test, hence no PPGN, and no pattern of treewidth <= 2 separates them.

Families: the 4x4 rook's graph vs the Shrikhande graph (16, 6, 2, 2) and their complements
(16, 9, 4, 6); the triangular graph T(8) (the line graph of K8) vs the three Chang graphs
(28, 12, 6, 4), each obtained from T(8) by Seidel switching on the edges of K8 forming a
perfect matching, an 8-cycle, or a triangle plus a 5-cycle (Chang, 1959); the Latin square
graphs (25, 12, 5, 6) of the cyclic Latin square of order 5 and of a non-isotopic one.
"""

from __future__ import annotations

import itertools

import networkx as nx

from ...graphlib import rook_graph, shrikhande_graph
from .pair import GraphPair

__all__ = ["strongly_regular_pairs", "chang_graphs", "latin_square_graph"]


def _switch(graph: nx.Graph, nodes: set) -> nx.Graph:
    """Seidel switching: toggle every pair with exactly one end in ``nodes``."""
    h = graph.copy()
    for u in nodes:
        for v in graph:
            if v in nodes:
                continue
            if graph.has_edge(u, v):
                h.remove_edge(u, v)
            else:
                h.add_edge(u, v)
    return h


def chang_graphs() -> tuple[nx.Graph, nx.Graph, nx.Graph, nx.Graph]:
    """``(T(8), Chang 1, Chang 2, Chang 3)``: the four strongly regular (28, 12, 6, 4) graphs."""
    triangular = nx.line_graph(nx.complete_graph(8))

    def e(u: int, v: int) -> tuple[int, int]:
        return (min(u, v), max(u, v))

    matching = {e(0, 1), e(2, 3), e(4, 5), e(6, 7)}
    octagon = {e(i, (i + 1) % 8) for i in range(8)}
    triangle_pentagon = {e(0, 1), e(1, 2), e(0, 2)} | {e(3 + i, 3 + (i + 1) % 5) for i in range(5)}
    graphs = [triangular] + [_switch(triangular, s) for s in (matching, octagon, triangle_pentagon)]
    return tuple(nx.convert_node_labels_to_integers(g, ordering="sorted") for g in graphs)


def latin_square_graph(square: list[list[int]]) -> nx.Graph:
    """The Latin square graph of an ``m x m`` Latin square: the ``m^2`` cells, adjacent when they
    share a row, a column or a symbol; strongly regular ``(m^2, 3(m-1), m, 6)``."""
    m = len(square)
    if any(sorted(row) != list(range(m)) for row in square) or any(sorted(col) != list(range(m)) for col in zip(*square)):
        raise ValueError(f"square must be a Latin square on the symbols 0..{m - 1}, got {square}")
    g = nx.Graph()
    cells = [(i, j) for i in range(m) for j in range(m)]
    g.add_nodes_from(range(m * m))
    for (a, b), (c, d) in itertools.combinations(cells, 2):
        if a == c or b == d or square[a][b] == square[c][d]:
            g.add_edge(m * a + b, m * c + d)
    return g


# a Latin square of order 5 whose Latin square graph is not isomorphic to the cyclic one's
# (checked in the tests), so the two squares are not isotopic
_NON_CYCLIC_5 = [[0, 1, 2, 3, 4], [1, 0, 3, 4, 2], [2, 3, 4, 0, 1], [3, 4, 1, 2, 0], [4, 2, 0, 1, 3]]


def strongly_regular_pairs() -> list[GraphPair]:
    """Pairs of non-isomorphic strongly regular graphs with equal parameters (see the module)."""
    known = "strongly regular {}: 2-FWL cannot separate them (so neither can 1-WL)"
    rook, shrikhande = rook_graph(4), shrikhande_graph()
    triangular, *chang = chang_graphs()
    cyclic = [[(i + j) % 5 for j in range(5)] for i in range(5)]
    pairs = [
        GraphPair("rook 4x4 vs Shrikhande", "strongly regular", rook, shrikhande, known.format("(16, 6, 2, 2)")),
        GraphPair("complements of rook/Shrikhande", "strongly regular", nx.complement(rook), nx.complement(shrikhande),
                  known.format("(16, 9, 4, 6)")),
    ]
    for i, c in enumerate(chang, 1):
        pairs.append(GraphPair(f"T(8) vs Chang {i}", "strongly regular", triangular, c, known.format("(28, 12, 6, 4)")))
    pairs.append(GraphPair("Latin squares of order 5", "strongly regular", latin_square_graph(cyclic),
                           latin_square_graph(_NON_CYCLIC_5), known.format("(25, 12, 5, 6)")))
    return pairs
