r"""The chunkwise 1D execution without boundary states: matrix products only, with a
hand-written backward.

A path of ``L`` steps is cut into chunks of ``c``. Per chunk, one *segment product matrix*
:math:`W_{is} = \prod_{r=s}^{i-1} T_r` (``(c+1) x (c+1)``, lower triangular, row ``c`` = the
state leaving the chunk, column 0 = the state entering it) gives every gate of the chunk at
once, :math:`\mathcal{G}_{is} = \tilde M_i W_{is} \tilde S_s` with :math:`\tilde M = (M, 1)`
and :math:`\tilde S = (1, S)`:

* ``G[i, s] = 𝒢[i, s + 1]`` (``i, s < c``): the in-chunk decay mask, so the in-chunk output
  is masked linear attention :math:`((\tilde Q K^\top) \circ G + \mathrm{diag}(D\, \tilde q
  \cdot k)) V`;
* ``a = 𝒢[:c, 0]``: how each step reads the state entering the chunk;
* ``f = 𝒢[c, 1:]``: how each step's :math:`k v^\top` reaches the state leaving it;
* ``w = 𝒢[c, 0]``: the chunk's total decay, :math:`C_{j+1} = w_j C_j + (f \circ K)^\top V`.

Products, not differences of cumulative logarithms: transitions may be negative or exactly
zero. The backward runs the same products transposed; the gradient of ``T`` from that of
``W`` is exact at zeros (no division): :math:`\bar T_r = \sum_{i > r \ge s} \bar W_{is}
W_{rs} W_{i,r+1} = \sum_i W_{i,r+1} (\bar W W^\top)_{ir}`. The only loop is the one over
chunks carrying the ``dk x dv`` state (one fused multiply-add per chunk).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: chunk length: the in-chunk products cost ``~4 c`` per step and element of ``dk``, the
#: carried state ``~2 dk dv / c`` plus one Python step per chunk (measured with
#: ``benchmarks/plstm.py``: 32 and 64 within noise of each other at dk = dv = 16)
CHUNK_SIZE = 32


def chunked_scan_1d_stateless(
    q: Tensor, k: Tensor, v: Tensor, S: Tensor, T: Tensor, M: Tensor, D: Tensor, chunk_size: int = CHUNK_SIZE
) -> Tensor:
    r"""pLSTM on a path without boundary states, chunkwise (see the module docstring).

    Args:
        q, k: ``[B, L, H, dk]`` (``q`` already scaled); v: ``[B, L, H, dv]``.
        S, T, M, D: ``[B, L, H]``: ``S[t]`` for the edge ``t -> t+1``, ``T[t]`` through step
            ``t``, ``M[t]`` for the edge ``t-1 -> t`` (zero where the edge does not exist),
            ``D[t]`` the direct term.
        chunk_size: steps per chunk (clipped to ``L``).

    Returns:
        ``h`` ``[B, L, H, dv]``.
    """
    B, L, H, dk = q.shape
    dv = v.shape[-1]
    c = max(1, min(int(chunk_size), L))
    n = -(-L // c)
    pad = n * c - L

    def chunks(x: Tensor) -> Tensor:  # [B, L, H, *F] -> [B * H, n, c, *F], zero padded at the end
        x = x.movedim(2, 1)
        if pad:
            x = torch.nn.functional.pad(x, [0, 0] * (x.dim() - 3) + [0, pad])
        return x.reshape(B * H, n, c, *x.shape[3:]).contiguous()

    h = _Chunked1d.apply(*(chunks(x) for x in (q, k, v, S, T, M, D)))  # [B * H, n, c, dv]
    return h.reshape(B, H, n * c, dv)[:, :, :L].movedim(1, 2)


def segment_products(T: Tensor) -> Tensor:
    """``W[..., i, s] = prod(T[..., s:i])`` for ``0 <= s <= i <= c`` (1 on the diagonal, 0 above):
    ``T`` ``[..., c]`` -> ``[..., c + 1, c + 1]``, a cumulative product down the columns."""
    c = T.shape[-1]
    rows = torch.arange(c + 1, device=T.device)
    below = rows[:, None] > rows[None, :]
    T_row = torch.cat([T.new_ones(*T.shape[:-1], 1), T], dim=-1)  # T_row[i] = T[i - 1]
    W = torch.where(below, T_row[..., :, None], T.new_ones(()))
    W = W.cumprod(dim=-2)
    return W.tril_()


class _Chunked1d(torch.autograd.Function):
    """Inputs chunked: ``q, k`` ``[Z, n, c, dk]``, ``v`` ``[Z, n, c, dv]``, gates ``[Z, n, c]``
    (``Z = B * H``). Output ``h`` ``[Z, n, c, dv]``."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, S: Tensor, T: Tensor, M: Tensor, D: Tensor) -> Tensor:
        Z, n, c, dk = q.shape
        dv = v.shape[-1]
        W = segment_products(T)  # [Z, n, c+1, c+1]
        Mt, St = _extended(M, S)
        gates = (W * Mt[..., :, None]).mul_(St[..., None, :])
        scores = q @ k.transpose(-1, -2)  # [Z, n, c, c]
        A = scores * gates[..., :c, 1:]  # strictly lower: gates[i, i + 1] = 0
        A.diagonal(dim1=-2, dim2=-1).copy_(D * scores.diagonal(dim1=-2, dim2=-1))
        h = A @ v
        a, f, w = gates[..., :c, 0], gates[..., c, 1:], gates[..., c, 0]
        emitted = (k * f[..., None]).transpose(-1, -2) @ v  # [Z, n, dk, dv]
        carried = _carry(emitted, w)
        h.view(Z * n, c, dv).baddbmm_((q * a[..., None]).view(Z * n, c, dk), carried.view(Z * n, dk, dv))
        ctx.save_for_backward(q, k, v, S, M, D, W, gates, scores, A, carried)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        q, k, v, S, M, D, W, gates, scores, A, carried = ctx.saved_tensors
        Z, n, c, dk = q.shape
        dv = v.shape[-1]
        grad_h = grad_h.contiguous()
        a, f, w = gates[..., :c, 0], gates[..., c, 1:], gates[..., c, 0]
        flat = lambda x: x.reshape(Z * n, *x.shape[2:])  # noqa: E731
        # the state entering each chunk, read through a
        grad_qa = grad_h @ carried.transpose(-1, -2)  # [Z, n, c, dk]
        grad_q = grad_qa * a[..., None]
        grad_a = (grad_qa * q).sum(-1)
        grad_carried = (q * a[..., None]).transpose(-1, -2) @ grad_h  # [Z, n, dk, dv], then summed backwards
        for j in range(n - 2, -1, -1):
            grad_carried[:, j].addcmul_(grad_carried[:, j + 1], w[:, j, None, None])
        grad_emitted = torch.cat([grad_carried[:, 1:], grad_carried.new_zeros(Z, 1, dk, dv)], dim=1)
        grad_w = torch.cat([(grad_carried[:, 1:] * carried[:, :-1]).sum((-1, -2)), w.new_zeros(Z, 1)], dim=1)
        # emitted = (f k)^T v
        grad_kf = v @ grad_emitted.transpose(-1, -2)  # [Z, n, c, dk]
        grad_v = (k * f[..., None]) @ grad_emitted
        grad_k = grad_kf * f[..., None]
        grad_f = (grad_kf * k).sum(-1)
        # in-chunk attention
        grad_A = grad_h @ v.transpose(-1, -2)  # [Z, n, c, c]
        flat(grad_v).baddbmm_(flat(A).transpose(-1, -2), flat(grad_h))
        grad_diagonal = grad_A.diagonal(dim1=-2, dim2=-1)
        grad_D = grad_diagonal * scores.diagonal(dim1=-2, dim2=-1)
        grad_scores = grad_A * gates[..., :c, 1:]
        grad_scores.diagonal(dim1=-2, dim2=-1).copy_(grad_diagonal * D)
        flat(grad_q).baddbmm_(flat(grad_scores), flat(k))
        flat(grad_k).baddbmm_(flat(grad_scores).transpose(-1, -2), flat(q))
        # the gates: above the diagonal W is 0, so what lands there is multiplied away exactly
        grad_gates = torch.empty_like(gates)
        torch.mul(grad_A, scores, out=grad_gates[..., :c, 1:])
        grad_gates[..., :c, 0] = grad_a
        grad_gates[..., c, 1:] = grad_f
        grad_gates[..., c, 0] = grad_w
        Mt, St = _extended(M, S)
        grad_gates_W = grad_gates * W
        grad_Mt = (grad_gates_W @ St[..., :, None]).squeeze(-1)
        grad_St = (Mt[..., None, :] @ grad_gates_W).squeeze(-2)
        grad_W = grad_gates.mul_(Mt[..., :, None]).mul_(St[..., None, :])
        products = grad_W @ W.transpose(-1, -2)  # [..., i, r] = sum_s grad_W[i, s] W[r, s]
        grad_T = (W[..., :, 1:] * products[..., :, :c]).sum(-2)
        return grad_q, grad_k, grad_v, grad_St[..., 1:], grad_T, grad_Mt[..., :c], grad_D


def _extended(M: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    """``(M, 1)`` and ``(1, S)`` along the last axis: row ``c`` and column 0 of the gates."""
    one = M.new_ones(*M.shape[:-1], 1)
    return torch.cat([M, one], dim=-1), torch.cat([one, S], dim=-1)


def _carry(emitted: Tensor, decay: Tensor) -> Tensor:
    """The state entering each chunk, ``C_0 = 0``, ``C_{j+1} = w_j C_j + E_j``: ``emitted``
    ``[Z, n, dk, dv]``, ``decay`` ``[Z, n]`` -> ``[Z, n, dk, dv]``."""
    carried = torch.empty_like(emitted)
    carried[:, 0].zero_()
    for j in range(emitted.shape[1] - 1):
        torch.addcmul(emitted[:, j], carried[:, j], decay[:, j, None, None], out=carried[:, j + 1])
    return carried
