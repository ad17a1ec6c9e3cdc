r"""The anti-diagonal execution on 2D grids for the ``scalar``, ``diagonal`` and ``elementwise``
kinds with any source/mark weights: every transition broadcast to an elementwise decay of the
``dk * dv`` state, one batched step per anti-diagonal, a hand-written adjoint.

The scalar kind with scalar weights has its own, leaner path (``plstm/lattice.py``); this one
serves Mamba on images (:func:`~everygraph.sequence.grid_selective_scan`), whose decays differ
per state entry.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...graphlib import Lattice
from ..plstm.lattice import _storage, receive_from_previous_diagonal, return_to_previous_diagonal
from ..plstm.layout import take
from ..transitions import Boundary, apply_transition, apply_weight, decay_multiplier


class ElementwiseDiagonalRecurrence(torch.autograd.Function):
    r"""Between anti-diagonals: :math:`O_n[i] = \sum_j T_n[i, j] \odot I_n[j] + X_n[i]`, and the
    next diagonal reads its in-edge states :math:`I` from :math:`O` through shifted slices.

    Node-major tensors in diagonal order: ``transition`` ``[N, B, H, 2(out), 2(in), K]``,
    ``emitted`` ``[N, B, H, 2, K]`` (what each node emits into its out-edge along each axis);
    returns ``incoming`` ``[N, B, H, 2, K]``. The backward runs the transposed recurrence from
    the last diagonal to the first: :math:`\bar O_d = \mathrm{shift}^\top \bar I_{d+1}`,
    :math:`\bar I_d \mathrel{+}= \sum_i T_d[i, \cdot] \odot \bar O_d[i]`,
    :math:`\bar T_d[i, j] = \bar O_d[i] \odot I_d[j]`, :math:`\bar X_d = \bar O_d`.
    Checked with ``gradcheck``.
    """

    @staticmethod
    def forward(ctx, transition: Tensor, emitted: Tensor, diagonals: list[tuple[int, int]]) -> Tensor:  # noqa: D102
        incoming = torch.zeros_like(emitted)
        offset, previous = 0, None
        for lo, hi in diagonals:
            n = hi - lo + 1
            if previous is not None:
                receive_from_previous_diagonal(incoming[offset:offset + n], lo, hi, *previous)
            block = slice(offset, offset + n)
            out = (transition[block] * incoming[block, :, :, None]).sum(-2) + emitted[block]
            previous, offset = (out, lo, hi), offset + n
        ctx.save_for_backward(transition, incoming)
        ctx.diagonals = diagonals
        return incoming

    @staticmethod
    def backward(ctx, grad_incoming: Tensor):  # noqa: D102
        transition, incoming = ctx.saved_tensors
        diagonals = ctx.diagonals
        grad_transition = torch.zeros_like(transition)
        grad_emitted = torch.zeros_like(incoming)
        offset, following = incoming.shape[0], None
        for index in range(len(diagonals) - 1, -1, -1):
            lo, hi = diagonals[index]
            n = hi - lo + 1
            offset -= n
            block = slice(offset, offset + n)
            grad = grad_incoming[block].clone()
            if following is not None:  # this diagonal's outputs feed the next one
                g_next, nlo, nhi = following
                g = torch.zeros_like(grad)
                return_to_previous_diagonal(g, lo, hi, g_next, nlo, nhi)
                grad_emitted[block] = g
                grad_transition[block] = g[:, :, :, :, None] * incoming[block, :, :, None]
                grad = grad + (transition[block] * g[:, :, :, :, None]).sum(-3)
            following = (grad, lo, hi)
        return grad_transition, grad_emitted, None


def lattice_elementwise(
    lattice: Lattice,
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
    """The recurrence of :func:`~everygraph.sequence.scan` on a 2D lattice (both sides > 1),
    kinds ``scalar``, ``diagonal``, ``elementwise``. ``q`` is already scaled."""
    B, N, H, dk = k.shape
    dv = v.shape[-1]
    storage = _storage(lattice.shape, lattice.flip)
    if storage.node.device != q.device:
        storage = storage._replace(**{f: getattr(storage, f).to(q.device) for f in type(storage)._tensors})
    node, E = storage.node, lattice.num_edges
    gates = boundary if boundary is not None else Boundary()

    def weight_per_axis(w: Tensor, index: Tensor) -> Tensor:  # [B, E, H(, dk, dv)] -> [B, N, H, 2, dk|1, dv|1]
        w = take(w, index).movedim(2, 3)  # [B, N, H, 2, ...]
        return w if w.dim() == 6 else w[..., None, None]

    qs, ks, vs = q[:, node], k[:, node], v[:, node]
    kv = ks[..., :, None] * vs[..., None, :]  # [B, N, H, dk, dv]
    emitted = weight_per_axis(source, storage.out_edge) * kv[:, :, :, None]  # [B, N, H, 2, dk, dv]
    C0 = initial_state[:, node] if initial_state is not None else None
    if C0 is not None:
        if gates.enter is None:
            exists = (storage.out_edge < E).to(C0.dtype)  # [N, 2]
            emitted = emitted + exists[None, :, None, :, None, None] * C0[:, :, :, None]
        else:
            enter = take(gates.enter, storage.out_edge).movedim(2, 3)  # [B, N, H, 2, *gate]
            emitted = emitted + apply_transition(kind, enter, C0[:, :, :, None])
    T = decay_multiplier(kind, take(transition, storage.line).movedim(4, 2))  # [B, N, H, 2(out), 2(in), dk|1, dv|1]
    T = T.expand(B, N, H, 2, 2, dk, dv).reshape(B, N, H, 2, 2, dk * dv)
    incoming = ElementwiseDiagonalRecurrence.apply(
        T.movedim(1, 0).contiguous(), emitted.reshape(B, N, H, 2, dk * dv).movedim(1, 0).contiguous(), storage.diagonals,
    ).movedim(0, 1).reshape(B, N, H, 2, dk, dv)
    read = (weight_per_axis(mark, storage.in_edge) * incoming).sum(3)
    if C0 is not None:
        read = read + (C0 if gates.mark is None else apply_weight(gates.mark[:, node], C0))
    h = torch.einsum("bnhd,bnhdv->bnhv", qs, read) + direct[:, node][..., None] * (qs * ks).sum(-1, keepdim=True) * vs
    h = h[:, storage.inverse]
    if not return_state:
        return h, None
    final = kv if gates.source is None else apply_weight(gates.source[:, node], kv)
    if gates.leave is None:
        final = final + incoming.sum(3)  # a missing in-edge holds zeros
    else:
        leave = take(gates.leave, storage.in_edge).movedim(2, 3)  # [B, N, H, 2, *gate]
        final = final + apply_transition(kind, leave, incoming).sum(3)
    if C0 is not None:
        final = final + (C0 if gates.through is None else apply_transition(kind, gates.through[:, node], C0))
    return h, final[:, storage.inverse]
