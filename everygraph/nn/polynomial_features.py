"""Equivariant polynomial features of graphs as a layer.

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

from typing import Sequence

import torch
from torch import Tensor

from ..contractions import Pattern, basis, compile, evaluate
from ..graphlib.validation import ptr_from_batch

__all__ = ["PolynomialFeatures", "select_patterns"]

_NORMALIZE = (None, "log", "density")


def select_patterns(
    degree: int,
    outputs: Sequence[str] = ("invariant", "node", "edge"),
    select: str | Sequence[Pattern | str] = "all",
    domain: str = "simple",
    min_degree: int = 1,
) -> list[Pattern]:
    """The patterns a :class:`PolynomialFeatures` layer evaluates.

    ``select="all"``: every basis element of degree ``min_degree..degree`` of each output;
    ``"not_ppgn"``: only those PPGN / 2-FWL cannot compute (decided by
    :func:`everygraph.contractions.expressivity.computable`, imported lazily); a list: those
    patterns (strings are read with :meth:`Pattern.from_string`).
    """
    for o in outputs:
        if o not in ("invariant", "node", "edge"):
            raise ValueError(f"unknown output {o!r}; valid: invariant, node, edge")
    if not isinstance(select, str):
        pats = [Pattern.from_string(p) if isinstance(p, str) else p for p in select]
        return [p for p in pats if p.output in outputs]
    if select not in ("all", "not_ppgn"):
        raise ValueError(f"select must be 'all', 'not_ppgn' or a list of patterns, got {select!r}")
    pats = [p for o in outputs for d in range(min_degree, degree + 1) for p in basis(d, o, domain)]
    if select == "not_ppgn":
        try:  # lazy: the decider lives in its own module and is only needed here
            from ..contractions.expressivity import computable
        except ImportError as exc:
            raise ImportError(
                "select='not_ppgn' needs the PPGN decider everygraph.contractions.expressivity, "
                "which could not be imported; pass an explicit list of patterns instead"
            ) from exc

        pats = [p for p in pats if not computable(p, "ppgn")]
    return pats


class PolynomialFeatures(torch.nn.Module):
    """Equivariant polynomial channels of a batch of graphs (no parameters).

    Args:
        degree: largest pattern degree.
        outputs: which of ``"invariant"``, ``"node"``, ``"edge"`` to compute.
        select: ``"all"``, ``"not_ppgn"`` or a list of patterns (see :func:`select_patterns`).
        normalize: ``"log"`` (default), ``"density"`` or ``None``.
        domain: basis domain (``"simple"`` for 0/1 adjacencies).
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
        if normalize not in _NORMALIZE:
            raise ValueError(f"normalize must be one of {_NORMALIZE}, got {normalize!r}")
        self.degree = degree
        self.outputs = tuple(outputs)
        self.normalize = normalize
        self.memory_limit = memory_limit
        self.patterns = select_patterns(degree, self.outputs, select, domain, min_degree)
        if not self.patterns:
            raise ValueError(f"no pattern selected (degree {degree}, outputs {self.outputs}, select {select!r})")
        self.plan = compile(self.patterns, n_hint=n_hint)
        # exponent of n in the density normalisation: non-special vertices of each pattern
        free = [p.num_vertices - len(set(p.special)) for p in self.patterns]
        self.register_buffer("_free", torch.tensor(free, dtype=torch.float64), persistent=False)

    @property
    def num_features(self) -> dict[str, int]:
        """Channels per output type."""
        return {o: len(self.plan.indices(o)) for o in self.plan.outputs}

    @property
    def out_channels(self) -> int:
        return len(self.patterns)

    def reset_parameters(self) -> None:
        """Nothing to reset (the features are fixed polynomials); kept for the PyG convention."""

    def _normalize(self, value: Tensor, idx: list[int], sizes: Tensor) -> Tensor:
        if self.normalize is None:
            return value
        if self.normalize == "log":
            return torch.sign(value) * torch.log1p(value.abs())
        exponent = self._free[idx].to(value.dtype)
        scale = sizes.to(value.dtype).clamp(min=1).view(-1, *([1] * (value.dim() - 1))) ** exponent
        return value / scale

    def dense(
        self, adj: Tensor, mask: Tensor | None = None, edge_attr: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Dense form: ``adj [B, n, n(, c)]`` -> ``([B, n, n, k], mask [B, n])`` in pattern order
        (invariants broadcast over real node pairs, node values on the diagonal)."""
        from ..contractions.evaluate import dense_inputs

        x, mask = dense_inputs(adj, mask, edge_attr)
        out = evaluate(self.plan, x, mask, as_matrix=True, memory_limit=self.memory_limit)
        sizes = mask.sum(1)
        out = self._normalize(out, list(range(len(self.patterns))), sizes)
        pair = (mask[:, :, None] & mask[:, None, :]).to(out.dtype)
        return out * pair[..., None], mask

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
        from torch_geometric.data import Data

        if num_nodes is None:
            num_nodes = batch.numel() if batch is not None else (int(edge_index.max()) + 1 if edge_index.numel() else 0)
        data = Data(edge_index=edge_index, num_nodes=num_nodes)
        if batch is not None:
            if batch.numel() != num_nodes:
                raise ValueError(f"batch has {batch.numel()} entries for {num_nodes} nodes")
            data.batch = batch
        if edge_attr is not None:
            data.edge_attr = edge_attr
        from ..contractions.evaluate import dense_inputs

        x, mask = dense_inputs(data)
        if as_matrix:
            return self.dense(x, mask)
        out = evaluate(self.plan, x, mask, memory_limit=self.memory_limit)
        if not isinstance(out, dict):
            out = {self.plan.outputs[0]: out}
        sizes = mask.sum(1)
        result: dict[str, Tensor] = {}
        if batch is None:
            batch = torch.zeros(num_nodes, dtype=torch.long, device=edge_index.device)
        # position of each node inside its padded graph
        ptr = ptr_from_batch(batch, mask.shape[0])
        local = torch.arange(num_nodes, device=batch.device) - ptr[batch]
        for o, value in out.items():
            value = self._normalize(value, self.plan.indices(o), sizes)
            if o == "node":
                value = value[batch, local]
            elif o == "edge":
                src, dst = edge_index
                value = value[batch[src], local[src], local[dst]]
            result[o] = value
        return result

    def __repr__(self) -> str:
        sizes = ", ".join(f"{o}={k}" for o, k in self.num_features.items())
        return f"{self.__class__.__name__}(degree={self.degree}, {sizes}, normalize={self.normalize!r})"
