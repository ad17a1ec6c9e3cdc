r"""Cai-Fürer-Immerman (CFI) graphs: pairs that k-FWL separates only when k reaches the
treewidth of the base graph.

Cai, Fürer, Immerman, "An optimal lower bound on the number of variables for graph
identification", Combinatorica 1992. Over a connected base graph :math:`G`, the CFI pair is
two graphs :math:`X(G)` and its *twisted* copy :math:`\tilde X(G)`: locally identical, globally
different by a parity. In homomorphism terms (Roberson, "Oddomorphisms and homomorphism
indistinguishability over graphs of bounded degree", 2022; Neuen, "Homomorphism-distinguishing
closedness for graphs of bounded tree-width", 2024) the pair is equal on every pattern of
treewidth below :math:`\mathrm{tw}(G)` and differs on :math:`G` itself, so k-FWL separates it
iff :math:`k \ge \mathrm{tw}(G)`.

Two constructions:

* ``compact=True`` (default): node :math:`(v, S)` for each vertex :math:`v` of :math:`G` and each
  subset :math:`S` of its incident edges of even size (of odd size at one chosen vertex in
  the twisted copy); :math:`(u, S) \sim (v, T)` iff :math:`uv \in E(G)` and :math:`uv` lies in
  both or neither of :math:`S, T`. :math:`2^{\deg v - 1}` nodes per vertex; over :math:`K_3` it
  is :math:`C_6` vs :math:`2 C_3`, over :math:`K_4` the 4x4 rook's graph vs the Shrikhande graph.
* ``compact=False``: the original gadgets: per vertex, one "middle" node per even subset
  :math:`S` of its incident edges and two end nodes :math:`a^0_{v,e}, a^1_{v,e}` per incident
  edge :math:`e`, the middle node joined to :math:`a^1_{v,e}` for :math:`e \in S` and to
  :math:`a^0_{v,e}` otherwise; an edge :math:`uv` of :math:`G` joins :math:`a^i_{u,e}` to
  :math:`a^i_{v,e}`, crossed (:math:`a^i` to :math:`a^{1-i}`) at one edge in the twisted copy.
  Larger (40 nodes over :math:`K_4`), and its separating patterns are larger too.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Optional

import networkx as nx

from ..expressivity import treewidth
from .pair import GraphPair

__all__ = ["cfi_graph", "cfi_pairs", "DEFAULT_CFI_BASES"]

#: Base graphs of :func:`cfi_pairs` by default: treewidth 2 (K3, C5, K2,3) and 3 (K4, K3,3).
DEFAULT_CFI_BASES: dict[str, nx.Graph] = {
    "K3": nx.complete_graph(3),
    "C5": nx.cycle_graph(5),
    "K2,3": nx.complete_bipartite_graph(2, 3),
    "K4": nx.complete_graph(4),
    "K3,3": nx.complete_bipartite_graph(3, 3),
}


def _check_base(base: nx.Graph) -> nx.Graph:
    if not isinstance(base, nx.Graph) or base.is_directed() or base.is_multigraph():
        raise TypeError(f"base must be a simple undirected networkx.Graph, got {type(base).__name__}")
    if base.number_of_nodes() == 0 or not nx.is_connected(base):
        raise ValueError("base must be a connected graph with at least one node (the CFI pair of a "
                         "disconnected base is the union of its components' pairs)")
    if nx.number_of_selfloops(base):
        raise ValueError("base must have no self-loops")
    if max(d for _, d in base.degree()) > 12:
        raise ValueError(f"base has a vertex of degree {max(d for _, d in base.degree())}; the CFI gadget "
                         "has 2^(degree-1) nodes per vertex, refused above degree 12")
    return nx.convert_node_labels_to_integers(base, ordering="sorted")


def _edge(u: int, v: int) -> tuple[int, int]:
    return (u, v) if u < v else (v, u)


def cfi_graph(base: nx.Graph, twisted: bool = False, compact: bool = True) -> nx.Graph:
    """The CFI graph over ``base`` (``twisted=True``: its twisted copy), nodes ``0..N-1``.

    Args:
        base: a connected simple graph.
        twisted: build :math:`\\tilde X(G)` (odd subsets at the smallest vertex in the compact
            construction; one crossed edge in the original).
        compact: the compact construction (default) or the original one (see the module).
    """
    base = _check_base(base)
    if not isinstance(twisted, bool) or not isinstance(compact, bool):
        raise TypeError(f"twisted and compact must be bools, got {twisted!r} and {compact!r}")
    incident = {v: sorted(_edge(v, u) for u in base[v]) for v in base}
    g = nx.Graph()
    if compact:
        for v in base:
            parity = 1 if twisted and v == 0 else 0
            for r in range(len(incident[v]) + 1):
                for subset in itertools.combinations(incident[v], r):
                    if r % 2 == parity:
                        g.add_node((v, frozenset(subset)))
        by_vertex: dict[int, list] = {}
        for node in g:
            by_vertex.setdefault(node[0], []).append(node)
        for u, v in base.edges:
            e = _edge(u, v)
            for a in by_vertex[u]:
                for b in by_vertex[v]:
                    if (e in a[1]) == (e in b[1]):
                        g.add_edge(a, b)
    else:
        crossed = _edge(*min(base.edges)) if twisted else None
        for v in base:
            for e in incident[v]:
                g.add_node(("a", v, e, 0))
                g.add_node(("a", v, e, 1))
            for r in range(0, len(incident[v]) + 1, 2):
                for subset in itertools.combinations(incident[v], r):
                    middle = ("m", v, frozenset(subset))
                    for e in incident[v]:
                        g.add_edge(middle, ("a", v, e, 1 if e in subset else 0))
        for u, v in base.edges:
            e = _edge(u, v)
            for i in (0, 1):
                g.add_edge(("a", u, e, i), ("a", v, e, 1 - i if e == crossed else i))
    return nx.convert_node_labels_to_integers(g, ordering="sorted")


def cfi_pairs(bases: Optional[dict[str, nx.Graph] | Iterable[nx.Graph]] = None, compact: bool = True) -> list[GraphPair]:
    """One CFI pair per base graph (default :data:`DEFAULT_CFI_BASES`), with the known status:
    k-FWL separates it iff ``k >= treewidth(base)``."""
    if bases is None:
        bases = DEFAULT_CFI_BASES
    if not isinstance(bases, dict):
        if isinstance(bases, nx.Graph) or not hasattr(bases, "__iter__"):
            raise TypeError(f"bases must be a dict name -> networkx.Graph or a list of graphs, got {type(bases).__name__}")
        bases = {f"base {i}": b for i, b in enumerate(bases)}
    pairs = []
    for label, base in bases.items():
        if not isinstance(base, nx.Graph):
            raise TypeError(f"bases must hold networkx graphs, got {type(base).__name__} for {label!r}")
        try:
            base = _check_base(base)
        except ValueError as exc:
            raise ValueError(f"bases[{label!r}]: {exc}") from None
        width = treewidth(base)
        if width < 2:
            raise ValueError(f"bases[{label!r}] is a tree (treewidth 1): its two CFI graphs are isomorphic; "
                             "pass a base graph with a cycle")
        kind = "" if compact else " (original gadgets)"
        known = (f"CFI over {label} (treewidth {width}){kind}: k-FWL separates it iff k >= {width}; "
                 f"1-WL cannot" + ("" if width > 2 else ", 2-FWL can"))
        pairs.append(GraphPair(f"CFI({label}){'' if compact else ' original'}", "cfi",
                               cfi_graph(base, False, compact), cfi_graph(base, True, compact), known))
    return pairs
