r"""The fused CPU execution of :func:`~everygraph.sequence.grid_selective_scan`: Mamba's
selective scan on an image grid, compiled in its factored form (numba), forward and adjoint.

For pixel :math:`p` with predecessors :math:`p_0` (axis 0) and :math:`p_1` (axis 1), channel
``d`` and state index ``n``:

.. math::
    \iota_p &= \pi_{p_0} h_{p_0} + (1 - \pi_{p_1})\, h_{p_1}, \qquad
    a_p = e^{\Delta_p A}, \qquad x_p = \Delta_p u_p, \\
    h_p &= a_p \odot \iota_p + x_p B_p, \qquad y_p = \langle C_p, h_p \rangle

(a missing predecessor contributes 0; ``split=None`` is :math:`\pi = 1`: both successors get
the whole state). This is the recurrence that ``grid_selective_scan`` runs through
:func:`~everygraph.sequence.scan` on gates materialised per edge and per line-graph edge
(:func:`~everygraph.sequence.grid_mamba_gates`, ``N x D`` entries each, the ``direct`` term
:math:`x_p \langle C_p, B_p\rangle` included in :math:`y_p`), here without materialising anything: the
decay :math:`a_p` is formed where it is used by the vector exponential of
:mod:`~everygraph.sequence.mamba.fused_cpu` (float32: its polynomial; float64: libm), and one
state ``[N, D]`` per pixel suffices, since both out-edges of a pixel carry shares of the same
state. Pixels run in row-major order (flipped axes reversed, a topological order of the
grid) with two buffers: ``up`` ``[Y, N, D]`` (the shares :math:`\pi_p h_p` leaving the previous
row, one per column) and ``left`` ``[N, D]`` (the share :math:`(1 - \pi_p) h_p` leaving the
previous pixel of the row), so :math:`\iota_p` = ``up[y] + left``.

The channels run :data:`~everygraph.sequence.mamba.fused_cpu.LANES` at a time as lanes of one
vector (``D`` is padded to a multiple of it with channels of zero input, which stay zero), so
every operation of a state entry is a full vector operation; ``B_p[n]`` and ``C_p[n]`` are
broadcast over the lanes.

The backward pass is the adjoint recurrence in reverse row-major order. With
:math:`g_p = \partial \mathcal{L} / \partial h_p` and :math:`\bar\iota_p = a_p \odot g_p` (the
gradient of :math:`\iota_p`, which both predecessors read):

.. math::
    g_p &= C_p\, \bar y_p + \pi_p\, \bar\iota_{s_0} + (1 - \pi_p)\, \bar\iota_{s_1}, \\
    \bar x_p &= \sum_n g_p B_p, \quad \bar u_p = \Delta_p \bar x_p, \quad
    \bar\Delta_p = u_p \bar x_p + \sum_n \bar\ell_p A^\top, \quad
    \bar A = \sum_p (\bar\ell_p \Delta_p)^\top, \quad \bar\ell_p = \bar\iota_p \odot \iota_p, \\
    \bar B_p &= \sum_d g_p\, x_p, \quad \bar C_p = \sum_d h_p\, \bar y_p, \quad
    \bar\pi_p = \sum_n h_p \odot (\bar\iota_{s_0} - \bar\iota_{s_1})

(:math:`s_0, s_1` the successors of :math:`p` along axes 0 and 1, :math:`\bar\iota = 0` where
there is none; :math:`\bar\ell_p` is the gradient of the log-decay :math:`\Delta_p A`). Two
buffers hold the adjoint the loop needs: ``down`` ``[Y, N, D]`` (:math:`\bar\iota` of the next
row) and ``right`` ``[N, D]``. The forward pass keeps ``up`` at the start of every block of
rows (only when a gradient is needed); the backward pass recomputes a block's :math:`\iota_p`
from it into a buffer, then runs the block's adjoint, recomputing :math:`a_p` and :math:`h_p`
from :math:`\iota_p`. A log-decay below
:data:`~everygraph.sequence.mamba.fused_cpu.MIN_LOG_DECAY` is clamped (as in the path
kernels; its gradient is taken as if unclamped).

The JIT machinery (on-disk cache, the ``EVERYGRAPH_DISABLE_JIT`` switch, numba as the optional
extra ``everygraph[cpu]``) is that of :mod:`~everygraph.sequence.mamba.fused_cpu`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..mamba.fused_cpu import LANES, NUMBA_AVAILABLE, jit_enabled

#: the dtypes the kernels run
DTYPES = (torch.float32, torch.float64)
#: At most this many state entries in the backward pass's buffer of recomputed incoming states
#: (1 MiB in float32): the rows per block follow from it (at most
#: :data:`MAX_ROWS`, at least 1).
BLOCK_ENTRIES = 1 << 18
#: Rows per block of the backward pass at most.
MAX_ROWS = 8

if NUMBA_AVAILABLE:
    from llvmlite import ir as _llvm_ir
    from numba import types
    from numba.extending import intrinsic

    from ..mamba.fused_cpu import (
        _FASTMATH, _binary, _cached_njit, _exp_table, _LaneVector, _transpose_ir, _vadd, _vector_pointer, _vexp, _vfma,
        _vload, _vmul, _vsplat, _vstore,
    )

    _vsub = _binary("fsub")

    @intrinsic
    def _row_sums(typingctx, array, offset):
        """The sums of ``LANES`` rows of ``LANES`` values (``array.flat[offset + j * LANES + w]``,
        C-contiguous) as one vector, lane ``j`` the sum of row ``j``: eight vector loads, an
        in-register transpose and seven vector adds instead of 56 scalar adds."""
        if not (isinstance(array, types.Array) and array.layout == "C" and isinstance(offset, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            data, start = args
            rows = []
            for j in range(LANES):
                at = builder.add(start, _llvm_ir.Constant(start.type, j * LANES))
                rows.append(builder.load(_vector_pointer(context, builder, array, data, at), align=array.dtype.bitwidth // 8))
            columns = _transpose_ir(builder, rows)  # columns[w][j] = rows[j][w]
            total = columns[0]
            for w in range(1, LANES):
                total = builder.fadd(total, columns[w])
            return total

        return _LaneVector(array.dtype)(array, offset), codegen

    @_cached_njit(fastmath=_FASTMATH, inline="always")
    def _pass_on(h, share, has_split, up, ue, left, e):
        """Store the shares of the state ``h`` its successors read: ``share * h`` down (``up``
        at ``ue``), the rest right (``left`` at ``e``); the whole state both ways without a split."""
        if has_split:
            down = _vmul(share, h)
            _vstore(up, ue, down)
            _vstore(left, e, _vsub(h, down))
        else:
            _vstore(up, ue, h)
            _vstore(left, e, h)

    @_cached_njit(fastmath=_FASTMATH)
    def _grid_forward(u, dt, rate, B, C, split, has_split, flip0, flip1, rows, save, y, entries, table):
        """The recurrence; ``entries[b, k]`` receives ``up`` at row ``k * rows`` when ``save``.
        ``u``, ``dt``, ``split``, ``y`` ``[batch, X, Y, Dp]``, ``rate`` ``[Dp / LANES, N, LANES]``
        (``A`` transposed by lane blocks), ``B``, ``C`` ``[batch, X, Y, N]``."""
        batch, X, Y, channels = u.shape
        n_state = B.shape[3]
        blocks = channels // LANES
        size = blocks * n_state * LANES  # one pixel's state
        up = np.zeros(Y * size, dtype=u.dtype)
        left = np.zeros(size, dtype=u.dtype)
        zero = _vsplat(0.0, u)
        one = _vsplat(1.0, u)
        for b in range(batch):
            up[:] = 0.0
            for x in range(X):
                if save and x % rows == 0:
                    entries[b, x // rows, :] = up
                left[:] = 0.0
                xi = X - 1 - x if flip0 else x
                for yy in range(Y):
                    yi = Y - 1 - yy if flip1 else yy
                    pixel = (b * X + xi) * Y + yi
                    Bp, Cp = B[b, xi, yi], C[b, xi, yi]
                    for block in range(blocks):
                        o = pixel * channels + block * LANES
                        step = _vload(dt, o)
                        xin = _vmul(step, _vload(u, o))
                        share = _vload(split, o) if has_split else one
                        acc0 = zero
                        acc1 = zero
                        for n in range(n_state):
                            e = (block * n_state + n) * LANES
                            ue = yy * size + e
                            a = _vexp(_vmul(step, _vload(rate, e)), table)
                            h = _vfma(a, _vadd(_vload(up, ue), _vload(left, e)), _vmul(xin, _vsplat(Bp[n], u)))
                            if n % 2 == 0:
                                acc0 = _vfma(h, _vsplat(Cp[n], u), acc0)
                            else:
                                acc1 = _vfma(h, _vsplat(Cp[n], u), acc1)
                            _pass_on(h, share, has_split, up, ue, left, e)
                        _vstore(y, o, _vadd(acc0, acc1))

    @_cached_njit(fastmath=_FASTMATH)
    def _grid_backward(u, dt, rate, B, C, split, has_split, flip0, flip1, rows, entries, grad_y,
                       grad_u, grad_dt, grad_rate, grad_B, grad_C, grad_split, table):
        """The adjoint, reverse row-major, block by block of ``rows`` rows (their incoming
        states recomputed from ``entries``). Writes ``grad_u``, ``grad_dt``, ``grad_split``,
        ``grad_B``, ``grad_C`` per pixel; adds into ``grad_rate`` (zero on entry)."""
        batch, X, Y, channels = u.shape
        n_state = B.shape[3]
        blocks = channels // LANES
        size = blocks * n_state * LANES
        incoming = np.zeros(rows * Y * size, dtype=u.dtype)
        up = np.zeros(Y * size, dtype=u.dtype)
        left = np.zeros(size, dtype=u.dtype)
        down = np.zeros(Y * size, dtype=u.dtype)
        right = np.zeros(size, dtype=u.dtype)
        sum_B = np.zeros(n_state * LANES, dtype=u.dtype)  # per pixel: lane-wise partial sums over blocks
        sum_C = np.zeros(n_state * LANES, dtype=u.dtype)
        zero = _vsplat(0.0, u)
        one = _vsplat(1.0, u)
        num_blocks = -(-X // rows)
        for b in range(batch):
            down[:] = 0.0
            for k in range(num_blocks - 1, -1, -1):
                x0 = k * rows
                x1 = min(X, x0 + rows)
                up[:] = entries[b, k]
                for x in range(x0, x1):  # recompute the block's incoming states
                    left[:] = 0.0
                    xi = X - 1 - x if flip0 else x
                    for yy in range(Y):
                        yi = Y - 1 - yy if flip1 else yy
                        pixel = (b * X + xi) * Y + yi
                        Bp = B[b, xi, yi]
                        stored = ((x - x0) * Y + yy) * size
                        for block in range(blocks):
                            o = pixel * channels + block * LANES
                            step = _vload(dt, o)
                            xin = _vmul(step, _vload(u, o))
                            share = _vload(split, o) if has_split else one
                            for n in range(n_state):
                                e = (block * n_state + n) * LANES
                                ue = yy * size + e
                                a = _vexp(_vmul(step, _vload(rate, e)), table)
                                inc = _vadd(_vload(up, ue), _vload(left, e))
                                _vstore(incoming, stored + e, inc)
                                h = _vfma(a, inc, _vmul(xin, _vsplat(Bp[n], u)))
                                _pass_on(h, share, has_split, up, ue, left, e)
                for x in range(x1 - 1, x0 - 1, -1):
                    right[:] = 0.0
                    xi = X - 1 - x if flip0 else x
                    for yy in range(Y - 1, -1, -1):
                        yi = Y - 1 - yy if flip1 else yy
                        pixel = (b * X + xi) * Y + yi
                        Bp, Cp = B[b, xi, yi], C[b, xi, yi]
                        stored = ((x - x0) * Y + yy) * size
                        for n in range(n_state):
                            _vstore(sum_B, n * LANES, zero)
                            _vstore(sum_C, n * LANES, zero)
                        for block in range(blocks):
                            o = pixel * channels + block * LANES
                            step = _vload(dt, o)
                            uu = _vload(u, o)
                            xin = _vmul(step, uu)
                            gy = _vload(grad_y, o)
                            share = _vload(split, o) if has_split else one
                            gx = zero
                            glog = zero
                            gshare = zero
                            for n in range(n_state):
                                e = (block * n_state + n) * LANES
                                de = yy * size + e
                                r = _vload(rate, e)
                                a = _vexp(_vmul(step, r), table)
                                inc = _vload(incoming, stored + e)
                                Bn = _vsplat(Bp[n], u)
                                h = _vfma(a, inc, _vmul(xin, Bn))
                                _vstore(sum_C, n * LANES, _vfma(h, gy, _vload(sum_C, n * LANES)))
                                below, after = _vload(down, de), _vload(right, e)
                                if has_split:
                                    difference = _vsub(below, after)
                                    g = _vfma(share, difference, _vfma(_vsplat(Cp[n], u), gy, after))
                                    gshare = _vfma(h, difference, gshare)
                                else:
                                    g = _vfma(_vsplat(Cp[n], u), gy, _vadd(below, after))
                                _vstore(sum_B, n * LANES, _vfma(g, xin, _vload(sum_B, n * LANES)))
                                gx = _vfma(g, Bn, gx)
                                ginc = _vmul(a, g)
                                glogdecay = _vmul(ginc, inc)
                                glog = _vfma(glogdecay, r, glog)
                                _vstore(grad_rate, e, _vfma(glogdecay, step, _vload(grad_rate, e)))
                                _vstore(down, de, ginc)
                                _vstore(right, e, ginc)
                            _vstore(grad_u, o, _vmul(gx, step))
                            _vstore(grad_dt, o, _vfma(gx, uu, glog))
                            if has_split:
                                _vstore(grad_split, o, gshare)
                        whole = n_state - n_state % LANES
                        for n0 in range(0, whole, LANES):  # eight state entries at a time
                            _vstore(grad_B, pixel * n_state + n0, _row_sums(sum_B, n0 * LANES))
                            _vstore(grad_C, pixel * n_state + n0, _row_sums(sum_C, n0 * LANES))
                        for n in range(whole, n_state):
                            total_B = sum_B[n * LANES]
                            total_C = sum_C[n * LANES]
                            for w in range(1, LANES):
                                total_B += sum_B[n * LANES + w]
                                total_C += sum_C[n * LANES + w]
                            grad_B[b, xi, yi, n] = total_B
                            grad_C[b, xi, yi, n] = total_C



def _array(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def block_rows(X: int, Y: int, channels: int, n_state: int) -> int:
    """Rows per block of the backward pass: :data:`MAX_ROWS`, fewer where a block's incoming
    states would exceed :data:`BLOCK_ENTRIES` (at least 1)."""
    return max(1, min(MAX_ROWS, X, BLOCK_ENTRIES // max(1, Y * channels * n_state)))


class FusedGridSelectiveScan(torch.autograd.Function):
    """The kernels as an autograd function on the kernel layout: ``u``, ``dt`` ``[batch, X, Y,
    Dp]`` (``Dp`` a multiple of ``LANES``), ``rate`` ``[Dp / LANES, N, LANES]`` (``rate[k, n, w] =
    A[k * LANES + w, n]``), ``B``, ``C`` ``[batch, X, Y, N]``, ``split`` like ``u`` or None,
    ``flip`` the orientation; returns ``y`` ``[batch, X, Y, Dp]``."""

    @staticmethod
    def forward(ctx, u, dt, rate, B, C, split, flip):  # noqa: D102
        batch, X, Y, channels = u.shape
        n_state = B.shape[-1]
        has_split = split is not None
        split_k = split if has_split else u.new_ones(1, 1, 1, LANES)
        rows = block_rows(X, Y, channels, n_state)
        save = any(ctx.needs_input_grad)
        size = channels * n_state
        entries = u.new_empty(batch, -(-X // rows), Y * size) if save else u.new_empty(1, 1, 1)
        y = u.new_empty(batch, X, Y, channels)
        table = _exp_table(u.dtype)[0]
        _grid_forward(*[_array(t) for t in (u, dt, rate, B, C, split_k)], has_split, bool(flip[0]), bool(flip[1]),
                      rows, save, y.numpy(), entries.numpy(), table)
        ctx.save_for_backward(u, dt, rate, B, C, split_k, entries)
        ctx.has_split, ctx.flip, ctx.rows = has_split, flip, rows
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):  # noqa: D102
        u, dt, rate, B, C, split, entries = ctx.saved_tensors
        grad_u, grad_dt, grad_B, grad_C = (torch.empty_like(t) for t in (u, dt, B, C))
        grad_rate = torch.zeros_like(rate)
        grad_split = torch.empty_like(u) if ctx.has_split else u.new_empty(1, 1, 1, LANES)
        _backward_call(u, dt, rate, B, C, split, ctx.has_split, ctx.flip, ctx.rows, entries, grad_y.contiguous(),
                       grad_u, grad_dt, grad_rate, grad_B, grad_C, grad_split)
        return grad_u, grad_dt, grad_rate, grad_B, grad_C, (grad_split if ctx.has_split else None), None


def _backward_call(u, dt, rate, B, C, split, has_split, flip, rows, entries, grad_y, *grads) -> None:
    _grid_backward(*[_array(t) for t in (u, dt, rate, B, C, split)], has_split, bool(flip[0]), bool(flip[1]), rows,
                   _array(entries), _array(grad_y), *[g.numpy() for g in grads], _exp_table(u.dtype)[0])


def fused_grid_selective_runs(*tensors: Tensor | None) -> bool:
    """Whether :func:`fused_grid_selective_scan` runs these operands: the JIT enabled, every
    tensor on the CPU with one dtype of :data:`DTYPES`."""
    present = [t for t in tensors if t is not None]
    return (
        jit_enabled() and all(isinstance(t, Tensor) and t.device.type == "cpu" for t in present)
        and present[0].dtype in DTYPES and all(t.dtype == present[0].dtype for t in present)
    )


def fused_grid_selective_scan(
    u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, split: Tensor | None, flip: tuple[bool, bool],
) -> Tensor:
    """The recurrence of :func:`~everygraph.sequence.grid_selective_scan` (module docstring) by
    the compiled kernels, on operands that function has validated: ``u``, ``dt``, ``split``
    ``[B, X, Y, D]``, ``A`` ``[D, N]``, ``B``, ``C`` ``[B, X, Y, N]``, all CPU tensors of one dtype
    of :data:`DTYPES`. Returns ``y`` ``[B, X, Y, D]``."""
    if not NUMBA_AVAILABLE:
        raise RuntimeError("execution='fused' needs numba: pip install 'everygraph[cpu]' (or numba>=0.60)")
    if not jit_enabled():
        raise RuntimeError("execution='fused' needs the JIT, which EVERYGRAPH_DISABLE_JIT turns off; "
                           "use execution=None (the PyTorch fallback) or unset it")
    tensors = {"u": u, "dt": dt, "A": A, "B": B, "C": C, "split": split}
    for name, t in tensors.items():
        if t is not None and t.device.type != "cpu":
            raise ValueError(f"execution='fused' runs CPU tensors; {name} is on {t.device}")
        if t is not None and (t.dtype not in DTYPES or t.dtype != u.dtype):
            raise ValueError(f"execution='fused' runs float32 or float64 operands of one dtype; "
                             f"u is {u.dtype}, {name} is {t.dtype}")
    channels = u.shape[-1]
    padded = -(-channels // LANES) * LANES
    pad = padded - channels

    def lanes(t: Tensor) -> Tensor:  # channels padded with zeros to whole vectors
        return (torch.nn.functional.pad(t, (0, pad)) if pad else t).contiguous()

    A_padded = torch.nn.functional.pad(A, (0, 0, 0, pad)) if pad else A
    rate = A_padded.reshape(padded // LANES, LANES, A.shape[1]).transpose(1, 2).contiguous()
    y = FusedGridSelectiveScan.apply(lanes(u), lanes(dt), rate, B.contiguous(), C.contiguous(),
                                     None if split is None else lanes(split), (bool(flip[0]), bool(flip[1])))
    return y[..., :channels] if pad else y
