r"""The recurrent execution on paths: one in-place step per position, hand-written adjoint.

On a path the state of the out-edge of step :math:`t` is
:math:`C_t = T_t(C_{t-1}) + X_t`, with :math:`T_t` the transition through step ``t`` and
:math:`X_t` what step ``t`` emits (source term plus injected boundary state). Everything but
this loop is vectorised over all steps. For the ``scalar``, ``diagonal`` and ``elementwise``
kinds :math:`T_t(C) = a_t \odot C` (a decay broadcast to ``[dk, dv]``):
:class:`LinearRecurrence` runs the loop time-major, in place, and its backward runs the
transposed loop :math:`G_{t-1} \mathrel{+}= a_t \odot G_t` without autograd's per-step graph.
For ``householder``, :math:`T_t = F_{r-1} \cdots F_0` with symmetric factors
:math:`F_i = \gamma_i (I - \beta_i w_i w_i^\top)`: :class:`HouseholderRecurrence` runs the
loop and the transposed loop (the factors in reverse order), then forms the gates' gradients
for all steps at once. Both are checked with ``gradcheck``.

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


class HouseholderRecurrence(torch.autograd.Function):
    r""":math:`C_t = F^t_{r-1} \cdots F^t_0\, C_{t-1} + X_t` (:math:`C_{-1} = 0`) on time-major
    tensors: ``gate`` ``[L, ..., r, dk + 2]`` (rows :math:`(w_i, \beta_i, \gamma_i)`, see
    :mod:`~everygraph.sequence.transitions`), ``X`` ``[L, ..., dk, dv]``; returns all ``C``."""

    @staticmethod
    def forward(ctx, gate: Tensor, X: Tensor) -> Tensor:  # noqa: D102
        states = X.clone()
        steps, gates = states.unbind(0), gate.unbind(0)
        for t in range(1, states.shape[0]):
            steps[t].add_(apply_transition("householder", gates[t], steps[t - 1]))
        ctx.save_for_backward(gate, states)
        return states

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # noqa: D102
        gate, states = ctx.saved_tensors
        g = grad.clone()
        # each factor is symmetric, so the transposed map is the same factors, last first
        steps, transposed = g.unbind(0), gate.flip(-2).unbind(0)
        for t in range(g.shape[0] - 1, 0, -1):
            steps[t - 1].add_(apply_transition("householder", transposed[t], steps[t]))
        grad_gate = None
        if ctx.needs_input_grad[0]:
            previous = torch.cat([torch.zeros_like(states[:1]), states[:-1]], dim=0)
            grad_gate = _householder_gate_grad(gate, previous, g)
        return grad_gate, g


def _householder_factor(gate: Tensor, i: int, dk: int) -> tuple[Tensor, Tensor, Tensor]:
    return gate[..., i, :dk], gate[..., i, dk, None, None], gate[..., i, dk + 1, None, None]


def _householder_gate_grad(gate: Tensor, entering: Tensor, grad: Tensor) -> Tensor:
    r"""Gradient of :math:`\langle G, F_{r-1} \cdots F_0 Y_0 \rangle` in every factor's
    :math:`(w, \beta, \gamma)`, all steps at once: with :math:`Y_{i+1} = F_i Y_i`,
    :math:`p = w^\top Y_i`, :math:`G_i` the gradient at :math:`Y_{i+1}` and
    :math:`s = w^\top G_i`: :math:`\bar\gamma = \langle G_i, Y_i - \beta w p^\top\rangle`,
    :math:`\bar\beta = -\gamma\, s \cdot p`, :math:`\bar w = -\gamma\beta (G_i p + Y_i s)`."""
    dk, factors = entering.shape[-2], gate.shape[-2]
    inputs = [entering]
    for i in range(factors - 1):
        inputs.append(apply_transition("householder", gate[..., i : i + 1, :], inputs[-1]))
    grads = []
    for i in range(factors - 1, -1, -1):
        w, beta, gamma = _householder_factor(gate, i, dk)
        Y = inputs[i]
        p = torch.einsum("...k,...kv->...v", w, Y)
        s = torch.einsum("...k,...kv->...v", w, grad)
        projected = w[..., :, None] * p[..., None, :]
        d_gamma = (grad * (Y - beta * projected)).sum((-2, -1))
        d_beta = -gamma[..., 0, 0] * (s * p).sum(-1)
        d_w = -(gamma * beta)[..., 0] * (torch.einsum("...kv,...v->...k", grad, p) + torch.einsum("...kv,...v->...k", Y, s))
        grads.append(torch.cat([d_w, d_beta[..., None], d_gamma[..., None]], dim=-1))
        grad = gamma * (grad - beta * w[..., :, None] * s[..., None, :])
    return torch.stack(grads[::-1], dim=-2)


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
    longer than 1), every kind. ``q`` is already scaled."""
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
    X = apply_weight(steps(take(source, out_edge)), kv)
    C0 = steps(initial_state[:, node]) if initial_state is not None else None
    if C0 is not None:
        if gates.enter is None:
            exists = (out_edge < layout.num_edges).to(C0.dtype).view(-1, *([1] * (C0.dim() - 1)))
            X = X + exists * C0
        else:
            X = X + apply_transition(kind, steps(take(gates.enter, out_edge)), C0)
    gate = steps(take(transition, line))
    if kind == "householder":
        states = HouseholderRecurrence.apply(gate.contiguous(), X.contiguous())  # out-edge state of each step
    else:
        states = LinearRecurrence.apply(decay_multiplier(kind, gate).contiguous(), X.contiguous())
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
