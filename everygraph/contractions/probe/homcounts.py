"""Homomorphism counts of the connected invariant basis, graph by graph, with our evaluator.

:func:`hom_counts` evaluates every connected invariant basis element (a simple pattern with
no special vertex) of at most ``degree`` edges on each graph: on a 0/1 adjacency the value of
:math:`P_H` is :math:`\\hom(H, G)`. Connected patterns suffice to compare graphs: the count of
a disjoint union is the product of its components' counts, and every model class of
:mod:`~everygraph.contractions.expressivity` that computes a pattern computes its components.
Values are float64, exact integers below :math:`2^{53}`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import networkx as nx
import torch

from ...graphlib import check_size
from ..basis import basis
from ..evaluate import evaluate
from ..pattern import Pattern
from ..plan import ContractionPlan, compile_plan

__all__ = ["probe_patterns", "hom_counts", "pattern_name"]


@lru_cache(maxsize=16)
def _patterns(degree: int) -> tuple[Pattern, ...]:
    # the connected basis of degree 0 is the empty pattern (the constant 1); the single vertex
    # (whose count is the number of nodes) takes its place
    rest = basis(degree, "invariant", "simple", exact=False, connected_only=True)[1:]
    return (Pattern([], (), num_vertices=1),) + tuple(rest)


@lru_cache(maxsize=16)
def _plan(degree: int) -> ContractionPlan:
    return compile_plan(list(_patterns(degree)), n_hint=16)


def probe_patterns(degree: int) -> list[Pattern]:
    """The connected invariant patterns with at most ``degree`` edges: the single vertex (its
    count is the number of nodes), the edge, ..., in the order of
    :func:`~everygraph.contractions.basis`."""
    degree = check_size(degree, "degree", 0)
    return list(_patterns(degree))


def _dense(graphs: Sequence[nx.Graph]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(g.number_of_nodes() for g in graphs)
    adj = torch.zeros(len(graphs), n, n, dtype=torch.float64)
    mask = torch.zeros(len(graphs), n, dtype=torch.bool)
    for i, g in enumerate(graphs):
        k = g.number_of_nodes()
        if k:
            nodes = sorted(g.nodes)
            adj[i, :k, :k] = torch.as_tensor(nx.to_numpy_array(g, nodelist=nodes))
            mask[i, :k] = True
    return adj, mask


def hom_counts(graphs: Sequence[nx.Graph], degree: int) -> torch.Tensor:
    """``hom(H, G)`` for every pattern ``H`` of :func:`probe_patterns` ``(degree)`` and graph ``G``.

    Args:
        graphs: simple undirected networkx graphs (any sizes; evaluated grouped by size).
        degree: the largest number of pattern edges.

    Returns:
        ``[len(graphs), len(probe_patterns(degree))]`` float64.
    """
    degree = check_size(degree, "degree", 0)
    if isinstance(graphs, nx.Graph) or not hasattr(graphs, "__iter__"):
        raise TypeError(f"graphs must be a sequence of networkx graphs, got {type(graphs).__name__}")
    graphs = list(graphs)
    for i, g in enumerate(graphs):
        if not isinstance(g, nx.Graph) or g.is_directed() or g.is_multigraph():
            raise TypeError(f"graphs[{i}] must be a simple undirected networkx.Graph, got {type(g).__name__}")
    plan = _plan(degree)
    out = torch.zeros(len(graphs), plan.num_patterns, dtype=torch.float64)
    by_size: dict[int, list[int]] = {}
    for i, g in enumerate(graphs):
        by_size.setdefault(g.number_of_nodes(), []).append(i)
    for size, index in by_size.items():
        if size == 0:
            continue  # the empty graph: no homomorphism of a non-empty connected pattern
        adj, mask = _dense([graphs[i] for i in index])
        with torch.no_grad():
            out[index] = evaluate(plan, adj, mask).round()
    return out


def pattern_name(pattern: Pattern) -> str:
    """A readable name of a connected simple pattern: ``K1``, ``edge``, ``P4`` (path on 4 nodes),
    ``C5``, ``K4``, ``star K1,3``, ``triangle``; otherwise its einsum string."""
    if isinstance(pattern, str):
        try:
            pattern = Pattern.from_string(pattern)
        except ValueError as exc:
            raise ValueError(f"pattern is not a valid pattern string: {exc}") from None
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern must be a Pattern or a pattern string, got {type(pattern).__name__}")
    g = nx.Graph()
    g.add_nodes_from(range(pattern.num_vertices))
    g.add_edges_from(pattern.edges)
    n, m = g.number_of_nodes(), g.number_of_edges()
    if m == 0:
        return "K1" if n == 1 else str(pattern)
    if not nx.is_connected(g):
        return str(pattern)
    if m == 1:
        return "edge"
    if m == n * (n - 1) // 2:
        return "triangle" if n == 3 else f"K{n}"
    degrees = sorted(d for _, d in g.degree())
    if m == n and degrees == [2] * n:
        return f"C{n}"
    if m == n - 1 and degrees.count(1) == 2 and max(degrees) == 2:
        return f"P{n}"
    if m == n - 1 and degrees[-1] == n - 1:
        return f"star K1,{n - 1}"
    if n == 4 and m == 5:
        return "diamond"
    if nx.is_bipartite(g):
        left, right = nx.bipartite.sets(g)
        if m == len(left) * len(right):
            a, b = sorted((len(left), len(right)))
            return f"K{a},{b}"
    return str(pattern)
