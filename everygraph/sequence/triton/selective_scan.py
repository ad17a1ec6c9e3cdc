r"""Mamba-1's selective scan as two fused Triton kernels (forward, and the adjoint backward).

The recurrence (see :func:`~everygraph.sequence.selective_scan`), per channel ``d`` with a
state :math:`h \in \mathbb{R}^N`:

.. math::
    h_t = \exp(\Delta_t A) \odot h_{t-1} + \Delta_t u_t B_t, \qquad y_t = \langle h_t, C_t\rangle .

**Forward kernel.** One program per (batch, group, block of ``BLOCK_D`` channels); the
``[BLOCK_D, N]`` state lives in registers, a loop over positions loads ``delta, u`` (one
coalesced ``[BLOCK_D]`` row of a time-major ``[batch, L, D]`` tensor) and ``B, C``
(``[N]``), and fuses ``exp``, the update and the readout. Every ``CHUNK`` positions the state
entering the chunk is written out (``[batch, L / CHUNK, D, N]``): the only states kept for
the backward pass, the memory plan of the CPU recurrent path.

**Backward kernel.** The same programs visit the chunks in reverse. Each chunk's states are
recomputed from its entry state into a per-program scratch slab (``[CHUNK, BLOCK_D, N]``,
L2-resident on a GPU), then the adjoint recurrence runs backwards through the chunk:

.. math::
    g_t = C_t \bar y_t + a_{t+1} \odot g_{t+1}, \quad
    \overline{\Delta A}_t = g_t \odot a_t \odot h_{t-1}, \quad
    \bar\Delta_t = \textstyle\sum_n \overline{\Delta A}_t A + u_t \sum_n g_t B_t, \quad
    \bar u_t = \Delta_t \sum_n g_t B_t,

with :math:`\bar A = \sum_t \overline{\Delta A}_t \Delta_t` accumulated in registers and
:math:`\bar B_t = \sum_d g_t \Delta_t u_t`, :math:`\bar C_t = \sum_d h_t \bar y_t` reduced
over the program's channels and written per block (summed over blocks afterwards: no
atomics, deterministic). Fixed ``[D, N]`` ``B``/``C`` accumulate per channel in registers.

Packed sequences (``cu_seqlens``) set :math:`a_t = 0` at each sequence start; ``end_slot``
marks the last position of each sequence, where its final state is written (zeros stay for
an empty sequence). ``reverse`` is handled by the caller flipping time.

``delta_bias``/softplus, the skip ``D u`` and the gate ``silu(z)`` are elementwise and stay in
PyTorch around the kernels (autograd differentiates them).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._runtime import autotune_configs

#: Launch configurations tried once per (D, N, L) shape on a GPU. A program holds a
#: [BLOCK_D, N] state (64 x 16 fp32: 1024 values over 32 * num_warps threads); Hopper-class
#: GPUs favour 4-8 warps and 2-3 stages for the streamed loads of delta, u, B and C.
_SCAN_CONFIGS = autotune_configs(
    [triton.Config({}, num_warps=w, num_stages=s) for w in (4, 8, 2) for s in (2, 3, 1)]
)

#: Positions per chunk: the forward pass keeps one state per chunk for the backward pass.
CHUNK = 64


@triton.jit
def _step_inputs(dt_ptr, u_ptr, B_ptr, keep_ptr, A, Bf, row, t, L, D, d, n, local, mask_d, mask_n, B_base, s_tB,
                 B_FIXED: tl.constexpr, HAS_KEEP: tl.constexpr):
    """Position ``t``'s step size, input, ``B`` row and decay for the program's channels, and
    the masks of valid channels and states (all false past the end of the sequence)."""
    m = mask_d & (local * 0 + t < L)
    valid_n = mask_n & (n * 0 + t < L)
    dt = tl.load(dt_ptr + row + t * D + d, mask=m, other=0.0)
    u = tl.load(u_ptr + row + t * D + d, mask=m, other=0.0)
    if B_FIXED:
        Bt = Bf
    else:
        Bt = tl.load(B_ptr + B_base + t * s_tB + n, mask=valid_n, other=0.0)[None, :]
    a = tl.exp(dt[:, None] * A)
    if HAS_KEEP:
        a = a * tl.load(keep_ptr + t)
    return dt, u, Bt, a, m, valid_n


@triton.autotune(configs=_SCAN_CONFIGS, key=["D", "N", "L"])
@triton.jit
def _selective_scan_fwd_kernel(
    dt_ptr, u_ptr, A_ptr, B_ptr, C_ptr, keep_ptr, end_ptr,
    y_ptr, saved_ptr, last_ptr,
    L, D, N, per_group, num_chunks, num_slots,
    s_bB, s_gB, s_tB, s_bC, s_gC, s_tC,
    B_FIXED: tl.constexpr, C_FIXED: tl.constexpr, HAS_KEEP: tl.constexpr, SAVE: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_g = tl.program_id(1)
    pid_d = tl.program_id(2)
    local = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = local < per_group
    d = pid_g * per_group + local
    n = tl.arange(0, BLOCK_N)
    mask_n = n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn = d[:, None] * N + n[None, :]
    A = tl.load(A_ptr + dn, mask=mask_dn, other=0.0)
    Bf = A  # unused unless B is fixed
    if B_FIXED:
        Bf = tl.load(B_ptr + dn, mask=mask_dn, other=0.0)
    B_base = pid_b * s_bB + pid_g * s_gB
    if C_FIXED:
        Cf = tl.load(C_ptr + dn, mask=mask_dn, other=0.0)
    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=A.dtype)
    row = pid_b * L * D
    for c in range(num_chunks):
        if SAVE:
            tl.store(saved_ptr + (pid_b * num_chunks + c) * D * N + dn, h, mask=mask_dn)
        for i in range(CHUNK):
            t = c * CHUNK + i
            dt, u, Bt, a, m, valid_n = _step_inputs(dt_ptr, u_ptr, B_ptr, keep_ptr, A, Bf, row, t, L, D, d, n, local,
                                                    mask_d, mask_n, B_base, s_tB, B_FIXED, HAS_KEEP)
            if C_FIXED:
                Ct = Cf
            else:
                Ct = tl.load(C_ptr + pid_b * s_bC + pid_g * s_gC + t * s_tC + n, mask=valid_n, other=0.0)[None, :]
            h = a * h + (dt * u)[:, None] * Bt
            tl.store(y_ptr + row + t * D + d, tl.sum(h * Ct, axis=1), mask=m)
            slot = tl.load(end_ptr + t)
            tl.store(last_ptr + (pid_b * num_slots + tl.maximum(slot, 0)) * D * N + dn, h, mask=mask_dn & (dn * 0 + slot >= 0))


@triton.autotune(configs=_SCAN_CONFIGS, key=["D", "N", "L"])
@triton.jit
def _selective_scan_bwd_kernel(
    dt_ptr, u_ptr, A_ptr, B_ptr, C_ptr, keep_ptr, end_ptr, saved_ptr,
    dy_ptr, dlast_ptr, scratch_ptr,
    ddt_ptr, du_ptr, dA_ptr, dB_ptr, dC_ptr,
    L, D, N, per_group, num_chunks, num_slots, num_blocks, groups,
    s_bB, s_gB, s_tB, s_bC, s_gC, s_tC,
    B_FIXED: tl.constexpr, C_FIXED: tl.constexpr, HAS_KEEP: tl.constexpr, HAS_DLAST: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_g = tl.program_id(1)
    pid_d = tl.program_id(2)
    program = (pid_b * groups + pid_g) * num_blocks + pid_d
    local = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = local < per_group
    d = pid_g * per_group + local
    n = tl.arange(0, BLOCK_N)
    mask_n = n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn = d[:, None] * N + n[None, :]
    tile = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + n[None, :]  # position in a scratch slab
    scratch = scratch_ptr + program * CHUNK * BLOCK_D * BLOCK_N
    A = tl.load(A_ptr + dn, mask=mask_dn, other=0.0)
    Bf = A  # unused unless B is fixed
    if B_FIXED:
        Bf = tl.load(B_ptr + dn, mask=mask_dn, other=0.0)
        dB_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=A.dtype)
    B_base = pid_b * s_bB + pid_g * s_gB
    if C_FIXED:
        Cf = tl.load(C_ptr + dn, mask=mask_dn, other=0.0)
        dC_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=A.dtype)
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=A.dtype)
    carry = tl.zeros([BLOCK_D, BLOCK_N], dtype=A.dtype)  # a_{t+1} * g_{t+1}
    row = pid_b * L * D
    # dB/dC partials of this block: [batch, groups, num_blocks, L, N]
    part = ((pid_b * groups + pid_g) * num_blocks + pid_d) * L * N
    for cc in range(num_chunks):
        c = num_chunks - 1 - cc
        h0 = tl.load(saved_ptr + (pid_b * num_chunks + c) * D * N + dn, mask=mask_dn, other=0.0)
        h = h0
        for i in range(CHUNK):  # recompute the chunk's states
            t = c * CHUNK + i
            dt, u, Bt, a, m, valid_n = _step_inputs(dt_ptr, u_ptr, B_ptr, keep_ptr, A, Bf, row, t, L, D, d, n, local,
                                                    mask_d, mask_n, B_base, s_tB, B_FIXED, HAS_KEEP)
            h = a * h + (dt * u)[:, None] * Bt
            tl.store(scratch + i * BLOCK_D * BLOCK_N + tile, h)
        for ii in range(CHUNK):  # the adjoint recurrence, backwards through the chunk
            i = CHUNK - 1 - ii
            t = c * CHUNK + i
            dt, u, Bt, a, m, valid_n = _step_inputs(dt_ptr, u_ptr, B_ptr, keep_ptr, A, Bf, row, t, L, D, d, n, local,
                                                    mask_d, mask_n, B_base, s_tB, B_FIXED, HAS_KEEP)
            dy = tl.load(dy_ptr + row + t * D + d, mask=m, other=0.0)
            if C_FIXED:
                Ct = Cf
            else:
                Ct = tl.load(C_ptr + pid_b * s_bC + pid_g * s_gC + t * s_tC + n, mask=valid_n, other=0.0)[None, :]
            h_t = tl.load(scratch + i * BLOCK_D * BLOCK_N + tile, mask=mask_dn & (dn * 0 + t < L), other=0.0)
            previous = tl.load(scratch + tl.maximum(i - 1, 0) * BLOCK_D * BLOCK_N + tile, mask=mask_dn & (dn * 0 + i > 0), other=0.0)
            h_prev = tl.where(i > 0, previous, h0)
            g = Ct * dy[:, None] + carry
            if HAS_DLAST:
                slot = tl.load(end_ptr + t)
                g += tl.load(dlast_ptr + (pid_b * num_slots + tl.maximum(slot, 0)) * D * N + dn, mask=mask_dn & (dn * 0 + slot >= 0), other=0.0)
            dDA = g * a * h_prev
            gB = tl.sum(g * Bt, axis=1)
            tl.store(ddt_ptr + row + t * D + d, tl.sum(dDA * A, axis=1) + u * gB, mask=m)
            tl.store(du_ptr + row + t * D + d, dt * gB, mask=m)
            dA_acc += dDA * dt[:, None]
            x_grad = g * (dt * u)[:, None]
            if B_FIXED:
                dB_acc += x_grad
            else:
                tl.store(dB_ptr + part + t * N + n, tl.sum(x_grad, axis=0), mask=valid_n)
            if C_FIXED:
                dC_acc += h_t * dy[:, None]
            else:
                tl.store(dC_ptr + part + t * N + n, tl.sum(h_t * dy[:, None], axis=0), mask=valid_n)
            carry = a * g
    tl.store(dA_ptr + pid_b * D * N + dn, dA_acc, mask=mask_dn)
    if B_FIXED:
        tl.store(dB_ptr + pid_b * D * N + dn, dB_acc, mask=mask_dn)
    if C_FIXED:
        tl.store(dC_ptr + pid_b * D * N + dn, dC_acc, mask=mask_dn)


def _next_power_of_2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def _blocks(per_group: int, state_size: int) -> tuple[int, int]:
    """``BLOCK_D`` channels per program (a power of two, at most 64: 64 x 16 fp32 states are
    16 registers per thread of a 4-warp program), ``BLOCK_N`` >= ``N``."""
    return min(64, _next_power_of_2(per_group)), max(2, _next_power_of_2(state_size))


class SelectiveScanTriton(torch.autograd.Function):
    r"""The fused scan core on time-major operands.

    ``dt``, ``u``: ``[batch, L, D]``; ``A``: ``[D, N]``; ``B``, ``C``: ``[batch, G, L, N]``
    (input-dependent; channel ``d`` reads group ``d // (D / G)``) or ``[D, N]`` (fixed);
    ``keep``: ``[L]`` (0 at a sequence start) or None; ``end_slot``: ``[L]`` int32, the
    sequence whose last position ``t`` is (-1 elsewhere), ``num_slots`` sequences.
    Returns ``y`` ``[batch, L, D]`` and ``last`` ``[batch, num_slots, D, N]``.
    """

    @staticmethod
    def forward(ctx, dt, u, A, B, C, keep, end_slot, num_slots: int, chunk: int):  # noqa: D102
        batch, L, D = u.shape
        N = A.shape[1]
        b_fixed, c_fixed = B.dim() == 2, C.dim() == 2
        groups = 1 if b_fixed else B.shape[1]
        if not c_fixed:
            groups = max(groups, C.shape[1])
        per_group = D // groups
        BLOCK_D, BLOCK_N = _blocks(per_group, N)
        num_blocks = -(-per_group // BLOCK_D)
        num_chunks = -(-L // chunk)
        save = any(ctx.needs_input_grad[:5])
        y = torch.empty_like(u)
        last = u.new_zeros(batch, num_slots, D, N)
        saved = u.new_empty(batch, num_chunks, D, N) if save else u.new_empty(1)
        strides_B = B.stride()[:3] if not b_fixed else (0, 0, 0)
        strides_C = C.stride()[:3] if not c_fixed else (0, 0, 0)
        keep_arg = keep if keep is not None else u.new_empty(1)
        grid = (batch, groups, num_blocks)
        _selective_scan_fwd_kernel[grid](
            dt, u, A, B, C, keep_arg, end_slot, y, saved, last,
            L, D, N, per_group, num_chunks, num_slots, *strides_B, *strides_C,
            B_FIXED=b_fixed, C_FIXED=c_fixed, HAS_KEEP=keep is not None, SAVE=save,
            CHUNK=chunk, BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N,
        )
        if save:
            ctx.save_for_backward(dt, u, A, B, C, keep, end_slot, saved)
            ctx.config = (groups, per_group, num_blocks, num_chunks, num_slots, chunk, BLOCK_D, BLOCK_N)
        ctx.mark_non_differentiable(end_slot)
        return y, last

    @staticmethod
    def backward(ctx, grad_y, grad_last):  # noqa: D102
        dt, u, A, B, C, keep, end_slot, saved = ctx.saved_tensors
        groups, per_group, num_blocks, num_chunks, num_slots, chunk, BLOCK_D, BLOCK_N = ctx.config
        batch, L, D = u.shape
        N = A.shape[1]
        b_fixed, c_fixed = B.dim() == 2, C.dim() == 2
        grad_y = grad_y.contiguous() if grad_y is not None else torch.zeros_like(u)
        has_dlast = grad_last is not None
        dlast = grad_last.contiguous() if has_dlast else u.new_empty(1)
        scratch = u.new_empty(batch * groups * num_blocks * chunk * BLOCK_D * BLOCK_N)
        ddt, du = torch.empty_like(dt), torch.empty_like(u)
        dA = u.new_empty(batch, D, N)
        dB = u.new_empty(batch, D, N) if b_fixed else u.new_zeros(batch, groups, num_blocks, L, N)
        dC = u.new_empty(batch, D, N) if c_fixed else u.new_zeros(batch, groups, num_blocks, L, N)
        strides_B = B.stride()[:3] if not b_fixed else (0, 0, 0)
        strides_C = C.stride()[:3] if not c_fixed else (0, 0, 0)
        keep_arg = keep if keep is not None else u.new_empty(1)
        _selective_scan_bwd_kernel[(batch, groups, num_blocks)](
            dt, u, A, B, C, keep_arg, end_slot, saved, grad_y, dlast, scratch,
            ddt, du, dA, dB, dC,
            L, D, N, per_group, num_chunks, num_slots, num_blocks, groups, *strides_B, *strides_C,
            B_FIXED=b_fixed, C_FIXED=c_fixed, HAS_KEEP=keep is not None, HAS_DLAST=has_dlast,
            CHUNK=chunk, BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N,
        )
        dA = dA.sum(0)
        dB = dB.sum(0) if b_fixed else _group_sum(dB, B.shape[1])
        dC = dC.sum(0) if c_fixed else _group_sum(dC, C.shape[1])
        return ddt, du, dA, dB, dC, None, None, None, None


def _group_sum(partial: Tensor, operand_groups: int) -> Tensor:
    """``[batch, groups, blocks, L, N]`` partial sums -> the gradient of a ``[batch, G, L, N]``
    operand (``groups`` is a multiple of ``G`` when ``B`` and ``C`` have different counts)."""
    batch, groups, blocks, L, N = partial.shape
    return partial.view(batch, operand_groups, groups // operand_groups * blocks, L, N).sum(2)


def selective_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    reverse: bool = False,
    cu_seqlens: Tensor | None = None,
    *,
    chunk: int = CHUNK,
) -> Tensor | tuple[Tensor, Tensor]:
    """:func:`~everygraph.sequence.selective_scan` on the fused Triton kernels (same
    arguments, same results). Runs on CUDA tensors, or on CPU tensors under
    ``TRITON_INTERPRET=1``. ``chunk``: positions per saved state (a power of two is not
    required; smaller saves more memory in the forward pass, costs nothing in the backward).
    """
    from ..mamba._inputs import check_cu_seqlens, check_flag, finish, flip_cu_seqlens, prepare
    from ..mamba.recurrent import selective_scan_recurrent
    from ._runtime import require_triton

    p = prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cu_seqlens)
    check_flag("return_last_state", return_last_state)
    check_flag("reverse", reverse)
    require_triton(u.device)
    batch, channels, length, N = p.batch, p.channels, p.length, p.state_size
    if batch * channels * N == 0 or length == 0:  # nothing to scan: shaped empties and zero states
        return selective_scan_recurrent(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                                        reverse, cu_seqlens)
    original_cu_seqlens = cu_seqlens
    if reverse:
        cu_seqlens = flip_cu_seqlens(cu_seqlens, length)
    keep = check_cu_seqlens(cu_seqlens, length)
    bounds = cu_seqlens.tolist() if cu_seqlens is not None else [0, length]
    num_slots = len(bounds) - 1
    # padded to whole chunks, so the kernels read them without masks
    padded = max(1, -(-length // chunk) * chunk)
    end_slot = torch.full((padded,), -1, dtype=torch.int32, device=u.device)
    for slot, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        if hi > lo:
            end_slot[hi - 1] = slot

    def time_major(x: Tensor) -> Tensor:  # [batch, G, P, L] -> [batch, L, D]
        x = x.reshape(batch, channels, length).transpose(1, 2)
        return (x.flip(1) if reverse else x).contiguous()

    dt, uu = time_major(p.delta), time_major(p.u)
    Bk = p.B.reshape(channels, N).contiguous() if B.dim() == 2 else operand_dependent(p.B, reverse)
    Ck = p.C.reshape(channels, N).contiguous() if C.dim() == 2 else operand_dependent(p.C, reverse)
    keep_f = None
    if keep is not None:
        keep_f = torch.ones(padded, dtype=dt.dtype, device=u.device)
        keep_f[:length] = keep
    y, last = SelectiveScanTriton.apply(dt, uu, p.A.reshape(channels, N).contiguous(), Bk, Ck, keep_f, end_slot, num_slots, chunk)
    y = y.flip(1) if reverse else y
    out = finish(y.transpose(1, 2), u, D, z, u.dtype)
    if not return_last_state:
        return out
    if reverse:  # slots were numbered in scan order, right to left
        last = last.flip(1)
    if original_cu_seqlens is None:
        return out, last[:, 0]
    return out, last.reshape(batch * num_slots, channels, N)


def operand_dependent(M: Tensor, reverse: bool) -> Tensor:
    """An input-dependent ``B``/``C`` from ``[batch, G, 1, L, N]`` to time-major-per-group
    ``[batch, G, L, N]``, flipped in time when reversed."""
    M = M.squeeze(2)
    return (M.flip(2) if reverse else M).contiguous()
