"""Precompute equivariant polynomial features as a PyG transform.

Paper: Puny et al., *Equivariant Polynomials for Graph Neural Networks*, ICML 2023,
https://arxiv.org/abs/2302.11556.

The same channels as :class:`everygraph.nn.PolynomialFeatures` (both call
:func:`everygraph.contractions.polynomial_features`), computed once per graph (e.g. as a
dataset ``pre_transform``) and stored on the ``Data`` object:

* ``data.poly_graph``: ``[1, k_inv]`` (concatenates to ``[num_graphs, k_inv]`` in a batch);
* ``data.poly_node``: ``[num_nodes, k_node]`` (or appended to ``data.x`` with ``cat=True``);
* ``data.poly_edge``: ``[num_edges, k_edge]`` (or appended to ``data.edge_attr``).

Example:
    >>> from everygraph.transforms import AddPolynomialFeatures
    >>> transform = AddPolynomialFeatures(degree=4, outputs=("invariant", "node"))
    >>> data = transform(data)  # doctest: +SKIP
    >>> data.poly_node.shape  # [num_nodes, 59]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from ..contractions import check_normalize, check_outputs, compile_plan, polynomial_features, select_patterns

__all__ = ["AddPolynomialFeatures"]


class AddPolynomialFeatures(BaseTransform):
    """Add polynomial (homomorphism-count) features to a graph.

    Args:
        degree, outputs, select, normalize, domain, min_degree: as in
            :class:`~everygraph.nn.PolynomialFeatures`.
        cat: append node / edge channels to ``x`` / ``edge_attr`` (created if absent) instead
            of storing ``poly_node`` / ``poly_edge``.
    """

    def __init__(
        self,
        degree: int,
        outputs: Sequence[str] = ("invariant", "node", "edge"),
        select="all",
        normalize: str | None = "log",
        domain: str = "simple",
        min_degree: int = 1,
        cat: bool = False,
    ) -> None:
        self.degree = degree
        self.normalize = check_normalize(normalize)
        outputs = check_outputs(outputs)
        self.patterns = select_patterns(degree, outputs, select, domain, min_degree)
        if not self.patterns:
            raise ValueError(f"no pattern selected (degree {degree}, outputs {tuple(outputs)}, select {select!r})")
        self.plan = compile_plan(self.patterns)
        self.domain = domain
        self.cat = cat

    def forward(self, data: Data) -> Data:
        if isinstance(data, torch.Tensor) or not hasattr(data, "edge_index") or not hasattr(data, "num_nodes"):
            raise TypeError(f"data must be a PyG Data object (with edge_index and num_nodes), got {type(data).__name__}")
        data = copy.copy(data)
        out = polynomial_features(self.plan, data.edge_index, num_nodes=data.num_nodes, normalize=self.normalize,
                                  coalesce=self.domain == "simple")
        dtype = data.x.dtype if getattr(data, "x", None) is not None and torch.is_floating_point(data.x) else None
        if "invariant" in out:
            data.poly_graph = out["invariant"]
        if "node" in out:
            node = out["node"] if dtype is None else out["node"].to(dtype)
            if self.cat:
                x = getattr(data, "x", None)
                data.x = node if x is None else torch.cat([x.view(x.shape[0], -1).to(node.dtype), node], dim=-1)
            else:
                data.poly_node = node
        if "edge" in out:
            edge = out["edge"]
            if self.cat:
                ea = getattr(data, "edge_attr", None)
                data.edge_attr = edge if ea is None else torch.cat([ea.view(ea.shape[0], -1).to(edge.dtype), edge], -1)
            else:
                data.poly_edge = edge
        return data

    def __repr__(self) -> str:
        sizes = ", ".join(f"{o}={len(self.plan.indices(o))}" for o in self.plan.outputs)
        return f"{self.__class__.__name__}(degree={self.degree}, {sizes}, normalize={self.normalize!r}, cat={self.cat})"
