r"""The chunked 2D execution: blocks of the grid as masked attention, states passed between
blocks in anti-diagonal order.

The paper's hierarchical merging stopped at one level (Poeppel et al., 2025, section on
parallelisation). The grid is cut into blocks of ``bx x by`` nodes. Per block, four small
*transfer operators* describe everything the recurrence does inside it:

* ``G`` ``[n, n]`` (``n = bx * by``): node-to-node gating, :math:`G^{n' n}` = sum over
  in-block paths of :math:`S \prod T\, M` (plus :math:`D` on the diagonal), so that the
  in-block output is masked linear attention :math:`((\tilde Q K^\top) \circ G) V`;
* ``R`` ``[n, e]`` (``e = by + bx`` border edges): how a state entering through the top or
  left border is read by each node (:math:`\prod T\, M`);
* ``F`` ``[e, n]``: how each node's :math:`k v^\top` reaches the bottom and right border;
* ``U`` ``[e, e]``: border to border.

They are the in-block recurrence applied to *unit* sources: one channel per node and per
entering border edge instead of the ``dk x dv`` state, computed for all blocks at once by the
anti-diagonal recurrence (:class:`~everygraph.sequence.plstm.lattice.DiagonalRecurrence`, with
its hand-written adjoint) on a block widened by one virtual row and column that inject the
border channels. The ``dk x dv`` states then exist only on block borders: one batched
``C_out = U C_in + F (k v^T)`` per anti-diagonal of blocks, and every node reads them through
``R``. Memory traffic per node drops from ``2 dk dv`` state entries per node to about
``2 (by + bx + bx by) + 2 dk dv / b``; the rest are batched matrix products.

Gates of edges that leave the grid are never used (a state leaving the grid is never read; a
state entering it is zero), so padding the grid to whole blocks with zeros is exact.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from ...graphlib import Lattice
from .lattice import DiagonalRecurrence
from .layout import gather, lattice_layout, take

BLOCK_SIZE = 4


def block_shape(X: int, Y: int, state_size: int) -> tuple[int, int] | None:
    """The blocks this execution uses on an ``X x Y`` grid with ``dk * dv = state_size``, or
    None where the anti-diagonal ``lattice`` loop moves less memory (then it is faster).

    Per node and step the loop reads and writes ``2 dk dv`` state entries. One block covering
    the grid needs ``2 X Y`` unit channels plus ``X Y`` scores and no border states: chosen when
    that is at most ``2 dk dv`` (small grids, e.g. a 6x6 patch grid at ``dk = dv = 8``).
    Otherwise blocks of ``BLOCK_SIZE`` (4: 24 unit channels, border states ``2 * 8 * dk dv /
    16`` per node) pay once the grid has at least 16 nodes a side and ``dk dv >= 256``
    (measured with ``benchmarks/plstm.py``: 1.3x at 64x64, 2.7x at 256x256, dk = dv = 16).
    """
    if 3 * X * Y <= 2 * state_size:
        return X, Y
    if min(X, Y) >= 16 and state_size >= 256:
        return min(BLOCK_SIZE, X), min(BLOCK_SIZE, Y)
    return None


def plstm_chunked2d(
    lattice: Lattice,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    block_size: int | None = None,
) -> Tensor:
    """The scalar recurrence of :func:`~everygraph.sequence.scan` on a 2D lattice (flat
    layout in, ``q`` already scaled; node order out), by :func:`chunked_scan_2d`. No boundary
    states (the ``lattice`` execution takes them)."""
    layout = lattice_layout(lattice, q.device)
    B, N, H, dk = q.shape
    X, Y = lattice.shape
    node = layout.node  # canonical row-major position -> node id

    def dense(x: Tensor) -> Tensor:
        return x.reshape(B, X, Y, *x.shape[2:])

    S = dense(take(source, layout.out_edge).movedim(2, -1))  # [B, X, Y, H, 2]
    M = dense(take(mark, layout.in_edge).movedim(2, -1))
    T = dense(take(transition, layout.line).movedim(2, -1).movedim(2, -1))  # [B, X, Y, H, 2(out), 2(in)]
    h = chunked_scan_2d(*(dense(gather(x, 1, node)) for x in (q, k, v)), S, T, M, dense(gather(direct, 1, node)), block_size)
    return gather(h.reshape(B, N, H, -1), 1, layout.position)


def chunked_scan_2d(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    block_size: int | None = None,
) -> Tensor:
    r"""pLSTM on an ``X x Y`` grid in canonical orientation (every edge from ``c`` to ``c + 1``),
    dense per-node gates, computed blockwise (see the module docstring).

    Args:
        q, k: ``[B, X, Y, H, dk]`` (``q`` already scaled); v: ``[B, X, Y, H, dv]``.
        source: ``[B, X, Y, H, 2]``, :math:`S` for the out-edge along axis 0 (down), 1 (right).
        transition: ``[B, X, Y, H, 2, 2]``, ``[..., i, j]`` from the in-edge along axis ``j``
            to the out-edge along axis ``i``.
        mark: ``[B, X, Y, H, 2]``, :math:`M` for the in-edge along each axis.
        direct: ``[B, X, Y, H]``.
        block_size: side of the blocks (clipped to the grid); default: :func:`block_shape`,
            else ``BLOCK_SIZE``.

    Returns:
        ``h`` ``[B, X, Y, H, dv]``.
    """
    B, X, Y, H, dk = q.shape
    dv = v.shape[-1]
    Z = B * H
    if block_size is None:
        bx, by = block_shape(X, Y, dk * dv) or (min(BLOCK_SIZE, X), min(BLOCK_SIZE, Y))
    else:
        bx, by = min(block_size, X), min(block_size, Y)
    P, R = -(-X // bx), -(-Y // by)
    nb = Z * P * R
    n = bx * by
    order, diagonals = _block_order(P, R)
    order = order.to(q.device)

    def blocks(x: Tensor) -> Tensor:  # [B, X, Y, H, *F] -> [P*R * Z, bx, by, *F], anti-diagonal order of blocks
        x = x.movedim(3, 1).reshape(Z, X, Y, *x.shape[4:])
        if P * bx != X or R * by != Y:  # zeros: padded nodes come after every real one
            padded = x.new_zeros(Z, P * bx, R * by, *x.shape[3:])
            padded[:, :X, :Y] = x
            x = padded
        x = x.reshape(Z, P, bx, R, by, *x.shape[3:]).permute(1, 3, 0, 2, 4, *range(5, x.dim() + 2))
        return gather(x.reshape(P * R, Z, bx, by, *x.shape[5:]), 0, order).reshape(nb, bx, by, *x.shape[5:])

    q, k, v, S, T, M, D = (blocks(x) for x in (q, k, v, source, transition, mark, direct))
    multi = P * R > 1
    plan = _block_plan(bx, by, multi)
    G_all, O = _transfer(plan, S, T, M)  # [nb, n, e + n], [nb, e, e + n] or None
    e = plan.border
    G = G_all[..., e:] + torch.diag_embed(D.reshape(nb, n))
    q, k, v = q.reshape(nb, n, dk), k.reshape(nb, n, dk), v.reshape(nb, n, dv)
    h = ((q @ k.transpose(1, 2)) * G) @ v
    if multi:
        h = h + _block_recurrence(O, G_all[..., :e], q, k, v, diagonals, Z, by)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    h = gather(h.reshape(P * R, Z, n * dv), 0, inverse).reshape(P, R, Z, bx, by, dv).permute(2, 0, 3, 1, 4, 5)
    h = h.reshape(Z, P * bx, R * by, dv)[:, :X, :Y]
    return h.reshape(B, H, X, Y, dv).movedim(1, 3)


class _BlockPlan:
    """Index maps of one (widened) block, cached per block shape.

    The widened block has ``w = 1`` extra row and column in front when there are several
    blocks: virtual node ``(-1, y)`` emits the border channel ``y`` down into ``(0, y)``,
    ``(x, -1)`` emits channel ``by + x`` right into ``(x, 0)``. Channels: ``border`` of them
    for the entering border edges, then one per real node (row-major).
    """

    def __init__(self, bx: int, by: int, multi: bool):
        w = 1 if multi else 0
        ex, ey = bx + w, by + w
        self.bx, self.by, self.w, self.ex, self.ey = bx, by, w, ex, ey
        self.border = (bx + by) if multi else 0
        self.diagonals = [(max(0, d - ey + 1), min(d, ex - 1)) for d in range(ex + ey - 1)]
        rows = torch.cat([torch.arange(lo, hi + 1) for lo, hi in self.diagonals])
        cols = torch.cat([d - torch.arange(lo, hi + 1) for d, (lo, hi) in enumerate(self.diagonals)])
        self.order = rows * ey + cols  # widened row-major position of each diagonal slot
        slot = torch.empty_like(self.order)
        slot[self.order] = torch.arange(self.order.numel())
        grid = torch.arange(ex * ey).reshape(ex, ey)
        self.real_slots = slot[grid[w:, w:].reshape(-1)]  # diagonal slot of each real node, row-major
        self.bottom_slots = slot[grid[ex - 1, w:]]  # real bottom row, by y
        self.right_slots = slot[grid[w:, ey - 1]]  # real right column, by x
        channels = self.border + bx * by
        unit = torch.zeros(ex * ey, channels)  # the unit "kv" each widened node emits
        unit[grid[w:, w:].reshape(-1), self.border + torch.arange(bx * by)] = 1.0
        if multi:
            unit[grid[0, 1:], torch.arange(by)] = 1.0
            unit[grid[1:, 0], by + torch.arange(bx)] = 1.0
        self.unit = unit[self.order]  # [ex * ey, channels] in diagonal order
        node = self.border + torch.arange(bx * by).reshape(bx, by)
        self.bottom_unit = torch.zeros(by, channels)  # a border node's own source channel
        self.bottom_unit[torch.arange(by), node[bx - 1]] = 1.0
        self.right_unit = torch.zeros(bx, channels)
        self.right_unit[torch.arange(bx), node[:, by - 1]] = 1.0


@lru_cache(maxsize=32)
def _block_plan(bx: int, by: int, multi: bool) -> _BlockPlan:
    return _BlockPlan(bx, by, multi)


def _transfer(plan: _BlockPlan, S: Tensor, T: Tensor, M: Tensor) -> tuple[Tensor, Tensor | None]:
    """The block transfer operators, all blocks at once. ``S``, ``M`` ``[nb, bx, by, 2]``,
    ``T`` ``[nb, bx, by, 2, 2]``. Returns ``[G | R]`` as ``[nb, n, e + n]`` (what each node
    reads of each channel) and, with several blocks, ``[U | F]`` as ``[nb, e, e + n]`` (the
    bottom row's down edges, then the right column's right edges)."""
    nb, bx, by = S.shape[:3]
    w, ex, ey = plan.w, plan.ex, plan.ey
    device, dtype = S.device, S.dtype
    if w:
        T_wide = T.new_zeros(nb, ex, ey, 2, 2)
        T_wide[:, 1:, 1:] = T
        S_wide = S.new_zeros(nb, ex, ey, 2)
        S_wide[:, 1:, 1:] = S
        S_wide[:, 0, 1:, 0] = 1.0
        S_wide[:, 1:, 0, 1] = 1.0
    else:
        T_wide, S_wide = T, S
    order = plan.order.to(device)
    diagonal = lambda x: gather(x.reshape(nb, ex * ey, *x.shape[3:]).movedim(1, 0), 0, order).unsqueeze(2)  # [N, nb, 1, ...]
    unit = plan.unit.to(device=device, dtype=dtype)
    kv = unit[:, None, None, :].expand(unit.shape[0], nb, 1, unit.shape[1])
    incoming = DiagonalRecurrence.apply(diagonal(T_wide), diagonal(S_wide), kv, None, plan.diagonals).squeeze(2)
    # incoming: [N, nb, 2, channels] in diagonal order
    real = gather(incoming, 0, plan.real_slots.to(device))  # [n, nb, 2, channels]
    M_nodes = M.reshape(nb, bx * by, 2).transpose(0, 1)
    read = (M_nodes[..., 0, None] * real[..., 0, :]).addcmul_(M_nodes[..., 1, None], real[..., 1, :]).transpose(0, 1)
    if not w:
        return read, None
    bottom = gather(incoming, 0, plan.bottom_slots.to(device))  # [by, nb, 2, channels]
    right = gather(incoming, 0, plan.right_slots.to(device))  # [bx, nb, 2, channels]
    T_bottom = T[:, bx - 1, :, 0].transpose(0, 1)  # [by, nb, 2(in)]: into the down edge
    T_right = T[:, :, by - 1, 1].transpose(0, 1)  # [bx, nb, 2(in)]: into the right edge
    out_bottom = (T_bottom[..., 0, None] * bottom[..., 0, :]).addcmul_(T_bottom[..., 1, None], bottom[..., 1, :])
    out_right = (T_right[..., 0, None] * right[..., 0, :]).addcmul_(T_right[..., 1, None], right[..., 1, :])
    out_bottom = out_bottom + S[:, bx - 1, :, 0].transpose(0, 1)[..., None] * plan.bottom_unit.to(device, dtype)[:, None]
    out_right = out_right + S[:, :, by - 1, 1].transpose(0, 1)[..., None] * plan.right_unit.to(device, dtype)[:, None]
    return read, torch.cat([out_bottom, out_right]).transpose(0, 1)


def _block_recurrence(
    O: Tensor, read: Tensor, q: Tensor, k: Tensor, v: Tensor, diagonals: list[tuple[int, int]], Z: int, by: int
) -> Tensor:
    """What every node reads of the states entering its block: one step per anti-diagonal of
    blocks, each a few batched products over that diagonal's blocks only (small tensors that
    stay in cache, instead of whole-grid ``[blocks, e, dk, dv]`` intermediates), with a
    hand-written backward (:class:`BlockRecurrence`).

    Blocks are in anti-diagonal order, ``Z`` consecutive entries per block. ``O`` ``[nb, e,
    e + n]`` = ``[U | F]``, ``read`` ``[nb, n, e]`` (``R``), ``q, k`` ``[nb, n, dk]``,
    ``v`` ``[nb, n, dv]``. Border channels: ``by`` top/bottom by column, then ``bx``
    left/right by row; block ``(p, r)`` receives the bottom states of ``(p-1, r)`` and the
    right states of ``(p, r-1)``. Returns ``[nb, n, dv]``.
    """
    e = O.shape[1]
    return BlockRecurrence.apply(O[..., :e], O[..., e:], read, q, k, v, diagonals, Z, by)


def _receive(state: Tensor, lo: int, hi: int, out: Tensor, plo: int, phi: int, Z: int, by: int) -> None:
    """The states entering the blocks of block rows ``lo..hi`` of one anti-diagonal (``state``,
    zeroed, ``[size, e, K]``) from the states leaving the previous one (``out``, rows
    ``plo..phi``): the top border from the bottom of block row ``p - 1``, the left border from
    the right of the same row."""
    a, b = max(lo, plo + 1), min(hi, phi + 1)
    if a <= b:
        state[(a - lo) * Z:(b - lo + 1) * Z, :by] = out[(a - 1 - plo) * Z:(b - plo) * Z, :by]
    a, b = max(lo, plo), min(hi, phi)
    if a <= b:
        state[(a - lo) * Z:(b - lo + 1) * Z, by:] = out[(a - plo) * Z:(b - plo + 1) * Z, by:]


def _return(grad_out: Tensor, plo: int, phi: int, grad_state: Tensor, lo: int, hi: int, Z: int, by: int) -> None:
    """The transpose of :func:`_receive`: ``grad_state`` into ``grad_out`` (zeroed)."""
    a, b = max(lo, plo + 1), min(hi, phi + 1)
    if a <= b:
        grad_out[(a - 1 - plo) * Z:(b - plo) * Z, :by] = grad_state[(a - lo) * Z:(b - lo + 1) * Z, :by]
    a, b = max(lo, plo), min(hi, phi)
    if a <= b:
        grad_out[(a - plo) * Z:(b - plo + 1) * Z, by:] = grad_state[(a - lo) * Z:(b - lo + 1) * Z, by:]


class BlockRecurrence(torch.autograd.Function):
    r"""The border states between blocks, one anti-diagonal of blocks at a time, with a
    hand-written adjoint (autograd's per-step graph of slices, concatenations and zero-filled
    gradients cost more than the products themselves).

    Per diagonal, with :math:`\mathrm{Rq} = R \otimes q` ``[size, n, e dk]`` and
    :math:`\mathrm{Fk} = F \otimes k^\top` ``[size, e dk, n]``: the states entering its blocks
    :math:`C` ``[size, e, dk dv]`` are received from the previous diagonal's ``out``; each node
    reads :math:`\mathrm{Rq}\, C`; the states leaving are :math:`\mathrm{out} = U C +
    \mathrm{Fk}\, V`. The backward runs the diagonals in reverse with the transposed products.
    Inputs: ``U`` ``[nb, e, e]``, ``F`` ``[nb, e, n]``, ``R`` ``[nb, n, e]``, ``q, k``
    ``[nb, n, dk]``, ``v`` ``[nb, n, dv]``; returns ``[nb, n, dv]``. Checked with ``gradcheck``.
    """

    @staticmethod
    def forward(ctx, U, F, R, q, k, v, diagonals, Z, by):
        nb, e, _ = U.shape
        n, dk, dv = q.shape[1], q.shape[2], v.shape[2]
        result = q.new_zeros(nb, n, dv)
        states, previous, offset = [], None, 0
        last = len(diagonals) - 1
        for d, (lo, hi) in enumerate(diagonals):
            size = (hi - lo + 1) * Z
            block = slice(offset, offset + size)
            state = None
            if previous is not None:
                state = q.new_zeros(size, e, dk * dv)
                _receive(state, lo, hi, *previous, Z, by)
                read_q = (R[block, :, :, None] * q[block, :, None, :]).reshape(size, n, e * dk)
                torch.bmm(read_q, state.view(size, e * dk, dv), out=result[block])
            states.append(state)
            if d < last:  # the last diagonal's border states are never read
                emit_k = (F[block, :, None, :] * k[block].transpose(1, 2)[:, None]).reshape(size, e * dk, n)
                out = torch.bmm(emit_k, v[block]).view(size, e, dk * dv)
                if state is not None:
                    out.baddbmm_(U[block], state)
                previous = (out, lo, hi)
            offset += size
        ctx.save_for_backward(U, F, R, q, k, v)
        ctx.states, ctx.diagonals, ctx.Z, ctx.by = states, diagonals, Z, by
        return result

    @staticmethod
    def backward(ctx, grad_result):
        U, F, R, q, k, v = ctx.saved_tensors
        states, diagonals, Z, by = ctx.states, ctx.diagonals, ctx.Z, ctx.by
        nb, e, _ = U.shape
        n, dk, dv = q.shape[1], q.shape[2], v.shape[2]
        grad_result = grad_result.contiguous()
        grads = [torch.zeros_like(t) for t in (U, F, R, q, k, v)]
        grad_U, grad_F, grad_R, grad_q, grad_k, grad_v = grads
        grad_out, offset = None, nb  # grad_out: of the states this diagonal emits
        for d in range(len(diagonals) - 1, -1, -1):
            lo, hi = diagonals[d]
            size = (hi - lo + 1) * Z
            offset -= size
            block = slice(offset, offset + size)
            state = states[d]
            grad_state = None
            if grad_out is not None:  # out = U C + Fk V
                emit_k = (F[block, :, None, :] * k[block].transpose(1, 2)[:, None]).reshape(size, e * dk, n)
                grad_out_flat = grad_out.view(size, e * dk, dv)
                grad_emit = (grad_out_flat @ v[block].transpose(1, 2)).view(size, e, dk, n)
                torch.bmm(emit_k.transpose(1, 2), grad_out_flat, out=grad_v[block])
                grad_F[block] = (grad_emit * k[block].transpose(1, 2)[:, None]).sum(2)
                grad_k[block] = (grad_emit * F[block, :, None, :]).sum(1).transpose(1, 2)
                if state is not None:
                    torch.bmm(grad_out, state.transpose(1, 2), out=grad_U[block])
                    grad_state = U[block].transpose(1, 2) @ grad_out
            if state is None:
                break
            read_q = (R[block, :, :, None] * q[block, :, None, :]).reshape(size, n, e * dk)
            grad_read = grad_result[block]
            from_read = (read_q.transpose(1, 2) @ grad_read).view(size, e, dk * dv)
            grad_state = from_read if grad_state is None else grad_state.add_(from_read)
            grad_read_q = (grad_read @ state.view(size, e * dk, dv).transpose(1, 2)).view(size, n, e, dk)
            grad_R[block] = (grad_read_q * q[block, :, None, :]).sum(-1)
            grad_q[block] = (grad_read_q * R[block, :, :, None]).sum(2)
            plo, phi = diagonals[d - 1]
            grad_out = grad_state.new_zeros((phi - plo + 1) * Z, e, dk * dv)
            _return(grad_out, plo, phi, grad_state, lo, hi, Z, by)
        return grad_U, grad_F, grad_R, grad_q, grad_k, grad_v, None, None, None


@lru_cache(maxsize=64)
def _block_order(P: int, R: int) -> tuple[Tensor, list[tuple[int, int]]]:
    diagonals = [(max(0, d - R + 1), min(d, P - 1)) for d in range(P + R - 1)]
    rows = torch.cat([torch.arange(lo, hi + 1) for lo, hi in diagonals])
    cols = torch.cat([d - torch.arange(lo, hi + 1) for d, (lo, hi) in enumerate(diagonals)])
    return rows * R + cols, diagonals
