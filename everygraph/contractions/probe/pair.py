"""A pair of non-isomorphic graphs with a known separation status, and its PyG form.

Every generator of :mod:`everygraph.contractions.probe` returns :class:`GraphPair` objects:
two simple undirected networkx graphs on nodes ``0..n-1``, the family they come from, and
``known``: what the literature (or the construction) says about which tests tell them apart.
The status of each model class is not stored here; it is computed from homomorphism counts
by :func:`~everygraph.contractions.probe.pair_theory`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import networkx as nx
import torch
from torch_geometric.data import Data

__all__ = ["GraphPair", "graph_to_data", "permuted_data"]


def _simple(graph: nx.Graph, name: str) -> nx.Graph:
    if not isinstance(graph, nx.Graph) or graph.is_directed() or graph.is_multigraph():
        raise TypeError(f"{name} must be a simple undirected networkx.Graph, got {type(graph).__name__}")
    if nx.number_of_selfloops(graph):
        raise ValueError(f"{name} must have no self-loops (a simple graph), got {nx.number_of_selfloops(graph)}")
    return nx.convert_node_labels_to_integers(graph, ordering="sorted")


@dataclass(frozen=True)
class GraphPair:
    """Two non-isomorphic simple graphs to be told apart.

    Attributes:
        name: short label, e.g. ``"C6 vs 2xC3"``.
        family: the generator it comes from (``"regular"``, ``"strongly regular"``, ``"cfi"``,
            ``"single pattern"``, ``"brec"`` ...).
        first, second: the graphs, nodes ``0..n-1``.
        known: what is known about the pair independently of our evaluator, in words
            (e.g. ``"both 3-regular on 8 nodes: 1-WL cannot separate them"``).
    """

    name: str
    family: str
    first: nx.Graph
    second: nx.Graph
    known: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not isinstance(self.family, str):
            raise TypeError(f"name and family must be strings, got {self.name!r} and {self.family!r}")
        object.__setattr__(self, "first", _simple(self.first, "first"))
        object.__setattr__(self, "second", _simple(self.second, "second"))

    @property
    def num_nodes(self) -> tuple[int, int]:
        """``(n_first, n_second)``."""
        return self.first.number_of_nodes(), self.second.number_of_nodes()

    def is_isomorphic(self) -> bool:
        """Whether the two graphs are isomorphic (networkx VF2; a generator's pairs never are)."""
        return nx.is_isomorphic(self.first, self.second)

    def __repr__(self) -> str:
        n1, n2 = self.num_nodes
        return f"GraphPair({self.name!r}, {self.family}, n={n1}/{n2})"


def graph_to_data(graph: nx.Graph, permutation: Optional[torch.Tensor] = None) -> Data:
    """A PyG ``Data`` of a simple graph: ``edge_index [2, 2m]`` (both directions), ``x = 1``
    (``[n, 1]``, float32, the constant node feature of the expressivity benchmarks) and
    ``num_nodes``. With ``permutation`` (``[n]``, a permutation of ``0..n-1``) node ``v``
    becomes ``permutation[v]``: the same graph, relabelled."""
    if not isinstance(graph, nx.Graph) or graph.is_directed() or graph.is_multigraph():
        raise TypeError(f"graph must be a simple undirected networkx.Graph, got {type(graph).__name__}")
    graph = nx.convert_node_labels_to_integers(graph, ordering="sorted")
    n = graph.number_of_nodes()
    edges = torch.tensor(sorted(tuple(sorted(e)) for e in graph.edges), dtype=torch.long).reshape(-1, 2).t()
    if permutation is not None:
        if not isinstance(permutation, torch.Tensor) or permutation.shape != (n,) or \
                not torch.equal(permutation.sort().values, torch.arange(n, device=permutation.device)):
            raise ValueError(f"permutation must be a permutation of 0..{n - 1} as a tensor [{n}], got {permutation!r}")
        edges = permutation[edges]
    edge_index = torch.cat([edges, edges.flip(0)], dim=1)
    return Data(x=torch.ones(n, 1), edge_index=edge_index, num_nodes=n)


def permuted_data(graph: nx.Graph, generator: torch.Generator) -> Data:
    """``graph`` under a random node relabelling, its edges in a random order."""
    if not isinstance(graph, nx.Graph):
        raise TypeError(f"graph must be a simple undirected networkx.Graph, got {type(graph).__name__}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    n = graph.number_of_nodes()
    data = graph_to_data(graph, torch.randperm(n, generator=generator))
    order = torch.randperm(data.edge_index.shape[1], generator=generator)
    data.edge_index = data.edge_index[:, order]
    return data
