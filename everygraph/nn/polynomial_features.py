"""Equivariant polynomial features of graphs as a layer (a thin wrapper around
:mod:`everygraph.contractions.features`).

Paper: Puny, Lim, Kiani, Maron, Lipman, *Equivariant Polynomials for Graph Neural Networks*,
ICML 2023, https://arxiv.org/abs/2302.11556.

For a set of patterns :math:`H` (the basis of :func:`everygraph.contractions.basis` up to a
degree, or a chosen subset) the layer computes the homomorphism-count polynomials
:math:`P_H(A)` of each graph's adjacency (and, for patterns reading channels ``>= 1``, of its
dense edge attributes), batched through one compiled contraction plan, and hands them back in
PyG's layout:

* invariant: ``[num_graphs, k_inv]``;
* node: ``[num_nodes, k_node]`` (rows follow ``batch``);
* edge: ``[num_edges, k_edge]`` (rows follow the columns of ``edge_index``),

or, with ``as_matrix=True``, one dense ``[num_graphs, n, n, k]`` tensor with a node mask (the
PPGN input convention: invariants broadcast, node values on the diagonal).

Counts grow like :math:`n^{|V|}`; ``normalize`` tames them: ``"log"`` (default) maps
:math:`x \\mapsto \\operatorname{sign}(x) \\log(1 + |x|)`, ``"density"`` divides by
:math:`n_G^{\\#\\text{non-special vertices}}` (homomorphism densities), ``None`` keeps counts.

Example:
    >>> from torch_geometric.datasets import FakeDataset  # doctest: +SKIP
    >>> from everygraph.nn import PolynomialFeatures
    >>> feats = PolynomialFeatures(degree=4, outputs=("invariant", "node"))
    >>> out = feats(edge_index, batch=batch)  # doctest: +SKIP
    >>> out["node"].shape  # [num_nodes, 2 + 5 + 14 + 38]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..graphlib import check_size, to_simple_graph
from ..contractions import (
    Pattern,
    check_graph_inputs,
    check_normalize,
    check_outputs,
    compile_plan,
    dense_polynomial_features,
    polynomial_features,
    select_patterns,
)

__all__ = ["PolynomialFeatures", "select_patterns"]


class PolynomialFeatures(torch.nn.Module):
    """Equivariant polynomial channels of a batch of graphs (no parameters).

    Args:
        degree: largest pattern degree.
        outputs: which of ``"invariant"``, ``"node"``, ``"edge"`` to compute.
        select: ``"all"``, ``"not_ppgn"`` or a list of patterns (see
            :func:`~everygraph.contractions.select_patterns`).
        normalize: ``"log"`` (default), ``"density"`` or ``None``.
        domain: basis domain. ``"simple"`` (default): the basis of simple graphs (0/1
            adjacency, no loops), and ``forward`` reads ``edge_index`` as one: a repeated edge
            counts once and self loops are dropped
            (:func:`~everygraph.graphlib.to_simple_graph`), so a multigraph input gets the
            values of its simple graph. ``"general"``: the basis of weighted graphs and
            multigraphs, multiplicities kept (an edge listed ``k`` times has weight ``k``, a
            self loop sits on the diagonal).
        min_degree: smallest degree (default 1: degree 0 only encodes the graph size).
        n_hint: graph size the contraction paths are optimised for.
        memory_limit: forwarded to :func:`everygraph.contractions.evaluate`.
    """

    def __init__(
        self,
        degree: int,
        outputs: Sequence[str] = ("invariant", "node", "edge"),
        select: str | Sequence[Pattern | str] = "all",
        normalize: str | None = "log",
        domain: str = "simple",
        min_degree: int = 1,
        n_hint: int = 32,
        memory_limit: float | None = None,
    ) -> None:
        super().__init__()
        self.degree = degree = check_size(degree, "degree", 0)
        min_degree = check_size(min_degree, "min_degree", 0)
        self.outputs = check_outputs(outputs)
        self.domain = domain
        self.normalize = check_normalize(normalize)
        self.memory_limit = memory_limit
        self.patterns = select_patterns(degree, self.outputs, select, domain, min_degree)
        if not self.patterns:
            raise ValueError(f"no pattern selected (degree {degree}, outputs {self.outputs}, select {select!r})")
        self.plan = compile_plan(self.patterns, n_hint=n_hint)

    @property
    def num_features(self) -> dict[str, int]:
        """Channels per output type."""
        return {o: len(self.plan.indices(o)) for o in self.plan.outputs}

    @property
    def out_channels(self) -> int:
        return len(self.patterns)

    def reset_parameters(self) -> None:
        """Nothing to reset (the features are fixed polynomials); kept for the PyG convention."""

    def dense(
        self, adj: Tensor, mask: Tensor | None = None, edge_attr: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Dense form: ``adj [B, n, n(, c)]`` -> ``([B, n, n, k], mask [B, n])`` in pattern order
        (invariants broadcast over real node pairs, node values on the diagonal)."""
        return dense_polynomial_features(self.plan, adj, mask, edge_attr, self.normalize, self.memory_limit)

    def forward(
        self,
        edge_index: Tensor,
        batch: Tensor | None = None,
        num_nodes: int | None = None,
        edge_attr: Tensor | None = None,
        as_matrix: bool = False,
    ) -> dict[str, Tensor] | tuple[Tensor, Tensor]:
        """Args:
            edge_index: ``[2, num_edges]`` (both directions for undirected graphs).
            batch: ``[num_nodes]`` graph of each node (default: one graph).
            num_nodes: number of nodes (default: from ``batch`` or ``edge_index``).
            edge_attr: ``[num_edges, c]`` read by patterns with channels ``1..c``.
            as_matrix: return the dense ``([B, n, n, k], mask [B, n])`` instead.

        Returns:
            ``{"invariant": [B, k_inv], "node": [num_nodes, k_node], "edge": [num_edges, k_edge]}``
            for the requested outputs.
        """
        num_nodes = check_graph_inputs(edge_index, batch, num_nodes, edge_attr)
        if as_matrix:
            from torch_geometric.data import Data

            if num_nodes is None:
                num_nodes = batch.numel() if batch is not None else (int(edge_index.max()) + 1 if edge_index.numel() else 0)
            if self.domain == "simple":
                edge_index, edge_attr = to_simple_graph(edge_index, num_nodes, edge_attr)
            data = Data(edge_index=edge_index, num_nodes=num_nodes, batch=batch, edge_attr=edge_attr)
            return self.dense(data)
        return polynomial_features(
            self.plan, edge_index, batch, num_nodes, edge_attr, self.normalize, self.memory_limit,
            coalesce=self.domain == "simple",
        )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{o}={k}" for o, k in self.num_features.items())
        return f"{self.__class__.__name__}(degree={self.degree}, {sizes}, normalize={self.normalize!r})"
