"""The lattice execution: dense fast paths for 1D (chunkwise) and 2D (anti-diagonal) grids.

Both work in the lattice's canonical orientation (flipped axes reversed, see
:class:`~everygraph.sequence.plstm.layout.LatticeLayout`): gates are gathered from the flat
layout into dense per-node tensors (zero where an edge does not exist, which switches the
boundary off without special cases), and outputs are gathered back to node order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...graphlib import Lattice
from .layout import lattice_layout, take

CHUNK_SIZE = 64


def plstm_lattice(
    lattice: Lattice,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    initial_state: Tensor | None,
    return_state: bool,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[Tensor, Tensor | None]:
    """The recurrence of :func:`~everygraph.sequence.plstm.plstm_scan` on a 1D or 2D lattice."""
    layout = lattice_layout(lattice, q.device)
    node = layout.node
    S = take(source, layout.out_edge)  # [B, N, ndim, H]
    M = take(mark, layout.in_edge)
    T = take(transition, layout.line)  # [B, N, ndim(out), ndim(in), H]
    qc, kc, vc, Dc = q[:, node], k[:, node], v[:, node], direct[:, node]
    C0 = initial_state[:, node] if initial_state is not None else None
    shape = lattice.shape
    if len(shape) == 2 and 1 in shape:
        axis = 1 if shape[0] == 1 else 0  # a 1xW or Hx1 grid is a path along the other axis
        S, M, T, shape = S[:, :, axis], M[:, :, axis], T[:, :, axis, axis], (lattice.num_nodes,)
    elif len(shape) == 1:
        S, M, T = S[:, :, 0], M[:, :, 0], T[:, :, 0, 0]
    if len(shape) == 1:
        h, final = chunked_scan_1d(qc, kc, vc, S, T, M, Dc, C0, return_state, chunk_size)
    else:
        h, final = diagonal_scan_2d(shape, qc, kc, vc, S, T, M, Dc, C0, return_state)
    h = h[:, layout.position]
    return h, (final[:, layout.position] if final is not None else None)


def chunked_scan_1d(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    S: Tensor,
    T: Tensor,
    M: Tensor,
    D: Tensor,
    C0: Tensor | None,
    return_state: bool,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[Tensor, Tensor | None]:
    r"""Chunkwise-parallel 1D scan. ``q, k`` ``[B, L, H, dk]``, ``v`` ``[B, L, H, dv]``,
    gates ``[B, L, H]``: ``S[t]`` for edge ``t -> t+1``, ``T[t]`` through node ``t``,
    ``M[t]`` for edge ``t-1 -> t`` (zero where the edge does not exist).

    Inside a chunk of ``c`` steps the decay from step ``s`` to step ``i`` is
    :math:`W_{i s} = \prod_{r=s}^{i-1} T_r`, built as a cumulative *product* down the
    columns of a ``(c+1) x (c+1)`` matrix (row ``c`` = the state leaving the chunk, column 0
    = the state entering it). Products, not differences of cumulative logs: transitions may
    be negative or exactly zero, and ``cumprod``'s gradient is exact at zeros. Within a
    chunk this is masked linear attention; between chunks a short loop carries the state.
    """
    B, L, H, dk = q.shape
    dv = v.shape[-1]
    c = max(1, min(chunk_size, L))
    n = -(-L // c)
    pad = n * c - L

    def chunks(x: Tensor) -> Tensor:  # [B, L, H, *F] -> [B, H, n, c, *F]
        if pad:
            x = torch.cat([x, x.new_zeros(B, pad, *x.shape[2:])], dim=1)
        x = x.reshape(B, n, c, *x.shape[2:])
        return x.movedim(3, 1)

    q, k, v, S, T, M, D = (chunks(x) for x in (q, k, v, S, T, M, D))
    C0 = chunks(C0) if C0 is not None else None
    rows = torch.arange(c + 1, device=q.device)
    below = rows[:, None] > rows[None, :]  # i > s: the product reaches T_{i-1}
    T_row = torch.cat([torch.ones_like(T[..., :1]), T], dim=-1)  # T_row[i] = T[i - 1]
    W = torch.cumprod(torch.where(below, T_row[..., :, None], torch.ones_like(T_row[..., :, None])), dim=-2)
    W = W * (rows[:, None] >= rows[None, :]).to(W.dtype)
    W_carry, W_src = W[..., :c, 0], W[..., :c, 1:]  # [.., c], [.., c, c] (strictly lower)
    out_carry, out_src = W[..., c, 0], W[..., c, 1:]  # decay over the whole chunk; per step

    scores = torch.einsum("bhnid,bhnsd->bhnis", q, k)
    attention = scores * (M[..., :, None] * W_src * S[..., None, :])
    attention = attention + torch.diag_embed(D * scores.diagonal(dim1=-2, dim2=-1))
    h = attention @ v

    local = torch.einsum("bhnsd,bhnsv->bhndv", k * (out_src * S)[..., None], v)  # state a chunk emits
    if C0 is not None:
        local = local + torch.einsum("bhns,bhnsdv->bhndv", out_src, C0)
    carried = [local.new_zeros(B, H, dk, dv)]
    # unbind, not indexing per step: each indexed step's backward would zero a full-size grad
    for decay, emitted in zip(out_carry.unbind(2)[: n - 1], local.unbind(2)):
        carried.append(decay[..., None, None] * carried[-1] + emitted)
    carried = torch.stack(carried, dim=2)  # [B, H, n, dk, dv], state entering each chunk
    h = h + torch.einsum("bhnid,bhndv->bhniv", q * (M * W_carry)[..., None], carried)
    if C0 is not None:
        h = h + torch.einsum("bhnid,bhnidv->bhniv", q, C0)
        h = h + torch.einsum("bhnid,bhnidv->bhniv", q, torch.einsum("bhnis,bhnsdv->bhnidv", M[..., None] * W_src, C0))
    final = None
    if return_state:
        # the in-edge state of every step, plus its own k v^T and injected state
        incoming = torch.einsum("bhni,bhndv->bhnidv", W_carry, carried)
        incoming = incoming + torch.einsum("bhnis,bhnsd,bhnsv->bhnidv", W_src * S[..., None, :], k, v)
        final = incoming + k[..., :, None] * v[..., None, :]
        if C0 is not None:
            final = final + C0 + torch.einsum("bhnis,bhnsdv->bhnidv", W_src, C0)
        final = final.movedim(1, 3).reshape(B, n * c, H, dk, dv)[:, :L]
    h = h.movedim(1, 3).reshape(B, n * c, H, dv)[:, :L]
    return h, final


def diagonal_scan_2d(
    shape: tuple[int, int],
    q: Tensor,
    k: Tensor,
    v: Tensor,
    S: Tensor,
    T: Tensor,
    M: Tensor,
    D: Tensor,
    C0: Tensor | None,
    return_state: bool,
) -> tuple[Tensor, Tensor | None]:
    """2D scan, one batched step per anti-diagonal ``x + y = d``.

    Inputs in canonical row-major order: ``q, k`` ``[B, N, H, dk]``, ``v`` ``[B, N, H, dv]``,
    ``S``/``M`` ``[B, N, 2, H]`` (per axis), ``T`` ``[B, N, 2(out), 2(in), H]``, ``D``
    ``[B, N, H]``. The grid is stored skewed, ``[diagonal, row]``, over the shorter side,
    so node ``(x, d - x)`` reads its in-edge along axis 1 from the same row of diagonal
    ``d - 1`` and along axis 0 from the row above: a shift.
    """
    X, Y = shape
    B, N, H, dk = q.shape
    dv = v.shape[-1]
    device = q.device
    transpose = X > Y
    grid = torch.arange(N, device=device).view(X, Y)
    if transpose:  # rows of the skewed layout run over the shorter side
        grid, X, Y = grid.t(), Y, X
        S, M, T = S.flip(2), M.flip(2), T.flip(2).flip(3)
    num_diagonals = X + Y - 1
    d = torch.arange(num_diagonals, device=device)[:, None]
    x = torch.arange(X, device=device)[None, :]
    y = d - x
    valid = (y >= 0) & (y < Y)
    skew = torch.where(valid, grid[x, y.clamp(0, Y - 1)], torch.full_like(y, N))  # [num_diagonals, X]

    q, k, v, S, M, T, D = (take(t, skew) for t in (q, k, v, S, M, T, D))  # [B, d, X, ...]
    K = dk * dv
    S, M = S.transpose(-1, -2), M.transpose(-1, -2)  # [B, d, X, H, 2]
    T = T.permute(0, 1, 2, 5, 3, 4)  # [B, d, X, H, 2(out), 2(in)]
    kv = (k[..., :, None] * v[..., None, :]).reshape(B, num_diagonals, X, H, K)
    injected = None
    if C0 is not None:
        C0 = take(C0, skew).reshape(B, num_diagonals, X, H, K)
        exists = _out_edge_exists(X, Y, valid)  # the injected state enters real out-edges only
        injected = (C0[..., None, :] * exists[None, :, :, None, :, None].to(C0.dtype)).movedim(1, 0).contiguous()
    rows = [(max(0, step - Y + 1), min(step, X - 1)) for step in range(num_diagonals)]
    # [B, d, X, H, 2(in), K]: the states on the in-edges of every node, by diagonal
    incoming = DiagonalRecurrence.apply(
        T.movedim(1, 0).contiguous(), S.movedim(1, 0).contiguous(), kv.movedim(1, 0).contiguous(), injected, rows
    )
    incoming = incoming.movedim(0, 1)
    # elementwise, not matmul: a batch of 10^4 products of 1x2 or 1xdk matrices is slow on CPU
    read = (M[..., 0, None] * incoming[..., 0, :]).addcmul_(M[..., 1, None], incoming[..., 1, :])
    h = (q[..., :, None] * read.view(B, num_diagonals, X, H, dk, dv)).sum(-2)
    h = h + D[..., None] * (q * k).sum(-1, keepdim=True) * v
    if C0 is not None:
        h = h + (q[..., :, None] * C0.view(B, num_diagonals, X, H, dk, dv)).sum(-2)
    # back from skewed to canonical order: each node's (diagonal, row) slot
    slot = torch.empty(N, dtype=torch.long, device=device)
    flat_valid = valid.reshape(-1)
    slot[skew.reshape(-1)[flat_valid]] = torch.arange(num_diagonals * X, device=device)[flat_valid]
    h = h.reshape(B, num_diagonals * X, H, dv)[:, slot]
    final = None
    if return_state:
        final = incoming.sum(4) + kv
        if C0 is not None:
            final = final + C0
        final = final.reshape(B, num_diagonals * X, H, dk, dv)[:, slot]
    return h, final


def _out_edge_exists(X: int, Y: int, valid: Tensor) -> Tensor:
    """``[d, X, 2]``: whether the node in each skewed slot has an out-edge along each axis."""
    device = valid.device
    d = torch.arange(X + Y - 1, device=device)[:, None]
    x = torch.arange(X, device=device)[None, :]
    y = d - x
    return torch.stack([valid & (x < X - 1), valid & (y < Y - 1)], dim=-1)


class DiagonalRecurrence(torch.autograd.Function):
    r"""The linear recurrence between anti-diagonals, with a hand-written adjoint.

    ``transition`` ``[d, B, X, H, 2(out), 2(in)]``, ``source`` ``[d, B, X, H, 2]``, ``kv``
    ``[d, B, X, H, K]`` (``K = dk * dv``), ``injected`` ``[d, B, X, H, 2, K]`` or None (extra
    state entering each out-edge), ``rows``: per diagonal the first and last row holding a
    node. Returns ``incoming`` ``[d, B, X, H, 2, K]``: :math:`I_0 = 0`,
    :math:`O_d = T_d I_d + S_d \otimes kv_d (+ \text{injected}_d)` (a batch of 2x2 matrix
    products), and :math:`I_{d+1}` takes the axis-1 state of :math:`O_d` from the same row
    and the axis-0 state from the row above.

    The source terms are formed per step, never as one ``[d, B, X, H, 2, K]`` tensor. The
    backward runs the transposed recurrence from the last diagonal to the first:
    :math:`\bar O_d = \mathrm{shift}^\top \bar I_{d+1}`, :math:`\bar I_d \mathrel{+}=
    T_d^\top \bar O_d`, then in one batch :math:`\bar T = \bar O I^\top`,
    :math:`\bar S = \bar O\, kv`, :math:`\bar{kv} = S^\top \bar O`, without autograd's
    per-step graph. Checked with ``gradcheck``.
    """

    @staticmethod
    def forward(ctx, transition: Tensor, source: Tensor, kv: Tensor, injected: Tensor | None, rows: list[tuple[int, int]]) -> Tensor:
        D, B, X, H, K = kv.shape
        incoming = kv.new_zeros(D, B, X, H, 2, K)
        buffer = kv.new_empty(B, X, H, 2, K)  # one step's output, reused: no allocation per step
        for d in range(D - 1):
            lo, hi = rows[d]
            out = _apply_2x2(transition[d, :, lo:hi + 1], incoming[d, :, lo:hi + 1], buffer[:, : hi + 1 - lo])
            out.addcmul_(source[d, :, lo:hi + 1, :, :, None], kv[d, :, lo:hi + 1, :, None, :])
            if injected is not None:
                out += injected[d, :, lo:hi + 1]
            below = min(hi + 1, X - 1) - lo  # rows whose axis-0 state lands inside the grid
            incoming[d + 1, :, lo + 1:lo + 1 + below, :, 0] = out[:, :below, :, 0]
            incoming[d + 1, :, lo:hi + 1, :, 1] = out[:, :, :, 1]
        ctx.save_for_backward(transition, source, kv, incoming)
        ctx.rows, ctx.has_injected = rows, injected is not None
        return incoming

    @staticmethod
    def backward(ctx, grad_incoming: Tensor):
        transition, source, kv, incoming = ctx.saved_tensors
        X = incoming.shape[2]
        D, B, _, H, K = kv.shape
        # per step, while the step's tensors are in cache: one pass over memory, not four
        grad_out = incoming.new_zeros(D, B, X, H, 2, K) if ctx.has_injected else None
        grad_transition = torch.zeros_like(transition)
        grad_source = torch.zeros_like(source)
        grad_kv = torch.zeros_like(kv)
        grad = grad_incoming[-1].clone()
        step_grad = incoming.new_zeros(B, X, H, 2, K)
        buffer = torch.empty_like(step_grad)
        pair = incoming.new_empty(B, X, H, 2, 2, K)
        for d in range(D - 2, -1, -1):
            lo, hi = ctx.rows[d]
            r = hi + 1 - lo
            below = min(hi + 1, X - 1) - lo
            g = step_grad[:, :r]
            g.zero_()
            g[:, :below, :, 0] = grad[:, lo + 1:lo + 1 + below, :, 0]
            g[:, :, :, 1] = grad[:, lo:hi + 1, :, 1]
            if grad_out is not None:
                grad_out[d, :, lo:hi + 1] = g
            torch.mul(g[..., :, None, :], incoming[d, :, lo:hi + 1, :, None, :, :], out=pair[:, :r])
            torch.sum(pair[:, :r], dim=-1, out=grad_transition[d, :, lo:hi + 1])
            s_row, kv_row = source[d, :, lo:hi + 1], kv[d, :, lo:hi + 1]
            torch.mul(g, kv_row[..., None, :], out=buffer[:, :r])
            torch.sum(buffer[:, :r], dim=-1, out=grad_source[d, :, lo:hi + 1])
            torch.mul(s_row[..., 0, None], g[..., 0, :], out=grad_kv[d, :, lo:hi + 1])
            grad_kv[d, :, lo:hi + 1].addcmul_(s_row[..., 1, None], g[..., 1, :])
            grad.copy_(grad_incoming[d])
            grad[:, lo:hi + 1] += _apply_2x2(transition[d, :, lo:hi + 1].transpose(-1, -2), g, buffer[:, :r])
        return grad_transition, grad_source, grad_kv, grad_out, None


def _apply_2x2(matrix: Tensor, states: Tensor, out: Tensor) -> Tensor:
    """``matrix @ states`` for ``[..., 2, 2]`` by ``[..., 2, K]`` into ``out``, as two broadcast
    multiply-adds (a batched matmul of 2x2 matrices is slow on CPU)."""
    torch.mul(matrix[..., :, 0, None], states[..., 0, None, :], out=out)
    return out.addcmul_(matrix[..., :, 1, None], states[..., 1, None, :])
