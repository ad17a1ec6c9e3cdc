r"""Exact treewidth of small graphs, with an elimination ordering as witness.

The treewidth of :math:`G` is the least width :math:`\max_v |N^+(v)|` over elimination
orderings, where :math:`N^+(v)` is the set of neighbours of :math:`v` in the graph in which
all earlier vertices have been eliminated (their neighbourhoods made cliques). We compute it
exactly with the subset dynamic programme of Bodlaender, Fomin, Koster, Kratsch and Thilikos
("On exact algorithms for treewidth", ESA 2006 / ACM TALG 2012):

.. math::
    TW(\emptyset) = -\infty,\qquad
    TW(S) = \min_{v \in S} \max\bigl(TW(S \setminus v),\ |Q(S \setminus v, v)|\bigr),

where :math:`Q(S, v)` is the set of vertices outside :math:`S \cup \{v\}` reachable from
:math:`v` through :math:`S`. It costs :math:`O(2^n n^2)` per connected component, plenty for
basis patterns (at most ``degree + 1`` vertices per component). networkx's min-degree and
min-fill-in heuristics give upper bounds; the exact value is what the deciders use.

A pattern with special vertices keeps them to the end: the special vertices form a clique
(the edge ``ab`` of an edge output), and some optimal ordering eliminates any clique last, so

.. math:: \operatorname{tw}(H + \text{clique}(S)) =
          \max\bigl(TW_{H + \text{clique}(S)}(V \setminus S),\ |S| - 1\bigr).

Example:
    >>> import networkx as nx
    >>> treewidth(nx.complete_graph(4))
    3
    >>> treewidth(nx.cycle_graph(6))
    2
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

import networkx as nx
from networkx.algorithms.approximation import treewidth_min_degree, treewidth_min_fill_in

__all__ = ["treewidth", "elimination_ordering", "treewidth_upper_bound"]


def _check_graph(graph: object) -> None:
    if not isinstance(graph, nx.Graph):
        raise TypeError(f"graph must be a networkx graph, got {type(graph).__name__}")


def treewidth_upper_bound(graph: nx.Graph) -> int:
    """The better of networkx's min-degree and min-fill-in heuristic widths (an upper bound)."""
    _check_graph(graph)
    if graph.number_of_nodes() == 0:
        return -1
    return min(treewidth_min_degree(graph)[0], treewidth_min_fill_in(graph)[0])


def treewidth(graph: nx.Graph) -> int:
    """Exact treewidth of a small simple graph (``-1`` for the empty graph, ``0`` without edges)."""
    _check_graph(graph)
    return elimination_ordering(graph)[0]


def elimination_ordering(graph: nx.Graph, keep: Iterable = ()) -> tuple[int, list]:
    """An optimal elimination ordering of the vertices of ``graph`` not in ``keep``.

    Returns ``(width, order)``: ``order`` lists every vertex outside ``keep``; eliminating
    them in that order never leaves a vertex with more than ``width`` neighbours, and ``width``
    is the least such value, at least ``len(keep) - 1`` (``keep`` should be a clique; it is
    eliminated last). With ``keep=()`` the width is the treewidth of ``graph``.
    """
    _check_graph(graph)
    keep = set(keep)
    if graph.number_of_nodes() == 0:
        return -1, []
    width = len(keep) - 1 if keep else -1
    order: list = []
    for comp in nx.connected_components(graph):
        sub = graph.subgraph(comp)
        w, o = _component_ordering(sub, keep & set(comp))
        width = max(width, w)
        order.extend(o)
    if graph.number_of_nodes() > len(keep):
        width = max(width, 0)
    return width, order


def _component_ordering(graph: nx.Graph, keep: set) -> tuple[int, list]:
    nodes = list(graph.nodes)
    if len(nodes) > 24:
        raise ValueError(f"exact treewidth is for small graphs; this component has {len(nodes)} vertices (max 24)")
    index = {v: i for i, v in enumerate(nodes)}
    adj = [0] * len(nodes)
    for u, v in graph.edges:
        if u != v:
            adj[index[u]] |= 1 << index[v]
            adj[index[v]] |= 1 << index[u]
    free = [index[v] for v in nodes if v not in keep]
    width, order = _exact(tuple(adj), tuple(free))
    w = max(width, len(keep) - 1) if keep else width
    return max(w, 0), [nodes[i] for i in order]


def _exact(adj: tuple[int, ...], free: tuple[int, ...]) -> tuple[int, list[int]]:
    def q(s_mask: int, v: int) -> int:
        # vertices outside s and v reachable from v through s: v's neighbours in the fill graph
        seen = 1 << v
        frontier = adj[v]
        out = 0
        while frontier:
            low = frontier & -frontier
            frontier ^= low
            if seen & low:
                continue
            seen |= low
            w = low.bit_length() - 1
            if s_mask & low:
                frontier |= adj[w] & ~seen
            else:
                out |= low
        return bin(out).count("1")

    @lru_cache(maxsize=None)
    def tw(s_mask: int) -> tuple[int, int]:
        if s_mask == 0:
            return -1, -1
        best, best_v = 1 << 30, -1
        m = s_mask
        while m:
            low = m & -m
            m ^= low
            v = low.bit_length() - 1
            rest = s_mask ^ low
            cand = q(rest, v)
            if cand >= best:
                continue
            sub = tw(rest)[0]
            cand = max(cand, sub)
            if cand < best:
                best, best_v = cand, v
        return best, best_v

    full = 0
    for v in free:
        full |= 1 << v
    width = tw(full)[0]
    # unwind: tw(S) chose v as the *last* vertex of S to be eliminated
    order: list[int] = []
    s = full
    while s:
        v = tw(s)[1]
        order.append(v)
        s ^= 1 << v
    order.reverse()
    return width, order
