r"""The chunkwise scan on paths for scalar transitions (pLSTM-1d), as Triton kernels.

On a path the scan (see :func:`~everygraph.sequence.plstm_scan`) is, with :math:`C_t` the
state on the edge ``t-1 -> t`` and per-node gates ``S, T, M, D`` (:math:`S_t` for the
out-edge, :math:`T_t` through node ``t``, :math:`M_t` for the in-edge):

.. math::
    C_{t+1} = T_t C_t + S_t k_t v_t^\top, \qquad h_t = M_t q_t^\top C_t + D_t (q_t\cdot k_t) v_t .

Inside a chunk of ``c`` positions entered by the state :math:`C_0` this is masked linear
attention with the decay matrix :math:`W_{is} = \prod_{r=s+1}^{i-1} T_r` (:math:`s < i`)
and the entering decays :math:`p_i = \prod_{r<i} T_r`:

.. math::
    H = \big((QK^\top) \odot W \odot M S^\top + \mathrm{diag}(D \odot (q\cdot k))\big) V
        + (M \odot p)\, Q C_0, \qquad
    C_c = p_c C_0 + K^\top \mathrm{diag}(W_{c\cdot} \odot S)\, V,

three ``tl.dot`` products per chunk; a loop over chunks carries :math:`C` in registers (one
program per batch and head), as flash-linear-attention's chunk kernels do. Transitions may
be negative or exactly zero (pLSTM's are), so :math:`W` is built from cumulative sums of
:math:`\log|T|`, of the signs and of the zeros, never by dividing cumulative products.

The backward kernel walks the chunks in reverse with the adjoint state
:math:`\bar C` (the gradient of the state leaving the chunk), from chunk-entry states saved by
the forward pass, and forms every gradient with products of ``[c, c]`` matrices; the
transitions' gradient :math:`\bar T_r = \langle C_r, \bar C_{r+1}\rangle` is expanded into
such products too, so it is exact at :math:`T_r = 0` (no division by :math:`T`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

#: Positions per chunk (a power of two, at least 16 for ``tl.dot``).
CHUNK = 32


@triton.jit
def _decays(T, BT: tl.constexpr):
    """``W`` ``[BT, BT]`` (:math:`\\prod_{r=s+1}^{i-1} T_r`, zero on and above the
    diagonal), ``p`` ``[BT]`` (:math:`\\prod_{r<i} T_r`), ``Wc`` ``[BT]``
    (:math:`\\prod_{r=s+1}^{BT-1} T_r`) and ``pc`` (the whole chunk's product)."""
    zero = T == 0
    log_abs = tl.where(zero, 0.0, tl.log(tl.abs(tl.where(zero, 1.0, T))))
    z = zero.to(tl.int32)
    neg = (T < 0).to(tl.int32)
    L_in = tl.cumsum(log_abs, axis=0)  # sum over r <= i
    Z_in = tl.cumsum(z, axis=0)
    G_in = tl.cumsum(neg, axis=0)
    L_ex, Z_ex, G_ex = L_in - log_abs, Z_in - z, G_in - neg  # sum over r < i
    rows = tl.arange(0, BT)
    below = rows[:, None] > rows[None, :]
    zeros_between = Z_ex[:, None] - Z_in[None, :]
    signs = 1.0 - 2.0 * ((G_ex[:, None] - G_in[None, :]) % 2).to(T.dtype)
    W = tl.where(below & (zeros_between == 0), tl.exp(tl.where(below, L_ex[:, None] - L_in[None, :], 0.0)) * signs, 0.0)
    p = tl.where(Z_ex == 0, tl.exp(L_ex) * (1.0 - 2.0 * (G_ex % 2).to(T.dtype)), 0.0)
    L_all = tl.sum(log_abs, axis=0)
    Z_all = tl.sum(z, axis=0)
    G_all = tl.sum(neg, axis=0)
    Wc = tl.where(Z_all - Z_in == 0, tl.exp(L_all - L_in) * (1.0 - 2.0 * ((G_all - G_in) % 2).to(T.dtype)), 0.0)
    pc = tl.where(Z_all == 0, tl.exp(L_all) * (1.0 - 2.0 * (G_all % 2).to(T.dtype)), 0.0)
    return W, p, Wc, pc


@triton.jit
def _load_chunk(q_ptr, k_ptr, v_ptr, S_ptr, T_ptr, M_ptr, D_ptr, base_qk, base_v, base_g, t0, L, H, dk, dv,
                BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    t = t0 + tl.arange(0, BT)
    mt = t < L
    kk = tl.arange(0, BK)
    vv = tl.arange(0, BV)
    mk = mt[:, None] & (kk[None, :] < dk)
    mv = mt[:, None] & (vv[None, :] < dv)
    Q = tl.load(q_ptr + base_qk + t[:, None] * H * dk + kk[None, :], mask=mk, other=0.0)
    K = tl.load(k_ptr + base_qk + t[:, None] * H * dk + kk[None, :], mask=mk, other=0.0)
    V = tl.load(v_ptr + base_v + t[:, None] * H * dv + vv[None, :], mask=mv, other=0.0)
    S = tl.load(S_ptr + base_g + t * H, mask=mt, other=0.0)
    T = tl.load(T_ptr + base_g + t * H, mask=mt, other=1.0)
    M = tl.load(M_ptr + base_g + t * H, mask=mt, other=0.0)
    D = tl.load(D_ptr + base_g + t * H, mask=mt, other=0.0)
    return Q, K, V, S, T, M, D, mt, mk, mv


@triton.jit
def _chunk_scan_fwd_kernel(
    q_ptr, k_ptr, v_ptr, S_ptr, T_ptr, M_ptr, D_ptr, h_ptr, saved_ptr,
    L, H, dk, dv, num_chunks,
    SAVE: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
):
    pid = tl.program_id(0)  # batch * H + head
    b = pid // H
    head = pid % H
    base_qk = b * L * H * dk + head * dk
    base_v = b * L * H * dv + head * dv
    base_g = b * L * H + head
    kk = tl.arange(0, BK)
    vv = tl.arange(0, BV)
    kv = kk[:, None] * BV + vv[None, :]
    rows = tl.arange(0, BT)
    C = tl.zeros([BK, BV], dtype=q_ptr.dtype.element_ty)
    for c in range(num_chunks):
        if SAVE:
            tl.store(saved_ptr + (pid * num_chunks + c) * BK * BV + kv, C)
        t0 = c * BT
        Q, K, V, S, T, M, D, mt, mk, mv = _load_chunk(
            q_ptr, k_ptr, v_ptr, S_ptr, T_ptr, M_ptr, D_ptr, base_qk, base_v, base_g, t0, L, H, dk, dv, BT, BK, BV)
        W, p, Wc, pc = _decays(T, BT)
        QK = tl.dot(Q, tl.trans(K))
        A = QK * W * (M[:, None] * S[None, :])
        A += tl.where(rows[:, None] == rows[None, :], (D * tl.sum(Q * K, axis=1))[:, None], 0.0)
        out = tl.dot(A, V) + (M * p)[:, None] * tl.dot(Q, C)
        t = t0 + rows
        tl.store(h_ptr + base_v + t[:, None] * H * dv + vv[None, :], out, mask=mv)
        C = pc * C + tl.dot(tl.trans(K * (Wc * S)[:, None]), V)


@triton.jit
def _chunk_scan_bwd_kernel(
    q_ptr, k_ptr, v_ptr, S_ptr, T_ptr, M_ptr, D_ptr, saved_ptr, dh_ptr,
    dq_ptr, dk_ptr, dv_ptr, dS_ptr, dT_ptr, dM_ptr, dD_ptr,
    L, H, dk, dv, num_chunks,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
):
    pid = tl.program_id(0)
    b = pid // H
    head = pid % H
    base_qk = b * L * H * dk + head * dk
    base_v = b * L * H * dv + head * dv
    base_g = b * L * H + head
    kk = tl.arange(0, BK)
    vv = tl.arange(0, BV)
    kv = kk[:, None] * BV + vv[None, :]
    rows = tl.arange(0, BT)
    dC = tl.zeros([BK, BV], dtype=q_ptr.dtype.element_ty)  # gradient of the state leaving the chunk
    for cc in range(num_chunks):
        c = num_chunks - 1 - cc
        t0 = c * BT
        t = t0 + rows
        Q, K, V, S, T, M, D, mt, mk, mv = _load_chunk(
            q_ptr, k_ptr, v_ptr, S_ptr, T_ptr, M_ptr, D_ptr, base_qk, base_v, base_g, t0, L, H, dk, dv, BT, BK, BV)
        dH = tl.load(dh_ptr + base_v + t[:, None] * H * dv + vv[None, :], mask=mv, other=0.0)
        C0 = tl.load(saved_ptr + (pid * num_chunks + c) * BK * BV + kv)
        W, p, Wc, pc = _decays(T, BT)
        QK = tl.dot(Q, tl.trans(K))
        dHV = tl.dot(dH, tl.trans(V))  # [i, s] = dh_i . v_s
        E = QK * dHV
        MS = M[:, None] * S[None, :]
        WS = W * S[None, :]
        WM = W * M[:, None]
        qk_diag = tl.sum(Q * K, axis=1)
        dhv_diag = tl.sum(dH * V, axis=1)
        WcS = Wc * S
        KdC = tl.dot(K, dC)  # [BT, BV]: k_s^T dC
        QC0 = tl.dot(Q, C0)  # [BT, BV]: q_i^T C0
        kdv = tl.sum(KdC * V, axis=1)  # k_s^T dC v_s
        qcd = tl.sum(QC0 * dH, axis=1)  # q_i^T C0 dh_i

        dV = tl.dot(tl.trans(QK * W * MS), dH) + (D * qk_diag)[:, None] * dH + WcS[:, None] * KdC
        G = dHV * W * MS
        dQ = tl.dot(G, K) + (D * dhv_diag)[:, None] * K + (M * p)[:, None] * tl.dot(dH, tl.trans(C0))
        dK = tl.dot(tl.trans(G), Q) + (D * dhv_diag)[:, None] * Q + WcS[:, None] * tl.dot(V, tl.trans(dC))
        dD = qk_diag * dhv_diag
        dM = tl.sum(E * WS, axis=1) + p * qcd
        dS = tl.sum(E * WM, axis=0) + Wc * kdv
        # dT_r = <C_r, dC_{r+1}> expanded over the chunk's sources and readers
        dT = tl.sum(WM * tl.dot(E, tl.trans(WS)), axis=0)
        dT += Wc * tl.sum(WS * kdv[None, :], axis=1)
        dT += p * tl.sum(WM * qcd[:, None], axis=0)
        dT += p * Wc * tl.sum(tl.sum(C0 * dC, axis=1), axis=0)

        tl.store(dq_ptr + base_qk + t[:, None] * H * dk + kk[None, :], dQ, mask=mk)
        tl.store(dk_ptr + base_qk + t[:, None] * H * dk + kk[None, :], dK, mask=mk)
        tl.store(dv_ptr + base_v + t[:, None] * H * dv + vv[None, :], dV, mask=mv)
        tl.store(dS_ptr + base_g + t * H, dS, mask=mt)
        tl.store(dT_ptr + base_g + t * H, dT, mask=mt)
        tl.store(dM_ptr + base_g + t * H, dM, mask=mt)
        tl.store(dD_ptr + base_g + t * H, dD, mask=mt)
        dC = tl.dot(tl.trans(Q * (M * p)[:, None]), dH) + pc * dC


def _block(x: int) -> int:
    return max(16, triton.next_power_of_2(x))


class ChunkScanTriton(torch.autograd.Function):
    r"""``q, k`` ``[B, L, H, dk]``, ``v`` ``[B, L, H, dv]``, gates ``S, T, M, D`` ``[B, L, H]``
    (per node, zero where an edge does not exist); returns ``h`` ``[B, L, H, dv]``."""

    @staticmethod
    def forward(ctx, q, k, v, S, T, M, D, chunk: int):  # noqa: D102
        q, k, v, S, T, M, D = (x.contiguous() for x in (q, k, v, S, T, M, D))
        B, L, H, dk = q.shape
        dv = v.shape[-1]
        BK, BV = _block(dk), _block(dv)
        num_chunks = -(-L // chunk)
        save = any(ctx.needs_input_grad[:7])
        h = torch.empty_like(v)
        saved = q.new_empty(B * H * num_chunks * BK * BV) if save else q.new_empty(1)
        if B * H and L:
            _chunk_scan_fwd_kernel[(B * H,)](
                q, k, v, S, T, M, D, h, saved, L, H, dk, dv, num_chunks,
                SAVE=save, BT=chunk, BK=BK, BV=BV,
            )
        if save:
            ctx.save_for_backward(q, k, v, S, T, M, D, saved)
            ctx.chunk = chunk
        return h

    @staticmethod
    def backward(ctx, grad_h):  # noqa: D102
        q, k, v, S, T, M, D, saved = ctx.saved_tensors
        B, L, H, dk = q.shape
        dv = v.shape[-1]
        grads = [torch.empty_like(x) for x in (q, k, v, S, T, M, D)]
        if B * H and L:
            _chunk_scan_bwd_kernel[(B * H,)](
                q, k, v, S, T, M, D, saved, grad_h.contiguous(), *grads, L, H, dk, dv, -(-L // ctx.chunk),
                BT=ctx.chunk, BK=_block(dk), BV=_block(dv),
            )
        return (*grads, None)


def chunk_scan_triton(
    q: Tensor, k: Tensor, v: Tensor, S: Tensor, T: Tensor, M: Tensor, D: Tensor, chunk: int = CHUNK
) -> Tensor:
    """The chunkwise path scan on the Triton kernels: the arguments of the PyTorch chunked
    form (``everygraph.sequence.plstm.lattice.chunked_scan_1d``) without boundary states."""
    if chunk < 16 or chunk & (chunk - 1):
        raise ValueError(f"chunk must be a power of two >= 16 (tl.dot tiles), got {chunk}")
    if q.dtype in (torch.float16, torch.bfloat16):  # the decays' log/exp and the state in float32
        h = ChunkScanTriton.apply(*(x.float() for x in (q, k, v, S, T, M, D)), chunk)
        return h.to(q.dtype)
    return ChunkScanTriton.apply(q, k, v, S, T, M, D, chunk)


def plstm_path_triton(
    lattice, q: Tensor, k: Tensor, v: Tensor, source: Tensor, transition: Tensor, mark: Tensor, direct: Tensor
) -> Tensor:
    """pLSTM on a lattice that is a path (1D, or ``1 x W`` / ``H x 1``), flat layout of
    :func:`~everygraph.sequence.plstm_scan` (``q`` already scaled), without boundary states:
    the gates are gathered into path order, scanned by :class:`ChunkScanTriton`, and the
    outputs gathered back to node order. Returns ``h`` ``[B, N, H, dv]``."""
    from ..plstm.layout import lattice_layout, take

    layout = lattice_layout(lattice, q.device)
    axis = next((a for a, size in enumerate(lattice.shape) if size > 1), 0)
    node = layout.node
    S = take(source, layout.out_edge[:, axis])
    M = take(mark, layout.in_edge[:, axis])
    T = take(transition, layout.line[:, axis, axis])
    h = chunk_scan_triton(q[:, node], k[:, node], v[:, node], S, T, M, direct[:, node])
    return h[:, layout.position]
