r"""The selective scan as a fused CPU kernel (numba), forward and adjoint.

The recurrence of :mod:`.recurrent`, with every position's work for one ``(batch, channel)``
row done in one compiled loop: the state :math:`h \in \mathbb{R}^N` stays in the core's L1
cache, the decay :math:`\exp(\Delta_t A_n)` is computed where it is used (never stored), and
the readout :math:`\langle h_t, C_t\rangle` is summed in the same pass:

.. math::
    h_{t,n} = \exp(s_t\, r_n)\, h_{t-1,n} + x_t\, B_{t,n},\qquad y_t = \sum_n h_{t,n} C_{t,n}

with :math:`s_t = \Delta_t` (the step of the row), :math:`r_n = A_n` (the rate of the state
entry) and :math:`x_t = \Delta_t u_t`. The core loop only knows "a log-decay per state
entry, :math:`s_t r_n`": a scalar decay per step is :math:`r_n = 1`, a fixed per-entry decay
is :math:`s_t = 1`.

The backward pass is the adjoint recurrence

.. math::
    g_{t,n} = \bar h_{t,n} + C_{t,n}\, \bar y_t + a_{t+1,n}\, g_{t+1,n}

run right to left per row. The forward pass keeps the state entering every chunk of
:data:`CHUNK` positions (``1 / CHUNK`` of the states, only when a gradient is needed); the
backward pass recomputes a chunk's decays and states from it into two ``[CHUNK, N]`` buffers
that stay in L1, then walks the chunk backwards and accumulates every gradient in the same
loop: :math:`\bar x_t = \sum_n g B`, :math:`\overline{s_t r_n} = g\, a\, h_{t-1}`,
:math:`\bar u = \Delta \bar x`, :math:`\bar\Delta = u \bar x + \sum_n \overline{sr}\, A`,
:math:`\bar A = \sum \overline{sr}\, \Delta`, :math:`\bar B \mathrel{+}= g\, x`,
:math:`\bar C \mathrel{+}= h\, \bar y`.

Why numba and not ``torch.compile``: the recurrence is a loop over ``L`` positions whose
every step depends on the previous one. Inductor has no loop construct for it: a Python loop
is unrolled into the graph (compile time grows with ``L``), and compiling a fixed block of
steps called once per block leaves a dispatch per block plus the decays materialised in
memory; numba compiles the loop itself once, for every ``L``. Measured forward at B=2, D=256,
N=16, L=4096, float32, one thread (CPU time): this kernel ~40 ms; ``torch.compile`` of a 16-
or 64-step block 112 / 91 ms, after 83 / 205 s of compilation
(``benchmarks/selective_scan.py --torch-compile 16``; ``docs/fused-cpu.md``).

Why one thread: the kernels run on the calling thread, whatever ``torch.get_num_threads()``
says. A ``prange`` over the ``(batch, channel)`` rows of the forward pass did not run faster
with 2 threads than with 1 where it was measured (a 2-core machine),
and every parallel variant is one more compilation; see ``docs/fused-cpu.md``.

Why a hand-written ``exp`` for float32: without Intel's SVML (absent from the pip wheels of
llvmlite) LLVM calls libm's scalar ``expf`` once per state entry, which alone costs more
than the whole rest of the kernel; a Cephes-style polynomial (relative error below 2e-7 on
the clamped range) inlines and vectorises over the state entries. float64 uses libm's
``exp`` (the reference's precision; speed is not the point there).

Arrays the kernels take (contiguous, one dtype):

- ``u``, ``dt``: ``[batch, D, L]`` (``dt`` after bias and softplus)
- ``A``: ``[D, N]``
- ``B``, ``C``: ``[batch, G, L, N]`` (input-dependent, ``G`` groups of ``D / G`` channels)
  or ``[1, D, 1, N]`` (fixed: one group per channel, one position for all)
- ``resets``: ``[L]`` uint8, 1 where the state is dropped before that position (a sequence
  start in scan order)
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._inputs import assemble_final_states, check_flag, final_positions, finish, prepare

try:  # numba is the optional extra ``everygraph[cpu]``
    from llvmlite import ir as _llvm_ir
    from numba import njit, types
    from numba.extending import intrinsic, overload

    NUMBA_AVAILABLE = True
except ImportError:  # pragma: no cover - exercised where numba is absent
    NUMBA_AVAILABLE = False

#: Positions per chunk of the backward pass: the forward pass keeps the state entering each
#: chunk, the backward pass recomputes a chunk's decays and states into two ``[CHUNK, N]``
#: buffers (8 KiB at N=16 in float32, inside L1).
CHUNK = 64
#: A log-decay below this is clamped (as in :mod:`.recurrent`): ``exp(-60) ~ 8.8e-27`` is
#: zero against any state of ordinary size, and smaller factors lead to denormal numbers,
#: which are ~100x slower on CPUs. The float32 ``exp`` also needs a bounded argument.
MIN_LOG_DECAY = -60.0
#: The largest float32 log-decay the polynomial ``exp`` handles (``exp(88) < 3.4e38``).
_MAX_LOG_DECAY_F32 = 88.0
#: Set to ``1`` to turn the compiled kernels off: :func:`~everygraph.sequence.selective_scan`
#: then runs the pure PyTorch recurrence.
DISABLE_ENV = "EVERYGRAPH_DISABLE_JIT"


def jit_enabled() -> bool:
    """Whether the fused kernels are used: numba importable and :data:`DISABLE_ENV` unset
    (or ``0``/empty)."""
    return NUMBA_AVAILABLE and os.environ.get(DISABLE_ENV, "").strip().lower() in ("", "0", "false", "no")


def _decay_exp(x):  # pragma: no cover - replaced by the overload below inside compiled code
    return math.exp(x)


if NUMBA_AVAILABLE:
    _LN2_HI = np.float32(0.693359375)
    _LN2_LO = np.float32(-2.12194440e-4)
    _LOG2E = np.float32(1.44269504088896341)
    _HALF = np.float32(0.5)
    _ONE = np.float32(1.0)
    _P0 = np.float32(1.9875691500e-4)
    _P1 = np.float32(1.3981999507e-3)
    _P2 = np.float32(8.3334519073e-3)
    _P3 = np.float32(4.1665795894e-2)
    _P4 = np.float32(1.6666665459e-1)
    _P5 = np.float32(5.0000001201e-1)
    _LO32 = np.float32(MIN_LOG_DECAY)
    _HI32 = np.float32(_MAX_LOG_DECAY_F32)

    @intrinsic
    def _pow2_f32(typingctx, k):
        """``2**k`` for a float32 holding an integer in [-126, 127], built from the exponent
        bits (vectorises, unlike ``ldexp``)."""
        if k != types.float32:
            return None

        def codegen(context, builder, signature, args):
            i32 = _llvm_ir.IntType(32)
            biased = builder.add(builder.fptosi(args[0], i32), _llvm_ir.Constant(i32, 127))
            return builder.bitcast(builder.shl(biased, _llvm_ir.Constant(i32, 23)), _llvm_ir.FloatType())

        return types.float32(types.float32), codegen

    @overload(_decay_exp, inline="always")
    def _decay_exp_impl(x):
        if x == types.float32:

            def exp_f32(x):
                x = _HI32 if x > _HI32 else (_LO32 if x < _LO32 else x)
                k = np.floor(x * _LOG2E + _HALF)
                r = x - k * _LN2_HI - k * _LN2_LO
                p = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * (r * r) + r + _ONE
                return p * _pow2_f32(k)

            return exp_f32
        if isinstance(x, types.Float):

            def exp_f64(x):
                return math.exp(x if x > MIN_LOG_DECAY else MIN_LOG_DECAY)

            return exp_f64
        return None

    def _cached_njit(**options):
        """``njit(cache=True)``, or without the on-disk cache when no cache directory is
        writable (numba refuses ``cache=True`` then; set ``NUMBA_CACHE_DIR`` to keep it)."""

        def wrap(fn):
            try:
                return njit(cache=True, **options)(fn)
            except RuntimeError:
                return njit(**options)(fn)

        return wrap

    # 'reassoc' lets LLVM vectorise the readout's sum over state entries; no 'nnan'/'ninf'
    # so that an infinite or NaN input still propagates as in the reference.
    _FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

    @_cached_njit(fastmath=_FASTMATH)
    def _exp_kernel(x):  # for tests of the float32 exp
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = _decay_exp(x[i])
        return out

    @njit(inline="always")
    def _position(s, length, reverse):
        return length - 1 - s if reverse else s

    @njit(fastmath=_FASTMATH)
    def _forward_row(b, d, u, dt, A, B, C, resets, final_slot, reverse, y, finals, entries, save, h, zero):
        """One ``(batch, channel)`` row of the forward recurrence; ``h`` ``[N]`` scratch, ``zero``
        a 0 of the compute dtype (a float literal would promote float32 sums to float64)."""
        length = u.shape[2]
        n_state = A.shape[1]
        channels = A.shape[0]
        bB = b if B.shape[0] > 1 else 0
        gB = d // (channels // B.shape[1])
        tB = 1 if B.shape[2] > 1 else 0
        bC = b if C.shape[0] > 1 else 0
        gC = d // (channels // C.shape[1])
        tC = 1 if C.shape[2] > 1 else 0
        for n in range(n_state):
            h[n] = 0.0
        for s in range(length):
            t = _position(s, length, reverse)
            if save and s % CHUNK == 0:
                for n in range(n_state):
                    entries[b, d, s // CHUNK, n] = h[n]
            if resets[t]:
                for n in range(n_state):
                    h[n] = 0.0
            step = dt[b, d, t]
            x = step * u[b, d, t]
            acc = zero
            for n in range(n_state):
                hn = _decay_exp(step * A[d, n]) * h[n] + x * B[bB, gB, t * tB, n]
                h[n] = hn
                acc += hn * C[bC, gC, t * tC, n]
            y[b, d, t] = acc
            j = final_slot[t]
            if j >= 0:
                for n in range(n_state):
                    finals[j, b, d, n] = h[n]

    @_cached_njit(fastmath=_FASTMATH)
    def _forward_serial(u, dt, A, B, C, resets, final_slot, reverse, y, finals, entries, save):
        h = np.empty(A.shape[1], dtype=u.dtype)
        zero = np.zeros(1, dtype=u.dtype)[0]
        for b in range(u.shape[0]):
            for d in range(u.shape[1]):
                _forward_row(b, d, u, dt, A, B, C, resets, final_slot, reverse, y, finals, entries, save, h, zero)

    @_cached_njit(fastmath=_FASTMATH)
    def _backward_serial(u, dt, A, B, C, resets, final_slot, reverse, entries, grad_y, grad_finals,
                         grad_u, grad_dt, grad_A, grad_B, grad_C):
        """The adjoint recurrence for every row; accumulates into ``grad_A`` ``[D, N]`` and
        ``grad_B``, ``grad_C`` (shaped like ``B``, ``C``: summed over what they broadcast)."""
        batch, channels, length = u.shape
        n_state = A.shape[1]
        num_chunks = entries.shape[2]
        h_buf = np.empty((CHUNK + 1, n_state), dtype=u.dtype)
        a_buf = np.empty((CHUNK, n_state), dtype=u.dtype)
        g = np.empty(n_state, dtype=u.dtype)
        zero = np.zeros(1, dtype=u.dtype)[0]
        for b in range(batch):
            bB = b if B.shape[0] > 1 else 0
            bC = b if C.shape[0] > 1 else 0
            for d in range(channels):
                gB = d // (channels // B.shape[1])
                tB = 1 if B.shape[2] > 1 else 0
                gC = d // (channels // C.shape[1])
                tC = 1 if C.shape[2] > 1 else 0
                for n in range(n_state):
                    g[n] = 0.0
                for k in range(num_chunks - 1, -1, -1):
                    s0 = k * CHUNK
                    s1 = min(length, s0 + CHUNK)
                    # recompute the chunk: h_buf[i] is the state entering position s0 + i
                    for n in range(n_state):
                        h_buf[0, n] = entries[b, d, k, n]
                    for s in range(s0, s1):
                        t = _position(s, length, reverse)
                        i = s - s0
                        step = dt[b, d, t]
                        x = step * u[b, d, t]
                        # a sequence start is a zero decay: no state enters, no gradient leaves
                        if resets[t]:
                            for n in range(n_state):
                                a_buf[i, n] = 0.0
                        else:
                            for n in range(n_state):
                                a_buf[i, n] = _decay_exp(step * A[d, n])
                        for n in range(n_state):
                            h_buf[i + 1, n] = a_buf[i, n] * h_buf[i, n] + x * B[bB, gB, t * tB, n]
                    # the adjoint, right to left; g holds the gradient of the state after t
                    for s in range(s1 - 1, s0 - 1, -1):
                        t = _position(s, length, reverse)
                        i = s - s0
                        step = dt[b, d, t]
                        x = step * u[b, d, t]
                        gy = grad_y[b, d, t]
                        j = final_slot[t]
                        if j >= 0:
                            for n in range(n_state):
                                g[n] += grad_finals[j, b, d, n]
                        grad_x = zero
                        grad_log_decay = zero
                        for n in range(n_state):
                            gn = g[n] + C[bC, gC, t * tC, n] * gy
                            grad_C[bC, gC, t * tC, n] += h_buf[i + 1, n] * gy
                            grad_B[bB, gB, t * tB, n] += gn * x
                            grad_x += gn * B[bB, gB, t * tB, n]
                            a = a_buf[i, n]
                            through_decay = gn * a * h_buf[i, n]
                            grad_log_decay += through_decay * A[d, n]
                            grad_A[d, n] += through_decay * step
                            g[n] = gn * a
                        grad_u[b, d, t] = grad_x * step
                        grad_dt[b, d, t] = grad_x * u[b, d, t] + grad_log_decay


def _array(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class FusedSelectiveScan(torch.autograd.Function):
    """The kernels as an autograd function on the kernel layout (module docstring), with
    ``resets`` and ``final_slot`` (``[L]`` int32: the row of ``finals`` that receives the state
    after that position, or -1); returns ``y`` ``[batch, D, L]`` and ``finals``
    ``[num_finals, batch, D, N]``."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C, resets, final_slot, num_finals, reverse, save):  # noqa: D102
        batch, channels, length = u.shape
        n_state = A.shape[1]
        y = u.new_empty(batch, channels, length)
        finals = u.new_zeros(num_finals, batch, channels, n_state)
        num_chunks = -(-length // CHUNK) if save else 1
        entries = u.new_empty(batch, channels, num_chunks, n_state)
        arrays = [_array(x) for x in (u, dt, A, B, C)]
        _forward_serial(*arrays, resets, final_slot, reverse, y.numpy(), finals.numpy(), entries.numpy(), save)
        ctx.save_for_backward(u, dt, A, B, C, entries)
        ctx.resets, ctx.final_slot, ctx.reverse = resets, final_slot, reverse
        return y, finals

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_finals):  # noqa: D102
        u, dt, A, B, C, entries = ctx.saved_tensors
        batch, channels, _ = u.shape
        grad_y = torch.zeros_like(u) if grad_y is None else grad_y.contiguous()
        if grad_finals is None:
            grad_finals = u.new_zeros(0, batch, channels, A.shape[1])
            final_slot = np.full_like(ctx.final_slot, -1)
        else:
            grad_finals, final_slot = grad_finals.contiguous(), ctx.final_slot
        grad_u, grad_dt = torch.empty_like(u), torch.empty_like(u)
        grad_A, grad_B, grad_C = torch.zeros_like(A), torch.zeros_like(B), torch.zeros_like(C)
        _backward_serial(
            *[_array(x) for x in (u, dt, A, B, C)], ctx.resets, final_slot, ctx.reverse, _array(entries),
            grad_y.numpy(), grad_finals.numpy(),
            grad_u.numpy(), grad_dt.numpy(), grad_A.numpy(), grad_B.numpy(), grad_C.numpy(),
        )
        return grad_u, grad_dt, grad_A, grad_B, grad_C, None, None, None, None, None


def _resets(keep: Tensor | None, length: int, reverse: bool) -> np.ndarray:
    """``[L]`` uint8: 1 where the state is dropped before a position, in scan order (going
    right to left a sequence starts at its last position)."""
    out = np.zeros(length, dtype=np.uint8)
    if keep is not None:
        starts = (~keep.cpu()).numpy()
        if reverse:
            # position i starts a sequence read right to left when i + 1 starts one read left to right
            out[:-1] = starts[1:]
        else:
            out[:] = starts
    return out


def _kernel_operand(M: Tensor, original: Tensor, channels: int, n_state: int) -> Tensor:
    """``B`` or ``C`` from the :class:`ScanInputs` layout to ``[batch, G, L, N]`` or, fixed,
    ``[1, D, 1, N]``."""
    if original.dim() == 2:
        return M.reshape(1, channels, 1, n_state)
    return M.squeeze(2).contiguous()  # [batch, G, 1, L, N] -> [batch, G, L, N]


def fused_usable(*tensors: Tensor | None) -> bool:
    """Whether :func:`selective_scan_fused` can run these inputs: the JIT is enabled and every
    tensor is on the CPU (anything that is not a tensor goes to the execution whose checks
    name it)."""
    return jit_enabled() and all(t is None or (isinstance(t, Tensor) and t.device.type == "cpu") for t in tensors)


def selective_scan_fused(
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
) -> Tensor | tuple[Tensor, Tensor]:
    """The fused CPU execution of :func:`~everygraph.sequence.selective_scan` (same arguments
    and results). Needs numba (``pip install everygraph[cpu]``) and CPU tensors; ``delta_bias``,
    softplus, ``D`` and ``z`` are the same PyTorch operations as in the other executions,
    the recurrence and its adjoint are the compiled kernels."""
    if not NUMBA_AVAILABLE:
        raise RuntimeError("selective_scan_fused needs numba: pip install 'everygraph[cpu]' (or numba>=0.60)")

    p = prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cu_seqlens)
    check_flag("return_last_state", return_last_state)
    check_flag("reverse", reverse)
    batch, channels, length, n_state = p.batch, p.channels, p.length, p.state_size
    u_k = p.u.reshape(batch, channels, length).contiguous()
    dt_k = p.delta.reshape(batch, channels, length).contiguous()
    A_k = p.A.reshape(channels, n_state).contiguous()
    B_k = _kernel_operand(p.B, B, channels, n_state)
    C_k = _kernel_operand(p.C, C, channels, n_state)
    # each packed sequence's final state is the state after its last position in scan order
    positions, sequences = final_positions(cu_seqlens, length, reverse)
    final_slot = np.full(length, -1, dtype=np.int32)
    final_slot[positions] = np.arange(len(positions), dtype=np.int32)
    save = torch.is_grad_enabled() and any(t.requires_grad for t in (u_k, dt_k, A_k, B_k, C_k))
    y, finals = FusedSelectiveScan.apply(
        u_k, dt_k, A_k, B_k, C_k, _resets(p.keep, length, reverse), final_slot, len(positions), reverse, save
    )
    out = finish(y, u, D, z, u.dtype)
    if not return_last_state:
        return out
    return out, assemble_final_states(finals, sequences, cu_seqlens, batch, channels, n_state)
