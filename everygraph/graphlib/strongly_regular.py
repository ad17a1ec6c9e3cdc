"""The rook's graph and the Shrikhande graph: the smallest classic pair that 2-WL
(hence MPNNs, and with 2-FWL/PPGN up to degree-6 polynomials) cannot tell apart.

Both are strongly regular with parameters (16, 6, 2, 2): 16 vertices, every vertex of degree
6, every pair of vertices (adjacent or not) with exactly 2 common neighbours. They differ in
their 4-cliques: the 4x4 rook's graph has 8 (its rows and columns), Shrikhande's none, so the
homomorphism count of K4 separates them (``examples/expressivity.py``).

Example:
    >>> from everygraph.graphlib import rook_graph, shrikhande_graph
    >>> rook_graph().number_of_edges(), shrikhande_graph().number_of_edges()
    (48, 48)
"""

from __future__ import annotations

import itertools

import networkx as nx

from .validation import check_size

__all__ = ["rook_graph", "shrikhande_graph"]


def rook_graph(size: int = 4) -> nx.Graph:
    """The ``size x size`` rook's graph (``K_size x K_size``): cells of a board, adjacent when
    they share a row or a column. Node ``size * row + column``."""
    size = check_size(size, "size", 1)
    g = nx.Graph()
    g.add_nodes_from(range(size * size))
    cells = [(i, j) for i in range(size) for j in range(size)]
    for (i, j), (k, l) in itertools.combinations(cells, 2):
        if i == k or j == l:
            g.add_edge(size * i + j, size * k + l)
    return g


def shrikhande_graph() -> nx.Graph:
    """The Shrikhande graph: the Cayley graph of ``Z4 x Z4`` with generators ``+-(1, 0)``,
    ``+-(0, 1)``, ``+-(1, 1)``. Node ``4 * i + j`` for the element ``(i, j)``."""
    g = nx.Graph()
    g.add_nodes_from(range(16))
    for i, j in itertools.product(range(4), range(4)):
        for di, dj in ((1, 0), (3, 0), (0, 1), (0, 3), (1, 1), (3, 3)):
            g.add_edge(4 * i + j, 4 * ((i + di) % 4) + (j + dj) % 4)
    return g
