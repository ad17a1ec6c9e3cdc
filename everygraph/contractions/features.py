r"""Equivariant polynomial features of PyG graphs: pattern selection, evaluation, layout.

Paper: Puny, Lim, Kiani, Maron, Lipman, *Equivariant Polynomials for Graph Neural Networks*,
ICML 2023, https://arxiv.org/abs/2302.11556.

For a compiled set of patterns :math:`H` these functions compute the homomorphism-count
polynomials :math:`P_H(A)` of each graph's adjacency (and, for patterns reading channels
``>= 1``, of its dense edge attributes) and hand them back in PyG's layout:

* invariant: ``[num_graphs, k_inv]``;
* node: ``[num_nodes, k_node]`` (rows follow ``batch``);
* edge: ``[num_edges, k_edge]`` (rows follow the columns of ``edge_index``),

or as one dense ``[num_graphs, n, n, k]`` tensor with a node mask (the PPGN input
convention: invariants broadcast, node values on the diagonal).

Counts grow like :math:`n^{|V|}`; ``normalize`` tames them: ``"log"`` maps
:math:`x \mapsto \operatorname{sign}(x) \log(1 + |x|)`, ``"density"`` divides by
:math:`n_G^{\#\text{non-special vertices}}` (homomorphism densities), ``None`` keeps counts.

The layer :class:`everygraph.nn.PolynomialFeatures` and the transform
:class:`everygraph.transforms.AddPolynomialFeatures` are thin wrappers around these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..graphlib import check_batch, check_edge_index, check_flag, check_size, check_tensor, ptr_from_batch, to_simple_graph
from .basis import basis
from .evaluate import dense_inputs, evaluate
from .pattern import Pattern
from .plan import ContractionPlan

__all__ = ["NORMALIZATIONS", "select_patterns", "polynomial_features", "dense_polynomial_features"]

#: Accepted values of ``normalize``.
NORMALIZATIONS = (None, "log", "density")

OUTPUTS = ("invariant", "node", "edge")


def check_outputs(outputs: object) -> tuple[str, ...]:
    """``outputs`` as a tuple of output types; a bare string is refused (it would be read
    letter by letter)."""
    if isinstance(outputs, str):
        raise TypeError(f"outputs must be a sequence of output types such as ({outputs!r},), got the string {outputs!r}")
    if not hasattr(outputs, "__iter__"):
        raise TypeError(f"outputs must be a sequence of 'invariant', 'node', 'edge', got {type(outputs).__name__}")
    outputs = tuple(outputs)
    for o in outputs:
        if o not in OUTPUTS:
            raise ValueError(f"outputs must hold 'invariant', 'node' or 'edge', got {o!r}")
    return outputs


def check_graph_inputs(
    edge_index: Tensor, batch: Tensor | None, num_nodes: int | None, edge_attr: Tensor | None
) -> int:
    """Validate a PyG batch (``edge_index``, sorted ``batch``, ``num_nodes``, ``edge_attr``
    ``[num_edges, c]``) and return ``num_nodes``."""
    check_tensor(edge_index, "edge_index", "index")
    if num_nodes is not None:
        num_nodes = check_size(num_nodes, "num_nodes", 0)
    elif batch is not None:
        check_tensor(batch, "batch", "index", 1, shape="[num_nodes]")
        num_nodes = batch.numel()
    num_nodes = check_edge_index(edge_index, num_nodes)
    check_batch(batch, num_nodes)
    if edge_attr is not None:
        check_tensor(edge_attr, "edge_attr", "float", shape="[num_edges, channels]")
        if edge_attr.shape[0] != edge_index.shape[1]:
            raise ValueError(f"edge_attr must have one row per edge ({edge_index.shape[1]}), got shape {list(edge_attr.shape)}")
    return num_nodes


def select_patterns(
    degree: int,
    outputs: Sequence[str] = OUTPUTS,
    select: str | Sequence[Pattern | str] = "all",
    domain: str = "simple",
    min_degree: int = 1,
) -> list[Pattern]:
    """The patterns a polynomial feature map evaluates.

    Args:
        degree: largest pattern degree.
        outputs: which of ``"invariant"``, ``"node"``, ``"edge"`` to keep.
        select: ``"all"``: every basis element of degree ``min_degree..degree`` of each
            output; ``"not_ppgn"``: only those PPGN / 2-FWL cannot compute (decided by
            :func:`everygraph.contractions.computable`); a list: those patterns (strings are
            read with :meth:`Pattern.from_string`).
        domain: basis domain (``"simple"`` for 0/1 adjacencies).
        min_degree: smallest degree.
    """
    outputs = check_outputs(outputs)
    degree = check_size(degree, "degree", 0)
    min_degree = check_size(min_degree, "min_degree", 0)
    if not isinstance(select, str) and not hasattr(select, "__iter__"):
        raise TypeError(f"select must be 'all', 'not_ppgn' or a list of patterns, got {type(select).__name__}")
    if not isinstance(select, str):
        pats = [Pattern.from_string(p) if isinstance(p, str) else p for p in select]
        return [p for p in pats if p.output in outputs]
    if select not in ("all", "not_ppgn"):
        raise ValueError(f"select must be 'all', 'not_ppgn' or a list of patterns, got {select!r}")
    pats = [p for o in outputs for d in range(min_degree, degree + 1) for p in basis(d, o, domain)]
    if select == "not_ppgn":
        from .expressivity import computable  # the decider is only needed here

        pats = [p for p in pats if not computable(p, "ppgn")]
    return pats


def check_normalize(normalize: str | None) -> str | None:
    """Return ``normalize`` or raise a ValueError listing :data:`NORMALIZATIONS`."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    return normalize


def _normalize(value: Tensor, patterns: Sequence[Pattern], sizes: Tensor, normalize: str | None) -> Tensor:
    """``value [B, ..., k]`` of ``patterns`` (one per channel) for graphs of ``sizes [B]`` nodes."""
    if normalize is None:
        return value
    if normalize == "log":
        return torch.sign(value) * torch.log1p(value.abs())
    # exponent of n: the non-special vertices of each pattern
    free = [p.num_vertices - len(set(p.special)) for p in patterns]
    exponent = torch.tensor(free, dtype=value.dtype, device=value.device)
    scale = sizes.to(value.dtype).clamp(min=1).view(-1, *([1] * (value.dim() - 1))) ** exponent
    return value / scale


def dense_polynomial_features(
    plan: ContractionPlan,
    adj: Tensor,
    mask: Tensor | None = None,
    edge_attr: Tensor | None = None,
    normalize: str | None = "log",
    memory_limit: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Dense form: ``adj [B, n, n(, c)]`` (or a PyG batch) -> ``([B, n, n, k], mask [B, n])``
    in pattern order (invariants broadcast over real node pairs, node values on the diagonal,
    zero at padded pairs).

    Args:
        plan: from :func:`everygraph.contractions.compile_plan`.
        adj, mask, edge_attr: as in :func:`everygraph.contractions.evaluate`.
        normalize: ``"log"``, ``"density"`` or ``None`` (see the module docstring).
        memory_limit: forwarded to :func:`everygraph.contractions.evaluate`.
    """
    check_normalize(normalize)
    x, mask = dense_inputs(adj, mask, edge_attr)
    out = evaluate(plan, x, mask, as_matrix=True, memory_limit=memory_limit)
    out = _normalize(out, plan.patterns, mask.sum(1), normalize)
    pair = (mask[:, :, None] & mask[:, None, :]).to(out.dtype)
    return out * pair[..., None], mask


def polynomial_features(
    plan: ContractionPlan,
    edge_index: Tensor,
    batch: Tensor | None = None,
    num_nodes: int | None = None,
    edge_attr: Tensor | None = None,
    normalize: str | None = "log",
    memory_limit: float | None = None,
    *,
    coalesce: bool = False,
) -> dict[str, Tensor]:
    """The plan's polynomial channels of a PyG batch, in PyG's layout.

    Args:
        plan: from :func:`everygraph.contractions.compile_plan`.
        edge_index: ``[2, num_edges]`` (both directions for undirected graphs).
        batch: ``[num_nodes]`` graph of each node (default: one graph).
        num_nodes: number of nodes (default: from ``batch`` or ``edge_index``).
        edge_attr: ``[num_edges, c]`` read by patterns with channels ``1..c``.
        normalize: ``"log"``, ``"density"`` or ``None`` (see the module docstring).
        memory_limit: forwarded to :func:`everygraph.contractions.evaluate`.
        coalesce: read the input as a simple graph (the ``"simple"`` basis domain's 0/1
            adjacency without loops): a repeated edge counts once (its attributes added), self
            loops are dropped (:func:`everygraph.graphlib.to_simple_graph`). Without it an
            edge listed ``k`` times has weight ``k`` and a self loop sits on the diagonal (the
            ``"general"`` domain's multigraphs). The rows of ``"edge"`` follow the columns of
            the given ``edge_index`` either way (a repeated edge's rows are equal).

    Returns:
        ``{"invariant": [B, k_inv], "node": [num_nodes, k_node], "edge": [num_edges, k_edge]}``
        for the outputs present in the plan.
    """
    from torch_geometric.data import Data

    check_normalize(normalize)
    check_flag(coalesce, "coalesce")
    num_nodes = check_graph_inputs(edge_index, batch, num_nodes, edge_attr)
    pairs, pair_attr = to_simple_graph(edge_index, num_nodes, edge_attr) if coalesce else (edge_index, edge_attr)
    data = Data(edge_index=pairs, num_nodes=num_nodes)
    if batch is not None:
        if batch.numel() != num_nodes:
            raise ValueError(f"batch has {batch.numel()} entries for {num_nodes} nodes")
        data.batch = batch
    if pair_attr is not None:
        data.edge_attr = pair_attr
    x, mask = dense_inputs(data)
    out = evaluate(plan, x, mask, memory_limit=memory_limit)
    if not isinstance(out, dict):
        out = {plan.outputs[0]: out}
    sizes = mask.sum(1)
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long, device=edge_index.device)
    # position of each node inside its padded graph
    ptr = ptr_from_batch(batch, mask.shape[0])
    local = torch.arange(num_nodes, device=batch.device) - ptr[batch]
    result: dict[str, Tensor] = {}
    for o, value in out.items():
        value = _normalize(value, [plan.patterns[j] for j in plan.indices(o)], sizes, normalize)
        if o == "node":
            value = value[batch, local]
        elif o == "edge":
            src, dst = edge_index
            value = value[batch[src], local[src], local[dst]]
        result[o] = value
    return result
