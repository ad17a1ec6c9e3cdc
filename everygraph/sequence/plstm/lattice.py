"""The lattice execution: dense fast paths for 1D (chunkwise) and 2D (anti-diagonal) grids.

Both work in the lattice's canonical orientation (flipped axes reversed, see
:class:`~everygraph.sequence.plstm.layout.LatticeLayout`): gates are gathered from the flat
layout into dense per-node tensors (zero where an edge does not exist, which switches the
boundary off without special cases), and outputs are gathered back to node order.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor

from ...graphlib import Lattice
from ..transitions import Boundary
from . import chunked1d
from .chunked1d import chunked_scan_1d_stateless
from .layout import gather, lattice_layout, take

#: calls without boundary states run :mod:`~everygraph.sequence.plstm.chunked1d` (matrix products,
#: hand-written backward); False keeps them on :func:`chunked_scan_1d`'s autograd form (benchmarks)
STATELESS_1D = True
#: chunk length of the autograd form (boundary states): its products are elementwise on ``c x c``
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
    chunk_size: int | None = None,
    boundary: Boundary | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The recurrence of :func:`~everygraph.sequence.plstm.plstm_scan` on a 1D or 2D lattice
    (scalar transitions; ``boundary``: scalar gates of the virtual edges, None = unit;
    ``chunk_size``: of the 1D chunkwise form, default ``chunked1d.CHUNK_SIZE`` without boundary states, else ``CHUNK_SIZE``)."""
    storage = _storage(lattice.shape, lattice.flip)
    if storage.node.device != q.device:
        storage = storage._replace(**{f: getattr(storage, f).to(q.device) for f in StorageOrder._tensors})
    node = storage.node
    S = take(source, storage.out_edge)  # [B, N, ndim, H]
    M = take(mark, storage.in_edge)
    T = take(transition, storage.line)  # [B, N, ndim(out), ndim(in), H]
    qs, ks, vs, Ds = (gather(x, 1, node) for x in (q, k, v, direct))
    C0 = gather(initial_state, 1, node) if initial_state is not None else None
    gates = None
    if boundary is not None and (C0 is not None or return_state):
        gates = _dense_boundary(boundary, storage, lattice.num_edges, q)
    if storage.path_axis is not None:
        axis = storage.path_axis
        S, M, T = S[:, :, axis], M[:, :, axis], T[:, :, axis, axis]
        if gates is not None:
            gates = gates._replace(enter=gates.enter[:, :, axis], leave=gates.leave[:, :, axis])
        h, final = chunked_scan_1d(qs, ks, vs, S, T, M, Ds, C0, return_state, chunk_size, gates=gates)
    else:
        h, final = diagonal_scan_2d(storage, qs, ks, vs, S, T, M, Ds, C0, return_state, gates=gates)
    h = gather(h, 1, storage.inverse)
    return h, (gather(final, 1, storage.inverse) if final is not None else None)


def _dense_boundary(boundary: Boundary, storage: "StorageOrder", num_edges: int, like: Tensor) -> Boundary:
    """Boundary gates in storage order, all fields present: ``mark``, ``source``, ``through``
    ``[B, N, H]``; ``enter`` (per out-edge axis), ``leave`` (per in-edge axis) ``[B, N, ndim, H]``,
    zero where the edge does not exist."""
    B, _, H, _ = like.shape
    node = storage.node

    def per_node(t: Tensor | None) -> Tensor:
        return like.new_ones(B, node.numel(), H) if t is None else gather(t, 1, node)

    def per_edge(t: Tensor | None, index: Tensor) -> Tensor:
        t = like.new_ones(B, num_edges, H) if t is None else t
        return take(t, index)

    return Boundary(
        mark=per_node(boundary.mark), source=per_node(boundary.source), through=per_node(boundary.through),
        enter=per_edge(boundary.enter, storage.out_edge), leave=per_edge(boundary.leave, storage.in_edge),
    )


class StorageOrder(NamedTuple):
    """Where each stored node comes from: the flat ids gathered into the dense order of a
    scan (canonical row-major for a path, diagonal order for a grid), and back.

    ``node``, ``out_edge``, ``in_edge``, ``line``: the :class:`LatticeLayout` maps in storage
    order; ``inverse``: ``[N]`` storage slot of each node id; ``path_axis``: the axis along
    which the lattice is a path (1D, 1xW, Hx1), else None; ``diagonals``: the first and last
    row of each anti-diagonal; ``rows``, ``cols``: ``[N]`` canonical coordinates per slot.
    """

    node: Tensor
    out_edge: Tensor
    in_edge: Tensor
    line: Tensor
    inverse: Tensor
    rows: Tensor
    cols: Tensor
    path_axis: int | None
    diagonals: list

    _tensors = ("node", "out_edge", "in_edge", "line", "inverse", "rows", "cols")


@lru_cache(maxsize=64)
def _storage(shape: tuple[int, ...], flip: tuple[bool, ...]) -> StorageOrder:
    layout = lattice_layout(Lattice(shape, flip))
    path_axis, diagonals = None, []
    if len(shape) == 1:
        path_axis = 0
    elif 1 in shape:  # a 1xW or Hx1 grid is a path along the other axis
        path_axis = 1 if shape[0] == 1 else 0
    if path_axis is not None:
        order = torch.arange(layout.node.numel())
        rows = cols = order
    else:
        X, Y = shape
        diagonals = [(max(0, d - Y + 1), min(d, X - 1)) for d in range(X + Y - 1)]
        rows = torch.cat([torch.arange(lo, hi + 1) for lo, hi in diagonals])
        cols = torch.cat([d - torch.arange(lo, hi + 1) for d, (lo, hi) in enumerate(diagonals)])
        order = rows * Y + cols  # canonical position of each storage slot
    node = layout.node[order]
    inverse = torch.empty_like(node)
    inverse[node] = torch.arange(node.numel())
    return StorageOrder(
        node, layout.out_edge[order], layout.in_edge[order], layout.line[order], inverse, rows, cols, path_axis, diagonals
    )


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
    chunk_size: int | None = None,
    *,
    gates: Boundary | None = None,
) -> tuple[Tensor, Tensor | None]:
    r"""Chunkwise-parallel 1D scan. ``q, k`` ``[B, L, H, dk]``, ``v`` ``[B, L, H, dv]``,
    gates ``[B, L, H]``: ``S[t]`` for edge ``t -> t+1``, ``T[t]`` through node ``t``,
    ``M[t]`` for edge ``t-1 -> t`` (zero where the edge does not exist).

    Without boundary states (and with finite ``q``, ``k``, ``v``) this runs
    :func:`~everygraph.sequence.plstm.chunked1d.chunked_scan_1d_stateless`, the same products
    with a hand-written backward.

    Inside a chunk of ``c`` steps the decay from step ``s`` to step ``i`` is
    :math:`W_{i s} = \prod_{r=s}^{i-1} T_r`, built as a cumulative *product* down the
    columns of a ``(c+1) x (c+1)`` matrix (row ``c`` = the state leaving the chunk, column 0
    = the state entering it). Products, not differences of cumulative logs: transitions may
    be negative or exactly zero, and ``cumprod``'s gradient is exact at zeros. Within a
    chunk this is masked linear attention; between chunks a short loop carries the state.
    """
    B, L, H, dk = q.shape
    dv = v.shape[-1]
    if (
        STATELESS_1D and C0 is None and not return_state and gates is None and q.numel() and v.numel()
        and bool(torch.isfinite(q).all() and torch.isfinite(k).all() and torch.isfinite(v).all())
    ):  # non-finite inputs keep the selections below, which keep them out of earlier outputs
        return chunked_scan_1d_stateless(q, k, v, S, T, M, D, chunk_size or chunked1d.CHUNK_SIZE), None
    if chunk_size is None:
        chunk_size = CHUNK_SIZE
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
    C0_read = C0_through = C0
    if gates is not None:
        gates = Boundary(*(chunks(g) for g in gates))
        if C0 is not None:
            C0_read = gates.mark[..., None, None] * C0
            C0_through = gates.through[..., None, None] * C0
            C0 = gates.enter[..., None, None] * C0  # the state injected into each out-edge
    rows = torch.arange(c + 1, device=q.device)
    below = rows[:, None] > rows[None, :]  # i > s: the product reaches T_{i-1}
    T_row = torch.cat([torch.ones_like(T[..., :1]), T], dim=-1)  # T_row[i] = T[i - 1]
    W = torch.cumprod(torch.where(below, T_row[..., :, None], torch.ones_like(T_row[..., :, None])), dim=-2)
    W = W * (rows[:, None] >= rows[None, :]).to(W.dtype)
    W_carry, W_src = W[..., :c, 0], W[..., :c, 1:]  # [.., c], [.., c, c] (strictly lower)
    out_carry, out_src = W[..., c, 0], W[..., c, 1:]  # decay over the whole chunk; per step

    scores = torch.einsum("bhnid,bhnsd->bhnis", q, k)
    # Future positions of a chunk are removed by selection, not by a zero factor: a NaN or
    # inf there (0 * nan = nan) must not reach earlier outputs; a causal scan never looks ahead.
    causal = rows[:c, None] >= rows[None, :c]
    attention = torch.where(causal, scores * (M[..., :, None] * W_src * S[..., None, :]), 0.0)
    attention = attention + torch.diag_embed(D * scores.diagonal(dim1=-2, dim2=-1))
    if bool(torch.isfinite(v).all()):
        h = attention @ v
    else:  # the exact zeros of future weights would still meet a non-finite v in a matmul
        h = torch.where(causal[..., None], attention[..., None] * v.unsqueeze(-3), 0.0).sum(-2)

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
        h = h + torch.einsum("bhnid,bhnidv->bhniv", q, C0_read)
        h = h + torch.einsum("bhnid,bhnidv->bhniv", q, torch.einsum("bhnis,bhnsdv->bhnidv", M[..., None] * W_src, C0))
    final = None
    if return_state:
        # the in-edge state of every step, plus its own k v^T and injected state
        incoming = torch.einsum("bhni,bhndv->bhnidv", W_carry, carried)
        incoming = incoming + torch.einsum("bhnis,bhnsd,bhnsv->bhnidv", W_src * S[..., None, :], k, v)
        if C0 is not None:
            incoming = incoming + torch.einsum("bhnis,bhnsdv->bhnidv", W_src, C0)
        kv = k[..., :, None] * v[..., None, :]
        if gates is not None:
            final = gates.leave[..., None, None] * incoming + gates.source[..., None, None] * kv
        else:
            final = incoming + kv
        if C0 is not None:
            final = final + C0_through
        final = final.movedim(1, 3).reshape(B, n * c, H, dk, dv)[:, :L]
    h = h.movedim(1, 3).reshape(B, n * c, H, dv)[:, :L]
    return h, final


def diagonal_scan_2d(
    storage: StorageOrder,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    S: Tensor,
    T: Tensor,
    M: Tensor,
    D: Tensor,
    C0: Tensor | None,
    return_state: bool,
    *,
    gates: Boundary | None = None,
) -> tuple[Tensor, Tensor | None]:
    """2D scan, one batched step per anti-diagonal ``x + y = d``.

    Inputs in diagonal order (by ``x + y``, then row ``x``; see :class:`StorageOrder`):
    ``q, k`` ``[B, N, H, dk]``, ``v`` ``[B, N, H, dv]``, ``S``/``M`` ``[B, N, 2, H]`` (per
    axis), ``T`` ``[B, N, 2(out), 2(in), H]``, ``D`` ``[B, N, H]``. Each diagonal is a
    contiguous block, and node ``(x, d - x)`` reads its in-edge along axis 1 from row ``x``
    of the previous block and along axis 0 from row ``x - 1``: shifted slices. Outputs are
    in the same order. ``gates``: boundary gates in storage order (``enter``/``leave``
    ``[B, N, 2, H]`` per axis) or None (unit).
    """
    B, N, H, dk = q.shape
    dv = v.shape[-1]
    K = dk * dv
    S, M = S.transpose(-1, -2), M.transpose(-1, -2)  # [B, N, H, 2]
    T = T.permute(0, 1, 4, 2, 3)  # [B, N, H, 2(out), 2(in)]
    kv = (k[..., :, None] * v[..., None, :]).reshape(B, N, H, K)
    injected = None
    if C0 is not None:
        C0 = C0.reshape(B, N, H, K)
        if gates is None:
            X, Y = int(storage.rows.max()) + 1, int(storage.cols.max()) + 1
            exists = torch.stack([storage.rows < X - 1, storage.cols < Y - 1], dim=-1).to(C0.dtype)
            injected = C0[..., None, :] * exists[None, :, None, :, None]
        else:
            injected = C0[..., None, :] * gates.enter.transpose(-1, -2)[..., None]  # [B, N, H, 2, K]
        injected = injected.movedim(1, 0).contiguous()
    # [B, N, H, 2(in), K]: the states on the in-edges of every node
    incoming = DiagonalRecurrence.apply(
        T.movedim(1, 0).contiguous(), S.movedim(1, 0).contiguous(), kv.movedim(1, 0).contiguous(), injected,
        storage.diagonals,
    ).movedim(0, 1)
    # elementwise, not matmul: a batch of 10^4 products of 1x2 or 1xdk matrices is slow on CPU
    read = (M[..., 0, None] * incoming[..., 0, :]).addcmul_(M[..., 1, None], incoming[..., 1, :])
    h = (q[..., :, None] * read.view(B, N, H, dk, dv)).sum(-2)
    h = h + D[..., None] * (q * k).sum(-1, keepdim=True) * v
    if C0 is not None:
        read_C0 = C0 if gates is None else gates.mark[..., None] * C0
        h = h + (q[..., :, None] * read_C0.view(B, N, H, dk, dv)).sum(-2)
    final = None
    if return_state:
        if gates is None:
            final = incoming.sum(3) + kv
        else:
            leave = gates.leave.transpose(-1, -2)[..., None]  # [B, N, H, 2, 1]
            final = (leave * incoming).sum(3) + gates.source[..., None] * kv
        if C0 is not None:
            final = final + (C0 if gates is None else gates.through[..., None] * C0)
        final = final.view(B, N, H, dk, dv)
    return h, final


def receive_from_previous_diagonal(incoming: Tensor, lo: int, hi: int, out: Tensor, plo: int, phi: int) -> None:
    """Write the out-edge states ``out`` of the previous anti-diagonal (rows ``plo..phi``) into
    the in-edges ``incoming`` ``[n, B, H, 2(in), ...]`` of this one (rows ``lo..hi``): node
    ``(x, d - x)`` reads axis 1 from row ``x`` and axis 0 from row ``x - 1`` (shifted slices)."""
    a, b = max(lo, plo), min(hi, phi)  # same row, axis-1 edge
    incoming[a - lo:b - lo + 1, :, :, 1] = out[a - plo:b - plo + 1, :, :, 1]
    a, b = max(lo, plo + 1), min(hi, phi + 1)  # row above, axis-0 edge
    incoming[a - lo:b - lo + 1, :, :, 0] = out[a - 1 - plo:b - plo, :, :, 0]


def return_to_previous_diagonal(grad_out: Tensor, lo: int, hi: int, grad_next: Tensor, nlo: int, nhi: int) -> None:
    """The transpose of :func:`receive_from_previous_diagonal`: the gradients ``grad_next`` of
    the next diagonal's in-edges (rows ``nlo..nhi``) into ``grad_out`` (zeroed), the gradients
    of this diagonal's out-edges (rows ``lo..hi``)."""
    a, b = max(lo, nlo), min(hi, nhi)
    grad_out[a - lo:b - lo + 1, :, :, 1] = grad_next[a - nlo:b - nlo + 1, :, :, 1]
    a, b = max(lo, nlo - 1), min(hi, nhi - 1)
    grad_out[a - lo:b - lo + 1, :, :, 0] = grad_next[a + 1 - nlo:b + 2 - nlo, :, :, 0]


class DiagonalRecurrence(torch.autograd.Function):
    r"""The linear recurrence between anti-diagonals, with a hand-written adjoint.

    Node-major tensors in diagonal order (see :func:`diagonal_scan_2d`): ``transition``
    ``[N, B, H, 2(out), 2(in)]``, ``source`` ``[N, B, H, 2]``, ``kv`` ``[N, B, H, K]``
    (``K = dk * dv``), ``injected`` ``[N, B, H, 2, K]`` or None (extra state entering each
    out-edge), ``diagonals``: the first and last row of each diagonal. Returns ``incoming``
    ``[N, B, H, 2, K]``, the states on each node's in-edges: :math:`O_n = T_n I_n + S_n
    \otimes kv_n (+ \text{injected}_n)` for the nodes of one diagonal at once (2x2 products as
    broadcast multiply-adds), and the next diagonal reads :math:`O` through shifted slices.

    The backward runs the transposed recurrence from the last diagonal to the first:
    :math:`\bar O_d = \mathrm{shift}^\top \bar I_{d+1}`, :math:`\bar I_d \mathrel{+}=
    T_d^\top \bar O_d`, and per diagonal :math:`\bar T = \bar O I^\top`,
    :math:`\bar S = \bar O\, kv`, :math:`\bar{kv} = S^\top \bar O`, without autograd's
    per-step graph. Checked with ``gradcheck``.
    """

    @staticmethod
    def forward(ctx, transition: Tensor, source: Tensor, kv: Tensor, injected: Tensor | None, diagonals: list[tuple[int, int]]) -> Tensor:
        N, B, H, K = kv.shape
        incoming = kv.new_zeros(N, B, H, 2, K)
        buffer = kv.new_empty(max(hi - lo + 1 for lo, hi in diagonals), B, H, 2, K)
        offset, previous = 0, None
        for lo, hi in diagonals:
            n = hi - lo + 1
            if previous is not None:
                receive_from_previous_diagonal(incoming[offset:offset + n], lo, hi, *previous)
            block = slice(offset, offset + n)
            out = _apply_2x2(transition[block], incoming[block], buffer[:n])
            out.addcmul_(source[block, ..., None], kv[block, ..., None, :])
            if injected is not None:
                out += injected[block]
            previous, offset = (out, lo, hi), offset + n
        ctx.save_for_backward(transition, source, kv, incoming)
        ctx.diagonals, ctx.has_injected = diagonals, injected is not None
        return incoming

    @staticmethod
    def backward(ctx, grad_incoming: Tensor):
        transition, source, kv, incoming = ctx.saved_tensors
        N, B, H, K = kv.shape
        diagonals = ctx.diagonals
        grad_transition = torch.zeros_like(transition)
        grad_source = torch.zeros_like(source)
        grad_kv = torch.zeros_like(kv) if ctx.needs_input_grad[2] else None  # constant unit sources need none
        grad_injected = torch.zeros_like(incoming) if ctx.has_injected else None
        width = max(hi - lo + 1 for lo, hi in diagonals)
        grad_out = incoming.new_zeros(width, B, H, 2, K)
        grads = [incoming.new_empty(width, B, H, 2, K) for _ in range(2)]  # this and the next diagonal
        pair = incoming.new_empty(width, B, H, 2, 2, K)
        buffer = incoming.new_empty(width, B, H, 2, K)
        offset, following = N, None
        for index in range(len(diagonals) - 1, -1, -1):
            lo, hi = diagonals[index]
            n = hi - lo + 1
            offset -= n
            block = slice(offset, offset + n)
            grad = grads[index % 2][:n]
            grad.copy_(grad_incoming[block])
            if following is not None:  # this diagonal's outputs feed the next one
                g_next, nlo, nhi = following
                g = grad_out[:n]
                g.zero_()
                return_to_previous_diagonal(g, lo, hi, g_next, nlo, nhi)
                if grad_injected is not None:
                    grad_injected[block] = g
                torch.mul(g[..., :, None, :], incoming[block, ..., None, :, :], out=pair[:n])
                torch.sum(pair[:n], dim=-1, out=grad_transition[block])
                torch.mul(g, kv[block, ..., None, :], out=buffer[:n])
                torch.sum(buffer[:n], dim=-1, out=grad_source[block])
                if grad_kv is not None:
                    torch.mul(source[block, ..., 0, None], g[..., 0, :], out=grad_kv[block])
                    grad_kv[block].addcmul_(source[block, ..., 1, None], g[..., 1, :])
                grad += _apply_2x2(transition[block].transpose(-1, -2), g, buffer[:n])
            following = (grad, lo, hi)
        return grad_transition, grad_source, grad_kv, grad_injected, None


def _apply_2x2(matrix: Tensor, states: Tensor, out: Tensor) -> Tensor:
    """``matrix @ states`` for ``[..., 2, 2]`` by ``[..., 2, K]`` into ``out``, as two broadcast
    multiply-adds (a batched matmul of 2x2 matrices is slow on CPU)."""
    torch.mul(matrix[..., :, 0, None], states[..., 0, None, :], out=out)
    return out.addcmul_(matrix[..., :, 1, None], states[..., 1, None, :])
