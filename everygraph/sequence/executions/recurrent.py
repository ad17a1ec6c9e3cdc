r"""The recurrent execution on paths: one in-place step per position, hand-written adjoint.

On a path the state of the out-edge of step :math:`t` is
:math:`C_t = a_t \odot C_{t-1} + X_t`, with :math:`a_t` the transition through step ``t``
(a scalar, a diagonal or an elementwise decay broadcast to ``[dk, dv]``) and :math:`X_t` what
step ``t`` emits (source term plus injected boundary state). Everything but this loop is
vectorised over all steps. :class:`LinearRecurrence` runs the loop time-major, in place, and
its backward runs the transposed loop :math:`G_{t-1} \mathrel{+}= a_t \odot G_t` without
autograd's per-step graph (checked with ``gradcheck``).

Mamba's own parameterisation (:math:`a_t = e^{\Delta_t A}` formed on the fly, never stored)
is :func:`~everygraph.sequence.selective_scan`'s specialised recurrent execution,
``sequence/mamba/recurrent.py``; this module serves every elementwise-type kind on any
path given its gates.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ...graphlib import Lattice
from ..plstm.layout import lattice_layout, take
from ..transitions import Boundary, apply_transition, apply_weight, decay_multiplier


class LinearRecurrence(torch.autograd.Function):
    r""":math:`C_t = a_t \odot C_{t-1} + X_t` (:math:`C_{-1} = 0`) on time-major tensors:
    ``a`` ``[L, ...]`` broadcastable to ``X`` ``[L, ...]``; returns all ``C`` ``[L, ...]``."""

    @staticmethod
    def forward(ctx, a: Tensor, X: Tensor) -> Tensor:  # noqa: D102
        states = X.clone()
        steps, decays = states.unbind(0), a.unbind(0)
        for t in range(1, states.shape[0]):
            steps[t].addcmul_(decays[t], steps[t - 1])
        ctx.save_for_backward(a, states)
        return states

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # noqa: D102
        a, states = ctx.saved_tensors
        g = grad.clone()
        steps, decays = g.unbind(0), a.unbind(0)
        # conj(): autograd's convention for complex tensors (a no-op on real ones)
        for t in range(g.shape[0] - 1, 0, -1):
            steps[t - 1].addcmul_(decays[t].conj(), steps[t])
        grad_a = None
        if ctx.needs_input_grad[0]:
            product = torch.zeros_like(g)
            product[1:] = g[1:] * states[:-1].conj()
            reduce = [d for d in range(1, g.dim()) if a.shape[d] == 1 and g.shape[d] != 1]
            grad_a = product.sum(reduce, keepdim=True) if reduce else product
        return grad_a, g


def recurrent(
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
    """The recurrence of :func:`~everygraph.sequence.scan` on a path (a lattice with one axis
    longer than 1), kinds ``scalar``, ``diagonal``, ``elementwise``. ``q`` is already scaled."""
    B, N, H, dk = k.shape
    layout = lattice_layout(lattice, q.device)
    axis = max(range(lattice.ndim), key=lambda a: lattice.shape[a])
    node = layout.node
    out_edge, in_edge, line = layout.out_edge[:, axis], layout.in_edge[:, axis], layout.line[:, axis, axis]
    gates = boundary if boundary is not None else Boundary()

    def steps(x: Tensor) -> Tensor:  # [B, N, ...] in path order -> time-major [N, B, ...]
        return x.movedim(1, 0)

    qs, ks, vs = steps(q[:, node]), steps(k[:, node]), steps(v[:, node])
    kv = ks[..., :, None] * vs[..., None, :]  # [L, B, H, dk, dv]
    a = decay_multiplier(kind, steps(take(transition, line)))
    X = apply_weight(steps(take(source, out_edge)), kv)
    C0 = steps(initial_state[:, node]) if initial_state is not None else None
    if C0 is not None:
        if gates.enter is None:
            exists = (out_edge < layout.num_edges).to(C0.dtype).view(-1, *([1] * (C0.dim() - 1)))
            X = X + exists * C0
        else:
            X = X + apply_transition(kind, steps(take(gates.enter, out_edge)), C0)
    states = LinearRecurrence.apply(a.contiguous(), X.contiguous())  # out-edge state of each step
    incoming = torch.cat([torch.zeros_like(states[:1]), states[:-1]], dim=0)  # in-edge state
    read = apply_weight(steps(take(mark, in_edge)), incoming)
    if C0 is not None:
        read = read + (C0 if gates.mark is None else apply_weight(steps(gates.mark[:, node]), C0))
    h = torch.einsum("lbhd,lbhdv->lbhv", qs, read) + steps(direct[:, node])[..., None] * (qs * ks).sum(-1, keepdim=True) * vs
    inverse = layout.position  # path slot of each node id
    h = h.movedim(0, 1)[:, inverse]
    if not return_state:
        return h, None
    final = kv if gates.source is None else apply_weight(steps(gates.source[:, node]), kv)
    if gates.leave is None:
        exists = (in_edge < layout.num_edges).to(kv.dtype).view(-1, *([1] * (kv.dim() - 1)))
        final = final + exists * incoming
    else:
        final = final + apply_transition(kind, steps(take(gates.leave, in_edge)), incoming)
    if C0 is not None:
        final = final + (C0 if gates.through is None else apply_transition(kind, steps(gates.through[:, node]), C0))
    return h, final.movedim(0, 1)[:, inverse]
