r"""The ``householder`` kind in the compiled lattice loop (:mod:`.fused_lattice`): the recurrence
and its adjoint on 1D and 2D lattices, one kernel pair (numba).

A transition of this kind is a product of ``r`` factors, factor 0 applied first,

.. math::
    H(C) = F_{r-1} \cdots F_0\, C, \qquad F_i = \gamma_i (I - \beta_i w_i w_i^\top),

so on a state :math:`C \in \mathbb{R}^{d_k \times d_v}` factor :math:`i` is a rank-1 update,
:math:`C_{i+1} = \gamma_i (C_i - \beta_i w_i u_i^\top)` with :math:`u_i = C_i^\top w_i`
(``d_v``), and never forms a ``dk x dk`` matrix. Nodes run in the canonical row-major order as
in :mod:`.fused_lattice`; node :math:`n` with incoming states :math:`I_0, I_1` (along axes 0 and
1) and the initial state :math:`C^0` computes

.. math::
    h &= \tilde q^\top \big(M_0 \odot I_0 + M_1 \odot I_1 + M^\partial \odot C^0\big)
         + D\, (\tilde q \cdot k)\, v, \\
    O_i &= S_i \odot k v^\top + H_{i0}(I_0) + H_{i1}(I_1) + E_i(C^0) \qquad (i = 0, 1), \\
    C^{out} &= S^\partial \odot k v^\top + L_0(I_0) + L_1(I_1) + P(C^0),

with :math:`H_{ij}` the transition from in-edge :math:`j` to out-edge :math:`i`, :math:`E_i`,
:math:`L_j`, :math:`P` the boundary gates ``enter``, ``leave``, ``through`` (each its own number
of factors) and :math:`S, M` scalar or per-entry weights. A missing edge (the border, a path's
axis 1) has index -1 and is skipped. ``O_0`` goes to the row buffer read by the next row,
``O_1`` to the buffer read by the next node of the row (double-buffered, no copies).

**Adjoint.** Each factor is symmetric, so with :math:`G_{i+1} = \partial\ell/\partial C_{i+1}`
and :math:`g = G_{i+1}^\top w_i`:

.. math::
    G_i &= \gamma_i (G_{i+1} - \beta_i w_i g^\top), \\
    \bar\gamma_i &= \langle G_{i+1}, C_i\rangle - \beta_i\, g \cdot u_i, \qquad
    \bar\beta_i = -\gamma_i\, g \cdot u_i, \qquad
    \bar w_i = -\gamma_i \beta_i \big(G_{i+1} u_i + C_i\, g\big).

The intermediate states :math:`C_1 \ldots C_{r-1}` of a transition are recomputed from its
incoming state inside the node (``r`` is small). The node's adjoint is then

.. math::
    \bar I_j = \sum_i H_{ij}^\top(\bar O_i) + M_j \odot \tilde q \bar h^\top
               + L_j^\top(\bar C^{out}), \qquad
    \overline{k v^\top} = \sum_i S_i \odot \bar O_i + S^\partial \odot \bar C^{out},

run in reverse row-major order with the recompute-by-block scheme of :mod:`.fused_lattice`: the
forward pass keeps the axis-0 states entering every :data:`~.fused_lattice.ROWS` rows, the
backward pass recomputes a block's incoming states from them into a buffer, then runs the
block's adjoint. The helpers are inlined into the two kernels (``inline="always"``: measured
1.3-1.7x faster per node than calls, at the same compile time). The JIT machinery (``cache=True``, ``EVERYGRAPH_DISABLE_JIT``, numba as
``everygraph[cpu]``, fast math without ``nnan``/``ninf``) is :mod:`~everygraph.sequence.mamba.fused_cpu`'s.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..mamba.fused_cpu import NUMBA_AVAILABLE

#: Rows per block of the backward pass (as :data:`.fused_lattice.ROWS`).
ROWS = 8

if NUMBA_AVAILABLE:
    from ..mamba.fused_cpu import _cached_njit, _FASTMATH

    @_cached_njit(fastmath=_FASTMATH, inline="always")
    def _project(w, state, out, dk, dv):
        """``out = state^T w`` ``[dv]`` (``w``'s first ``dk`` entries; ``state`` flat ``[dk * dv]``)."""
        for j in range(dv):
            out[j] = 0.0
        for a in range(dk):
            wa = w[a]
            o = a * dv
            for j in range(dv):
                out[j] += wa * state[o + j]

    @_cached_njit(fastmath=_FASTMATH, inline="always")
    def _reflect(w, state, u, out, dk, dv):
        """``out = gamma (state - beta w u^T)`` for one factor ``w`` ``[dk + 2]`` and ``u = state^T w``
        (``out`` may be ``state``)."""
        beta, gamma = w[dk], w[dk + 1]
        for a in range(dk):
            bw = beta * w[a]
            o = a * dv
            for j in range(dv):
                out[o + j] = gamma * (state[o + j] - bw * u[j])

    @_cached_njit(fastmath=_FASTMATH, inline="always")
    def _transition_add(gate, state, out, work, u, dk, dv):
        """``out += F_{r-1} ... F_0 state`` for ``gate`` ``[r, dk + 2]``, states flat ``[dk * dv]``;
        ``work`` ``[dk * dv]`` and ``u`` ``[dv]`` are scratch."""
        r = gate.shape[0]
        for i in range(r):
            cur = state if i == 0 else work
            w = gate[i]
            _project(w, cur, u, dk, dv)
            if i < r - 1:
                _reflect(w, cur, u, work, dk, dv)
                continue
            beta, gamma = w[dk], w[dk + 1]  # the last factor adds into out
            for a in range(dk):
                bw = beta * w[a]
                o = a * dv
                for j in range(dv):
                    out[o + j] += gamma * (cur[o + j] - bw * u[j])

    @_cached_njit(fastmath=_FASTMATH, inline="always")
    def _transition_adjoint(gate, grad_gate, state, grad_out, grad_state, states, us, work, g, z, dk, dv):
        """``grad_state += H^T grad_out`` and ``grad_gate += dl/dgate`` for ``out = H(state)``
        (module docstring); ``states`` ``[r, dk * dv]``, ``us`` ``[r, dv]``, ``work``, ``g``
        scratch, ``z`` a zero of the dtype (float32 sums stay float32). The intermediate states are
        recomputed from ``state``."""
        r = gate.shape[0]
        for i in range(r):  # C_i (i >= 1) and u_i = C_i^T w_i
            cur = state if i == 0 else states[i]
            _project(gate[i], cur, us[i], dk, dv)
            if i < r - 1:
                _reflect(gate[i], cur, us[i], states[i + 1], dk, dv)
        for i in range(r - 1, -1, -1):
            cur = state if i == 0 else states[i]
            grad = grad_out if i == r - 1 else work
            w = gate[i]
            gw = grad_gate[i]
            ui = us[i]
            beta, gamma = w[dk], w[dk + 1]
            _project(w, grad, g, dk, dv)
            gu = z
            for j in range(dv):
                gu += g[j] * ui[j]
            inner = z
            scale = -gamma * beta
            for a in range(dk):
                bw = beta * w[a]
                o = a * dv
                grad_u = z
                state_g = z
                for j in range(dv):
                    gr, c = grad[o + j], cur[o + j]
                    inner += gr * c
                    grad_u += gr * ui[j]
                    state_g += c * g[j]
                    if i == 0:
                        grad_state[o + j] += gamma * (gr - bw * g[j])
                    else:
                        work[o + j] = gamma * (gr - bw * g[j])
                gw[a] += scale * (grad_u + state_g)
            gw[dk] += -gamma * gu
            gw[dk + 1] += inner - beta * gu

    @_cached_njit(fastmath=_FASTMATH, inline="always")
    def _read_add(acc, qn, weight, wide, state, dk, dv):
        """``acc += q^T (weight * state)`` (``weight`` ``[dk * dv]`` when ``wide``, else ``[1]``)."""
        w0 = weight[0]
        for a in range(dk):
            qa = qn[a]
            o = a * dv
            if wide:
                for j in range(dv):
                    acc[j] += qa * weight[o + j] * state[o + j]
            else:
                for j in range(dv):
                    acc[j] += qa * w0 * state[o + j]

    @_cached_njit(fastmath=_FASTMATH, inline="always")
    def _read_adjoint(gh, qn, weight, grad_weight, wide, state, grad_state, gqn, z, dk, dv):
        """The adjoint of :func:`_read_add`: ``grad_state += weight * q gh^T``, ``grad_weight``
        and ``gqn`` accumulated."""
        w0 = weight[0]
        total = z
        for a in range(dk):
            qa = qn[a]
            o = a * dv
            gq_a = z
            for j in range(dv):
                w = weight[o + j] if wide else w0
                c = state[o + j]
                qg = qa * gh[j]
                grad_state[o + j] += w * qg
                gq_a += w * c * gh[j]
                if wide:
                    grad_weight[o + j] += c * qg
                else:
                    total += c * qg
            gqn[a] += gq_a
        if not wide:
            grad_weight[0] += total

    @_cached_njit(fastmath=_FASTMATH, inline="always")
    def _outer_set(out, weight, wide, kn, vn, dk, dv):
        """``out = weight * k v^T``."""
        w0 = weight[0]
        for a in range(dk):
            ka = kn[a]
            o = a * dv
            for j in range(dv):
                out[o + j] = (weight[o + j] if wide else w0) * ka * vn[j]

    @_cached_njit(fastmath=_FASTMATH, inline="always")
    def _outer_adjoint(grad_out, weight, grad_weight, wide, kn, vn, grad_kv, z, dk, dv):
        """The adjoint of :func:`_outer_set`: ``grad_kv += weight * grad_out``, ``grad_weight``."""
        w0 = weight[0]
        total = z
        for a in range(dk):
            ka = kn[a]
            o = a * dv
            for j in range(dv):
                gr = grad_out[o + j]
                grad_kv[o + j] += (weight[o + j] if wide else w0) * gr
                if wide:
                    grad_weight[o + j] += gr * ka * vn[j]
                else:
                    total += gr * ka * vn[j]
        if not wide:
            grad_weight[0] += total

    @_cached_njit(fastmath=_FASTMATH, inline="always")
    def _node_outputs(b, n, hh, kn, vn, S, T, Bs, Ben, Blv, Bth, out_edge, in_edge, line, wide, I0, I1, c0, has_c0,
                      O0, O1, fin, ret, skip0, work, u, dk, dv):
        """Node ``n``'s out-edge states ``O_0``, ``O_1`` (those whose edge exists; not ``O_0`` when
        ``skip0``) and, when ``ret``, its returned state ``fin``: targets ``i`` = 0, 1, 2 (the
        virtual out-edge) from sources ``j`` = 0, 1 (in-edges), 2 (``c0``). One call site per
        helper keeps the compiled code small."""
        for i in range(3):
            if i < 2:
                e_out = out_edge[n, i]
                if e_out < 0 or (i == 0 and skip0):
                    continue
                weight = S[b, e_out, hh]
            else:
                if not ret:
                    continue
                weight = Bs[b, n, hh]
            out = O0 if i == 0 else (O1 if i == 1 else fin)
            _outer_set(out, weight, wide, kn, vn, dk, dv)
            for j in range(3):
                if j < 2:
                    if i < 2:
                        l = line[n, i, j]
                        if l < 0:
                            continue
                        gate = T[b, l, hh]
                    else:
                        e_in = in_edge[n, j]
                        if e_in < 0:
                            continue
                        gate = Blv[b, e_in, hh]
                    state = I0 if j == 0 else I1
                else:
                    if not has_c0:
                        continue
                    gate = Ben[b, e_out, hh] if i < 2 else Bth[b, n, hh]
                    state = c0
                _transition_add(gate, state, out, work, u, dk, dv)

    @_cached_njit(fastmath=_FASTMATH)
    def _forward(q, k, v, S, T, M, D, C0, Bm, Bs, Ben, Blv, Bth, out_edge, in_edge, line, wide, has_c0, ret, save,
                 X, Y, h, final, entries):
        """The recurrence, row-major; ``entries[b, hh, r]`` receives the row buffer at row ``r * ROWS``.
        States are flat: ``C0``, ``final`` ``[B, N, H, dk * dv]``; weights ``[B, *, H, 1 or dk * dv]``."""
        batch, _, heads, dk = q.shape
        dv = v.shape[3]
        K = dk * dv
        up = np.zeros((Y, K), dtype=q.dtype)
        next_up = np.zeros((Y, K), dtype=q.dtype)
        left = np.zeros(K, dtype=q.dtype)
        next_left = np.zeros(K, dtype=q.dtype)
        work = np.zeros(K, dtype=q.dtype)
        u = np.zeros(dv, dtype=q.dtype)
        acc = np.zeros(dv, dtype=q.dtype)
        zero_state = np.zeros(K, dtype=q.dtype)
        z = np.zeros(1, dtype=q.dtype)[0]  # a zero of the kernel's dtype: float32 sums stay float32
        never = X < 0  # a runtime False (a literal would compile a second _node_outputs)
        for b in range(batch):
            for hh in range(heads):
                up[:] = 0.0
                for x in range(X):
                    if save and x % ROWS == 0:
                        entries[b, hh, x // ROWS] = up
                    for y in range(Y):
                        n = x * Y + y
                        qn, kn, vn = q[b, n, hh], k[b, n, hh], v[b, n, hh]
                        I0 = up[y]
                        c0 = C0[b, n, hh] if has_c0 else zero_state
                        qk = z
                        for a in range(dk):
                            qk += qn[a] * kn[a]
                        dn = D[b, n, hh] * qk
                        for j in range(dv):
                            acc[j] = dn * vn[j]
                        for j in range(3):  # in-edges 0, 1, then the initial state
                            if j < 2:
                                e = in_edge[n, j]
                                if e < 0:
                                    continue
                                weight = M[b, e, hh]
                            else:
                                if not has_c0:
                                    continue
                                weight = Bm[b, n, hh]
                            _read_add(acc, qn, weight, wide, I0 if j == 0 else (left if j == 1 else c0), dk, dv)
                        hn = h[b, n, hh]
                        for j in range(dv):
                            hn[j] = acc[j]
                        _node_outputs(b, n, hh, kn, vn, S, T, Bs, Ben, Blv, Bth, out_edge, in_edge, line, wide, I0, left,
                                      c0, has_c0, next_up[y], next_left, final[b, n, hh] if ret else zero_state, ret,
                                      never, work, u, dk, dv)
                        left, next_left = next_left, left
                    up, next_up = next_up, up

    @_cached_njit(fastmath=_FASTMATH)
    def _backward(q, k, v, S, T, M, D, C0, Bm, Bs, Ben, Blv, Bth, out_edge, in_edge, line, wide, has_c0, ret,
                  X, Y, entries, grad_h, grad_final, gq, gk, gv, gS, gT, gM, gD, gC0, gBm, gBs, gBen, gBlv, gBth):
        """The adjoint, reverse row-major, block by block of :data:`ROWS` rows (the block's
        incoming states recomputed from ``entries``); gradients are added into the ``g*`` arrays
        (zero on entry, shaped like their inputs)."""
        batch, _, heads, dk = q.shape
        dv = v.shape[3]
        K = dk * dv
        rows = min(ROWS, X)
        incoming = np.zeros((rows + 1, Y + 1, 2, K), dtype=q.dtype)
        down = np.zeros((Y, K), dtype=q.dtype)
        next_down = np.zeros((Y, K), dtype=q.dtype)
        right = np.zeros(K, dtype=q.dtype)
        next_right = np.zeros(K, dtype=q.dtype)
        grad_kv = np.zeros(K, dtype=q.dtype)
        zero_state = np.zeros(K, dtype=q.dtype)
        sink = np.zeros(K, dtype=q.dtype)  # the gradient of the initial state when there is none
        work = np.zeros(K, dtype=q.dtype)
        u = np.zeros(dv, dtype=q.dtype)
        g = np.zeros(dv, dtype=q.dtype)
        r_max = max(T.shape[3], Ben.shape[3], Blv.shape[3], Bth.shape[3])
        states = np.zeros((r_max, K), dtype=q.dtype)
        us = np.zeros((r_max, dv), dtype=q.dtype)
        z = np.zeros(1, dtype=q.dtype)[0]
        never = X < 0  # a runtime False (a literal would compile a second _node_outputs)
        num_blocks = -(-X // ROWS)
        for b in range(batch):
            for hh in range(heads):
                for block in range(num_blocks - 1, -1, -1):
                    x0 = block * ROWS
                    x1 = min(X, x0 + ROWS)
                    for y in range(Y):
                        incoming[0, y, 0] = entries[b, hh, block, y]
                    for x in range(x0, x1):  # recompute the block's incoming states
                        for y in range(Y):
                            n = x * Y + y
                            cell = incoming[x - x0, y]
                            c0 = C0[b, n, hh] if has_c0 else zero_state
                            _node_outputs(b, n, hh, k[b, n, hh], v[b, n, hh], S, T, Bs, Ben, Blv, Bth, out_edge, in_edge,
                                          line, wide, cell[0], cell[1], c0, has_c0, incoming[x - x0 + 1, y, 0],
                                          incoming[x - x0, y + 1, 1], zero_state, never, x + 1 == x1, work, u, dk, dv)
                    for x in range(x1 - 1, x0 - 1, -1):
                        for y in range(Y - 1, -1, -1):
                            n = x * Y + y
                            qn, kn, vn = q[b, n, hh], k[b, n, hh], v[b, n, hh]
                            gh = grad_h[b, n, hh]
                            I0, I1 = incoming[x - x0, y, 0], incoming[x - x0, y, 1]
                            gI0, gI1 = next_down[y], next_right  # the gradients of I_0, I_1
                            gI0[:] = 0.0
                            gI1[:] = 0.0
                            grad_kv[:] = 0.0
                            gqn = gq[b, n, hh]
                            c0 = C0[b, n, hh] if has_c0 else zero_state
                            gc0 = gC0[b, n, hh] if has_c0 else sink
                            for j in range(3):  # the readout from in-edges 0, 1 and the initial state
                                if j < 2:
                                    e = in_edge[n, j]
                                    if e < 0:
                                        continue
                                    weight, grad_weight = M[b, e, hh], gM[b, e, hh]
                                else:
                                    if not has_c0:
                                        continue
                                    weight, grad_weight = Bm[b, n, hh], gBm[b, n, hh]
                                _read_adjoint(gh, qn, weight, grad_weight, wide, I0 if j == 0 else (I1 if j == 1 else c0),
                                              gI0 if j == 0 else (gI1 if j == 1 else gc0), gqn, z, dk, dv)
                            for i in range(3):  # out-edges 0, 1 and the returned state
                                if i < 2:
                                    e_out = out_edge[n, i]
                                    if e_out < 0:
                                        continue
                                    weight, grad_weight = S[b, e_out, hh], gS[b, e_out, hh]
                                    grad_out = down[y] if i == 0 else right
                                else:
                                    if not ret:
                                        continue
                                    weight, grad_weight = Bs[b, n, hh], gBs[b, n, hh]
                                    grad_out = grad_final[b, n, hh]
                                _outer_adjoint(grad_out, weight, grad_weight, wide, kn, vn, grad_kv, z, dk, dv)
                                for j in range(3):
                                    if j < 2:
                                        if i < 2:
                                            l = line[n, i, j]
                                            if l < 0:
                                                continue
                                            gate, grad_gate = T[b, l, hh], gT[b, l, hh]
                                        else:
                                            e_in = in_edge[n, j]
                                            if e_in < 0:
                                                continue
                                            gate, grad_gate = Blv[b, e_in, hh], gBlv[b, e_in, hh]
                                        state, grad_state = (I0, gI0) if j == 0 else (I1, gI1)
                                    else:
                                        if not has_c0:
                                            continue
                                        if i < 2:
                                            gate, grad_gate = Ben[b, e_out, hh], gBen[b, e_out, hh]
                                        else:
                                            gate, grad_gate = Bth[b, n, hh], gBth[b, n, hh]
                                        state, grad_state = c0, gc0
                                    _transition_adjoint(gate, grad_gate, state, grad_out, grad_state, states, us, work, g,
                                                        z, dk, dv)
                            # k v^T and the direct term D (q . k) v
                            gkn, gvn = gk[b, n, hh], gv[b, n, hh]
                            qk = z
                            for a in range(dk):
                                qk += qn[a] * kn[a]
                            ghv = z
                            for j in range(dv):
                                ghv += gh[j] * vn[j]
                            dn = D[b, n, hh]
                            for a in range(dk):
                                o = a * dv
                                gk_a = z
                                for j in range(dv):
                                    gk_a += grad_kv[o + j] * vn[j]
                                    gvn[j] += grad_kv[o + j] * kn[a]
                                gkn[a] += gk_a + dn * ghv * qn[a]
                                gqn[a] += dn * ghv * kn[a]
                            for j in range(dv):
                                gvn[j] += dn * qk * gh[j]
                            gD[b, n, hh] = qk * ghv
                            right, next_right = next_right, right
                        down, next_down = next_down, down


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class FusedHouseholderRecurrence(torch.autograd.Function):
    """The kernels as an autograd function on the canonical row-major layout: ``q``, ``k``
    ``[B, N, H, dk]``, ``v`` ``[B, N, H, dv]``, ``D`` ``[B, N, H]``; weights ``S``, ``M``
    ``[B, E, H, W]`` and the boundary ``Bm``, ``Bs`` ``[B, N, H, W]`` (``W`` = 1, or
    ``dk * dv`` when ``wide``); ``T`` ``[B, L, H, r, dk + 2]``, ``Ben``, ``Blv``
    ``[B, E, H, r', dk + 2]``, ``Bth`` ``[B, N, H, r'', dk + 2]``; ``C0`` ``[B, N, H, dk * dv]``
    or None; ``indices`` = (``out_edge``, ``in_edge`` ``[N, 2]``, ``line`` ``[N, 2, 2]``, -1
    for no edge). Returns ``h`` ``[B, N, H, dv]`` and the returned states
    ``[B, N, H, dk * dv]`` (a placeholder unless ``return_state``)."""

    @staticmethod
    def forward(ctx, q, k, v, S, T, M, D, C0, Bm, Bs, Ben, Blv, Bth, indices, X, Y, wide, return_state):  # noqa: D102
        B, N, H, dk = q.shape
        dv = v.shape[-1]
        has_c0 = C0 is not None
        C0_k = C0 if has_c0 else q.new_zeros(1, 1, 1, 1)
        h = q.new_empty(B, N, H, dv)
        final = q.new_zeros(B, N, H, dk * dv) if return_state else q.new_zeros(1, 1, 1, 1)
        save = any(ctx.needs_input_grad)
        entries = q.new_empty(B, H, -(-X // ROWS), Y, dk * dv) if save else q.new_empty(1, 1, 1, 1, 1)
        tensors = (q, k, v, S, T, M, D, C0_k, Bm, Bs, Ben, Blv, Bth)
        _forward(*[_array(t) for t in tensors], *indices, wide, has_c0, return_state, save, X, Y,
                 h.numpy(), final.numpy(), entries.numpy())
        ctx.save_for_backward(*tensors, entries)
        ctx.shape, ctx.has_c0, ctx.return_state, ctx.indices, ctx.wide = (X, Y), has_c0, return_state, indices, wide
        return h, final

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h, grad_final):  # noqa: D102
        *tensors, entries = ctx.saved_tensors
        q, v = tensors[0], tensors[2]
        X, Y = ctx.shape
        grad_h = q.new_zeros(*q.shape[:3], v.shape[-1]) if grad_h is None else grad_h.contiguous()
        ret = ctx.return_state and grad_final is not None
        grad_final = grad_final.contiguous() if ret else q.new_zeros(1, 1, 1, 1)
        grads = [torch.zeros_like(t) for t in tensors]
        _backward(*[_array(t) for t in tensors], *ctx.indices, ctx.wide, ctx.has_c0, ret, X, Y, _array(entries),
                  grad_h.numpy(), grad_final.numpy(), *[g.numpy() for g in grads])
        if not ctx.has_c0:
            grads[7] = None
        return (*grads, None, None, None, None, None)
