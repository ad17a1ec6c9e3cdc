r"""The fused CPU execution on 2D grids (``scalar`` kind, scalar weights; the ``diagonal`` and
``elementwise`` kinds by a second pair of kernels, every gate broadcast to the state entries,
at the end; the ``householder`` kind by :mod:`.fused_householder`'s pair): the lattice
recurrence and its adjoint compiled into one loop over nodes (numba).

Nodes run in the canonical row-major order (flipped axes reversed), which is a topological
order of the grid. Node :math:`(x, y)` reads its in-edge along axis 0 from the out-edge of
:math:`(x - 1, y)` and along axis 1 from that of :math:`(x, y - 1)`, so two buffers hold every
state the loop needs: ``up`` ``[Y, dk * dv]`` (the axis-0 states leaving the previous row, one
per column) and ``left`` ``[dk * dv]`` (the axis-1 state leaving the previous node of the
row). Per node, in one pass over the ``dk x dv`` entries of the two incoming states
:math:`I_0, I_1`:

.. math::
    h &= \tilde q^\top (M_0 I_0 + M_1 I_1) + D\, (\tilde q \cdot k)\, v, \\
    O_i &= T_{i0} I_0 + T_{i1} I_1 + S_i\, k v^\top \quad (i = 0, 1),

written back in place (``up[y] = O_0``, ``left = O_1``): the states stay in L1/L2 and nothing
else is stored or zero-filled. Edges off the grid have zero gates (and ``left`` is zero at the
start of a row, ``up`` before the first row), so the border needs no special case.

Boundary states (``initial_state`` :math:`C^0`, ``return_state``) add, with the gates of the
virtual edges (:class:`~everygraph.sequence.Boundary`; unit gates when none are given):
:math:`h \mathrel{+}= \tilde q^\top (M^\partial C^0)`, :math:`O_i \mathrel{+}= E_i C^0`
(``enter``), and the returned state
:math:`L_0 I_0 + L_1 I_1 + S^\partial k v^\top + P^\partial C^0` (``leave``, ``source``,
``through``).

The backward pass is the adjoint recurrence in reverse row-major order, with buffers
``down`` (the gradients of the next row's axis-0 in-edges, i.e. of this row's axis-0
out-edges) and ``right``: per node, in one pass,

.. math::
    \bar I_j = T_{0j} \bar O_0 + T_{1j} \bar O_1 + M_j\, \tilde q\, \bar h^\top + L_j \bar C^{out},

and every gate's gradient is a sum over the same entries (:math:`\bar T_{ij} = \langle \bar
O_i, I_j\rangle`, :math:`\bar S_i = \langle \bar O_i, k v^\top\rangle`, :math:`\bar M_j =
\tilde q^\top I_j \bar h`, ...). The forward pass keeps ``up`` at the start of every
:data:`ROWS` rows (a ``1 / ROWS`` share of the states, only when a gradient is needed); the
backward pass recomputes a block of rows from it into a ``[ROWS, Y, 2, dk * dv]`` buffer of the
incoming states, then runs the block's adjoint.

The loops are plain numba loops over ``dv`` entries (the innermost, contiguous axis), compiled
with ``fastmath`` (reassociation, so the sums vectorise); there is no ``exp`` in the scalar
kind, so :mod:`~everygraph.sequence.mamba.fused_cpu`'s vector exponential is not needed here.
The JIT machinery (``cache=True``, the ``EVERYGRAPH_DISABLE_JIT`` switch, numba as the optional
extra ``everygraph[cpu]``) is that module's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ...graphlib import Lattice
from ..mamba.fused_cpu import NUMBA_AVAILABLE, jit_enabled
from ..plstm.layout import gather, lattice_layout, take
from ..transitions import Boundary, decay_multiplier, identity_transition

#: Rows per block of the backward pass: the forward pass keeps the axis-0 states entering
#: every block (``1 / ROWS`` of them); the backward pass recomputes a block's incoming states.
ROWS = 8
#: Boundary gates packed per node, in this order (``[B, N, H, 7]``).
_GATES = ("mark", "source", "through", "enter0", "enter1", "leave0", "leave1")
DTYPES = (torch.float32, torch.float64)

if NUMBA_AVAILABLE:
    from numba import njit

    from ..mamba.fused_cpu import LANES, _cached_njit, _FASTMATH, _vfma, _vload, _vmul, _vsplat, _vstore

    @njit(inline="always")
    def _hsum(vector, scratch):
        """The sum of a vector's lanes (through ``scratch``, ``[LANES]``)."""
        _vstore(scratch, 0, vector)
        total = scratch[0]
        for w in range(1, LANES):
            total += scratch[w]
        return total

    @_cached_njit(fastmath=_FASTMATH)
    def _forward(q, k, v, S, T, M, D, C0, G, has_c0, ret, save, X, Y, h, final, entries):
        """The recurrence, row-major; ``entries[b, hh, r]`` receives ``up`` at row ``r * ROWS``."""
        batch, _, heads, dk = q.shape
        dv = v.shape[3]
        K = dk * dv
        up = np.zeros((Y, K), dtype=q.dtype)
        left = np.zeros(K, dtype=q.dtype)
        acc = np.zeros(dv, dtype=q.dtype)
        z = np.zeros(1, dtype=q.dtype)[0]  # a zero of the kernel's dtype: float32 sums stay float32
        general = has_c0 or ret
        for b in range(batch):
            for hh in range(heads):
                up[:] = 0.0
                for x in range(X):
                    if save and x % ROWS == 0:
                        entries[b, hh, x // ROWS] = up
                    left[:] = 0.0
                    for y in range(Y):
                        n = x * Y + y
                        qn, kn, vn = q[b, n, hh], k[b, n, hh], v[b, n, hh]
                        m0, m1 = M[b, n, hh, 0], M[b, n, hh, 1]
                        s0, s1 = S[b, n, hh, 0], S[b, n, hh, 1]
                        t00, t01 = T[b, n, hh, 0, 0], T[b, n, hh, 0, 1]
                        t10, t11 = T[b, n, hh, 1, 0], T[b, n, hh, 1, 1]
                        I0 = up[y]
                        qk = z
                        for a in range(dk):
                            qk += qn[a] * kn[a]
                        for j in range(dv):
                            acc[j] = z
                        if not general:
                            for a in range(dk):
                                qa, ka = qn[a], kn[a]
                                o = a * dv
                                for j in range(dv):
                                    i0, i1 = I0[o + j], left[o + j]
                                    acc[j] += qa * (m0 * i0 + m1 * i1)
                                    kvj = ka * vn[j]
                                    I0[o + j] = t00 * i0 + t01 * i1 + s0 * kvj
                                    left[o + j] = t10 * i0 + t11 * i1 + s1 * kvj
                        else:
                            g = G[b, n, hh]
                            bm, bs, bt, e0, e1, l0, l1 = g[0], g[1], g[2], g[3], g[4], g[5], g[6]
                            c0 = C0[b, n, hh].ravel()
                            fin = final[b, n, hh].ravel()
                            for a in range(dk):
                                qa, ka = qn[a], kn[a]
                                o = a * dv
                                for j in range(dv):
                                    i0, i1 = I0[o + j], left[o + j]
                                    c = c0[o + j] if has_c0 else z
                                    acc[j] += qa * (m0 * i0 + m1 * i1 + bm * c)
                                    kvj = ka * vn[j]
                                    I0[o + j] = t00 * i0 + t01 * i1 + s0 * kvj + e0 * c
                                    left[o + j] = t10 * i0 + t11 * i1 + s1 * kvj + e1 * c
                                    if ret:
                                        fin[o + j] = l0 * i0 + l1 * i1 + bs * kvj + bt * c
                        dn = D[b, n, hh] * qk
                        hn = h[b, n, hh]
                        for j in range(dv):
                            hn[j] = acc[j] + dn * vn[j]

    @_cached_njit(fastmath=_FASTMATH)
    def _backward(q, k, v, S, T, M, D, C0, G, has_c0, ret, X, Y, entries, grad_h, grad_final,
                  gq, gk, gv, gS, gT, gM, gD, gC0, gG):
        """The adjoint, reverse row-major, block by block of :data:`ROWS` rows (recomputed
        from ``entries``); every gradient is accumulated in the same pass over a node's entries."""
        batch, _, heads, dk = q.shape
        dv = v.shape[3]
        K = dk * dv
        rows = min(ROWS, X)
        incoming = np.zeros((rows, Y, 2, K), dtype=q.dtype)
        up = np.zeros((Y, K), dtype=q.dtype)
        left = np.zeros(K, dtype=q.dtype)
        down = np.zeros((Y, K), dtype=q.dtype)
        right = np.zeros(K, dtype=q.dtype)
        gvn = np.zeros(dv, dtype=q.dtype)
        zero_state = np.zeros(K, dtype=q.dtype)
        z = np.zeros(1, dtype=q.dtype)[0]
        lanes = np.zeros(LANES, dtype=q.dtype)
        vector = dv % LANES == 0  # rows of whole vectors: the explicit vector loops
        general = has_c0 or ret
        num_blocks = -(-X // ROWS)
        for b in range(batch):
            for hh in range(heads):
                down[:] = 0.0
                for block in range(num_blocks - 1, -1, -1):
                    x0 = block * ROWS
                    x1 = min(X, x0 + ROWS)
                    up[:] = entries[b, hh, block]
                    for x in range(x0, x1):  # recompute the block's incoming states
                        left[:] = 0.0
                        for y in range(Y):
                            n = x * Y + y
                            kn, vn = k[b, n, hh], v[b, n, hh]
                            s0, s1 = S[b, n, hh, 0], S[b, n, hh, 1]
                            t00, t01 = T[b, n, hh, 0, 0], T[b, n, hh, 0, 1]
                            t10, t11 = T[b, n, hh, 1, 0], T[b, n, hh, 1, 1]
                            e0 = G[b, n, hh, 3] if has_c0 else z
                            e1 = G[b, n, hh, 4] if has_c0 else z
                            c0 = C0[b, n, hh].ravel() if has_c0 else zero_state
                            I0 = up[y]
                            store = incoming[x - x0, y]
                            if vector:
                                S0, S1 = _vsplat(s0, q), _vsplat(s1, q)
                                E0, E1 = _vsplat(e0, q), _vsplat(e1, q)
                                T00, T01, T10, T11 = _vsplat(t00, q), _vsplat(t01, q), _vsplat(t10, q), _vsplat(t11, q)
                                I1s = store[1]
                                I0s = store[0]
                                for a in range(dk):
                                    ka = _vsplat(kn[a], q)
                                    for j0 in range(0, dv, LANES):
                                        e = a * dv + j0
                                        i0, i1, c = _vload(I0, e), _vload(left, e), _vload(c0, e)
                                        _vstore(I0s, e, i0)
                                        _vstore(I1s, e, i1)
                                        kv = _vmul(ka, _vload(vn, j0))
                                        _vstore(I0, e, _vfma(T00, i0, _vfma(T01, i1, _vfma(S0, kv, _vmul(E0, c)))))
                                        _vstore(left, e, _vfma(T10, i0, _vfma(T11, i1, _vfma(S1, kv, _vmul(E1, c)))))
                                continue
                            for a in range(dk):
                                ka = kn[a]
                                o = a * dv
                                for j in range(dv):
                                    i0, i1 = I0[o + j], left[o + j]
                                    store[0, o + j] = i0
                                    store[1, o + j] = i1
                                    kvj = ka * vn[j]
                                    I0[o + j] = t00 * i0 + t01 * i1 + s0 * kvj + e0 * c0[o + j]
                                    left[o + j] = t10 * i0 + t11 * i1 + s1 * kvj + e1 * c0[o + j]
                    for x in range(x1 - 1, x0 - 1, -1):
                        right[:] = 0.0
                        for y in range(Y - 1, -1, -1):
                            n = x * Y + y
                            qn, kn, vn = q[b, n, hh], k[b, n, hh], v[b, n, hh]
                            gh = grad_h[b, n, hh]
                            m0, m1 = M[b, n, hh, 0], M[b, n, hh, 1]
                            s0, s1 = S[b, n, hh, 0], S[b, n, hh, 1]
                            t00, t01 = T[b, n, hh, 0, 0], T[b, n, hh, 0, 1]
                            t10, t11 = T[b, n, hh, 1, 0], T[b, n, hh, 1, 1]
                            I0 = incoming[x - x0, y, 0]
                            I1 = incoming[x - x0, y, 1]
                            G0 = down[y]  # gradient of O_0, becomes that of I_0
                            gqn, gkn, gvo = gq[b, n, hh], gk[b, n, hh], gv[b, n, hh]
                            for j in range(dv):
                                gvn[j] = z
                            gt00 = gt01 = gt10 = gt11 = z
                            gs0 = gs1 = gm0 = gm1 = z
                            if not general and vector:
                                M0, M1, S0, S1 = _vsplat(m0, q), _vsplat(m1, q), _vsplat(s0, q), _vsplat(s1, q)
                                T00, T01, T10, T11 = _vsplat(t00, q), _vsplat(t01, q), _vsplat(t10, q), _vsplat(t11, q)
                                zero = _vsplat(z, q)
                                at00 = at01 = at10 = at11 = as0 = as1 = am0 = am1 = zero
                                for j0 in range(0, dv, LANES):
                                    _vstore(gvn, j0, zero)
                                for a in range(dk):
                                    qa, ka = _vsplat(qn[a], q), _vsplat(kn[a], q)
                                    rq = zero
                                    rk = zero
                                    for j0 in range(0, dv, LANES):
                                        e = a * dv + j0
                                        i0, i1 = _vload(I0, e), _vload(I1, e)
                                        g0, g1 = _vload(G0, e), _vload(right, e)
                                        vj, ghj = _vload(vn, j0), _vload(gh, j0)
                                        at00 = _vfma(g0, i0, at00)
                                        at01 = _vfma(g0, i1, at01)
                                        at10 = _vfma(g1, i0, at10)
                                        at11 = _vfma(g1, i1, at11)
                                        kv = _vmul(ka, vj)
                                        as0 = _vfma(g0, kv, as0)
                                        as1 = _vfma(g1, kv, as1)
                                        qg = _vmul(qa, ghj)
                                        am0 = _vfma(i0, qg, am0)
                                        am1 = _vfma(i1, qg, am1)
                                        rq = _vfma(_vfma(M0, i0, _vmul(M1, i1)), ghj, rq)
                                        gkv = _vfma(S0, g0, _vmul(S1, g1))
                                        rk = _vfma(gkv, vj, rk)
                                        _vstore(gvn, j0, _vfma(gkv, ka, _vload(gvn, j0)))
                                        _vstore(G0, e, _vfma(T00, g0, _vfma(T10, g1, _vmul(M0, qg))))
                                        _vstore(right, e, _vfma(T01, g0, _vfma(T11, g1, _vmul(M1, qg))))
                                    gqn[a] = _hsum(rq, lanes)
                                    gkn[a] = _hsum(rk, lanes)
                                gt00, gt01 = _hsum(at00, lanes), _hsum(at01, lanes)
                                gt10, gt11 = _hsum(at10, lanes), _hsum(at11, lanes)
                                gs0, gs1 = _hsum(as0, lanes), _hsum(as1, lanes)
                                gm0, gm1 = _hsum(am0, lanes), _hsum(am1, lanes)
                            elif not general:
                                for a in range(dk):
                                    qa, ka = qn[a], kn[a]
                                    o = a * dv
                                    gq_a = z
                                    gk_a = z
                                    for j in range(dv):
                                        i0, i1 = I0[o + j], I1[o + j]
                                        g0, g1 = G0[o + j], right[o + j]
                                        vj, ghj = vn[j], gh[j]
                                        gt00 += g0 * i0
                                        gt01 += g0 * i1
                                        gt10 += g1 * i0
                                        gt11 += g1 * i1
                                        kvj = ka * vj
                                        gs0 += g0 * kvj
                                        gs1 += g1 * kvj
                                        qg = qa * ghj
                                        gm0 += i0 * qg
                                        gm1 += i1 * qg
                                        gq_a += (m0 * i0 + m1 * i1) * ghj
                                        gkv = s0 * g0 + s1 * g1
                                        gk_a += gkv * vj
                                        gvn[j] += gkv * ka
                                        G0[o + j] = t00 * g0 + t10 * g1 + m0 * qg
                                        right[o + j] = t01 * g0 + t11 * g1 + m1 * qg
                                    gqn[a] = gq_a
                                    gkn[a] = gk_a
                            else:
                                g = G[b, n, hh]
                                bm, bs, bt, e0, e1, l0, l1 = g[0], g[1], g[2], g[3], g[4], g[5], g[6]
                                c0 = C0[b, n, hh].ravel() if has_c0 else zero_state
                                gc0 = gC0[b, n, hh].ravel() if has_c0 else zero_state
                                gf = grad_final[b, n, hh].ravel() if ret else zero_state
                                gbm = gbs = gbt = ge0 = ge1 = gl0 = gl1 = z
                                for a in range(dk):
                                    qa, ka = qn[a], kn[a]
                                    o = a * dv
                                    gq_a = z
                                    gk_a = z
                                    for j in range(dv):
                                        i0, i1 = I0[o + j], I1[o + j]
                                        g0, g1 = G0[o + j], right[o + j]
                                        c, f = c0[o + j], gf[o + j]
                                        vj, ghj = vn[j], gh[j]
                                        gt00 += g0 * i0
                                        gt01 += g0 * i1
                                        gt10 += g1 * i0
                                        gt11 += g1 * i1
                                        kvj = ka * vj
                                        gs0 += g0 * kvj
                                        gs1 += g1 * kvj
                                        qg = qa * ghj
                                        gm0 += i0 * qg
                                        gm1 += i1 * qg
                                        gq_a += (m0 * i0 + m1 * i1 + bm * c) * ghj
                                        gkv = s0 * g0 + s1 * g1 + bs * f
                                        gk_a += gkv * vj
                                        gvn[j] += gkv * ka
                                        gbm += c * qg
                                        gbs += f * kvj
                                        gbt += f * c
                                        ge0 += g0 * c
                                        ge1 += g1 * c
                                        gl0 += f * i0
                                        gl1 += f * i1
                                        if has_c0:
                                            gc0[o + j] = bm * qg + e0 * g0 + e1 * g1 + bt * f
                                        G0[o + j] = t00 * g0 + t10 * g1 + m0 * qg + l0 * f
                                        right[o + j] = t01 * g0 + t11 * g1 + m1 * qg + l1 * f
                                    gqn[a] = gq_a
                                    gkn[a] = gk_a
                                gg = gG[b, n, hh]
                                gg[0], gg[1], gg[2] = gbm, gbs, gbt
                                gg[3], gg[4], gg[5], gg[6] = ge0, ge1, gl0, gl1
                            # the direct term D (q . k) v
                            qk = z
                            for a in range(dk):
                                qk += qn[a] * kn[a]
                            ghv_n = z
                            for j in range(dv):
                                ghv_n += gh[j] * vn[j]
                            dn = D[b, n, hh]
                            for a in range(dk):
                                gqn[a] += dn * ghv_n * kn[a]
                                gkn[a] += dn * ghv_n * qn[a]
                            for j in range(dv):
                                gvo[j] = gvn[j] + dn * qk * gh[j]
                            gD[b, n, hh] = qk * ghv_n
                            gS[b, n, hh, 0], gS[b, n, hh, 1] = gs0, gs1
                            gM[b, n, hh, 0], gM[b, n, hh, 1] = gm0, gm1
                            gT[b, n, hh, 0, 0], gT[b, n, hh, 0, 1] = gt00, gt01
                            gT[b, n, hh, 1, 0], gT[b, n, hh, 1, 1] = gt10, gt11


    @njit(inline="always")
    def _row(gates, b, edge, hh, missing):
        """``gates[b, edge, hh]``, or ``missing`` where there is no edge (``edge < 0``)."""
        return gates[b, edge, hh] if edge >= 0 else missing

    @_cached_njit(fastmath=_FASTMATH)
    def _forward_entries(q, k, v, S, T, M, D, C0, G, out_edge, in_edge, line, has_c0, ret, save, X, Y, h, final, entries):
        """:func:`_forward` with every gate per state entry, read in the gates' own layout: ``S``,
        ``M`` ``[B, E, H, K]`` (``K = dk * dv``) through the node's ``out_edge`` / ``in_edge``
        ``[N, 2]``, ``T`` ``[B, L, H, K]`` through ``line`` ``[N, 2(out), 2(in)]`` (-1: no such
        edge, a zero gate), ``G`` ``[B, N, H, 7, K]``."""
        batch, _, heads, dk = q.shape
        dv = v.shape[3]
        K = dk * dv
        up = np.zeros((Y, K), dtype=q.dtype)
        left = np.zeros(K, dtype=q.dtype)
        acc = np.zeros(dv, dtype=q.dtype)
        zero_state = np.zeros(K, dtype=q.dtype)
        z = np.zeros(1, dtype=q.dtype)[0]
        general = has_c0 or ret
        for b in range(batch):
            for hh in range(heads):
                up[:] = 0.0
                for x in range(X):
                    if save and x % ROWS == 0:
                        entries[b, hh, x // ROWS] = up
                    left[:] = 0.0
                    for y in range(Y):
                        n = x * Y + y
                        qn, kn, vn = q[b, n, hh], k[b, n, hh], v[b, n, hh]
                        m0, m1 = _row(M, b, in_edge[n, 0], hh, zero_state), _row(M, b, in_edge[n, 1], hh, zero_state)
                        s0, s1 = _row(S, b, out_edge[n, 0], hh, zero_state), _row(S, b, out_edge[n, 1], hh, zero_state)
                        t00, t01 = _row(T, b, line[n, 0, 0], hh, zero_state), _row(T, b, line[n, 0, 1], hh, zero_state)
                        t10, t11 = _row(T, b, line[n, 1, 0], hh, zero_state), _row(T, b, line[n, 1, 1], hh, zero_state)
                        I0 = up[y]
                        qk = z
                        for a in range(dk):
                            qk += qn[a] * kn[a]
                        for j in range(dv):
                            acc[j] = z
                        if not general:
                            for a in range(dk):
                                qa, ka = qn[a], kn[a]
                                o = a * dv
                                for j in range(dv):
                                    e = o + j
                                    i0, i1 = I0[e], left[e]
                                    acc[j] += qa * (m0[e] * i0 + m1[e] * i1)
                                    kvj = ka * vn[j]
                                    I0[e] = t00[e] * i0 + t01[e] * i1 + s0[e] * kvj
                                    left[e] = t10[e] * i0 + t11[e] * i1 + s1[e] * kvj
                        else:
                            g = G[b, n, hh]
                            c0 = C0[b, n, hh].ravel() if has_c0 else zero_state
                            fin = final[b, n, hh].ravel() if ret else zero_state
                            for a in range(dk):
                                qa, ka = qn[a], kn[a]
                                o = a * dv
                                for j in range(dv):
                                    e = o + j
                                    i0, i1, c = I0[e], left[e], c0[e]
                                    acc[j] += qa * (m0[e] * i0 + m1[e] * i1 + g[0, e] * c)
                                    kvj = ka * vn[j]
                                    I0[e] = t00[e] * i0 + t01[e] * i1 + s0[e] * kvj + g[3, e] * c
                                    left[e] = t10[e] * i0 + t11[e] * i1 + s1[e] * kvj + g[4, e] * c
                                    if ret:
                                        fin[e] = g[5, e] * i0 + g[6, e] * i1 + g[1, e] * kvj + g[2, e] * c
                        dn = D[b, n, hh] * qk
                        hn = h[b, n, hh]
                        for j in range(dv):
                            hn[j] = acc[j] + dn * vn[j]

    @_cached_njit(fastmath=_FASTMATH)
    def _backward_entries(q, k, v, S, T, M, D, C0, G, out_edge, in_edge, line, has_c0, ret, X, Y, entries, grad_h, grad_final,
                          gq, gk, gv, gS, gT, gM, gD, gC0, gG):
        """:func:`_backward` with every gate per state entry (:func:`_forward_entries`); the
        gates' gradients are per entry too (``gT[..., i, j, e] = \\bar O_i[e] I_j[e]``)."""
        batch, _, heads, dk = q.shape
        dv = v.shape[3]
        K = dk * dv
        rows = min(ROWS, X)
        incoming = np.zeros((rows, Y, 2, K), dtype=q.dtype)
        up = np.zeros((Y, K), dtype=q.dtype)
        left = np.zeros(K, dtype=q.dtype)
        down = np.zeros((Y, K), dtype=q.dtype)
        right = np.zeros(K, dtype=q.dtype)
        gvn = np.zeros(dv, dtype=q.dtype)
        zero_state = np.zeros(K, dtype=q.dtype)
        sink = np.zeros(K, dtype=q.dtype)  # the gradients of gates of missing edges
        lanes = np.zeros(LANES, dtype=q.dtype)
        vector = dv % LANES == 0  # rows of whole vectors: the explicit vector loops (as in _backward)
        z = np.zeros(1, dtype=q.dtype)[0]
        general = has_c0 or ret
        num_blocks = -(-X // ROWS)
        for b in range(batch):
            for hh in range(heads):
                down[:] = 0.0
                for block in range(num_blocks - 1, -1, -1):
                    x0 = block * ROWS
                    x1 = min(X, x0 + ROWS)
                    up[:] = entries[b, hh, block]
                    for x in range(x0, x1):  # recompute the block's incoming states
                        left[:] = 0.0
                        for y in range(Y):
                            n = x * Y + y
                            kn, vn = k[b, n, hh], v[b, n, hh]
                            s0, s1 = _row(S, b, out_edge[n, 0], hh, zero_state), _row(S, b, out_edge[n, 1], hh, zero_state)
                            t00, t01 = _row(T, b, line[n, 0, 0], hh, zero_state), _row(T, b, line[n, 0, 1], hh, zero_state)
                            t10, t11 = _row(T, b, line[n, 1, 0], hh, zero_state), _row(T, b, line[n, 1, 1], hh, zero_state)
                            I0 = up[y]
                            store = incoming[x - x0, y]
                            if has_c0:
                                c0 = C0[b, n, hh].ravel()
                                e0, e1 = G[b, n, hh, 3], G[b, n, hh, 4]
                                for a in range(dk):
                                    ka = kn[a]
                                    o = a * dv
                                    for j in range(dv):
                                        e = o + j
                                        i0, i1 = I0[e], left[e]
                                        store[0, e] = i0
                                        store[1, e] = i1
                                        kvj = ka * vn[j]
                                        I0[e] = t00[e] * i0 + t01[e] * i1 + s0[e] * kvj + e0[e] * c0[e]
                                        left[e] = t10[e] * i0 + t11[e] * i1 + s1[e] * kvj + e1[e] * c0[e]
                            else:
                                for a in range(dk):
                                    ka = kn[a]
                                    o = a * dv
                                    for j in range(dv):
                                        e = o + j
                                        i0, i1 = I0[e], left[e]
                                        store[0, e] = i0
                                        store[1, e] = i1
                                        kvj = ka * vn[j]
                                        I0[e] = t00[e] * i0 + t01[e] * i1 + s0[e] * kvj
                                        left[e] = t10[e] * i0 + t11[e] * i1 + s1[e] * kvj
                    for x in range(x1 - 1, x0 - 1, -1):
                        right[:] = 0.0
                        for y in range(Y - 1, -1, -1):
                            n = x * Y + y
                            qn, kn, vn = q[b, n, hh], k[b, n, hh], v[b, n, hh]
                            gh = grad_h[b, n, hh]
                            m0, m1 = _row(M, b, in_edge[n, 0], hh, zero_state), _row(M, b, in_edge[n, 1], hh, zero_state)
                            s0, s1 = _row(S, b, out_edge[n, 0], hh, zero_state), _row(S, b, out_edge[n, 1], hh, zero_state)
                            t00, t01 = _row(T, b, line[n, 0, 0], hh, zero_state), _row(T, b, line[n, 0, 1], hh, zero_state)
                            t10, t11 = _row(T, b, line[n, 1, 0], hh, zero_state), _row(T, b, line[n, 1, 1], hh, zero_state)
                            gs0, gs1 = _row(gS, b, out_edge[n, 0], hh, sink), _row(gS, b, out_edge[n, 1], hh, sink)
                            gm0, gm1 = _row(gM, b, in_edge[n, 0], hh, sink), _row(gM, b, in_edge[n, 1], hh, sink)
                            gt00, gt01 = _row(gT, b, line[n, 0, 0], hh, sink), _row(gT, b, line[n, 0, 1], hh, sink)
                            gt10, gt11 = _row(gT, b, line[n, 1, 0], hh, sink), _row(gT, b, line[n, 1, 1], hh, sink)
                            I0 = incoming[x - x0, y, 0]
                            I1 = incoming[x - x0, y, 1]
                            G0 = down[y]  # gradient of O_0, becomes that of I_0
                            gqn, gkn, gvo = gq[b, n, hh], gk[b, n, hh], gv[b, n, hh]
                            for j in range(dv):
                                gvn[j] = z
                            if not general and vector:
                                zero = _vsplat(z, q)
                                for a in range(dk):
                                    qa, ka = _vsplat(qn[a], q), _vsplat(kn[a], q)
                                    rq = zero
                                    rk = zero
                                    for j0 in range(0, dv, LANES):
                                        e = a * dv + j0
                                        i0, i1 = _vload(I0, e), _vload(I1, e)
                                        g0, g1 = _vload(G0, e), _vload(right, e)
                                        vj, ghj = _vload(vn, j0), _vload(gh, j0)
                                        _vstore(gt00, e, _vmul(g0, i0))
                                        _vstore(gt01, e, _vmul(g0, i1))
                                        _vstore(gt10, e, _vmul(g1, i0))
                                        _vstore(gt11, e, _vmul(g1, i1))
                                        kv = _vmul(ka, vj)
                                        _vstore(gs0, e, _vmul(g0, kv))
                                        _vstore(gs1, e, _vmul(g1, kv))
                                        qg = _vmul(qa, ghj)
                                        _vstore(gm0, e, _vmul(i0, qg))
                                        _vstore(gm1, e, _vmul(i1, qg))
                                        M0, M1 = _vload(m0, e), _vload(m1, e)
                                        rq = _vfma(_vfma(M0, i0, _vmul(M1, i1)), ghj, rq)
                                        gkv = _vfma(_vload(s0, e), g0, _vmul(_vload(s1, e), g1))
                                        rk = _vfma(gkv, vj, rk)
                                        _vstore(gvn, j0, _vfma(gkv, ka, _vload(gvn, j0)))
                                        _vstore(G0, e, _vfma(_vload(t00, e), g0, _vfma(_vload(t10, e), g1, _vmul(M0, qg))))
                                        _vstore(right, e, _vfma(_vload(t01, e), g0, _vfma(_vload(t11, e), g1, _vmul(M1, qg))))
                                    gqn[a] = _hsum(rq, lanes)
                                    gkn[a] = _hsum(rk, lanes)
                            elif not general:
                                for a in range(dk):
                                    qa, ka = qn[a], kn[a]
                                    o = a * dv
                                    gq_a = z
                                    gk_a = z
                                    for j in range(dv):
                                        e = o + j
                                        i0, i1 = I0[e], I1[e]
                                        g0, g1 = G0[e], right[e]
                                        vj, ghj = vn[j], gh[j]
                                        gt00[e] = g0 * i0
                                        gt01[e] = g0 * i1
                                        gt10[e] = g1 * i0
                                        gt11[e] = g1 * i1
                                        kvj = ka * vj
                                        gs0[e] = g0 * kvj
                                        gs1[e] = g1 * kvj
                                        qg = qa * ghj
                                        gm0[e] = i0 * qg
                                        gm1[e] = i1 * qg
                                        gq_a += (m0[e] * i0 + m1[e] * i1) * ghj
                                        gkv = s0[e] * g0 + s1[e] * g1
                                        gk_a += gkv * vj
                                        gvn[j] += gkv * ka
                                        G0[e] = t00[e] * g0 + t10[e] * g1 + m0[e] * qg
                                        right[e] = t01[e] * g0 + t11[e] * g1 + m1[e] * qg
                                    gqn[a] = gq_a
                                    gkn[a] = gk_a
                            else:
                                g = G[b, n, hh]
                                gg = gG[b, n, hh]
                                c0 = C0[b, n, hh].ravel() if has_c0 else zero_state
                                gc0 = gC0[b, n, hh].ravel() if has_c0 else zero_state
                                gf = grad_final[b, n, hh].ravel() if ret else zero_state
                                for a in range(dk):
                                    qa, ka = qn[a], kn[a]
                                    o = a * dv
                                    gq_a = z
                                    gk_a = z
                                    for j in range(dv):
                                        e = o + j
                                        i0, i1 = I0[e], I1[e]
                                        g0, g1 = G0[e], right[e]
                                        c, f = c0[e], gf[e]
                                        vj, ghj = vn[j], gh[j]
                                        gt00[e] = g0 * i0
                                        gt01[e] = g0 * i1
                                        gt10[e] = g1 * i0
                                        gt11[e] = g1 * i1
                                        kvj = ka * vj
                                        gs0[e] = g0 * kvj
                                        gs1[e] = g1 * kvj
                                        qg = qa * ghj
                                        gm0[e] = i0 * qg
                                        gm1[e] = i1 * qg
                                        gq_a += (m0[e] * i0 + m1[e] * i1 + g[0, e] * c) * ghj
                                        gkv = s0[e] * g0 + s1[e] * g1 + g[1, e] * f
                                        gk_a += gkv * vj
                                        gvn[j] += gkv * ka
                                        gg[0, e] = c * qg
                                        gg[1, e] = f * kvj
                                        gg[2, e] = f * c
                                        gg[3, e] = g0 * c
                                        gg[4, e] = g1 * c
                                        gg[5, e] = f * i0
                                        gg[6, e] = f * i1
                                        if has_c0:
                                            gc0[e] = g[0, e] * qg + g[3, e] * g0 + g[4, e] * g1 + g[2, e] * f
                                        G0[e] = t00[e] * g0 + t10[e] * g1 + m0[e] * qg + g[5, e] * f
                                        right[e] = t01[e] * g0 + t11[e] * g1 + m1[e] * qg + g[6, e] * f
                                    gqn[a] = gq_a
                                    gkn[a] = gk_a
                            # the direct term D (q . k) v
                            qk = z
                            for a in range(dk):
                                qk += qn[a] * kn[a]
                            ghv_n = z
                            for j in range(dv):
                                ghv_n += gh[j] * vn[j]
                            dn = D[b, n, hh]
                            for a in range(dk):
                                gqn[a] += dn * ghv_n * kn[a]
                                gkn[a] += dn * ghv_n * qn[a]
                            for j in range(dv):
                                gvo[j] = gvn[j] + dn * qk * gh[j]
                            gD[b, n, hh] = qk * ghv_n

def _array(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class FusedLatticeRecurrence(torch.autograd.Function):
    """The kernels as an autograd function on the canonical row-major layout: ``q``, ``k``
    ``[B, N, H, dk]``, ``v`` ``[B, N, H, dv]``, ``S``, ``M`` ``[B, N, H, 2]`` (per axis), ``T``
    ``[B, N, H, 2(out), 2(in)]``, ``D`` ``[B, N, H]``, ``C0`` ``[B, N, H, dk, dv]`` or None,
    ``G`` ``[B, N, H, 7]`` (boundary gates, :data:`_GATES`) or None; returns ``h``
    ``[B, N, H, dv]`` and the returned states ``[B, N, H, dk, dv]`` (empty unless
    ``return_state``)."""

    @staticmethod
    def forward(ctx, q, k, v, S, T, M, D, C0, G, X, Y, return_state):  # noqa: D102
        B, N, H, dk = q.shape
        dv = v.shape[-1]
        has_c0 = C0 is not None
        general = has_c0 or return_state
        C0_k = C0 if has_c0 else q.new_zeros(1, 1, 1, 1, 1)
        G_k = G if general else q.new_zeros(1, 1, 1, 7)
        h = q.new_empty(B, N, H, dv)
        final = q.new_zeros(B, N, H, dk, dv) if return_state else q.new_zeros(1, 1, 1, 1, 1)
        save = any(ctx.needs_input_grad)
        entries = q.new_empty(B, H, -(-X // ROWS), Y, dk * dv) if save else q.new_empty(1, 1, 1, 1, 1)
        arrays = [_array(t) for t in (q, k, v, S, T, M, D, C0_k, G_k)]
        _forward(*arrays, has_c0, return_state, save, X, Y, h.numpy(), final.numpy(), entries.numpy())
        ctx.save_for_backward(q, k, v, S, T, M, D, C0_k, G_k, entries)
        ctx.shape, ctx.has_c0, ctx.return_state = (X, Y), has_c0, return_state
        return h, final

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h, grad_final):  # noqa: D102
        q, k, v, S, T, M, D, C0, G, entries = ctx.saved_tensors
        X, Y = ctx.shape
        grad_h = q.new_zeros(*q.shape[:3], v.shape[-1]) if grad_h is None else grad_h.contiguous()
        ret = ctx.return_state and grad_final is not None
        general = ctx.has_c0 or ret
        if not ret:
            grad_final = q.new_zeros(1, 1, 1, 1, 1)
        else:
            grad_final = grad_final.contiguous()
        grads = [torch.zeros_like(t) for t in (q, k, v, S, T, M, D, C0, G)]
        if not general:
            G = q.new_zeros(1, 1, 1, 7)
        _backward(
            *[_array(t) for t in (q, k, v, S, T, M, D, C0, G)], ctx.has_c0, ret, X, Y, _array(entries),
            grad_h.numpy(), grad_final.numpy(), *[g.numpy() for g in grads[:8]],
            (grads[8] if general else q.new_zeros(1, 1, 1, 7)).numpy(),
        )
        gq, gk, gv, gS, gT, gM, gD, gC0, gG = grads
        return (gq, gk, gv, gS, gT, gM, gD, gC0 if ctx.has_c0 else None,
                gG if ctx.needs_input_grad[8] else None, None, None, None)


class FusedLatticeEntriesRecurrence(torch.autograd.Function):
    """:class:`FusedLatticeRecurrence` with every gate per state entry (:func:`_forward_entries`,
    :func:`_backward_entries`): ``S``, ``M`` ``[B, E, H, K]``, ``T`` ``[B, L, H, K]`` in their
    own layouts, read through ``indices`` (``out_edge``, ``in_edge`` ``[N, 2]``, ``line``
    ``[N, 2, 2]``, int64 arrays, -1 for no edge), ``G`` ``[B, N, H, 7, K]`` or None."""

    @staticmethod
    def forward(ctx, q, k, v, S, T, M, D, C0, G, indices, X, Y, return_state):  # noqa: D102
        B, N, H, dk = q.shape
        dv = v.shape[-1]
        has_c0 = C0 is not None
        general = has_c0 or return_state
        C0_k = C0 if has_c0 else q.new_zeros(1, 1, 1, 1, 1)
        G_k = G if general else q.new_zeros(1, 1, 1, 7, 1)
        h = q.new_empty(B, N, H, dv)
        final = q.new_zeros(B, N, H, dk, dv) if return_state else q.new_zeros(1, 1, 1, 1, 1)
        save = any(ctx.needs_input_grad)
        entries = q.new_empty(B, H, -(-X // ROWS), Y, dk * dv) if save else q.new_empty(1, 1, 1, 1, 1)
        arrays = [_array(t) for t in (q, k, v, S, T, M, D, C0_k, G_k)]
        _forward_entries(*arrays, *indices, has_c0, return_state, save, X, Y, h.numpy(), final.numpy(), entries.numpy())
        ctx.save_for_backward(q, k, v, S, T, M, D, C0_k, G_k, entries)
        ctx.shape, ctx.has_c0, ctx.return_state, ctx.indices = (X, Y), has_c0, return_state, indices
        return h, final

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h, grad_final):  # noqa: D102
        q, k, v, S, T, M, D, C0, G, entries = ctx.saved_tensors
        X, Y = ctx.shape
        grad_h = q.new_zeros(*q.shape[:3], v.shape[-1]) if grad_h is None else grad_h.contiguous()
        ret = ctx.return_state and grad_final is not None
        general = ctx.has_c0 or ret
        grad_final = grad_final.contiguous() if ret else q.new_zeros(1, 1, 1, 1, 1)
        grads = [torch.zeros_like(t) for t in (q, k, v, S, T, M, D, C0, G)]
        dummy_gates = q.new_zeros(1, 1, 1, 7, 1)
        _backward_entries(
            *[_array(t) for t in (q, k, v, S, T, M, D, C0, G if general else dummy_gates)], *ctx.indices,
            ctx.has_c0, ret, X, Y, _array(entries), grad_h.numpy(), grad_final.numpy(), *[g.numpy() for g in grads[:8]],
            (grads[8] if general else dummy_gates).numpy(),
        )
        gq, gk, gv, gS, gT, gM, gD, gC0, gG = grads
        return (gq, gk, gv, gS, gT, gM, gD, gC0 if ctx.has_c0 else None,
                gG if ctx.needs_input_grad[8] else None, None, None, None, None)


#: the kinds :func:`fused_lattice` runs (the scalar kind with scalar weights by the lean kernels,
#: the householder kind by :mod:`.fused_householder`'s, everything else by the kernels with
#: gates per state entry)
KINDS = ("scalar", "diagonal", "elementwise", "householder")


def fused_lattice_usable(lattice: Lattice, kind: str, q: Tensor, weights_scalar: bool) -> bool:
    """Whether :func:`fused_lattice` runs this call with its lean kernels: the JIT enabled, a
    1D or 2D lattice, the scalar kind with scalar weights, CPU tensors of float32 or float64."""
    return fused_lattice_runs(lattice, kind, q) and kind == "scalar" and weights_scalar


def fused_lattice_runs(lattice: Lattice, kind: str, q: Tensor) -> bool:
    """Whether :func:`fused_lattice` runs this call at all: the JIT enabled, a 1D or 2D lattice,
    a kind of :data:`KINDS`, CPU tensors of float32 or float64."""
    return (
        jit_enabled() and isinstance(lattice, Lattice) and lattice.ndim in (1, 2) and kind in KINDS
        and isinstance(q, Tensor) and q.device.type == "cpu" and q.dtype in DTYPES
    )


def fused_lattice(
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
    kind: str = "scalar",
) -> tuple[Tensor, Tensor | None]:
    """The recurrence of :func:`~everygraph.sequence.scan` (kinds :data:`KINDS`) on a 1D or 2D
    lattice by the compiled kernels (module docstring; a path of length ``L`` runs as the
    ``L x 1`` grid, its gates on axis 0). Inputs in the flat layout, ``q`` already scaled;
    returns ``h`` ``[B, N, H, dv]`` and the virtual out-edge states ``[B, N, H, dk, dv]`` (or
    None)."""
    if not NUMBA_AVAILABLE:
        raise RuntimeError("execution='fused_lattice' needs numba: pip install 'everygraph[cpu]' (or numba>=0.60)")
    X, Y = lattice.shape if lattice.ndim == 2 else (lattice.shape[0], 1)
    layout = lattice_layout(lattice, q.device)
    if kind == "householder":
        return _fused_lattice_householder(layout, X, Y, q, k, v, source, transition, mark, direct, initial_state,
                                          boundary, return_state)
    weights = [source, mark] + ([] if boundary is None else [boundary.mark, boundary.source])
    if kind != "scalar" or any(w is not None and w.dim() > 3 for w in weights):
        return _fused_lattice_entries(lattice, layout, X, Y, q, k, v, source, transition, mark, direct, kind,
                                      initial_state, boundary, return_state)
    S = _as_grid(take(source, layout.out_edge)).transpose(2, 3)  # [B, N, H, 2]
    M = _as_grid(take(mark, layout.in_edge)).transpose(2, 3)
    T = take(transition, layout.line)  # [B, N, ndim(out), ndim(in), H]
    if lattice.ndim == 1:  # the path's gates on axis 0 of an L x 1 grid
        T = torch.nn.functional.pad(T, (0, 0, 0, 1, 0, 1))
    T = T.permute(0, 1, 4, 2, 3)  # [B, N, H, 2(out), 2(in)]
    qs, ks, vs, Ds = (gather(t, 1, layout.node) for t in (q, k, v, direct))
    C0 = gather(initial_state, 1, layout.node) if initial_state is not None else None
    G = None
    if C0 is not None or return_state:
        G = _boundary_gates(boundary, layout, lattice.num_edges, q)
    if X == 1 and Y > 1:
        # a 1 x W grid runs as W x 1 (same node order, axes swapped): the loop's row buffer
        # then holds one state instead of W
        S, M, T = S.flip(-1), M.flip(-1), T.flip(-1).flip(-2)
        if G is not None:
            G = G[..., [0, 1, 2, 4, 3, 6, 5]]
        X, Y = Y, 1
    h, final = FusedLatticeRecurrence.apply(
        qs.contiguous(), ks.contiguous(), vs.contiguous(), S.contiguous(), T.contiguous(), M.contiguous(), Ds.contiguous(),
        C0.contiguous() if C0 is not None else None, G, X, Y, return_state,
    )
    h = gather(h, 1, layout.position)
    return h, (gather(final, 1, layout.position) if return_state else None)


def _as_grid(per_axis: Tensor) -> Tensor:
    """``[B, N, ndim, H]`` per-axis gates as those of a 2D grid: a path's on axis 0 (zero on
    axis 1), so that the row buffers of the loop hold one state."""
    return per_axis if per_axis.shape[2] == 2 else torch.nn.functional.pad(per_axis, (0, 0, 0, 1))


def _boundary_gates(boundary: Boundary | None, layout, num_edges: int, like: Tensor) -> Tensor:
    """The gates of the virtual edges per canonical node, packed as :data:`_GATES`
    ``[B, N, H, 7]``; a missing gate is 1 where its edge exists (``enter``: the real out-edge,
    ``leave``: the real in-edge), else 0."""
    B, N, H, _ = like.shape
    node = layout.node

    def per_node(t: Tensor | None) -> Tensor:
        return like.new_ones(B, N, H) if t is None else gather(t, 1, node)

    def per_edge(t: Tensor | None, index: Tensor) -> Tensor:  # [B, N, 2, H], zero where no edge
        return take(like.new_ones(B, num_edges, H) if t is None else t, index)

    boundary = boundary or Boundary()
    enter = _as_grid(per_edge(boundary.enter, layout.out_edge))
    leave = _as_grid(per_edge(boundary.leave, layout.in_edge))
    return torch.stack(
        [per_node(boundary.mark), per_node(boundary.source), per_node(boundary.through),
         enter[:, :, 0], enter[:, :, 1], leave[:, :, 0], leave[:, :, 1]], dim=-1,
    ).contiguous()


def _edge_index(index: Tensor, size: int) -> Tensor:
    """A layout's edge ids with the sentinel ``size`` (no edge) as -1, two per axis (a path's
    axis 1 padded with -1)."""
    index = torch.where(index == size, -1, index)
    if index.shape[1] == 1:  # a path: no axis-1 edges
        pad = (0, 1, 0, 1) if index.dim() == 3 else (0, 1)
        index = torch.nn.functional.pad(index, pad, value=-1)
    return index


def _fused_lattice_entries(
    lattice: Lattice, layout, X: int, Y: int, q: Tensor, k: Tensor, v: Tensor, source: Tensor, transition: Tensor,
    mark: Tensor, direct: Tensor, kind: str, initial_state: Tensor | None, boundary: Boundary | None, return_state: bool,
) -> tuple[Tensor, Tensor | None]:
    """:func:`fused_lattice` with every gate broadcast to the ``dk * dv`` state entries (the
    ``diagonal`` and ``elementwise`` kinds, weights per entry). The edge gates stay in their
    own layouts (the kernels read them through the nodes' edge indices: no gathered copies);
    autograd sums the entries' gradients back onto the gates' own shapes."""
    B, N, H, dk = q.shape
    dv = v.shape[-1]
    E, L = source.shape[1], transition.shape[1]

    def entries(multiplier: Tensor) -> Tensor:  # [..., dk|1, dv|1] -> [..., dk * dv]
        return multiplier.expand(*multiplier.shape[:-2], dk, dv).reshape(*multiplier.shape[:-2], dk * dv)

    def weight(w: Tensor, per_head_dims: int) -> Tensor:  # a source/mark weight, scalar or [dk, dv] per head
        return w if w.dim() == per_head_dims + 2 else w[..., None, None]

    def gate(g: Tensor) -> Tensor:
        return decay_multiplier(kind, g)

    S, M = entries(weight(source, 3)), entries(weight(mark, 3))  # [B, E, H, K]
    T = entries(gate(transition))  # [B, L, H, K]
    out_edge, in_edge = _edge_index(layout.out_edge, E), _edge_index(layout.in_edge, E)
    line = _edge_index(layout.line, L)  # [N, 2(out), 2(in)]
    qs, ks, vs, Ds = (gather(t, 1, layout.node) for t in (q, k, v, direct))
    C0 = gather(initial_state, 1, layout.node) if initial_state is not None else None
    G = None
    if C0 is not None or return_state:
        gates = boundary or Boundary()
        ones = q.new_ones(B, N, H, 1, 1)

        def per_node(g: Tensor | None, multiplier) -> Tensor:  # [B, N, H, K]
            return entries(ones if g is None else multiplier(gather(g, 1, layout.node)))

        def per_edge(g: Tensor | None, index: Tensor) -> Tensor:  # [B, N, 2, H, K], zero where no edge
            w = take(entries(q.new_ones(B, E, H, 1, 1) if g is None else gate(g)), index)
            return w if w.shape[2] == 2 else torch.nn.functional.pad(w, (0, 0, 0, 0, 0, 1))

        enter = per_edge(gates.enter, layout.out_edge)
        leave = per_edge(gates.leave, layout.in_edge)
        G = torch.stack(
            [per_node(gates.mark, lambda w: weight(w, 3)), per_node(gates.source, lambda w: weight(w, 3)),
             per_node(gates.through, gate), enter[:, :, 0], enter[:, :, 1], leave[:, :, 0], leave[:, :, 1]], dim=3,
        ).contiguous()  # [B, N, H, 7, K]
    if X == 1 and Y > 1:  # a 1 x W grid runs as W x 1 (as in fused_lattice)
        out_edge, in_edge, line = out_edge.flip(1), in_edge.flip(1), line.flip(1).flip(2)
        if G is not None:
            G = G[:, :, :, [0, 1, 2, 4, 3, 6, 5]]
        X, Y = Y, 1
    indices = tuple(i.to("cpu", torch.int64).contiguous().numpy() for i in (out_edge, in_edge, line))
    h, final = FusedLatticeEntriesRecurrence.apply(
        qs.contiguous(), ks.contiguous(), vs.contiguous(), S.contiguous(), T.contiguous(), M.contiguous(), Ds.contiguous(),
        C0.contiguous() if C0 is not None else None, G, indices, X, Y, return_state,
    )
    h = gather(h, 1, layout.position)
    return h, (gather(final, 1, layout.position) if return_state else None)


def _fused_lattice_householder(
    layout, X: int, Y: int, q: Tensor, k: Tensor, v: Tensor, source: Tensor, transition: Tensor, mark: Tensor,
    direct: Tensor, initial_state: Tensor | None, boundary: Boundary | None, return_state: bool,
) -> tuple[Tensor, Tensor | None]:
    """:func:`fused_lattice` for the ``householder`` kind (:mod:`.fused_householder`). Edge gates
    stay in their own layouts, read through the nodes' edge indices; per-node tensors are
    gathered into the canonical order. Weights are scalars (``W = 1``) unless one of them is
    per entry, then all are ``[..., dk * dv]``; a missing boundary gate is the identity."""
    from .fused_householder import FusedHouseholderRecurrence

    B, N, H, dk = q.shape
    dv = v.shape[-1]
    K = dk * dv
    E, L = source.shape[1], transition.shape[1]
    gates = boundary or Boundary()
    wide = any(w is not None and w.dim() == 5 for w in (source, mark, gates.mark, gates.source))

    def weight(w: Tensor | None, rows: int) -> Tensor:  # [B, rows, H, 1 or K]
        w = q.new_ones(B, rows, H) if w is None else w
        if w.dim() == 5:
            return w.reshape(B, rows, H, K)
        return w[..., None].expand(B, rows, H, K) if wide else w[..., None]

    def node_gate(g: Tensor | None) -> Tensor:  # [B, N, H, r, dk + 2], canonical order
        return identity_transition("householder", dk, dv, q, (B, N, H)) if g is None else gather(g, 1, layout.node)

    def edge_gate(g: Tensor | None) -> Tensor:
        return identity_transition("householder", dk, dv, q, (B, E, H)) if g is None else g

    out_edge, in_edge = _edge_index(layout.out_edge, E), _edge_index(layout.in_edge, E)
    line = _edge_index(layout.line, L)
    qs, ks, vs, Ds = (gather(t, 1, layout.node) for t in (q, k, v, direct))
    C0 = None if initial_state is None else gather(initial_state, 1, layout.node).reshape(B, N, H, K)
    general = C0 is not None or return_state
    if general:
        Bm, Bs = (gather(weight(w, N), 1, layout.node) for w in (gates.mark, gates.source))
        Ben, Blv, Bth = edge_gate(gates.enter), edge_gate(gates.leave), node_gate(gates.through)
    else:  # no boundary states: placeholders the kernels do not read
        Bm = Bs = q.new_zeros(1, 1, 1, 1)
        Ben = Blv = Bth = q.new_zeros(1, 1, 1, 1, dk + 2)
    if X == 1 and Y > 1:  # a 1 x W grid runs as W x 1 (as in fused_lattice)
        out_edge, in_edge, line = out_edge.flip(1), in_edge.flip(1), line.flip(1).flip(2)
        X, Y = Y, 1
    indices = tuple(i.to("cpu", torch.int64).contiguous().numpy() for i in (out_edge, in_edge, line))
    h, final = FusedHouseholderRecurrence.apply(
        qs.contiguous(), ks.contiguous(), vs.contiguous(), weight(source, E).contiguous(), transition.contiguous(),
        weight(mark, E).contiguous(), Ds.contiguous(), None if C0 is None else C0.contiguous(), Bm.contiguous(),
        Bs.contiguous(), Ben.contiguous(), Blv.contiguous(), Bth.contiguous(), indices, X, Y, wide, return_state,
    )
    h = gather(h, 1, layout.position)
    return h, (gather(final.reshape(B, N, H, dk, dv), 1, layout.position) if return_state else None)
