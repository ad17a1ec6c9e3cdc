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

from ._runtime import autotune_configs

#: Launch configurations tried once per shape on a GPU: one program per (batch, head) holds a
#: [dk, dv] state and [BT, BT] score tiles; tl.dot tiles of 16-64 favour 4-8 warps on Hopper.
_CHUNK_CONFIGS = autotune_configs(
    [triton.Config({}, num_warps=w, num_stages=s) for w in (4, 8, 2) for s in (2, 3, 1)]
)

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
def _head_offsets(pid, L, H, dk, dv):
    """Where program ``pid`` (batch * H + head) starts in ``[B, L, H, dk]``, ``[B, L, H, dv]``
    and ``[B, L, H]`` tensors."""
    b = pid // H
    head = pid % H
    return b * L * H * dk + head * dk, b * L * H * dv + head * dv, b * L * H + head


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


@triton.autotune(configs=_CHUNK_CONFIGS, key=["L", "dk", "dv"])
@triton.jit
def _chunk_scan_fwd_kernel(
    q_ptr, k_ptr, v_ptr, S_ptr, T_ptr, M_ptr, D_ptr, h_ptr, saved_ptr,
    L, H, dk, dv, num_chunks,
    SAVE: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
):
    pid = tl.program_id(0)  # batch * H + head
    base_qk, base_v, base_g = _head_offsets(pid, L, H, dk, dv)
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


@triton.autotune(configs=_CHUNK_CONFIGS, key=["L", "dk", "dv"])
@triton.jit
def _chunk_scan_bwd_kernel(
    q_ptr, k_ptr, v_ptr, S_ptr, T_ptr, M_ptr, D_ptr, saved_ptr, dh_ptr,
    dq_ptr, dk_ptr, dv_ptr, dS_ptr, dT_ptr, dM_ptr, dD_ptr,
    L, H, dk, dv, num_chunks,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
):
    pid = tl.program_id(0)  # batch * H + head
    base_qk, base_v, base_g = _head_offsets(pid, L, H, dk, dv)
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


def path_scan_triton(
    lattice, kind: str, q: Tensor, k: Tensor, v: Tensor, source: Tensor, transition: Tensor, mark: Tensor,
    direct: Tensor,
) -> Tensor:
    """The scan on a lattice that is a path (1D, or ``1 x W`` / ``H x 1``), flat layout of
    :func:`~everygraph.sequence.scan` (``q`` already scaled, scalar source and mark, no
    boundary states), ``kind`` ``"scalar"`` or ``"diagonal"`` (strictly positive
    transitions): the gates are gathered into path order, scanned by the chunk kernel, and the
    outputs gathered back to node order. Returns ``h`` ``[B, N, H, dv]``."""
    from ..plstm.layout import lattice_layout, take

    layout = lattice_layout(lattice, q.device)
    axis = next((a for a, size in enumerate(lattice.shape) if size > 1), 0)
    node = layout.node
    S = take(source, layout.out_edge[:, axis])
    M = take(mark, layout.in_edge[:, axis])
    line = layout.line[:, axis, axis]
    T = take(transition, line)  # zero where no line-graph edge passes (the path's two ends)
    qs, ks, vs, Ds = q[:, node], k[:, node], v[:, node], direct[:, node]
    if kind == "scalar":
        h = chunk_scan_triton(qs, ks, vs, S, T, M, Ds)
    else:  # at the ends the transition meets no state: any positive value will do
        T = torch.where((line == layout.num_lines)[None, :, None, None], torch.ones_like(T), T)
        h = chunk_scan_diagonal_triton(qs, ks, vs, T, S, M, Ds)
    return h[:, layout.position]


# --------------------------------------------------------------------------------------------
# Key-diagonal transitions (GLA, HGRN2): C_{t+1} = diag(alpha_t) C_t + S_t k_t v_t^T, alpha > 0.
#
# With g = log(alpha) and, inside a chunk, G_in = cumsum(g) (through t) and G_ex = G_in - g
# (before t), the decay from a source s to a reader i > s on key d is exp(G_ex[i,d] - G_in[s,d]).
# The intra-chunk scores sum_d q_id k_sd exp(G_ex[i,d] - G_in[s,d]) are formed as a
# [BT, BT, BK] broadcast (each exponent <= 0 when alpha <= 1: nothing overflows, unlike
# splitting exp(G_ex) exp(-G_in) across q and k); the readout of the entering state and the
# state passed on are tl.dot products. The gradient of g needs no kernel of its own: the decay
# g[r] carries every (source s < r, reader i > r) pair, so
#   dg[r] = sum_{i > r} q_i * dq_i  -  sum_{s >= r} k_s * dk_s     (per key, D terms excluded),
# two suffix sums over the whole sequence (exact, no division by alpha).
# --------------------------------------------------------------------------------------------

#: Positions per chunk of the key-diagonal kernel (the [BT, BT, dk] broadcast bounds it).
DIAGONAL_CHUNK = 16


@triton.jit
def _load_diag_chunk(q_ptr, k_ptr, v_ptr, g_ptr, S_ptr, M_ptr, D_ptr, base_qk, base_v, base_g, t0, L, H, dk, dv,
                     BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    t = t0 + tl.arange(0, BT)
    mt = t < L
    kk = tl.arange(0, BK)
    vv = tl.arange(0, BV)
    mk = mt[:, None] & (kk[None, :] < dk)
    mv = mt[:, None] & (vv[None, :] < dv)
    Q = tl.load(q_ptr + base_qk + t[:, None] * H * dk + kk[None, :], mask=mk, other=0.0)
    K = tl.load(k_ptr + base_qk + t[:, None] * H * dk + kk[None, :], mask=mk, other=0.0)
    G = tl.load(g_ptr + base_qk + t[:, None] * H * dk + kk[None, :], mask=mk, other=0.0)
    V = tl.load(v_ptr + base_v + t[:, None] * H * dv + vv[None, :], mask=mv, other=0.0)
    S = tl.load(S_ptr + base_g + t * H, mask=mt, other=0.0)
    M = tl.load(M_ptr + base_g + t * H, mask=mt, other=0.0)
    D = tl.load(D_ptr + base_g + t * H, mask=mt, other=0.0)
    return Q, K, G, V, S, M, D, mt, mk, mv


@triton.jit
def _diag_decays(G, BT: tl.constexpr):
    """``W3`` ``[BT, BT, BK]`` (decay from source s to reader i > s, per key), ``p``
    ``[BT, BK]`` (from the chunk's entry to each reader), ``Wc`` ``[BT, BK]`` (from each
    source to the chunk's exit), ``pc`` ``[BK]`` (through the whole chunk)."""
    G_in = tl.cumsum(G, axis=0)
    G_ex = G_in - G
    G_all = tl.sum(G, axis=0)
    rows = tl.arange(0, BT)
    below = (rows[:, None] > rows[None, :])[:, :, None]
    W3 = tl.where(below, tl.exp(tl.where(below, G_ex[:, None, :] - G_in[None, :, :], 0.0)), 0.0)
    return W3, tl.exp(G_ex), tl.exp(G_all[None, :] - G_in), tl.exp(G_all)


@triton.autotune(configs=_CHUNK_CONFIGS, key=["L", "dk", "dv"])
@triton.jit
def _chunk_diag_fwd_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, S_ptr, M_ptr, D_ptr, h_ptr, saved_ptr,
    L, H, dk, dv, num_chunks,
    SAVE: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
):
    pid = tl.program_id(0)  # batch * H + head
    base_qk, base_v, base_g = _head_offsets(pid, L, H, dk, dv)
    kk = tl.arange(0, BK)
    vv = tl.arange(0, BV)
    kv = kk[:, None] * BV + vv[None, :]
    rows = tl.arange(0, BT)
    C = tl.zeros([BK, BV], dtype=q_ptr.dtype.element_ty)
    for c in range(num_chunks):
        if SAVE:
            tl.store(saved_ptr + (pid * num_chunks + c) * BK * BV + kv, C)
        t0 = c * BT
        Q, K, G, V, S, M, D, mt, mk, mv = _load_diag_chunk(
            q_ptr, k_ptr, v_ptr, g_ptr, S_ptr, M_ptr, D_ptr, base_qk, base_v, base_g, t0, L, H, dk, dv, BT, BK, BV)
        W3, p, Wc, pc = _diag_decays(G, BT)
        A = tl.sum(Q[:, None, :] * K[None, :, :] * W3, axis=2) * (M[:, None] * S[None, :])
        A += tl.where(rows[:, None] == rows[None, :], (D * tl.sum(Q * K, axis=1))[:, None], 0.0)
        out = tl.dot(A, V) + M[:, None] * tl.dot(Q * p, C)
        t = t0 + rows
        tl.store(h_ptr + base_v + t[:, None] * H * dv + vv[None, :], out, mask=mv)
        C = pc[:, None] * C + tl.dot(tl.trans(K * Wc * S[:, None]), V)


@triton.autotune(configs=_CHUNK_CONFIGS, key=["L", "dk", "dv"])
@triton.jit
def _chunk_diag_bwd_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, S_ptr, M_ptr, D_ptr, saved_ptr, dh_ptr,
    dq_ptr, dk_ptr, dv_ptr, dS_ptr, dM_ptr, dD_ptr,
    L, H, dk, dv, num_chunks,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
):
    pid = tl.program_id(0)  # batch * H + head
    base_qk, base_v, base_g = _head_offsets(pid, L, H, dk, dv)
    kk = tl.arange(0, BK)
    vv = tl.arange(0, BV)
    kv = kk[:, None] * BV + vv[None, :]
    rows = tl.arange(0, BT)
    dC = tl.zeros([BK, BV], dtype=q_ptr.dtype.element_ty)
    for cc in range(num_chunks):
        c = num_chunks - 1 - cc
        t0 = c * BT
        t = t0 + rows
        Q, K, G, V, S, M, D, mt, mk, mv = _load_diag_chunk(
            q_ptr, k_ptr, v_ptr, g_ptr, S_ptr, M_ptr, D_ptr, base_qk, base_v, base_g, t0, L, H, dk, dv, BT, BK, BV)
        dH = tl.load(dh_ptr + base_v + t[:, None] * H * dv + vv[None, :], mask=mv, other=0.0)
        C0 = tl.load(saved_ptr + (pid * num_chunks + c) * BK * BV + kv)
        W3, p, Wc, pc = _diag_decays(G, BT)
        scores = tl.sum(Q[:, None, :] * K[None, :, :] * W3, axis=2)  # [i, s], decayed q_i . k_s
        MS = M[:, None] * S[None, :]
        dHV = tl.dot(dH, tl.trans(V))  # [i, s] = dh_i . v_s
        Gm = dHV * MS
        qk_diag = tl.sum(Q * K, axis=1)
        dhv_diag = tl.sum(dH * V, axis=1)
        dHC0 = tl.dot(dH, tl.trans(C0))  # [BT, BK]: C0 dh_i
        VdC = tl.dot(V, tl.trans(dC))  # [BT, BK]: dC v_s
        A = scores * MS + tl.where(rows[:, None] == rows[None, :], (D * qk_diag)[:, None], 0.0)
        dV = tl.dot(tl.trans(A), dH) + tl.dot(K * Wc * S[:, None], dC)
        dQ = tl.sum(Gm[:, :, None] * K[None, :, :] * W3, axis=1) + (D * dhv_diag)[:, None] * K + M[:, None] * p * dHC0
        dK = tl.sum(Gm[:, :, None] * Q[:, None, :] * W3, axis=0) + (D * dhv_diag)[:, None] * Q + S[:, None] * Wc * VdC
        dD = qk_diag * dhv_diag
        dM = tl.sum(scores * S[None, :] * dHV, axis=1) + tl.sum(Q * p * dHC0, axis=1)
        dS = tl.sum(scores * M[:, None] * dHV, axis=0) + tl.sum(K * Wc * VdC, axis=1)
        tl.store(dq_ptr + base_qk + t[:, None] * H * dk + kk[None, :], dQ, mask=mk)
        tl.store(dk_ptr + base_qk + t[:, None] * H * dk + kk[None, :], dK, mask=mk)
        tl.store(dv_ptr + base_v + t[:, None] * H * dv + vv[None, :], dV, mask=mv)
        tl.store(dS_ptr + base_g + t * H, dS, mask=mt)
        tl.store(dM_ptr + base_g + t * H, dM, mask=mt)
        tl.store(dD_ptr + base_g + t * H, dD, mask=mt)
        dC = tl.dot(tl.trans(Q * p * M[:, None]), dH) + pc[:, None] * dC


class ChunkScanDiagonalTriton(torch.autograd.Function):
    r"""``q, k`` ``[B, L, H, dk]``, ``v`` ``[B, L, H, dv]``, ``g`` ``[B, L, H, dk]`` (log of the
    key-diagonal transition through each node), ``S, M, D`` ``[B, L, H]``; returns ``h``."""

    @staticmethod
    def forward(ctx, q, k, v, g, S, M, D):  # noqa: D102
        q, k, v, g, S, M, D = (x.contiguous() for x in (q, k, v, g, S, M, D))
        B, L, H, dk = q.shape
        dv = v.shape[-1]
        BK, BV = _block(dk), _block(dv)
        num_chunks = -(-L // DIAGONAL_CHUNK)
        save = any(ctx.needs_input_grad)
        h = torch.empty_like(v)
        saved = q.new_empty(B * H * num_chunks * BK * BV) if save else q.new_empty(1)
        if B * H and L:
            _chunk_diag_fwd_kernel[(B * H,)](
                q, k, v, g, S, M, D, h, saved, L, H, dk, dv, num_chunks,
                SAVE=save, BT=DIAGONAL_CHUNK, BK=BK, BV=BV,
            )
        if save:
            ctx.save_for_backward(q, k, v, g, S, M, D, saved)
        return h

    @staticmethod
    def backward(ctx, grad_h):  # noqa: D102
        q, k, v, g, S, M, D, saved = ctx.saved_tensors
        B, L, H, dk = q.shape
        dv = v.shape[-1]
        dq, dk_, dv_ = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dS, dM, dD = torch.empty_like(S), torch.empty_like(M), torch.empty_like(D)
        grad_h = grad_h.contiguous()
        if B * H and L:
            _chunk_diag_bwd_kernel[(B * H,)](
                q, k, v, g, S, M, D, saved, grad_h, dq, dk_, dv_, dS, dM, dD, L, H, dk, dv,
                -(-L // DIAGONAL_CHUNK), BT=DIAGONAL_CHUNK, BK=_block(dk), BV=_block(dv),
            )
        direct = (D * (grad_h * v).sum(-1))[..., None]  # the D terms of dq and dk carry no decay
        reads = q * (dq - direct * k)  # per key: every source's contribution to each reader
        emits = k * (dk_ - direct * q)  # per key: each source's contribution to every reader
        suffix_reads = reads.flip(1).cumsum(1).flip(1) - reads  # readers after r
        suffix_emits = emits.flip(1).cumsum(1).flip(1)  # sources at or after r
        return dq, dk_, dv_, suffix_reads - suffix_emits, dS, dM, dD


def chunk_scan_diagonal_triton(q: Tensor, k: Tensor, v: Tensor, alpha: Tensor, S: Tensor, M: Tensor, D: Tensor) -> Tensor:
    """The chunkwise path scan with key-diagonal transitions ``alpha`` ``[B, L, H, dk]``
    (through each node, strictly positive: GLA's and HGRN2's gates are) on the Triton
    kernels; other arguments as :func:`chunk_scan_triton`."""
    half = q.dtype in (torch.float16, torch.bfloat16)
    args = [x.float() if half else x for x in (q, k, v, alpha, S, M, D)]
    args[3] = torch.log(args[3])
    h = ChunkScanDiagonalTriton.apply(*args)
    return h.to(q.dtype) if half else h
