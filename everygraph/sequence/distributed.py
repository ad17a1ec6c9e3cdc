r"""Context-parallel scans: one sequence split along its length across the ranks of a process group.

A linear recurrence :math:`h_t = a_t \odot h_{t-1} + b_t` is associative: a piece of the
sequence acts on the state entering it as the affine map
:math:`h \mapsto P \odot h + h^0`, with :math:`P = \prod_{t \in \text{piece}} a_t` (the
piece's total transition) and :math:`h^0` its final state when started from zero. Rank
:math:`r` holds piece :math:`r` (pieces in rank order along the sequence):

1. it scans its piece from a zero state (the ordinary single-process scan), keeping
   :math:`P_r` and :math:`h^0_r`;
2. all ranks gather the pairs :math:`(P_k, h^0_k)` (an ``all_gather`` of ``2 x state``
   numbers per rank, independent of the sequence length) and each folds the pairs of the
   ranks before it, an exclusive prefix over ranks:
   :math:`h^{\mathrm{in}}_r = P_{r-1} \odot (\cdots (P_1 \odot h^0_0 + h^0_1) \cdots) + h^0_{r-1}`;
3. it corrects its outputs with the entering state. Within the piece,
   :math:`h_t = h^0_t + \big(\prod_{s=\text{start}}^{t} a_s\big) \odot h^{\mathrm{in}}`, so an
   output :math:`y_t = \langle C_t, h_t\rangle` gains :math:`\langle C_t, P_{\le t} \odot
   h^{\mathrm{in}}\rangle`.

**Backward.** The gradient runs the same scheme in reverse, derived by autograd rather than
written by hand: the correction sends :math:`\partial L / \partial h^{\mathrm{in}}_r` into the
fold, whose transposition carries it back to the gathered pairs, and the backward of
the gather sums every rank's gradient for :math:`(P_k, h^0_k)` onto rank :math:`k` (an
all-reduce of ``world_size x 2 x state`` numbers); rank :math:`k` then backpropagates :math:`\partial L/\partial h^0_k` through its own
scan as the gradient of its final state. A hand-written backward would repeat this
bookkeeping with more room for error; the differentiable collective makes the distributed
gradient a consequence of the forward pass and keeps the communication at O(state).

As with any collective, every rank of the group must call the scan, with pieces of one
batch shape, and must run ``backward`` when one of them does.

Reference anchor: flash-linear-attention's ``fla.ops.cp`` splits its chunked linear-attention
kernels the same way (local chunk states, a prefix over ranks, a correction pass).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..graphlib import check_tensor
from .mamba import selective_scan
from .recurrence import path_scan
from .transitions import apply_transition, check_kind

__all__ = ["selective_scan_context_parallel", "path_scan_context_parallel", "combine_piece_states"]

# Kinds whose maps are elementwise scalings of the state, so a piece's total transition is the
# product of its gates (commuting maps) and fits in one state-shaped tensor.
_ELEMENTWISE_KINDS = ("scalar", "diagonal", "elementwise")

# Positions per block of the output correction; the block's [positions, batch, D, N] decay
# tensor is recomputed in the backward pass (checkpointed) so memory stays O(state * block).
_CORRECTION_BLOCK = 2048


def _group_rank_size(process_group: dist.ProcessGroup | None) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("a context-parallel scan needs torch.distributed initialised (init_process_group)")
    return dist.get_rank(process_group), dist.get_world_size(process_group)


class _AllGather(torch.autograd.Function):
    """``[*S] -> [world_size, *S]``; backward: the sum over ranks of their gradients for this
    rank's slot (an all-reduce of ``world_size * S`` numbers, then this rank's row)."""

    @staticmethod
    def forward(ctx, tensor: Tensor, group: dist.ProcessGroup | None) -> Tensor:  # noqa: D102
        ctx.group = group
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad[dist.get_rank(ctx.group)], None


def combine_piece_states(
    total_transition: Tensor, final_state: Tensor, process_group: dist.ProcessGroup | None = None, reverse: bool = False
) -> Tensor:
    r"""The state entering this rank's piece, from every piece's ``(total_transition, final_state)``.

    The exclusive prefix over ranks of the affine maps :math:`h \mapsto P_k \odot h + h^0_k`
    (ranks in increasing order, or decreasing with ``reverse=True``), applied to a zero state.
    One differentiable ``all_gather`` of both tensors; its backward pass all-reduces the
    gradients of the gathered pairs (``world_size * 2 * S`` numbers) and keeps this rank's.

    Args:
        total_transition: ``[*S]`` elementwise product of the piece's transitions.
        final_state: ``[*S]`` the piece's final state when scanned from zero.
        process_group: the ranks holding the pieces (default: the world).
        reverse: the sequence runs from the last rank to the first.

    Returns:
        ``[*S]`` the state entering this rank's piece (zeros for the first piece).
    """
    check_tensor(total_transition, "total_transition", "float")
    check_tensor(final_state, "final_state", "float")
    if total_transition.shape != final_state.shape:
        raise ValueError(f"total_transition and final_state must have one shape, got {list(total_transition.shape)} and "
                         f"{list(final_state.shape)}")
    if total_transition.shape != final_state.shape:
        raise ValueError(
            f"total_transition {list(total_transition.shape)} and final_state {list(final_state.shape)} must have one shape"
        )
    rank, world_size = _group_rank_size(process_group)
    if world_size == 1:
        return torch.zeros_like(final_state)
    pairs = _AllGather.apply(torch.stack([total_transition, final_state]), process_group)
    earlier = range(rank) if not reverse else range(world_size - 1, rank, -1)
    state = torch.zeros_like(final_state)
    for k in earlier:
        state = pairs[k][0] * state + pairs[k][1]
    # Every gathered pair enters the graph (an exact zero for the ones this rank does not
    # need), so every rank runs the collective's backward, which all ranks must join.
    return state + pairs[:, :, :0].sum()


def _time_major_c(C: Tensor) -> Tensor:
    """``C`` time-major: ``[L, batch, G, N]`` (``G = 1`` for ``[batch, N, L]``), or fixed ``[D, N]``."""
    if C.dim() == 2:
        return C
    if C.dim() == 3:
        return C.permute(2, 0, 1).unsqueeze(2)
    return C.permute(3, 0, 1, 2)


def _correction_block(C: Tensor, A: Tensor, log_decay: Tensor, incoming: Tensor) -> Tensor:
    """``sum_n C[t, n] exp(A[d, n] log_decay[t, b, d]) incoming[b, d, n]`` ``[T, batch, D]``
    for a block of ``T`` positions; ``C`` time-major ``[T, batch, G, N]`` or fixed ``[D, N]``."""
    T, batch, channels = log_decay.shape
    n = A.shape[1]
    weighted = torch.exp(log_decay[..., None] * A) * incoming  # [T, b, D, N]
    if C.dim() == 2:
        return (weighted * C).sum(-1)
    groups = C.shape[2]
    out = torch.bmm(weighted.reshape(T * batch * groups, channels // groups, n), C.reshape(T * batch * groups, n, 1))
    return out.view(T, batch, channels)


def _correction_by_scan(step: Tensor, A: Tensor, C: Tensor, incoming: Tensor, first: Tensor, reverse: bool) -> Tensor:
    r"""The correction as a second selective scan with no input but the entering state.

    With the batch folded into the channels, a fixed ``B' = a_0 \odot h^{\mathrm{in}}``
    ``[batch * D, N]`` (``a_0`` the piece's first decay) and ``u'`` zero except
    ``u'_0 = 1 / \bar\Delta_0``, the scan's state after the first position is
    :math:`a_0 \odot h^{\mathrm{in}}` and after position ``t`` :math:`\prod_{s \le t} a_s \odot
    h^{\mathrm{in}}`: its outputs are the correction, at the cost of one more scan of the
    piece (the fused kernel where it runs). Needs every first step ``> 0``."""
    batch, channels, length = step.shape
    n = A.shape[1]
    decay0 = torch.exp(first[..., None] * A)  # [b, D, N]
    B_fixed = (decay0 * incoming).reshape(batch * channels, n)
    rest = step.new_zeros(batch, channels, length - 1)
    inject = (1.0 / first)[..., None]
    u = torch.cat([rest, inject] if reverse else [inject, rest], -1)
    C = C.to(step.dtype)
    if C.dim() == 2:  # fixed [D, N]
        C_folded = C.repeat(batch, 1)
    elif C.dim() == 3:  # [b, N, L]: one group of D channels per batch entry
        C_folded = C.unsqueeze(0)
    else:  # [b, G, N, L]
        C_folded = C.reshape(1, -1, *C.shape[2:])
    out = selective_scan(u.reshape(1, batch * channels, length), step.reshape(1, batch * channels, length),
                         A.repeat(batch, 1), B_fixed, C_folded, reverse=reverse)
    return out.reshape(batch, channels, length)


def _correction_by_blocks(step: Tensor, A: Tensor, C: Tensor, incoming: Tensor, reverse: bool) -> Tensor:
    """The correction evaluated directly (an exponential per state entry and position), in
    checkpointed blocks; used when a first step is 0 and the scan form cannot inject the state."""
    length = step.shape[-1]
    # the decay from the piece's first scanned position to t (right to left when reversed)
    log_decay = step.flip(-1).cumsum(-1).flip(-1) if reverse else step.cumsum(-1)
    C_t = _time_major_c(C.to(step.dtype))
    log_decay = log_decay.permute(2, 0, 1)  # [L, b, D]
    blocks = []
    # At least one (possibly empty) block: the entering state must enter the graph on every
    # rank, also one with an empty piece, for every rank to join the gather's backward.
    for start in range(0, max(length, 1), _CORRECTION_BLOCK):
        block = slice(start, start + _CORRECTION_BLOCK)
        args = (C_t if C_t.dim() == 2 else C_t[block], A, log_decay[block], incoming)
        if torch.is_grad_enabled() and any(t.requires_grad for t in args):
            blocks.append(checkpoint(_correction_block, *args, use_reentrant=False))
        else:
            blocks.append(_correction_block(*args))
    return torch.cat(blocks, 0).permute(1, 2, 0)  # [b, D, L]


def selective_scan_context_parallel(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    reverse: bool = False,
    *,
    process_group: dist.ProcessGroup | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Mamba's selective scan of one sequence split along ``L`` across the ranks of a group.

    Rank ``r`` passes its piece of the sequence (positions in rank order; pieces may differ
    in length, also be empty) and gets the outputs of those positions, equal to
    :func:`~everygraph.sequence.selective_scan` of the whole sequence. Arguments are those of
    ``selective_scan`` with every ``L``-axis tensor (``u``, ``delta``, ``z``, and ``B``, ``C``
    when input-dependent) holding this rank's piece; ``A``, ``D``, ``delta_bias`` (and fixed
    ``B``/``C``) are the same on every rank (their gradients are this rank's share: sum them
    over ranks, as data-parallel training does).

    With :math:`\bar\Delta_t` the step size after bias and softplus, a piece scanned from zero
    has outputs :math:`y^0_t` and final state :math:`h^0`; its total transition is
    :math:`P = \exp(A \sum_t \bar\Delta_t)`. Given the entering state
    :math:`h^{\mathrm{in}}` (:func:`combine_piece_states`), the outputs are

    .. math::
        \mathrm{out}_t = y^0_t\,\sigma(z_t) + \sum_n C_{t,n}\,
            \exp\!\Big(A_n \sum_{s=\text{start}}^{t} \bar\Delta_s\Big)\, h^{\mathrm{in}}_n
            \,\mathrm{silu}(z_t)

    (without the ``silu(z)`` factor when ``z`` is None), since the state at ``t`` is
    :math:`h^0_t + \prod_{s \le t} \exp(\bar\Delta_s A) \odot h^{\mathrm{in}}`. The sum is
    computed as a second selective scan of the piece whose only input is
    :math:`h^{\mathrm{in}}` (so it runs on the same kernels as the scan itself), or directly
    when a first step is exactly 0. Communication
    per rank: one ``all_gather`` of ``2 * batch * D * N`` numbers forward, one all-reduce of
    ``world_size`` times as many backward, whatever the length.

    Args:
        u, delta, z: ``[batch, D, L_r]`` this rank's piece.
        A, B, C, D, delta_bias, delta_softplus: as in ``selective_scan``.
        return_last_state: also return the state after this rank's piece ``[batch, D, N]``
            (on the rank holding the end of the sequence, the sequence's final state).
        reverse: scan right to left; the sequence then enters from the last rank.
        process_group: the ranks sharing the sequence (default: the world).

    Returns:
        ``out`` ``[batch, D, L_r]``, or ``(out, state)``.
    """
    for name, value in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        check_tensor(value, name, "float")
    _, world_size = _group_rank_size(process_group)
    out, final = selective_scan(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state=True, reverse=reverse
    )
    if world_size == 1:
        return (out, final) if return_last_state else out
    dtype = final.dtype  # the scan's compute dtype
    step = delta.to(dtype)
    if delta_bias is not None:
        step = step + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        step = F.softplus(step)
    A_ = A.to(dtype)
    total_transition = torch.exp(A_[None] * step.sum(-1)[..., None])  # [b, D, N]
    incoming = combine_piece_states(total_transition, final, process_group, reverse)

    first = (step[..., -1] if reverse else step[..., 0]) if u.shape[-1] else None
    if first is not None and bool((first > 0).all()):
        correction = _correction_by_scan(step, A_, C, incoming, first, reverse)
    else:
        correction = _correction_by_blocks(step, A_, C, incoming, reverse)
    if z is not None:
        correction = correction * F.silu(z.to(dtype))
    out = out + correction.to(out.dtype)
    if return_last_state:
        return out, final + total_transition * incoming
    return out


def path_scan_context_parallel(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    *,
    kind: str = "scalar",
    scale: float | None = None,
    execution: str | None = None,
    process_group: dist.ProcessGroup | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The 1D pLSTM / linear-attention scan (:func:`~everygraph.sequence.path_scan`) of one
    sequence split along ``L`` across the ranks of a group.

    Rank ``r`` passes its piece (dense gates of its own steps, pieces in rank order, any
    lengths, also empty) and gets the outputs of its steps and the state leaving its piece,
    equal to ``path_scan`` of the whole sequence from a zero state. The piece maps an
    entering state :math:`C` to :math:`T_{L_r-1} \circ \cdots \circ T_0 (C) + C^0_r`; for the
    ``scalar``, ``diagonal`` and ``elementwise`` kinds the maps are elementwise scalings, so
    the total transition is the product of the gates, a ``[B, H, dk, dv]`` multiplier, and
    :func:`combine_piece_states` gives the entering state from one ``all_gather`` of
    ``2 * B * H * dk * dv`` numbers. The piece is then scanned again from that state
    (``path_scan(..., state=...)``, whose pieces compose exactly): twice the local work of a
    single scan, no sequence-length communication. ``householder`` transitions (products of
    dense matrices) are not supported.

    Args:
        q, k, v, source, transition, mark, direct: this rank's piece, as in ``path_scan``.
        kind: ``"scalar"``, ``"diagonal"`` or ``"elementwise"``.
        scale, execution: as in ``path_scan``.
        process_group: the ranks sharing the sequence (default: the world).

    Returns:
        ``h`` ``[B, L_r, H, dv]`` and the state leaving this rank's piece ``[B, H, dk, dv]``.
    """
    for name, value in (("q", q), ("k", k), ("v", v), ("source", source), ("transition", transition), ("mark", mark),
                        ("direct", direct)):
        check_tensor(value, name, "float")
    if check_kind(kind) not in _ELEMENTWISE_KINDS:
        raise ValueError(f"path_scan_context_parallel supports kinds {', '.join(_ELEMENTWISE_KINDS)}, got {kind!r}")
    _, world_size = _group_rank_size(process_group)
    h, final = path_scan(q, k, v, source, transition, mark, direct, kind=kind, scale=scale, execution=execution)
    if world_size == 1:
        return h, final
    B, _, H, dk = q.shape
    dv = v.shape[-1]
    total = apply_transition(kind, transition.prod(dim=1), final.new_ones(B, H, dk, dv))
    incoming = combine_piece_states(total, final, process_group)
    h, leaving = path_scan(q, k, v, source, transition, mark, direct, kind=kind, state=incoming, scale=scale,
                           execution=execution)
    if q.shape[1] == 0:  # path_scan returns an empty piece's state unchanged, outside the graph of h
        h = h + incoming[:, :0].sum()
    return h, leaving
