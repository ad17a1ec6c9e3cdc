"""The wavefront execution: one batched step per topological level of any DAG, every kind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ...graphlib import DAG
from ..transitions import Boundary, apply_transition, apply_weight


@dataclass
class WavefrontPlan:
    """Index plan of a DAG, edges sorted by the level of their tail node.

    Edges leaving level ``l`` form the block ``edge_offset[l]:edge_offset[l + 1]`` of the
    sorted order ``edge_perm``. Line-graph edges (sorted by ``line_perm``) through nodes of
    level ``l`` are ``line_offset[l]:line_offset[l + 1]``; their incoming states are
    gathered from the blocks of earlier levels (``gathers[l]``: pairs ``(level, index in
    that block)``) and added into the out-edges at ``targets[l]`` (index in block ``l``).
    """

    edge_perm: Tensor
    edge_offset: list[int]
    line_perm: Tensor
    line_offset: list[int]
    gathers: list[list[tuple[int, Tensor]]]
    targets: list[Tensor]


def wavefront_plan(dag: DAG, device: torch.device | None = None) -> WavefrontPlan:
    """The plan of ``dag`` on ``device`` (default: the DAG's), computed once and cached on it."""
    device = torch.device(device) if device is not None else dag.edge_index.device
    plans = dag.__dict__.setdefault("_plstm_wavefront_plans", {})
    if device not in plans:
        plans[device] = _build_plan(dag, device)
    return plans[device]


def _build_plan(dag: DAG, device: torch.device) -> WavefrontPlan:
    num_levels = max(dag.num_levels, 1)
    levels = dag.levels.to(device)
    src = dag.edge_index[0].to(device)
    edge_level = levels[src]
    edge_perm = torch.sort(edge_level, stable=True).indices
    position = torch.empty_like(edge_perm)
    position[edge_perm] = torch.arange(edge_perm.numel(), device=device)
    edge_counts = torch.bincount(edge_level, minlength=num_levels)
    edge_offset = [0] + torch.cumsum(edge_counts, 0).tolist()
    local = position - torch.tensor(edge_offset[:-1], device=device, dtype=torch.long)[edge_level] if edge_perm.numel() else position

    line = dag.line_graph()
    e_in, e_out = line.edge_index.to(device)
    node_level = levels[line.node.to(device)]
    in_level = edge_level[e_in]
    line_perm = torch.sort(node_level * num_levels + in_level, stable=True).indices
    line_counts = torch.bincount(node_level, minlength=num_levels)
    line_offset = [0] + torch.cumsum(line_counts, 0).tolist()
    e_in, e_out, in_level = e_in[line_perm], e_out[line_perm], in_level[line_perm]
    gathers, targets = [], []
    for l in range(num_levels):
        a, b = line_offset[l], line_offset[l + 1]
        groups: list[tuple[int, Tensor]] = []
        if b > a:
            lv, counts = torch.unique_consecutive(in_level[a:b], return_counts=True)
            for part, level_from in zip(torch.split(local[e_in[a:b]], counts.tolist()), lv.tolist()):
                groups.append((level_from, part))
        gathers.append(groups)
        targets.append(local[e_out[a:b]])
    return WavefrontPlan(edge_perm, edge_offset, line_perm, line_offset, gathers, targets)


def wavefront(
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
    propagate: Propagate | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The recurrence of :func:`~everygraph.sequence.scan`, level by level.

    All source terms :math:`S_e k v^\top` are formed in one batched op; each level then
    gathers the states of its in-edges, applies the transitions of its line-graph edges and
    scatter-adds them into its out-edges. Outputs and virtual out-edge states are read from
    all edge states at once after the loop. A batch of graphs is one disjoint union: its
    depth is the deepest graph's. ``q`` is already scaled. ``propagate`` replaces the level
    loop (:func:`propagate_levels`), e.g. by one Triton kernel per level.
    """
    gates = boundary if boundary is not None else Boundary()
    plan = wavefront_plan(dag, q.device)
    src, dst = dag.edge_index.to(q.device)[:, plan.edge_perm]
    kv_src = k[:, src, :, :, None] * v[:, src, :, None, :]  # [B, E, H, dk, dv]
    emitted = apply_weight(source[:, plan.edge_perm], kv_src)
    if initial_state is not None:
        emitted = emitted + _maybe(kind, _take(gates.enter, plan.edge_perm), initial_state[:, src])
    states = (propagate or propagate_levels)(dag, plan, emitted, transition, kind)  # [B, E, H, dk, dv], sorted edges

    h = direct[..., None] * (q * k).sum(-1, keepdim=True) * v
    read = torch.einsum("behd,behdv->behv", q[:, dst], apply_weight(mark[:, plan.edge_perm], states))
    h = h.index_add(1, dst, read)
    if initial_state is not None:
        h = h + torch.einsum("bnhd,bnhdv->bnhv", q, _weighted(gates.mark, initial_state))
    if not return_state:
        return h, None
    final = _weighted(gates.source, k[..., :, None] * v[..., None, :])
    if initial_state is not None:
        final = final + _maybe(kind, gates.through, initial_state)
    return h, final.index_add(1, dst, _maybe(kind, _take(gates.leave, plan.edge_perm), states))


def propagate_levels(dag: DAG, plan: WavefrontPlan, emitted: Tensor, transition: Tensor, kind: str) -> Tensor:
    """Every edge state from the source terms, level by level: ``emitted`` ``[B, E, H, dk, dv]``
    in ``plan.edge_perm`` order, ``transition`` ``[B, L, H, *gate]`` in line-graph order;
    returns the states in ``plan.edge_perm`` order."""
    # split, not slicing per level: each slice's backward would zero a full-size grad
    emitted_blocks = emitted.split(_sizes(plan.edge_offset), dim=1)
    line_blocks = transition[:, plan.line_perm].split(_sizes(plan.line_offset), dim=1)
    blocks: list[Tensor] = []
    for block, t, groups, target in zip(emitted_blocks, line_blocks, plan.gathers, plan.targets):
        if groups:
            incoming = [blocks[level_from].index_select(1, index) for level_from, index in groups]
            incoming = incoming[0] if len(incoming) == 1 else torch.cat(incoming, dim=1)
            block = block.index_add(1, target, apply_transition(kind, t, incoming))
        blocks.append(block)
    return torch.cat(blocks, dim=1) if blocks else emitted


#: The level loop of :func:`wavefront`: ``(dag, plan, emitted, transition, kind) -> states``.
Propagate = Callable[[DAG, WavefrontPlan, Tensor, Tensor, str], Tensor]


def _take(gate: Tensor | None, perm: Tensor) -> Tensor | None:
    return None if gate is None else gate[:, perm]


def _maybe(kind: str, gate: Tensor | None, state: Tensor) -> Tensor:
    """``T(state)``, the identity when ``gate`` is None."""
    return state if gate is None else apply_transition(kind, gate, state)


def _weighted(weight: Tensor | None, state: Tensor) -> Tensor:
    return state if weight is None else apply_weight(weight, state)


def _sizes(offsets: list[int]) -> list[int]:
    return [b - a for a, b in zip(offsets[:-1], offsets[1:])]
