"""The reference execution: a plain loop over nodes in topological order, every kind."""

from __future__ import annotations

import torch
from torch import Tensor

from ...graphlib import DAG
from ..transitions import Boundary, apply_transition, apply_weight, resolve_boundary


def reference(
    dag: DAG,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    kind: str,
    initial_state: Tensor | None,
    boundary: Boundary | None,
    return_state: bool,
) -> tuple[Tensor, Tensor | None]:
    """The recurrence of :func:`~everygraph.sequence.scan`, node by node (the readable spec).

    ``q`` is already scaled. Returns ``h`` ``[B, N, H, dv]`` and the virtual out-edge states
    ``[B, N, H, dk, dv]`` (or None).
    """
    B, N, H, dk = k.shape
    dv = v.shape[-1]
    gates = resolve_boundary(boundary, kind, B, N, dag.num_edges, H, dk, dv, q)
    src, dst = dag.edge_index.tolist()
    line = dag.line_graph()
    line_in, line_out = line.edge_index.tolist()
    in_edges: list[list[int]] = [[] for _ in range(N)]
    out_edges: list[list[int]] = [[] for _ in range(N)]
    for e, (u, w) in enumerate(zip(src, dst)):
        out_edges[u].append(e)
        in_edges[w].append(e)
    feeding: list[list[tuple[int, int]]] = [[] for _ in range(dag.num_edges)]
    for l, (e_in, e_out) in enumerate(zip(line_in, line_out)):
        feeding[e_out].append((l, e_in))

    def read(n: int, state: Tensor) -> Tensor:  # q^T C
        return torch.einsum("bhd,bhdv->bhv", q[:, n], state)

    states: list[Tensor | None] = [None] * dag.num_edges
    h: list[Tensor | None] = [None] * N
    finals: list[Tensor | None] = [None] * N
    for n in dag.order.tolist():
        kv = k[:, n, :, :, None] * v[:, n, :, None, :]  # [B, H, dk, dv]
        out = direct[:, n, :, None] * (q[:, n] * k[:, n]).sum(-1, keepdim=True) * v[:, n]
        for e in in_edges[n]:
            out = out + read(n, apply_weight(mark[:, e], states[e]))
        if initial_state is not None:
            out = out + read(n, apply_weight(gates.mark[:, n], initial_state[:, n]))
        h[n] = out
        for e in out_edges[n]:
            state = apply_weight(source[:, e], kv)
            for l, e_in in feeding[e]:
                state = state + apply_transition(kind, transition[:, l], states[e_in])
            if initial_state is not None:
                state = state + apply_transition(kind, gates.enter[:, e], initial_state[:, n])
            states[e] = state
        if return_state:
            final = apply_weight(gates.source[:, n], kv)
            for e in in_edges[n]:
                final = final + apply_transition(kind, gates.leave[:, e], states[e])
            if initial_state is not None:
                final = final + apply_transition(kind, gates.through[:, n], initial_state[:, n])
            finals[n] = final
    # no nodes: the direct term of a node, on none of them, so that the inputs stay in the graph
    h_out = torch.stack(h, dim=1) if N else direct[..., None] * (q * k).sum(-1, keepdim=True) * v
    if not return_state:
        return h_out, None
    return h_out, (torch.stack(finals, dim=1) if N else k.new_zeros(B, N, H, dk, dv))
