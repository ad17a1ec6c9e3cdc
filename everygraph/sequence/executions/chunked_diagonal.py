r"""The chunked execution of the ``diagonal`` kind on paths: blocks of positions as masked
attention with per-key decays, states carried only between blocks.

The ``scalar`` kind's chunkwise form (:func:`~everygraph.sequence.plstm.lattice.chunked_scan_1d`)
with a decay per key dimension. Inside a chunk of ``c`` steps the decay of key ``d`` from
step ``s`` to step ``i`` is :math:`W_{isd} = \prod_{r=s}^{i-1} \alpha_{rd}`, a cumulative
*product* down the columns of a ``(c + 1) x (c + 1)`` matrix per key (row ``c``: the state
leaving the chunk; column 0: the state entering it). Products rather than differences of
cumulative logarithms, so transitions may be negative or exactly zero (GLA's own chunked form,
:func:`~everygraph.sequence.gated_linear_attention_chunked`, works in log space and needs
:math:`\alpha > 0`). With :math:`M`, :math:`S`, :math:`D` the scalar mark, source and direct
weights, the output of step ``i`` is

.. math::
    h_i = \sum_{s < i} \Big(\sum_d \tilde q_{id} k_{sd} W_{i,s+1,d}\Big) M_i S_s\, v_s
          + D_i (\tilde q_i \cdot k_i) v_i + \tilde q_i^\top \big(M_i\, \mathrm{diag}(W_{i0}) C_{\mathrm{in}}\big),

and the chunks' entering states :math:`C_{\mathrm{in}}` come from a short loop over chunks.
Gradients are autograd's. Memory: ``L * c * dk`` decays per head.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...graphlib import Lattice
from ..plstm.layout import lattice_layout, take
from ..transitions import Boundary

#: steps per chunk: the ``[c + 1, c + 1, dk]`` decays per chunk grow with it (8 of 4..64 on CPU, fwd+bwd)
CHUNK_SIZE = 8


def chunked_diagonal(
    lattice: Lattice,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    initial_state: Tensor | None,
    boundary: Boundary | None,
    return_state: bool,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[Tensor, Tensor | None]:
    """The recurrence of :func:`~everygraph.sequence.scan` on a path, kind ``diagonal``,
    scalar source and mark weights (any boundary gates). ``q`` is already scaled."""
    B, N, H, dk = k.shape
    dv = v.shape[-1]
    layout = lattice_layout(lattice, q.device)
    axis = max(range(lattice.ndim), key=lambda a: lattice.shape[a])
    node, inverse = layout.node, layout.position
    out_edge, in_edge, line = layout.out_edge[:, axis], layout.in_edge[:, axis], layout.line[:, axis, axis]
    gates = boundary if boundary is not None else Boundary()
    # a missing edge reads a zero gate (take), which switches its terms off without special cases
    S, M, T = take(source, out_edge), take(mark, in_edge), take(transition, line)
    unit = k.new_ones(B, layout.num_edges, 1, 1)  # the identity gate of a virtual edge, per real edge
    qs, ks, vs, D = q[:, node], k[:, node], v[:, node], direct[:, node]
    C0 = initial_state[:, node] if initial_state is not None else None
    c = max(1, min(chunk_size, N))
    n = -(-N // c)
    pad = n * c - N

    def chunks(x: Tensor) -> Tensor:  # [B, N, H, *F] -> [B, H, n, c, *F]
        if pad:
            x = torch.cat([x, x.new_zeros(B, pad, *x.shape[2:])], dim=1)
        return x.reshape(B, n, c, *x.shape[2:]).movedim(3, 1)

    q_, k_, v_, S, M, T, D = (chunks(x) for x in (qs, ks, vs, S, M, T, D))
    rows = torch.arange(c + 1, device=q.device)
    below = (rows[:, None] > rows[None, :])[..., None]  # i > s: the product reaches alpha_{i-1}
    T_row = torch.cat([torch.ones_like(T[..., :1, :]), T], dim=-2)  # T_row[i] = alpha_{i-1}
    W = torch.cumprod(torch.where(below, T_row[..., :, None, :], torch.ones_like(T_row[..., :, None, :])), dim=-3)
    W = W * (rows[:, None] >= rows[None, :]).to(W.dtype)[..., None]  # [B, H, n, c+1, c+1, dk]
    W_carry, W_src = W[..., :c, 0, :], W[..., :c, 1:, :]  # [.., c, dk], [.., c, c, dk] (strictly lower)
    out_carry, out_src = W[..., c, 0, :], W[..., c, 1:, :]  # decay over the whole chunk; per step

    scores = torch.einsum("bhnid,bhnsd,bhnisd->bhnis", q_, k_, W_src)
    # future positions are removed by selection, not by a zero factor: a NaN there must not
    # reach earlier outputs (0 * nan = nan); a causal scan never looks ahead
    causal = rows[:c, None] > rows[None, :c]
    attention = torch.where(causal, scores * (M[..., :, None] * S[..., None, :]), 0.0)
    attention = attention + torch.diag_embed(D * (q_ * k_).sum(-1))
    if bool(torch.isfinite(v_).all()):
        h = attention @ v_
    else:  # the exact zeros of future weights would still meet a non-finite v in a matmul
        keep = rows[:c, None] >= rows[None, :c]
        h = torch.where(keep[..., None], attention[..., None] * v_.unsqueeze(-3), 0.0).sum(-2)

    injected = None
    if C0 is not None:  # the state entering through each node's virtual in-edge, on its out-edge
        C0 = chunks(C0)
        enter = chunks(take(gates.enter if gates.enter is not None else unit, out_edge))
        injected = enter[..., None] * C0
    local = torch.einsum("bhnsd,bhnsv->bhndv", k_ * out_src * S[..., None], v_)  # the state a chunk emits
    if injected is not None:
        local = local + torch.einsum("bhnsd,bhnsdv->bhndv", out_src, injected)
    carried = [local.new_zeros(B, H, dk, dv)]
    # unbind, not indexing per chunk: each indexed chunk's backward would zero a full-size grad
    for decay, emitted in zip(out_carry.unbind(2)[: n - 1], local.unbind(2)):
        carried.append(decay[..., None] * carried[-1] + emitted)
    entering = torch.stack(carried, dim=2)  # [B, H, n, dk, dv]
    h = h + torch.einsum("bhnid,bhndv->bhniv", q_ * M[..., None] * W_carry, entering)
    if injected is not None:
        read_gate = M.new_ones(()) if gates.mark is None else chunks(gates.mark[:, node])[..., None, None]
        h = h + torch.einsum("bhnid,bhnidv->bhniv", q_, read_gate * C0)
        h = h + torch.einsum("bhnid,bhnisd,bhnsdv->bhniv", q_ * M[..., None], W_src, injected)
    h = h.movedim(1, 3).reshape(B, n * c, H, dv)[:, :N][:, inverse]
    if not return_state:
        return h, None
    # the in-edge state of every step, then its virtual out-edge: leave(incoming) + source k v^T + through(C0)
    incoming = W_carry[..., None] * entering[:, :, :, None]
    incoming = incoming + torch.einsum("bhnisd,bhnsd,bhnsv->bhnidv", W_src, k_ * S[..., None], v_)
    if injected is not None:
        incoming = incoming + torch.einsum("bhnisd,bhnsdv->bhnidv", W_src, injected)
    leave = chunks(take(gates.leave if gates.leave is not None else unit, in_edge))
    final = leave[..., None] * incoming
    kv = k_[..., :, None] * v_[..., None, :]
    final = final + (kv if gates.source is None else chunks(gates.source[:, node])[..., None, None] * kv)
    if C0 is not None:
        final = final + (C0 if gates.through is None else chunks(gates.through[:, node])[..., None] * C0)
    return h, final.movedim(1, 3).reshape(B, n * c, H, dk, dv)[:, :N][:, inverse]

