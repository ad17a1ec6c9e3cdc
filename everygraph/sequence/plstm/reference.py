"""The reference execution: a plain loop over nodes in topological order."""

from __future__ import annotations

import torch
from torch import Tensor

from ...graphlib import DAG


def plstm_reference(
    dag: DAG,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    initial_state: Tensor | None,
    return_state: bool,
) -> tuple[Tensor, Tensor | None]:
    """The recurrence of :func:`~everygraph.sequence.plstm.plstm_scan`, node by node.

    ``q`` is already scaled. Returns ``h`` ``[B, N, H, dv]`` and the virtual out-edge
    states ``[B, N, H, dk, dv]`` (or None).
    """
    src, dst = dag.edge_index.tolist()
    line = dag.line_graph()
    line_in, line_out = line.edge_index.tolist()
    in_edges: list[list[int]] = [[] for _ in range(dag.num_nodes)]
    out_edges: list[list[int]] = [[] for _ in range(dag.num_nodes)]
    for e, (u, w) in enumerate(zip(src, dst)):
        out_edges[u].append(e)
        in_edges[w].append(e)
    feeding: list[list[tuple[int, int]]] = [[] for _ in range(dag.num_edges)]
    for l, (e_in, e_out) in enumerate(zip(line_in, line_out)):
        feeding[e_out].append((l, e_in))

    states: list[Tensor | None] = [None] * dag.num_edges
    h, finals = [], []
    for n in dag.order.tolist():
        kv = k[:, n, :, :, None] * v[:, n, :, None, :]  # [B, H, dk, dv]
        out = direct[:, n, :, None] * (q[:, n] * k[:, n]).sum(-1, keepdim=True) * v[:, n]
        for e in in_edges[n]:
            out = out + mark[:, e, :, None] * torch.einsum("bhd,bhdv->bhv", q[:, n], states[e])
        if initial_state is not None:
            out = out + torch.einsum("bhd,bhdv->bhv", q[:, n], initial_state[:, n])
        h.append((n, out))
        for e in out_edges[n]:
            state = source[:, e, :, None, None] * kv
            for l, e_in in feeding[e]:
                state = state + transition[:, l, :, None, None] * states[e_in]
            if initial_state is not None:
                state = state + initial_state[:, n]
            states[e] = state
        if return_state:
            final = kv
            for e in in_edges[n]:
                final = final + states[e]
            if initial_state is not None:
                final = final + initial_state[:, n]
            finals.append((n, final))
    h = torch.stack([out for _, out in sorted(h, key=lambda item: item[0])], dim=1) if h else v.new_zeros(v.shape)
    if not return_state:
        return h, None
    B, N, H, dk = k.shape
    if not finals:
        return h, k.new_zeros(B, N, H, dk, v.shape[-1])
    return h, torch.stack([s for _, s in sorted(finals, key=lambda item: item[0])], dim=1)
