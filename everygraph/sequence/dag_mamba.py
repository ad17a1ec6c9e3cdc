r"""Mamba's selective scan directly on a DAG: the ``elementwise`` kind of
:func:`~everygraph.sequence.scan` with a node state that averages its predecessors."""

from __future__ import annotations

import torch
from torch import Tensor

from ..graphlib import DAG, check_tensor
from .recurrence import scan


def dag_selective_scan(
    dag: DAG,
    u: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    execution: str | None = None,
) -> Tensor:
    r"""The selective scan on a DAG (a batch of DAGs: their disjoint union), per channel ``d``:

    .. math::
        h_n = e^{\Delta_n A} \odot \frac{1}{|\mathrm{in}(n)|} \sum_{m \to n} h_m
              + \Delta_n u_n B_n, \qquad y_n = \langle C_n, h_n \rangle

    (a source node has no predecessor term). On a path this is Mamba-1's recurrence. The
    mean over predecessors keeps the decay budget of a node at most 1 however many parents it
    has, so :math:`|h|` grows at most linearly with depth even at :math:`A = 0`; a plain sum
    would count paths, exponentially many in a DAG of stacked diamonds.

    In the engine's terms: the state on edge :math:`m \to n` is :math:`h_m`; the transition
    through node ``n`` and the mark of its in-edges are :math:`e^{\Delta_n A} / |\mathrm{in}(n)|`
    (elementwise ``[N, D]``), sources and direct 1, :math:`q = C`, :math:`k = B`,
    :math:`v = \Delta u`.

    Args:
        dag: the structure (``dag.reverse()`` for the backward direction).
        u, dt: ``[num_nodes, D]`` (``dt`` after softplus); A: ``[D, N]``;
        B, C: ``[num_nodes, N]``.
        execution: as in :func:`~everygraph.sequence.scan` (default ``wavefront``).

    Returns:
        ``y`` ``[num_nodes, D]``.
    """
    if not isinstance(dag, DAG):
        raise TypeError(f"dag must be an everygraph.graphlib.DAG, got {type(dag).__name__}")
    for name, value in (("u", u), ("dt", dt), ("B", B), ("C", C)):
        check_tensor(value, name, "float", 2, shape="[num_nodes, *]")
    check_tensor(A, "A", "float", 2, shape="[D, N]")
    num_nodes, channels = u.shape
    if dt.shape != u.shape:
        raise ValueError(f"dt must have the shape of u {list(u.shape)}, got {list(dt.shape)}")
    if num_nodes != dag.num_nodes:
        raise ValueError(f"u must have one row per node of the DAG ({dag.num_nodes}), got {list(u.shape)}")
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A must have shape [D, N] with D = {channels}, got {list(A.shape)}")
    N = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if list(t.shape) != [num_nodes, N]:
            raise ValueError(f"{name} must have shape [num_nodes, N] = {[num_nodes, N]}, got {list(t.shape)}")
    in_degree = dag.in_degree.to(u.device).clamp(min=1).to(u.dtype)
    decay = torch.exp(dt[:, None, :] * A.t()) / in_degree[:, None, None]  # [num_nodes, N, D]
    line_node = dag.line_graph().node.to(u.device)
    dst = dag.edge_index[1].to(u.device)
    transition = decay[line_node][None, :, None]  # [1, L, 1, N, D]
    mark = decay[dst][None, :, None]  # [1, E, 1, N, D]
    source = u.new_ones(1, dag.num_edges, 1)
    direct = u.new_ones(1, num_nodes, 1)
    q, k, v = C[None, :, None], B[None, :, None], (dt * u)[None, :, None]
    h = scan(dag, q, k, v, source, transition, mark, direct, kind="elementwise", scale=1.0, execution=execution)
    return h[0, :, 0]
