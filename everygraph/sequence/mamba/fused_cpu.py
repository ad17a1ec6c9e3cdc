r"""The selective scan as a fused CPU kernel (numba), forward and adjoint.

The recurrence of :mod:`.recurrent` compiled into one loop over positions, for
:data:`LANES` channels at a time: channel ``d`` of a block is lane ``w`` of a SIMD vector, so
the state of a block is ``N`` vectors (``[N, LANES]``, held :data:`STATE_GROUP` at a time in
registers across a chunk of positions), every operation of a step is a full vector
operation, the forward pass computes the decay :math:`\exp(\Delta_t A_n)` where it is used
(never stored), and the readout :math:`\langle h_t, C_t\rangle` is summed over the state
entries lane by lane, without horizontal sums:

.. math::
    h_{t,n} = \exp(s_t\, r_n)\, h_{t-1,n} + x_t\, B_{t,n},\qquad y_t = \sum_n h_{t,n} C_{t,n}

with :math:`s_t = \Delta_t` (the step of the channel), :math:`r_n = A_n` (the rate of the
state entry) and :math:`x_t = \Delta_t u_t`; :math:`B_t, C_t` are shared by a group's
channels, so they are broadcast over the lanes. The core loop only knows "a log-decay per
state entry, :math:`s_t r_n`": a scalar decay per step is :math:`r_n = 1`, a fixed per-entry
decay is :math:`s_t = 1`. The vector operations are written explicitly (:class:`_LaneVector`,
LLVM ``<8 x float>``), not left to LLVM's auto-vectorisers: those vectorised the forward
loop but left the adjoint loop scalar.

The backward pass is the adjoint recurrence

.. math::
    g_{t,n} = \bar h_{t,n} + C_{t,n}\, \bar y_t + a_{t+1,n}\, g_{t+1,n}

run right to left. The forward pass keeps the state entering every chunk of :data:`CHUNK`
positions (``1 / CHUNK`` of the states, only when a gradient is needed); the backward pass
recomputes a chunk's decays and states from it, :data:`STATE_GROUP` state entries at a time,
into two ``[CHUNK, STATE_GROUP, LANES]`` buffers (in L1), then walks the chunk backwards for
those entries and accumulates every gradient in the same loop: :math:`\bar x_t = \sum_n g B`, :math:`\overline{s_t r_n} = g\, a\, h_{t-1}`,
:math:`\bar u = \Delta \bar x`, :math:`\bar\Delta = u \bar x + \sum_n \overline{sr}\, A`,
:math:`\bar A = \sum \overline{sr}\, \Delta`, :math:`\bar B \mathrel{+}= g\, x`,
:math:`\bar C \mathrel{+}= h\, \bar y`.

Why numba and not ``torch.compile``: the recurrence is a loop over ``L`` positions whose
every step depends on the previous one. Inductor has no loop construct for it: a Python loop
is unrolled into the graph (compile time grows with ``L``), and compiling a fixed block of
steps called once per block leaves a dispatch per block plus the decays materialised in
memory; numba compiles the loop itself once, for every ``L``. Measured forward at B=2, D=256,
N=16, L=4096, float32, one thread (CPU time), with the earlier one-row-at-a-time version of
this kernel: ~40 ms; ``torch.compile`` of a 16- or 64-step block 112 / 91 ms, after
83 / 205 s of compilation (``benchmarks/selective_scan.py --torch-compile 16``;
``docs/fused-cpu.md``).

Why one thread: the kernels run on the calling thread, whatever ``torch.get_num_threads()``
says. A ``prange`` over the ``(batch, channel)`` rows of the forward pass did not run faster
with 2 threads than with 1 where it was measured (a 2-core machine),
and every parallel variant is one more compilation; see ``docs/fused-cpu.md``.

Why a hand-written ``exp`` for float32: without Intel's SVML (absent from the pip wheels of
llvmlite) LLVM calls libm's scalar ``expf`` once per state entry, which alone costs more
than the whole rest of the kernel; a polynomial after a range reduction by the shifter
trick (relative error 1.6e-7 on the clamped range, tested below 3e-7) computes 8 lanes in
13 vector instructions. float64 uses libm's ``exp`` (the reference's precision; speed is not
the point there). The float32 softplus of the step is a vector kernel too
(:class:`FusedSoftplus`): torch's took about twice as long on one thread.

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

from ._inputs import _Softplus, assemble_final_states, check_flag, final_positions, finish, prepare

try:  # numba is the optional extra ``everygraph[cpu]``
    from llvmlite import ir as _llvm_ir
    from numba import carray, njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic, models, overload, register_model

    NUMBA_AVAILABLE = True
except ImportError:  # pragma: no cover - exercised where numba is absent
    NUMBA_AVAILABLE = False

#: Positions per chunk: the forward pass keeps the state entering each chunk, the backward
#: pass recomputes a chunk's decays and states, :data:`STATE_GROUP` entries at a time, into two
#: ``[CHUNK, STATE_GROUP, LANES]`` buffers (16 KiB each in float32, inside L1). 128 rather than
#: 64: chunks are the outer loop and blocks of channels the inner one, so each block reads
#: ``CHUNK`` positions of its rows of ``u``, ``dt`` (``y``, ...) at a time, and longer pieces
#: of the rows and half the per-chunk work measured 4-10% faster forward and 1-5% backward at
#: ``[2, 256, 4096]``, N=16 (256 slower again: the ``[CHUNK, N, LANES]`` chunk buffers of
#: ``B``, ``C`` and their gradients outgrow L2).
CHUNK = 128
#: Channels computed together, one per vector lane (8 float32 in an AVX2 register): the state
#: of a block is ``[N, LANES]``, so every operation of the recurrence is a full vector
#: operation and the readout's sum over state entries needs no horizontal sum.
LANES = 8
_CHUNK_LANES = CHUNK * LANES
#: State entries the forward loop carries in registers together (``N`` is padded to a multiple
#: of it with entries of rate 0 and ``B = C = 0``, which stay 0 and add nothing).
STATE_GROUP = 4
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
    _ONE = np.float32(1.0)
    #: ``1.5 * 2**23 + 127``: added to ``x log2(e)``, it leaves ``round(x log2(e)) + 127`` in
    #: the low mantissa bits (the biased exponent of ``2**k``, one shift away) and
    #: subtracted again it gives ``k`` itself: one add instead of floor, convert and add.
    _SHIFTER = np.float32(12583039.0)
    # e^r ~ 1 + r (Q1 + r (Q2 + r (Q3 + r (Q4 + r Q5)))) on |r| <= ln(2) / 2: a least-squares
    # fit of the relative error (Lawson weights), 9.1e-8 at most before rounding; with float32
    # rounding and the range reduction 1.6e-7 over [-60, 88] (tests: below 3e-7)
    _Q1 = np.float32(0.9999997)
    _Q2 = np.float32(0.4999915)
    _Q3 = np.float32(0.16667636)
    _Q4 = np.float32(0.04189793)
    _Q5 = np.float32(0.00829031)
    _LO32 = np.float32(MIN_LOG_DECAY)
    _HI32 = np.float32(_MAX_LOG_DECAY_F32)
    # The scan kernels' decays in base 2: the rates are scaled by log2(e) once per kernel call
    # (:func:`_lane_rates`), so that a log-decay is in units of log(2) and the range reduction
    # is k = round(x), f = x - k, exact (no two-part ln(2) product); 2^f = e^(f ln 2) is the
    # polynomial above with Q_j ln(2)^j, on |f| <= 1/2 (the same interval as |r| <= ln(2) / 2).
    _LN2 = math.log(2.0)
    _P1, _P2, _P3, _P4, _P5 = (np.float32(float(q) * _LN2 ** j) for j, q in enumerate((_Q1, _Q2, _Q3, _Q4, _Q5), 1))
    _LO2_32 = np.float32(MIN_LOG_DECAY / _LN2)
    _HI2_32 = np.float32(_MAX_LOG_DECAY_F32 / _LN2)

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
                # the vector form's shifter trick rounds to nearest even, as rint does (the
                # trick itself would be folded away here by the reassociating fast math)
                k = np.rint(x * _LOG2E)
                r = x - k * _LN2_HI - k * _LN2_LO
                p = ((((_Q5 * r + _Q4) * r + _Q3) * r + _Q2) * r + _Q1) * r + _ONE
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
    def _exp_lanes(x, table, base2):
        """The kernels' exp over ``x`` ``[M]``: the vector form, the scalar form on the tail;
        with ``base2`` the scan kernels' decay (:func:`_vdecay`: ``2**x`` in float32), the
        tail through one padded vector."""
        out = np.empty_like(x)
        full = x.shape[0] - x.shape[0] % LANES
        for i in range(0, full, LANES):
            if base2:
                _vstore(out, i, _vdecay(_vload(x, i), table))
            else:
                _vstore(out, i, _vexp(_vload(x, i), table))
        if base2 and full < x.shape[0]:
            pad = np.zeros(LANES, dtype=x.dtype)
            pad[: x.shape[0] - full] = x[full:]
            _vstore(pad, 0, _vdecay(_vload(pad, 0), table))
            out[full:] = pad[: x.shape[0] - full]
            return out
        for i in range(full, x.shape[0]):
            out[i] = _decay_exp(x[i])
        return out

    def _exp_kernel(x: np.ndarray, base2: bool = False) -> np.ndarray:  # for tests of the float32 exp
        """``exp(x)``, or with ``base2`` the scan kernels' decay of a log-decay in units of
        ``log(2)`` (``2**x`` in float32, ``exp(x)`` in float64, whose rates are not scaled)."""
        return _exp_lanes(x, _exp_table(torch.float32 if x.dtype == np.float32 else torch.float64)[0], base2)

    class _LaneVector(types.Type):
        """LANES values of one float dtype in one SIMD value (LLVM ``<LANES x float>``): the
        kernels say what each lane computes, so the code is vector code by construction and
        does not depend on LLVM's auto-vectorisers (which, tried first, vectorised the
        forward loop but left the adjoint loop scalar)."""

        def __init__(self, dtype):
            self.dtype = dtype
            super().__init__(name=f"LaneVector({dtype}x{LANES})")

    @register_model(_LaneVector)
    class _LaneVectorModel(models.PrimitiveModel):
        def __init__(self, dmm, fe_type):
            element = dmm.lookup(fe_type.dtype).get_value_type()
            super().__init__(dmm, fe_type, _llvm_ir.VectorType(element, LANES))

    def _vector_pointer(context, builder, array_type, array, offset):
        data = context.make_array(array_type)(context, builder, array).data
        element = context.get_value_type(array_type.dtype)
        return builder.bitcast(builder.gep(data, [offset]), _llvm_ir.VectorType(element, LANES).as_pointer())

    @intrinsic
    def _vload(typingctx, array, offset):
        """``array.flat[offset : offset + LANES]`` (C-contiguous) as a vector."""
        if not (isinstance(array, types.Array) and array.layout == "C" and isinstance(offset, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            pointer = _vector_pointer(context, builder, array, args[0], args[1])
            return builder.load(pointer, align=array.dtype.bitwidth // 8)

        return _LaneVector(array.dtype)(array, offset), codegen

    @intrinsic
    def _vstore(typingctx, array, offset, value):
        """``array.flat[offset : offset + LANES] = value``."""
        if not (isinstance(array, types.Array) and array.layout == "C" and isinstance(value, _LaneVector)):
            return None

        def codegen(context, builder, signature, args):
            pointer = _vector_pointer(context, builder, array, args[0], args[1])
            builder.store(args[2], pointer, align=array.dtype.bitwidth // 8)
            return context.get_dummy_value()

        return types.none(array, offset, value), codegen

    @intrinsic
    def _vsplat(typingctx, value, like):
        """``value`` (cast to the dtype of the array ``like``) in every lane."""
        if not isinstance(like, types.Array):
            return None
        dtype = like.dtype

        def codegen(context, builder, signature, args):
            scalar = context.cast(builder, args[0], value, dtype)
            vector_type = _llvm_ir.VectorType(context.get_value_type(dtype), LANES)
            one = builder.insert_element(_llvm_ir.Constant(vector_type, _llvm_ir.Undefined), scalar,
                                         _llvm_ir.Constant(_llvm_ir.IntType(32), 0))
            zeros = _llvm_ir.Constant(_llvm_ir.VectorType(_llvm_ir.IntType(32), LANES), [0] * LANES)
            return builder.shuffle_vector(one, _llvm_ir.Constant(vector_type, _llvm_ir.Undefined), zeros)

        return _LaneVector(dtype)(value, like), codegen

    def _binary(operation):
        @intrinsic
        def vector_op(typingctx, a, b):
            if not (isinstance(a, _LaneVector) and a == b):
                return None

            def codegen(context, builder, signature, args):
                return getattr(builder, operation)(*args)

            return a(a, b), codegen

        return vector_op

    _vadd, _vmul = _binary("fadd"), _binary("fmul")

    @intrinsic
    def _vfma(typingctx, a, b, c):
        """``a * b + c`` per lane, one rounding (the FMA instruction)."""
        if not (isinstance(a, _LaneVector) and a == b == c):
            return None

        def codegen(context, builder, signature, args):
            return _fma_ir(builder, *args)

        return a(a, b, c), codegen

    def _vector_intrinsic(builder, name, vector_type, arity=1):
        """The LLVM intrinsic ``name`` on ``vector_type`` (``llvm.floor.v8f32``, ...)."""
        element = "f32" if vector_type.element == _llvm_ir.FloatType() else "f64"
        function_type = _llvm_ir.FunctionType(vector_type, [vector_type] * arity)
        return cgutils.get_or_insert_function(builder.module, function_type, f"{name}.v{LANES}{element}")

    def _fma_ir(builder, a, b, c):
        return builder.call(_vector_intrinsic(builder, "llvm.fma", a.type, 3), [a, b, c])

    def _vector_constant(vector_type, value):
        return _llvm_ir.Constant(vector_type, [_llvm_ir.Constant(vector_type.element, value)] * LANES)

    #: Rows of :data:`_EXP_TABLE`: the constants of the float32 polynomial, each repeated over
    #: the lanes. The kernels read them from this array (an argument, so LLVM cannot fold them
    #: into immediates): as memory operands of the vector instructions they cost nothing,
    #: while as immediates they need two instructions each per use, since the loop has too
    #: few vector registers to keep all of them.
    _EXP_ROWS = (_HI32, _LO32, _LOG2E, _SHIFTER, -_LN2_HI, -_LN2_LO, _Q5, _Q4, _Q3, _Q2, _Q1, _ONE)
    #: Rows of the base-2 decay (:func:`_vdecay`) after :data:`_EXP_ROWS`, then the factor of
    #: the rates (log2(e) for float32, 1 for float64, which keeps libm's natural exp) and its
    #: inverse.
    _DECAY_ROW = len(_EXP_ROWS)
    _DECAY_ROWS = (_HI2_32, _LO2_32, _SHIFTER, _P5, _P4, _P3, _P2, _P1)
    _RATE_SCALE_ROW = _DECAY_ROW + len(_DECAY_ROWS)

    def _exp_table(dtype: torch.dtype) -> np.ndarray:
        """The kernels' constants as a ``[STATE_GROUP, rows, LANES]`` array of their dtype
        (:data:`_EXP_ROWS`, then the base-2 decay's rows and the rates' scale and its inverse):
        one copy per exponential that a loop computes side by side. With a single copy LLVM
        merges the loads of a constant that the exponentials share and keeps it in a register
        across all of them; with too few registers for that it spills and reloads (tried: the
        forward loop got slower). Separate copies stay separate memory operands."""
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        scale = (float(_LOG2E), _LN2) if np_dtype == np.float32 else (1.0, 1.0)
        values = [float(v) for v in _EXP_ROWS + _DECAY_ROWS] + list(scale)
        rows = np.repeat(np.array(values, dtype=np_dtype)[:, None], LANES, axis=1)
        return np.ascontiguousarray(np.broadcast_to(rows, (STATE_GROUP, *rows.shape)))

    def _clamp_ir(builder, value, high, low):
        """``value`` clamped to ``[low, high]`` per lane; the comparisons are false for NaN, so
        a NaN passes through and propagates."""
        value = builder.select(builder.fcmp_ordered(">", value, high), high, value)
        return builder.select(builder.fcmp_ordered("<", value, low), low, value)

    def _power_of_two_ir(builder, shifted):
        """``2**k`` per lane from the shifter's sum, whose low mantissa bits hold the biased
        exponent ``k + 127``: one shift puts them in the exponent field."""
        int_type = _llvm_ir.VectorType(_llvm_ir.IntType(32), LANES)
        biased = builder.bitcast(shifted, int_type)
        return builder.bitcast(builder.shl(biased, _llvm_ir.Constant(int_type, [23] * LANES)), shifted.type)

    def _exp_ir(context, builder, value, table, table_value):
        """The IR of :func:`_vexp` (``table``: the numba type of the table, ``table_value`` its
        value)."""
        vector_type = value.type
        low = _vector_constant(vector_type, MIN_LOG_DECAY)
        if vector_type.element != _llvm_ir.FloatType():
            # 'x > low' is false for NaN, as in the scalar form
            clamped = builder.select(builder.fcmp_ordered(">", value, low), value, low)
            return builder.call(_vector_intrinsic(builder, "llvm.exp", vector_type), [clamped])

        def c(row):
            pointer = _vector_pointer(context, builder, table, table_value,
                                      _llvm_ir.Constant(_llvm_ir.IntType(64), row * LANES))
            return builder.load(pointer, align=4)

        value = _clamp_ir(builder, value, c(0), c(1))
        shifted = _fma_ir(builder, value, c(2), c(3))  # round(x log2e) + 127 in the low bits
        k = builder.fsub(shifted, c(3))
        r = _fma_ir(builder, k, c(4), value)
        r = _fma_ir(builder, k, c(5), r)
        p = c(6)
        for row in range(7, 12):
            p = _fma_ir(builder, p, r, c(row))
        power = _power_of_two_ir(builder, shifted)
        return builder.fmul(p, power)

    @intrinsic
    def _vexp(typingctx, x, table):
        """``exp`` per lane of the clamped log-decay: for float32 the polynomial of
        :func:`_decay_exp` (the same constants and steps, read from ``table``), for float64
        libm's ``exp``."""
        if not (isinstance(x, _LaneVector) and isinstance(table, types.Array)):
            return None

        def codegen(context, builder, signature, args):
            return _exp_ir(context, builder, args[0], table, args[1])

        return x(x, table), codegen

    def _decay_ir(context, builder, value, table, table_value):
        """The IR of :func:`_vdecay`."""
        vector_type = value.type
        if vector_type.element != _llvm_ir.FloatType():
            return _exp_ir(context, builder, value, table, table_value)

        def c(row):
            pointer = _vector_pointer(context, builder, table, table_value,
                                      _llvm_ir.Constant(_llvm_ir.IntType(64), (_DECAY_ROW + row) * LANES))
            return builder.load(pointer, align=4)

        value = _clamp_ir(builder, value, c(0), c(1))
        # round(x) + 127 in the low bits; the fence keeps the reassociating fast math from
        # folding (x + S) - S into x
        shifted = builder.fadd(value, c(2))
        shifted = builder.call(_vector_intrinsic(builder, "llvm.arithmetic.fence", vector_type), [shifted])
        f = builder.fsub(value, builder.fsub(shifted, c(2)))  # exact, in [-1/2, 1/2]
        q = c(3)
        for row in range(4, 8):
            q = _fma_ir(builder, q, f, c(row))
        power = _power_of_two_ir(builder, shifted)
        # 2^k (1 + f P(f)) with one rounding at the end
        return _fma_ir(builder, builder.fmul(q, f), power, power)

    @intrinsic
    def _vdecay(typingctx, x, table):
        """The scan kernels' decay per lane of a clamped log-decay ``x`` given in units of
        ``log(2)`` for float32 (``2**x``: the rates are scaled by log2(e), row
        ``_RATE_SCALE_ROW`` of the table) and natural units for float64 (libm's ``exp``)."""
        if not (isinstance(x, _LaneVector) and isinstance(table, types.Array)):
            return None

        def codegen(context, builder, signature, args):
            return _decay_ir(context, builder, args[0], table, args[1])

        return x(x, table), codegen

    def _transpose_ir(builder, rows):
        """The 8 x 8 transpose of 8 vectors (``out[j][i] = rows[i][j]``) in 24 shuffles:
        interleave pairs, then pairs of pairs, then the 128-bit halves."""
        i32 = _llvm_ir.IntType(32)

        def shuffle(a, b, lanes):
            return builder.shuffle_vector(a, b, _llvm_ir.Constant(_llvm_ir.VectorType(i32, LANES), lanes))

        pairs = []
        for p in range(4):
            pairs += [shuffle(rows[2 * p], rows[2 * p + 1], [0, 8, 1, 9, 4, 12, 5, 13]),
                      shuffle(rows[2 * p], rows[2 * p + 1], [2, 10, 3, 11, 6, 14, 7, 15])]
        quads = []
        for first, second in ((0, 2), (1, 3), (4, 6), (5, 7)):
            quads += [shuffle(pairs[first], pairs[second], [0, 1, 8, 9, 4, 5, 12, 13]),
                      shuffle(pairs[first], pairs[second], [2, 3, 10, 11, 6, 7, 14, 15])]
        return ([shuffle(quads[j], quads[j + 4], [0, 1, 2, 3, 8, 9, 10, 11]) for j in range(4)]
                + [shuffle(quads[j], quads[j + 4], [4, 5, 6, 7, 12, 13, 14, 15]) for j in range(4)])

    def _row_pointers(context, builder, plane_type, plane, row0, col):
        """Vector pointers to ``plane[row0 + w, col : col + LANES]`` for every lane ``w``."""
        array = context.make_array(plane_type)(context, builder, plane)
        row_stride = cgutils.unpack_tuple(builder, array.strides, 2)[0]  # bytes
        itemsize = _llvm_ir.Constant(row_stride.type, plane_type.dtype.bitwidth // 8)
        base = builder.bitcast(array.data, _llvm_ir.IntType(8).as_pointer())
        vector_pointer = _llvm_ir.VectorType(context.get_value_type(plane_type.dtype), LANES).as_pointer()
        pointers = []
        for w in range(LANES):
            row = builder.add(row0, _llvm_ir.Constant(row0.type, w))
            offset = builder.add(builder.mul(row, row_stride), builder.mul(col, itemsize))
            pointers.append(builder.bitcast(builder.gep(base, [offset]), vector_pointer))
        return pointers

    def _plane_ok(plane, lanes_array):
        return (isinstance(plane, types.Array) and plane.ndim == 2 and isinstance(lanes_array, types.Array)
                and lanes_array.layout == "C" and plane.dtype == lanes_array.dtype)

    @intrinsic
    def _load_rows_transposed(typingctx, plane, row0, col, out, i0):
        """``out[i0 + j, w] = plane[row0 + w, col + j]`` for ``j, w < LANES``: eight rows of a
        ``[D, L]`` plane into eight lane vectors by vector loads and an in-register transpose
        (the scalar form costs a load and a store per element)."""
        if not _plane_ok(plane, out):
            return None

        def codegen(context, builder, signature, args):
            plane_value, row0_value, col_value, out_value, i0_value = args
            align = plane.dtype.bitwidth // 8
            rows = [builder.load(ptr, align=align)
                    for ptr in _row_pointers(context, builder, plane, plane_value, row0_value, col_value)]
            for j, vector in enumerate(_transpose_ir(builder, rows)):
                offset = builder.mul(builder.add(i0_value, _llvm_ir.Constant(i0_value.type, j)),
                                     _llvm_ir.Constant(i0_value.type, LANES))
                builder.store(vector, _vector_pointer(context, builder, out, out_value, offset), align=align)
            return context.get_dummy_value()

        return types.none(plane, row0, col, out, i0), codegen

    @intrinsic
    def _store_rows_transposed(typingctx, lanes_array, i0, plane, row0, col):
        """``plane[row0 + w, col + j] = lanes_array[i0 + j, w]`` for ``j, w < LANES`` (the
        inverse of :func:`_load_rows_transposed`)."""
        if not _plane_ok(plane, lanes_array):
            return None

        def codegen(context, builder, signature, args):
            src_value, i0_value, plane_value, row0_value, col_value = args
            align = plane.dtype.bitwidth // 8
            vectors = []
            for j in range(LANES):
                offset = builder.mul(builder.add(i0_value, _llvm_ir.Constant(i0_value.type, j)),
                                     _llvm_ir.Constant(i0_value.type, LANES))
                vectors.append(builder.load(_vector_pointer(context, builder, lanes_array, src_value, offset),
                                            align=align))
            pointers = _row_pointers(context, builder, plane, plane_value, row0_value, col_value)
            for ptr, vector in zip(pointers, _transpose_ir(builder, vectors)):
                builder.store(vector, ptr, align=align)
            return context.get_dummy_value()

        return types.none(lanes_array, i0, plane, row0, col), codegen

    # Cephes logf: log(1 + f) ~ f - f^2 / 2 + f^3 P(f) for sqrt(1/2) <= 1 + f < sqrt(2)
    _LOG_P = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
              -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)
    #: Above this the softplus is its argument (torch's ``threshold=20``).
    SOFTPLUS_THRESHOLD = 20.0

    def _log_ir(builder, value):
        """``log`` per lane of positive, finite, normal float32 values (Cephes ``logf``: the
        exponent from the bits, the mantissa reduced to [sqrt(1/2), sqrt(2)), a degree-8
        polynomial; about 1 ulp)."""
        vector_type = value.type
        int_type = _llvm_ir.VectorType(_llvm_ir.IntType(32), LANES)

        def const(x):
            return _vector_constant(vector_type, x)

        def iconst(x):
            return _llvm_ir.Constant(int_type, [x] * LANES)

        bits = builder.bitcast(value, int_type)
        exponent = builder.sitofp(builder.sub(builder.lshr(bits, iconst(23)), iconst(127)), vector_type)
        mantissa = builder.bitcast(builder.or_(builder.and_(bits, iconst(0x007FFFFF)), iconst(0x3F800000)), vector_type)
        big = builder.fcmp_ordered(">", mantissa, const(1.41421356237309504880))
        mantissa = builder.select(big, builder.fmul(mantissa, const(0.5)), mantissa)
        exponent = builder.select(big, builder.fadd(exponent, const(1.0)), exponent)
        f = builder.fsub(mantissa, const(1.0))
        z = builder.fmul(f, f)
        p = const(_LOG_P[0])
        for coefficient in _LOG_P[1:]:
            p = _fma_ir(builder, p, f, const(coefficient))
        y = builder.fmul(builder.fmul(p, f), z)
        y = _fma_ir(builder, exponent, const(float(_LN2_LO)), y)
        y = _fma_ir(builder, z, const(-0.5), y)
        return _fma_ir(builder, exponent, const(float(_LN2_HI)), builder.fadd(f, y))

    @intrinsic
    def _vsoftplus(typingctx, x, table):
        """``softplus(x) = log(1 + e^x)`` per lane (float32), ``x`` itself above
        :data:`SOFTPLUS_THRESHOLD` as in torch. ``log1p(y)`` is ``log(1 + y) * y / ((1 + y) - 1)``
        (exact to a few ulp for small ``y``, where ``log(1 + y)`` alone loses the digits of
        ``y``), and ``y`` itself when ``1 + y`` rounds to 1. The kernel must run without
        reassociating fast math, which would fold ``(1 + y) - 1`` into ``y``."""
        if not (isinstance(x, _LaneVector) and x.dtype == types.float32 and isinstance(table, types.Array)):
            return None

        def codegen(context, builder, signature, args):
            value, table_value = args
            vector_type = value.type
            one = _vector_constant(vector_type, 1.0)
            y = _exp_ir(context, builder, value, table, table_value)
            shifted = builder.fadd(one, y)
            log1p = builder.fmul(_log_ir(builder, shifted), builder.fdiv(y, builder.fsub(shifted, one)))
            log1p = builder.select(builder.fcmp_ordered("==", shifted, one), y, log1p)
            threshold = _vector_constant(vector_type, SOFTPLUS_THRESHOLD)
            return builder.select(builder.fcmp_ordered(">", value, threshold), value, log1p)

        return x(x, table), codegen

    @intrinsic
    def _vsigmoid(typingctx, x, table):
        """``e^x / (1 + e^x)`` per lane (float32), the derivative of :func:`_vsoftplus`: 1 above
        :data:`SOFTPLUS_THRESHOLD`, as in torch's softplus backward."""
        if not (isinstance(x, _LaneVector) and x.dtype == types.float32 and isinstance(table, types.Array)):
            return None

        def codegen(context, builder, signature, args):
            value, table_value = args
            vector_type = value.type
            one = _vector_constant(vector_type, 1.0)
            y = _exp_ir(context, builder, value, table, table_value)
            sigmoid = builder.fdiv(y, builder.fadd(one, y))
            threshold = _vector_constant(vector_type, SOFTPLUS_THRESHOLD)
            return builder.select(builder.fcmp_ordered(">", value, threshold), one, sigmoid)

        return x(x, table), codegen

    @_cached_njit()
    def _softplus_lanes(x, grad, out, table):
        """``out = softplus(x)`` (``grad`` empty) or ``out = grad * sigmoid(x)`` (``grad`` like
        ``x``), flat float32 arrays; no fast math (see :func:`_vsoftplus`)."""
        size = x.shape[0]
        backward = grad.shape[0] == size
        full = size - size % LANES
        for i in range(0, full, LANES):
            if backward:
                _vstore(out, i, _vmul(_vload(grad, i), _vsigmoid(_vload(x, i), table)))
            else:
                _vstore(out, i, _vsoftplus(_vload(x, i), table))
        if full < size:  # the tail through one vector of scratch
            pad_x = np.zeros(LANES, dtype=x.dtype)
            pad_grad = np.zeros(LANES, dtype=x.dtype)
            pad_out = np.zeros(LANES, dtype=x.dtype)
            for w in range(size - full):
                pad_x[w] = x[full + w]
                if backward:
                    pad_grad[w] = grad[full + w]
            if backward:
                _vstore(pad_out, 0, _vmul(_vload(pad_grad, 0), _vsigmoid(_vload(pad_x, 0), table)))
            else:
                _vstore(pad_out, 0, _vsoftplus(_vload(pad_x, 0), table))
            for w in range(size - full):
                out[full + w] = pad_out[w]

    @intrinsic
    def _stack_buffer(typingctx, size, like):
        """A pointer to ``size`` (a compile-time constant) elements of ``like``'s dtype on the
        stack: scratch that lives in L1 and that LLVM knows aliases no other array."""
        if not isinstance(size, types.IntegerLiteral):
            return None
        dtype = like.dtype

        def codegen(context, builder, signature, args):
            return cgutils.alloca_once(builder, context.get_value_type(dtype), size=size.literal_value)

        return types.CPointer(dtype)(size, like), codegen

    @njit(inline="always")
    def _position(s, length, reverse):
        return length - 1 - s if reverse else s

    @njit(inline="always")
    def _load_lanes(src, b, d0, lanes, s0, count, length, reverse, out):
        """``out[i, w] = src[b, d0 + w, t(s0 + i)]``, 0 in the lanes past the last channel."""
        if lanes == LANES and not reverse:
            plane = src[b]
            full = count - count % LANES
            for i0 in range(0, full, LANES):
                _load_rows_transposed(plane, d0, s0 + i0, out, i0)
            for w in range(LANES):
                row = plane[d0 + w]
                for i in range(full, count):
                    out[i, w] = row[s0 + i]
            return
        for w in range(LANES):
            if w < lanes:
                row = src[b, d0 + w]  # one row view: 1-d indexing in the loop, not 3-d
                if reverse:
                    for i in range(count):
                        out[i, w] = row[length - 1 - s0 - i]
                else:
                    for i in range(count):
                        out[i, w] = row[s0 + i]
            else:
                for i in range(count):
                    out[i, w] = 0.0

    @njit(inline="always")
    def _store_lanes(src, dst, b, d0, lanes, s0, count, length, reverse):
        """``dst[b, d0 + w, t(s0 + i)] = src[i, w]`` for the block's channels."""
        if lanes == LANES and not reverse:
            plane = dst[b]
            full = count - count % LANES
            for i0 in range(0, full, LANES):
                _store_rows_transposed(src, i0, plane, d0, s0 + i0)
            for w in range(LANES):
                row = plane[d0 + w]
                for i in range(full, count):
                    row[s0 + i] = src[i, w]
            return
        for w in range(lanes):
            row = dst[b, d0 + w]
            for i in range(count):
                row[_position(s0 + i, length, reverse)] = src[i, w]

    @njit(inline="always")
    def _block_group(M, d0, lanes, channels):
        """The group of every channel of the block, or -1 when the block spans groups or ``M``
        is a fixed ``[1, D, 1, N]`` operand (one vector per channel)."""
        per_group = channels // M.shape[1]
        first = d0 // per_group
        return first if first == (d0 + lanes - 1) // per_group and M.shape[2] > 1 else -1

    @njit(inline="always")
    def _load_operand(M, b, d0, lanes, channels, s0, count, length, reverse, out):
        """``B`` or ``C`` for a chunk and a block of channels:
        ``out[i, n, w] = M[b, group(d0 + w), t(s0 + i), n]``; when the block lies in one
        group, one value broadcast over the lanes. Read once per chunk (and group), so the
        inner loops have no branches and no index arithmetic for the operand."""
        bM = b if M.shape[0] > 1 else 0
        per_group = channels // M.shape[1]
        tM = 1 if M.shape[2] > 1 else 0
        n_state = M.shape[3]
        n_out = out.shape[1]  # n_state, or more: the padding stays as it is (zero)
        group = _block_group(M, d0, lanes, channels)
        for i in range(count):
            row = M[bM, group if group >= 0 else 0, _position(s0 + i, length, reverse) * tM]
            if group >= 0:
                for n in range(n_state):
                    _vstore(out, (i * n_out + n) * LANES, _vsplat(row[n], out))
            else:
                t = _position(s0 + i, length, reverse) * tM
                for n in range(n_state):
                    for w in range(LANES):
                        out[i, n, w] = M[bM, (d0 + w) // per_group, t, n] if w < lanes else 0.0

    @njit
    def _lane_rates(A, num_blocks, n_out=-1, scale=1.0):
        """``A`` ``[D, N]`` times ``scale`` as ``[blocks, n_out, LANES]`` (``n_out >= N``,
        default ``N``; 0 in the lanes past the last channel and in the padding entries)."""
        channels, n_state = A.shape
        rates = np.zeros((num_blocks, max(n_out, n_state), LANES), dtype=A.dtype)
        for d in range(channels):
            for n in range(n_state):
                rates[d // LANES, n, d % LANES] = A[d, n] * scale
        return rates

    @njit(inline="always")
    def _flush_operand(grad_M, b, d0, lanes, channels, s0, count, length, reverse, acc, pending):
        """Add a chunk's accumulated gradient ``acc[i, n, w]`` to ``grad_M`` (shaped like the
        operand) and zero it. ``pending >= 0``: every lane belongs to group ``pending``, so
        the lanes are summed first (one reduction per chunk and group, not per block)."""
        bM = b if grad_M.shape[0] > 1 else 0
        per_group = channels // grad_M.shape[1]
        tM = 1 if grad_M.shape[2] > 1 else 0
        for i in range(count):
            t = _position(s0 + i, length, reverse) * tM
            for n in range(grad_M.shape[3]):  # the accumulator's padding entries stay 0
                if pending >= 0:
                    total = acc[i, n, 0]
                    for w in range(1, LANES):
                        total += acc[i, n, w]
                    grad_M[bM, pending, t, n] += total
                else:
                    for w in range(lanes):
                        grad_M[bM, (d0 + w) // per_group, t, n] += acc[i, n, w]
                for w in range(LANES):
                    acc[i, n, w] = 0.0

    @_cached_njit(fastmath=_FASTMATH)
    def _forward_lanes(u, dt, A, B, C, resets, final_slot, reverse, y, finals, entries, save, table):
        """The forward recurrence, LANES channels at a time (a vector per state entry, so the
        readout sums over entries lane by lane, without horizontal sums); ``entries[b, d, k,
        n]`` receives the state entering chunk ``k`` when ``save``.

        Inside a chunk and a block the state entries are the outer loop, in groups of
        :data:`STATE_GROUP` held in registers across the chunk's positions: each position then
        has that many independent exponentials and state updates in flight (the recurrence of
        one entry is one FMA per position), and the readout is summed as a tree within a group
        and added to the chunk's ``y`` once per group (no dependency chain over all ``N``)."""
        batch, channels, length = u.shape
        n_state = A.shape[1]
        n_pad = -(-n_state // STATE_GROUP) * STATE_GROUP  # padding entries: rate 0, B = C = 0
        num_blocks = -(-channels // LANES)
        step_c = carray(_stack_buffer(_CHUNK_LANES, u), (CHUNK, LANES))
        x_c = carray(_stack_buffer(_CHUNK_LANES, u), (CHUNK, LANES))
        y_c = carray(_stack_buffer(_CHUNK_LANES, u), (CHUNK, LANES))
        # per position of a chunk: 1 = the state resets before it, 2 = a final state after it
        events_c = np.zeros(CHUNK, dtype=np.uint8)
        B_c = np.zeros((CHUNK, n_pad, LANES), dtype=u.dtype)
        C_c = np.zeros((CHUNK, n_pad, LANES), dtype=u.dtype)
        rate_all = _lane_rates(A, num_blocks, n_pad, table[0, _RATE_SCALE_ROW, 0])
        # the state of every block, carried from chunk to chunk: chunks are the outer loop so
        # that a chunk's B_t, C_t, broadcast over the lanes, serve every block of a group
        h_all = np.zeros((num_blocks, n_pad, LANES), dtype=u.dtype)
        zero = _vsplat(0.0, u)
        for b in range(batch):
            h_all[:] = 0.0
            for s0 in range(0, length, CHUNK):
                count = min(CHUNK, length - s0)
                for i in range(count):
                    t = _position(s0 + i, length, reverse)
                    events_c[i] = resets[t] + (2 if final_slot[t] >= 0 else 0)
                filled_B = -1
                filled_C = -1
                for block in range(num_blocks):
                    d0 = block * LANES
                    lanes = min(LANES, channels - d0)
                    group_B = _block_group(B, d0, lanes, channels)
                    group_C = _block_group(C, d0, lanes, channels)
                    if group_B < 0 or group_B != filled_B:
                        _load_operand(B, b, d0, lanes, channels, s0, count, length, reverse, B_c)
                        filled_B = group_B
                    if group_C < 0 or group_C != filled_C:
                        _load_operand(C, b, d0, lanes, channels, s0, count, length, reverse, C_c)
                        filled_C = group_C
                    h = h_all[block]
                    rate = rate_all[block]
                    if save:
                        for w in range(lanes):
                            for n in range(n_state):
                                entries[b, d0 + w, s0 // CHUNK, n] = h[n, w]
                    _load_lanes(dt, b, d0, lanes, s0, count, length, reverse, step_c)
                    _load_lanes(u, b, d0, lanes, s0, count, length, reverse, x_c)
                    for i in range(count):
                        _vstore(x_c, i * LANES, _vmul(_vload(step_c, i * LANES), _vload(x_c, i * LANES)))
                        _vstore(y_c, i * LANES, zero)
                    for n0 in range(0, n_pad, STATE_GROUP):
                        o = n0 * LANES
                        table0 = table[0]
                        table1 = table[1]
                        table2 = table[2]
                        table3 = table[3]
                        r0 = _vload(rate, o)
                        r1 = _vload(rate, o + LANES)
                        r2 = _vload(rate, o + 2 * LANES)
                        r3 = _vload(rate, o + 3 * LANES)
                        h0 = _vload(h, o)
                        h1 = _vload(h, o + LANES)
                        h2 = _vload(h, o + 2 * LANES)
                        h3 = _vload(h, o + 3 * LANES)
                        for i in range(count):
                            event = events_c[i]
                            if event & 1:
                                h0 = zero
                                h1 = zero
                                h2 = zero
                                h3 = zero
                            step = _vload(step_c, i * LANES)
                            x = _vload(x_c, i * LANES)
                            oi = (i * n_pad + n0) * LANES
                            h0 = _vfma(_vdecay(_vmul(step, r0), table0), h0, _vmul(x, _vload(B_c, oi)))
                            h1 = _vfma(_vdecay(_vmul(step, r1), table1), h1, _vmul(x, _vload(B_c, oi + LANES)))
                            h2 = _vfma(_vdecay(_vmul(step, r2), table2), h2, _vmul(x, _vload(B_c, oi + 2 * LANES)))
                            h3 = _vfma(_vdecay(_vmul(step, r3), table3), h3, _vmul(x, _vload(B_c, oi + 3 * LANES)))
                            y01 = _vfma(h0, _vload(C_c, oi), _vmul(h1, _vload(C_c, oi + LANES)))
                            y23 = _vfma(h2, _vload(C_c, oi + 2 * LANES), _vmul(h3, _vload(C_c, oi + 3 * LANES)))
                            _vstore(y_c, i * LANES, _vadd(_vload(y_c, i * LANES), _vadd(y01, y23)))
                            if event & 2:
                                j = final_slot[_position(s0 + i, length, reverse)]
                                _vstore(h, o, h0)
                                _vstore(h, o + LANES, h1)
                                _vstore(h, o + 2 * LANES, h2)
                                _vstore(h, o + 3 * LANES, h3)
                                for w in range(lanes):
                                    for n in range(n0, min(n0 + STATE_GROUP, n_state)):
                                        finals[j, b, d0 + w, n] = h[n, w]
                        _vstore(h, o, h0)
                        _vstore(h, o + LANES, h1)
                        _vstore(h, o + 2 * LANES, h2)
                        _vstore(h, o + 3 * LANES, h3)
                    _store_lanes(y_c, y, b, d0, lanes, s0, count, length, reverse)

    @_cached_njit(fastmath=_FASTMATH)
    def _backward_lanes(u, dt, A, B, C, resets, final_slot, reverse, entries, grad_y, grad_finals,
                        grad_u, grad_dt, grad_A, grad_B, grad_C, table):
        """The adjoint recurrence, LANES channels at a time, chunks right to left. Writes every
        element of ``grad_u``, ``grad_dt`` ``[batch, D, L]`` (so they need no zeros), adds into
        ``grad_A`` ``[D, N]`` and ``grad_B``, ``grad_C`` (shaped like ``B``, ``C``; zero on entry). Chunks are the outer loop, so the
        gradients of ``B``/``C`` that a group's channels share are summed over the group's
        blocks in a chunk buffer and reduced over the lanes once per chunk.

        Inside a chunk and a block, every group of :data:`STATE_GROUP` state entries is
        recomputed left to right from the saved entering state (decays and states into two
        small buffers that stay in L1, ``grad_C`` accumulated on the way) and then run
        backwards at once, with the adjoint states and the gradient of the rates in
        registers; the per-position gradients (of ``x`` and of the log-decay) are summed
        over the groups in two ``[CHUNK, LANES]`` buffers."""
        batch, channels, length = u.shape
        n_state = A.shape[1]
        n_pad = -(-n_state // STATE_GROUP) * STATE_GROUP
        num_chunks = entries.shape[2]
        num_blocks = -(-channels // LANES)
        rate_all = _lane_rates(A, num_blocks, n_pad, table[0, _RATE_SCALE_ROW, 0])
        # the adjoint state of every block, carried from chunk to chunk
        g_all = np.zeros((num_blocks, n_pad, LANES), dtype=u.dtype)
        grad_rate = np.zeros((n_pad, LANES), dtype=u.dtype)
        step_c = carray(_stack_buffer(_CHUNK_LANES, u), (CHUNK, LANES))
        u_c = carray(_stack_buffer(_CHUNK_LANES, u), (CHUNK, LANES))
        x_c = carray(_stack_buffer(_CHUNK_LANES, u), (CHUNK, LANES))
        gy_c = carray(_stack_buffer(_CHUNK_LANES, u), (CHUNK, LANES))
        gx_c = carray(_stack_buffer(_CHUNK_LANES, u), (CHUNK, LANES))
        glog_c = carray(_stack_buffer(_CHUNK_LANES, u), (CHUNK, LANES))
        events_c = np.zeros(CHUNK, dtype=np.uint8)
        B_c = np.zeros((CHUNK, n_pad, LANES), dtype=u.dtype)
        C_c = np.zeros((CHUNK, n_pad, LANES), dtype=u.dtype)
        # one group's decays and states over a chunk: h_c[i] is the state entering position i
        a_c = np.empty((CHUNK, STATE_GROUP, LANES), dtype=u.dtype)
        h_c = np.empty((CHUNK + 1, STATE_GROUP, LANES), dtype=u.dtype)
        gB_c = np.zeros((CHUNK, n_pad, LANES), dtype=u.dtype)
        gC_c = np.zeros((CHUNK, n_pad, LANES), dtype=u.dtype)
        zero = _vsplat(0.0, u)
        table0 = table[0]
        table1 = table[1]
        table2 = table[2]
        table3 = table[3]
        unscale = _vload(table0, (_RATE_SCALE_ROW + 1) * LANES)
        for b in range(batch):
            g_all[:] = 0.0
            for k in range(num_chunks - 1, -1, -1):
                s0 = k * CHUNK
                count = min(CHUNK, length - s0)
                for i in range(count):
                    t = _position(s0 + i, length, reverse)
                    events_c[i] = resets[t] + (2 if final_slot[t] >= 0 else 0)
                pending_B = -1
                pending_C = -1
                filled_B = -1
                filled_C = -1
                for block in range(num_blocks):
                    d0 = block * LANES
                    lanes = min(LANES, channels - d0)
                    group_B = _block_group(B, d0, lanes, channels)
                    group_C = _block_group(C, d0, lanes, channels)
                    # a block of another group (or of per-lane groups) ends the sum of the last
                    if pending_B >= 0 and group_B != pending_B:
                        _flush_operand(grad_B, b, d0, lanes, channels, s0, count, length, reverse, gB_c, pending_B)
                    if pending_C >= 0 and group_C != pending_C:
                        _flush_operand(grad_C, b, d0, lanes, channels, s0, count, length, reverse, gC_c, pending_C)
                    pending_B, pending_C = group_B, group_C
                    g = g_all[block]
                    rate = rate_all[block]
                    _load_lanes(dt, b, d0, lanes, s0, count, length, reverse, step_c)
                    _load_lanes(u, b, d0, lanes, s0, count, length, reverse, u_c)
                    _load_lanes(grad_y, b, d0, lanes, s0, count, length, reverse, gy_c)
                    if group_B < 0 or group_B != filled_B:
                        _load_operand(B, b, d0, lanes, channels, s0, count, length, reverse, B_c)
                        filled_B = group_B
                    if group_C < 0 or group_C != filled_C:
                        _load_operand(C, b, d0, lanes, channels, s0, count, length, reverse, C_c)
                        filled_C = group_C
                    for i in range(count):
                        _vstore(x_c, i * LANES, _vmul(_vload(step_c, i * LANES), _vload(u_c, i * LANES)))
                        _vstore(gx_c, i * LANES, zero)
                        _vstore(glog_c, i * LANES, zero)
                    for n0 in range(0, n_pad, STATE_GROUP):
                        o = n0 * LANES
                        for q in range(STATE_GROUP):
                            for w in range(LANES):
                                inside = w < lanes and n0 + q < n_state
                                h_c[0, q, w] = entries[b, d0 + w, k, n0 + q] if inside else 0.0
                        r0 = _vload(rate, o)
                        r1 = _vload(rate, o + LANES)
                        r2 = _vload(rate, o + 2 * LANES)
                        r3 = _vload(rate, o + 3 * LANES)
                        # recompute the chunk; a sequence start is a zero decay (no state
                        # enters, no gradient leaves)
                        h0 = _vload(h_c, 0)
                        h1 = _vload(h_c, LANES)
                        h2 = _vload(h_c, 2 * LANES)
                        h3 = _vload(h_c, 3 * LANES)
                        for i in range(count):
                            step = _vload(step_c, i * LANES)
                            x = _vload(x_c, i * LANES)
                            gy = _vload(gy_c, i * LANES)
                            oi = (i * n_pad + n0) * LANES
                            oa = i * STATE_GROUP * LANES
                            a0 = _vdecay(_vmul(step, r0), table0)
                            a1 = _vdecay(_vmul(step, r1), table1)
                            a2 = _vdecay(_vmul(step, r2), table2)
                            a3 = _vdecay(_vmul(step, r3), table3)
                            if events_c[i] & 1:
                                a0 = zero
                                a1 = zero
                                a2 = zero
                                a3 = zero
                            h0 = _vfma(a0, h0, _vmul(x, _vload(B_c, oi)))
                            h1 = _vfma(a1, h1, _vmul(x, _vload(B_c, oi + LANES)))
                            h2 = _vfma(a2, h2, _vmul(x, _vload(B_c, oi + 2 * LANES)))
                            h3 = _vfma(a3, h3, _vmul(x, _vload(B_c, oi + 3 * LANES)))
                            _vstore(a_c, oa, a0)
                            _vstore(a_c, oa + LANES, a1)
                            _vstore(a_c, oa + 2 * LANES, a2)
                            _vstore(a_c, oa + 3 * LANES, a3)
                            oh = oa + STATE_GROUP * LANES
                            _vstore(h_c, oh, h0)
                            _vstore(h_c, oh + LANES, h1)
                            _vstore(h_c, oh + 2 * LANES, h2)
                            _vstore(h_c, oh + 3 * LANES, h3)
                            _vstore(gC_c, oi, _vfma(h0, gy, _vload(gC_c, oi)))
                            _vstore(gC_c, oi + LANES, _vfma(h1, gy, _vload(gC_c, oi + LANES)))
                            _vstore(gC_c, oi + 2 * LANES, _vfma(h2, gy, _vload(gC_c, oi + 2 * LANES)))
                            _vstore(gC_c, oi + 3 * LANES, _vfma(h3, gy, _vload(gC_c, oi + 3 * LANES)))
                        # the adjoint, right to left; g holds the gradient of the state after i
                        g0 = _vload(g, o)
                        g1 = _vload(g, o + LANES)
                        g2 = _vload(g, o + 2 * LANES)
                        g3 = _vload(g, o + 3 * LANES)
                        gr0 = zero
                        gr1 = zero
                        gr2 = zero
                        gr3 = zero
                        for i in range(count - 1, -1, -1):
                            if events_c[i] & 2:
                                j = final_slot[_position(s0 + i, length, reverse)]
                                _vstore(g, o, g0)
                                _vstore(g, o + LANES, g1)
                                _vstore(g, o + 2 * LANES, g2)
                                _vstore(g, o + 3 * LANES, g3)
                                for w in range(lanes):
                                    for n in range(n0, min(n0 + STATE_GROUP, n_state)):
                                        g[n, w] += grad_finals[j, b, d0 + w, n]
                                g0 = _vload(g, o)
                                g1 = _vload(g, o + LANES)
                                g2 = _vload(g, o + 2 * LANES)
                                g3 = _vload(g, o + 3 * LANES)
                            step = _vload(step_c, i * LANES)
                            x = _vload(x_c, i * LANES)
                            gy = _vload(gy_c, i * LANES)
                            oi = (i * n_pad + n0) * LANES
                            oa = i * STATE_GROUP * LANES
                            gn0 = _vfma(_vload(C_c, oi), gy, g0)
                            gn1 = _vfma(_vload(C_c, oi + LANES), gy, g1)
                            gn2 = _vfma(_vload(C_c, oi + 2 * LANES), gy, g2)
                            gn3 = _vfma(_vload(C_c, oi + 3 * LANES), gy, g3)
                            _vstore(gB_c, oi, _vfma(gn0, x, _vload(gB_c, oi)))
                            _vstore(gB_c, oi + LANES, _vfma(gn1, x, _vload(gB_c, oi + LANES)))
                            _vstore(gB_c, oi + 2 * LANES, _vfma(gn2, x, _vload(gB_c, oi + 2 * LANES)))
                            _vstore(gB_c, oi + 3 * LANES, _vfma(gn3, x, _vload(gB_c, oi + 3 * LANES)))
                            gx01 = _vfma(gn0, _vload(B_c, oi), _vmul(gn1, _vload(B_c, oi + LANES)))
                            gx23 = _vfma(gn2, _vload(B_c, oi + 2 * LANES), _vmul(gn3, _vload(B_c, oi + 3 * LANES)))
                            _vstore(gx_c, i * LANES, _vadd(_vload(gx_c, i * LANES), _vadd(gx01, gx23)))
                            g0 = _vmul(gn0, _vload(a_c, oa))
                            g1 = _vmul(gn1, _vload(a_c, oa + LANES))
                            g2 = _vmul(gn2, _vload(a_c, oa + 2 * LANES))
                            g3 = _vmul(gn3, _vload(a_c, oa + 3 * LANES))
                            # the gradient of the log-decay s r: g a h, h the state entering i
                            d0_ = _vmul(g0, _vload(h_c, oa))
                            d1_ = _vmul(g1, _vload(h_c, oa + LANES))
                            d2_ = _vmul(g2, _vload(h_c, oa + 2 * LANES))
                            d3_ = _vmul(g3, _vload(h_c, oa + 3 * LANES))
                            gl01 = _vfma(d0_, r0, _vmul(d1_, r1))
                            gl23 = _vfma(d2_, r2, _vmul(d3_, r3))
                            _vstore(glog_c, i * LANES, _vadd(_vload(glog_c, i * LANES), _vadd(gl01, gl23)))
                            gr0 = _vfma(d0_, step, gr0)
                            gr1 = _vfma(d1_, step, gr1)
                            gr2 = _vfma(d2_, step, gr2)
                            gr3 = _vfma(d3_, step, gr3)
                        _vstore(g, o, g0)
                        _vstore(g, o + LANES, g1)
                        _vstore(g, o + 2 * LANES, g2)
                        _vstore(g, o + 3 * LANES, g3)
                        _vstore(grad_rate, o, gr0)
                        _vstore(grad_rate, o + LANES, gr1)
                        _vstore(grad_rate, o + 2 * LANES, gr2)
                        _vstore(grad_rate, o + 3 * LANES, gr3)
                    for i in range(count):
                        grad_x = _vload(gx_c, i * LANES)
                        # the sum of g a h r over the entries, with the rates scaled back
                        grad_log = _vmul(_vload(glog_c, i * LANES), unscale)
                        _vstore(glog_c, i * LANES, _vfma(grad_x, _vload(u_c, i * LANES), grad_log))
                        _vstore(gx_c, i * LANES, _vmul(grad_x, _vload(step_c, i * LANES)))
                    _store_lanes(gx_c, grad_u, b, d0, lanes, s0, count, length, reverse)
                    _store_lanes(glog_c, grad_dt, b, d0, lanes, s0, count, length, reverse)
                    for w in range(lanes):
                        for n in range(n_state):
                            grad_A[d0 + w, n] += grad_rate[n, w]
                    if group_B < 0:
                        _flush_operand(grad_B, b, d0, lanes, channels, s0, count, length, reverse, gB_c, -1)
                    if group_C < 0:
                        _flush_operand(grad_C, b, d0, lanes, channels, s0, count, length, reverse, gC_c, -1)
                if pending_B >= 0:
                    _flush_operand(grad_B, b, 0, 1, channels, s0, count, length, reverse, gB_c, pending_B)
                if pending_C >= 0:
                    _flush_operand(grad_C, b, 0, 1, channels, s0, count, length, reverse, gC_c, pending_C)


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
        _forward_lanes(*arrays, resets, final_slot, reverse, y.numpy(), finals.numpy(), entries.numpy(), save, _exp_table(u.dtype))
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
        grad_u, grad_dt = torch.empty_like(u), torch.empty_like(u)  # the kernel writes every element
        grad_A, grad_B, grad_C = torch.zeros_like(A), torch.zeros_like(B), torch.zeros_like(C)
        _backward_lanes(
            *[_array(x) for x in (u, dt, A, B, C)], ctx.resets, final_slot, ctx.reverse, _array(entries),
            grad_y.numpy(), grad_finals.numpy(),
            grad_u.numpy(), grad_dt.numpy(), grad_A.numpy(), grad_B.numpy(), grad_C.numpy(), _exp_table(u.dtype),
        )
        return grad_u, grad_dt, grad_A, grad_B, grad_C, None, None, None, None, None


class FusedSoftplus(torch.autograd.Function):
    """``F.softplus`` (threshold 20) of a float32 tensor by the vector kernel
    :func:`_softplus_lanes`, and its derivative ``sigmoid`` (1 above the threshold, as in torch):
    torch's CPU softplus of ``[2, 256, 4096]`` takes 8 ms on one thread, about half the whole
    fused forward scan, this one about 4 (``docs/fused-cpu.md``). Within 3e-7 relative of the exact softplus above ``-60``; below, the
    exponential's clamp gives ``exp(-60) ~ 8.8e-27`` (a step of that size is zero for the scan)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        x = x.contiguous()
        out = torch.empty_like(x)
        _softplus_lanes(x.view(-1).numpy(), _NO_GRAD, out.view(-1).numpy(), _exp_table(torch.float32)[0])
        ctx.save_for_backward(x)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        out = torch.empty_like(x)
        _softplus_lanes(x.view(-1).numpy(), grad.contiguous().view(-1).numpy(), out.view(-1).numpy(),
                        _exp_table(torch.float32)[0])
        return out


_NO_GRAD = np.empty(0, dtype=np.float32)


def kernel_softplus(dt: Tensor) -> Tensor:
    """The softplus of the step sizes where the fused kernels run: :class:`FusedSoftplus` for
    float32, elsewhere the torch function of the other executions."""
    return FusedSoftplus.apply(dt) if dt.dtype == torch.float32 else _Softplus.apply(dt)


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

    p = prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cu_seqlens, softplus=kernel_softplus)
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
