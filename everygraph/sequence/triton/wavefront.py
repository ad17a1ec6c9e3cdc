r"""The wavefront step of the DAG scan as one Triton kernel per topological level.

The scan with states on edges (see :func:`~everygraph.sequence.plstm_scan`) computes, level
by level, the state of every out-edge ``e`` of the level's nodes:

.. math::
    C_e = \text{emitted}_e + \sum_{(e', e) \in \text{line graph}} T_{e' e} \cdot C_{e'} .

:func:`wavefront_step` computes this for one level in ONE kernel: the line-graph edges are
sorted by their out-edge (CSR), so each program owns one output edge (one ``[K]`` slice of
one batch and head, ``K = dk * dv``), walks its incoming line-graph edges, gathers their
states, weights them by the transition and adds them up: no atomics, deterministic. The
transition of a line-graph edge is a scalar, a diagonal over keys (``[dk]``, each row of the
``dk x dv`` state scaled) or elementwise (``[dk, dv]``), chosen by ``WEIGHT_WIDTH``.

The backward pass is the same kernel on the transposed line graph, visiting levels from the
last to the first (the adjoint of a linear recurrence on a DAG is the recurrence on the
reversed DAG with transposed transitions), plus one vectorised product for the transitions'
gradients. On a 2D :class:`~everygraph.graphlib.Lattice` the levels are the anti-diagonals,
so this is the anti-diagonal step too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...graphlib import DAG
from ._runtime import autotune_configs

#: Launch configurations tried once per state size on a GPU: BLOCK_K values of one program's
#: slice of a state (coalesced loads of in-edge states), warps to cover it.
_STEP_CONFIGS = autotune_configs(
    [triton.Config({"BLOCK_K": b}, num_warps=w) for b, w in ((256, 4), (1024, 8), (128, 4), (512, 4), (64, 2))]
)


@triton.autotune(configs=_STEP_CONFIGS, key=["K", "WK"])
@triton.jit
def _wavefront_step_kernel(
    states_ptr, base_ptr, weight_ptr, rowptr_ptr, col_ptr, entry_ptr,
    row_offset, BH, K, DV, WK,
    WEIGHT_WIDTH: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """``states[r] = base[r] + sum_j weight[entry[j]] * states[col[j]]`` for the rows ``r``
    of one level; ``states``/``base`` ``[rows, BH, K]``, ``weight`` ``[entries, BH, WK]``."""
    r = row_offset + tl.program_id(0)
    bh = tl.program_id(1)
    k = tl.program_id(2) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = k < K
    acc = tl.load(base_ptr + (r * BH + bh) * K + k, mask=mask, other=0.0)
    lo = tl.load(rowptr_ptr + r)
    hi = tl.load(rowptr_ptr + r + 1)
    for j in range(lo, hi):
        c = tl.load(col_ptr + j)
        e = tl.load(entry_ptr + j)
        x = tl.load(states_ptr + (c * BH + bh) * K + k, mask=mask, other=0.0)
        if WEIGHT_WIDTH == 0:  # scalar
            w = tl.load(weight_ptr + e * BH + bh)
        elif WEIGHT_WIDTH == 1:  # diagonal over keys: row k // dv of the state
            w = tl.load(weight_ptr + (e * BH + bh) * WK + k // DV, mask=mask, other=0.0)
        else:  # elementwise
            w = tl.load(weight_ptr + (e * BH + bh) * WK + k, mask=mask, other=0.0)
        acc += w * x
    tl.store(states_ptr + (r * BH + bh) * K + k, acc, mask=mask)


@dataclass
class TritonWavefrontPlan:
    """A DAG's line graph as two CSR matrices over its edges in level order.

    ``edge_offset``: where each level's block of edges starts (``num_levels + 1``), edges
    sorted by the level of their tail node. ``forward``: rows = sorted edges, entries = the
    line-graph edges entering each (``col``: sorted position of the in-edge, ``entry``: the
    line-graph edge id), ``rowptr`` ``[E + 1]``. ``backward``: the transpose (rows = in-edges,
    ``col`` = out-edges). ``line_in``, ``line_out``: sorted positions of each line-graph edge's
    two ends (for the transitions' gradients).
    """

    edge_offset: list[int]
    forward: tuple[Tensor, Tensor, Tensor]
    backward: tuple[Tensor, Tensor, Tensor]
    line_in: Tensor
    line_out: Tensor


def triton_wavefront_plan(dag: DAG, edge_perm: Tensor, edge_offset: list[int]) -> TritonWavefrontPlan:
    """The CSR plan of ``dag`` for edges in the order ``edge_perm`` (blocks ``edge_offset``
    per level, as the wavefront execution sorts them), on ``edge_perm``'s device; cached on
    the DAG."""
    plans = dag.__dict__.setdefault("_triton_wavefront_plans", {})
    key = edge_perm.device
    if key not in plans:
        plans[key] = _build_plan(dag, edge_perm, edge_offset)
    return plans[key]


def _csr(rows: Tensor, cols: Tensor, num_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    order = torch.sort(rows * (int(cols.max()) + 1 if cols.numel() else 1) + cols, stable=True).indices
    rowptr = torch.zeros(num_rows + 1, dtype=torch.int64)
    rowptr[1:] = torch.cumsum(torch.bincount(rows, minlength=num_rows), 0)
    return rowptr, cols[order], order


def _build_plan(dag: DAG, edge_perm: Tensor, edge_offset: list[int]) -> TritonWavefrontPlan:
    device = edge_perm.device
    perm = edge_perm.cpu()
    position = torch.empty_like(perm)
    position[perm] = torch.arange(perm.numel())
    e_in, e_out = dag.line_graph().edge_index.cpu()
    line_in, line_out = position[e_in], position[e_out]
    E = dag.num_edges
    forward = _csr(line_out, line_in, E)
    backward = _csr(line_in, line_out, E)

    def to(csr: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return tuple(t.to(device=device, dtype=torch.int32) for t in csr)

    return TritonWavefrontPlan(list(edge_offset), to(forward), to(backward), line_in.to(device), line_out.to(device))


def _launch(states: Tensor, base: Tensor, weight: Tensor, csr: tuple[Tensor, Tensor, Tensor], lo: int, hi: int, dv: int) -> None:
    rows, BH, K = states.shape
    if hi <= lo or BH == 0 or K == 0:
        return
    width = weight.shape[-1]
    kind = 0 if width == 1 else (1 if width != K else 2)
    rowptr, col, entry = csr
    grid = lambda meta: (hi - lo, BH, triton.cdiv(K, meta["BLOCK_K"]))  # noqa: E731
    _wavefront_step_kernel[grid](states, base, weight, rowptr, col, entry, lo, BH, K, dv, width, WEIGHT_WIDTH=kind)


class WavefrontStates(torch.autograd.Function):
    r"""All edge states of the scan, level by level on the Triton kernel.

    ``emitted`` ``[E, BH, K]`` (the source term of every edge, in ``plan.edge_perm`` order),
    ``weight`` ``[num_line_edges, BH, W]`` with ``W`` = 1 (scalar), ``dk`` (diagonal) or ``K``
    (elementwise). Returns the states ``[E, BH, K]`` in the same order.
    """

    @staticmethod
    def forward(ctx, emitted: Tensor, weight: Tensor, plan: TritonWavefrontPlan, dv: int) -> Tensor:  # noqa: D102
        emitted = emitted.contiguous()
        weight = weight.contiguous()
        states = torch.empty_like(emitted)
        offsets = plan.edge_offset
        for lo, hi in zip(offsets[:-1], offsets[1:]):
            _launch(states, emitted, weight, plan.forward, lo, hi, dv)
        ctx.save_for_backward(weight, states)
        ctx.plan, ctx.dv = plan, dv
        return states

    @staticmethod
    def backward(ctx, grad_states: Tensor):  # noqa: D102
        weight, states = ctx.saved_tensors
        plan, dv = ctx.plan, ctx.dv
        grad_states = grad_states.contiguous()
        grad = torch.empty_like(grad_states)  # d loss / d state, through every later use
        offsets = plan.edge_offset
        for lo, hi in reversed(list(zip(offsets[:-1], offsets[1:]))):
            _launch(grad, grad_states, weight, plan.backward, lo, hi, dv)
        grad_weight = None
        if ctx.needs_input_grad[1]:
            product = grad[plan.line_out] * states[plan.line_in]  # [lines, BH, K]
            width = weight.shape[-1]
            if width == 1:
                grad_weight = product.sum(-1, keepdim=True)
            elif width != product.shape[-1]:
                grad_weight = product.view(*product.shape[:2], width, dv).sum(-1)
            else:
                grad_weight = product
        return grad, grad_weight, None, None


def triton_propagate(dag: DAG, plan, emitted: Tensor, transition: Tensor, kind: str) -> Tensor:
    """The level loop of the wavefront execution on the Triton kernel (the ``propagate`` of
    :func:`~everygraph.sequence.executions.wavefront.wavefront`): ``emitted``
    ``[B, E, H, dk, dv]`` in ``plan.edge_perm`` order, ``transition`` ``[B, L, H, *gate]`` of a
    ``scalar``, ``diagonal`` or ``elementwise`` kind; returns the states in the same order."""
    if kind not in WEIGHT_WIDTHS:
        raise ValueError(f"the Triton wavefront kernel runs the kinds {', '.join(WEIGHT_WIDTHS)}, not {kind!r}")
    B, E, H, dk, dv = emitted.shape
    csr = triton_wavefront_plan(dag, plan.edge_perm, plan.edge_offset)
    flat = emitted.permute(1, 0, 2, 3, 4).reshape(E, B * H, dk * dv)
    lines = transition.shape[1]
    weight = transition.movedim(1, 0).reshape(lines, B * H, WEIGHT_WIDTHS[kind](dk, dv))
    states = WavefrontStates.apply(flat, weight, csr, dv)
    return states.view(E, B, H, dk, dv).permute(1, 0, 2, 3, 4)


#: The trailing width of a transition of each kind the kernel runs, per head.
WEIGHT_WIDTHS = {"scalar": lambda dk, dv: 1, "diagonal": lambda dk, dv: dk, "elementwise": lambda dk, dv: dk * dv}


def wavefront_triton(dag: DAG, *args, **kwargs) -> tuple[Tensor, Tensor | None]:
    """The wavefront execution (same arguments as
    :func:`~everygraph.sequence.executions.wavefront.wavefront`) with every level's state
    update one Triton kernel; source terms and readout stay one batched PyTorch op each."""
    from ..executions.wavefront import wavefront

    return wavefront(dag, *args, **kwargs, propagate=triton_propagate)
