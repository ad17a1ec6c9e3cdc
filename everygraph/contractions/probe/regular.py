"""Pairs of regular graphs with the same degree and size: 1-WL (colour refinement) gives every
node the same colour in both, so no message-passing GNN separates them.

Each pair is equal on every forest pattern (a tree's homomorphism count on a ``k``-regular
graph with ``n`` nodes is ``n * k^(edges)``) and differs on some cycle.
"""

from __future__ import annotations

import networkx as nx

from .pair import GraphPair

__all__ = ["regular_pairs"]


def _union(*graphs: nx.Graph) -> nx.Graph:
    return nx.disjoint_union_all(list(graphs))


def regular_pairs() -> list[GraphPair]:
    """1-WL-equivalent pairs: ``C6`` vs ``2xC3``, ``C8`` vs ``2xC4``, ``K3,3`` vs the
    triangular prism, the cube ``Q3`` vs the Moebius ladder ``M8`` (Wagner graph), and 4-regular
    circulants ``C10(1,2)`` vs ``C10(1,3)`` and ``C12(1,2)`` vs ``C12(1,5)``."""
    cases = [
        ("C6 vs 2xC3", nx.cycle_graph(6), _union(nx.cycle_graph(3), nx.cycle_graph(3))),
        ("C8 vs 2xC4", nx.cycle_graph(8), _union(nx.cycle_graph(4), nx.cycle_graph(4))),
        ("K3,3 vs prism", nx.complete_bipartite_graph(3, 3), nx.circular_ladder_graph(3)),
        ("cube vs Moebius M8", nx.hypercube_graph(3), nx.circulant_graph(8, [1, 4])),
        ("C10(1,2) vs C10(1,3)", nx.circulant_graph(10, [1, 2]), nx.circulant_graph(10, [1, 3])),
        ("C12(1,2) vs C12(1,5)", nx.circulant_graph(12, [1, 2]), nx.circulant_graph(12, [1, 5])),
    ]
    pairs = []
    for name, first, second in cases:
        degree = next(d for _, d in first.degree())
        pairs.append(GraphPair(
            name, "regular", first, second,
            known=f"both {degree}-regular on {first.number_of_nodes()} nodes: 1-WL (any MPNN) cannot separate them",
        ))
    return pairs
