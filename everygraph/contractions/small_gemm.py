"""Batched small matrix products ``out[b] = a[b] @ z[b]`` compiled for x86-64 CPUs (numba).

Most matrix products of a degree-6 plan are ``[128, 32, 32] @ [128, 32, 32]``: 94 of them,
about a third of the float32 call. MKL's ``torch.bmm`` ran those at 35-40 GFLOP/s on this
machine's AVX2 core, far from its 70-90 GFLOP/s on large GEMMs: a 32 x 32 x 32
product is too small for its blocking. The kernel here is the register-blocked loop of a
GEMM micro-kernel and nothing else: a block of ``6`` rows by ``2 W`` columns of ``out``
(``W`` = 8 float32 / 4 float64 lanes) held in 12 vector registers, and for each ``k`` one
element of ``a`` broadcast per row and two vectors of ``z``, 12 fused multiply-adds. Rows
left over (``M mod 6``) take blocks of 4, 2 and 1 rows. Where ``z`` is stored column-major
(as most right operands of the plan are: their producers write them so), each graph's ``z``
is first transposed into a small scratch matrix in registers (``W x W`` tiles), which then
stays in L1. Measured on 48 products ``[128, 32, 32]`` with distinct results, one thread,
CPU time (``python benchmarks/contractions.py --kernels``): float32 49.0 / 40.2 GFLOP/s
(row- / column-major right operand) against 29.3 / 26.9 for ``torch.bmm``; float64 26.1 /
23.0 against 16.0 / 15.4 for ``numpy.matmul``.

Where the result is an output channel no later step reads, its lines are written with
streaming stores (see :mod:`.streaming`). :func:`matmul_kernel` returns ``None`` where the
kernel does not apply, and the schedule runs ``torch.bmm`` / ``numpy.matmul`` there.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from .streaming import _VECTOR_BYTES, _llvm, _njit_for, _overlap, kernel_operands, whole_lines

__all__ = ["matmul_kernel"]

#: Rows of ``out`` per register block, and the smaller blocks the leftover rows take.
BLOCK_ROWS = (6, 4, 2, 1)


def matmul_kernel(out: torch.Tensor, a: torch.Tensor, z: torch.Tensor, stream: bool = False) -> Callable[[], object] | None:
    """A no-argument callable writing ``out[b] = a[b] @ z[b]`` (``[B, M, K] @ [B, K, N]``),
    with streaming stores if ``stream``; ``None`` where it does not apply:

    * :func:`~.streaming.kernel_operands` is false (no JIT here, or a tensor not a 3-D
      float32 / float64 CPU tensor of the common dtype without grad);
    * ``out`` has a unit stride on neither matrix axis (seen transposed when it is
      column-major: ``out^T = z^T a^T``), or ``z`` (after that) on neither;
    * ``N`` is not a multiple of two vectors (16 float32, 8 float64), or ``z`` is
      column-major and ``K`` is not a multiple of one vector;
    * ``out`` overlaps an operand; with ``stream``, a row of ``out`` is not whole lines.
    """
    if not kernel_operands(out, a, z):
        return None
    batch, rows, cols = out.shape
    if a.shape[0] != batch or z.shape[0] != batch or a.shape[1] != rows or z.shape[2] != cols or a.shape[2] != z.shape[1]:
        return None
    if out.stride(2) != 1:
        if out.stride(1) != 1:
            return None
        out, a, z = out.transpose(1, 2), z.transpose(1, 2), a.transpose(1, 2)
    lanes = _VECTOR_BYTES // out.element_size()
    inner = a.shape[2]
    z_rows = z.stride(2) == 1
    if out.shape[2] % (2 * lanes) or inner == 0 or (not z_rows and (z.stride(1) != 1 or inner % lanes)):
        return None
    if (stream and not whole_lines(out)) or _overlap(out, a) or _overlap(out, z):
        return None
    # z[b] row-major, where it is not (K x N elements, 4 KiB at K = N = 32 in float32: not in
    # the memory guard's workspace, like the bound kernels themselves)
    scratch = torch.empty((1, 1, 1) if z_rows else (1, inner, out.shape[2]), dtype=out.dtype)
    kernel = _compiled(stream, out.dtype)
    return functools.partial(kernel, a.numpy(), z.numpy(), z.transpose(1, 2).numpy(), out.numpy(), scratch.numpy(), z_rows, lanes)


@functools.cache
def _compiled(stream: bool, dtype: torch.dtype):
    """The product kernel (streamed or not), compiled on first call."""
    from numba.core import cgutils

    h = _llvm()
    ir, types = h.ir, h.types

    def block(rows: int):
        @h.intrinsic
        def product_block(typingctx, a, z, out, bz, b, i0, j0):
            """``out[b, i0 + r, j0 : j0 + 2 W] = sum_k a[b, i0 + r, k] z[bz, k, j0 : j0 + 2 W]``
            for ``r < rows``: the accumulators in registers over the loop on ``k``."""
            if not all(isinstance(t, types.Array) and t.dtype == out.dtype for t in (a, z, out)):
                return None

            def codegen(context, builder, signature, args):
                a_, z_, o_, bz_, b_, i_, j_ = args
                lanes = h.lanes_of(out)
                vector = ir.VectorType(context.get_value_type(out.dtype), lanes)
                suffix = f"v{lanes}{'f32' if out.dtype.bitwidth == 32 else 'f64'}"
                fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fma.{suffix}")
                inner = cgutils.unpack_tuple(builder, context.make_array(a)(context, builder, a_).shape, 3)[2]
                zero = ir.Constant(vector, [0.0] * lanes)
                accumulators = [[cgutils.alloca_once_value(builder, zero) for _ in range(2)] for _ in range(rows)]
                columns = [builder.add(j_, ir.Constant(j_.type, c * lanes)) for c in range(2)]
                element_align = out.dtype.bitwidth // 8
                with cgutils.for_range(builder, inner) as loop:
                    k = loop.index
                    zs = [builder.load(h.pointer(context, builder, z, z_, bz_, k, col), align=element_align) for col in columns]
                    for r in range(rows):
                        row = builder.add(i_, ir.Constant(i_.type, r))
                        scalar = builder.load(h.pointer(context, builder, a, a_, b_, row, k, vector=False))
                        broadcast = h.splat(builder, scalar, lanes)
                        for c in range(2):
                            total = builder.call(fma, [broadcast, zs[c], builder.load(accumulators[r][c])])
                            builder.store(total, accumulators[r][c])
                for r in range(rows):
                    row = builder.add(i_, ir.Constant(i_.type, r))
                    for c in range(2):
                        value, target = builder.load(accumulators[r][c]), h.pointer(context, builder, out, o_, b_, row, columns[c])
                        if stream:
                            h.stream(builder, value, target)
                        else:
                            builder.store(value, target, align=element_align)
                return context.get_dummy_value()

            return types.none(a, z, out, bz, b, i0, j0), codegen

        return product_block

    block6, block4, block2, block1 = (block(r) for r in BLOCK_ROWS)

    @h.intrinsic
    def transpose_tile(typingctx, src, b, r0, c0, dst):
        """``dst[0, c0 + w, r0 + r] = src[b, r0 + r, c0 + w]`` for ``r, w < W`` (ordinary
        stores: the scratch is read at once)."""
        if not (isinstance(src, types.Array) and isinstance(dst, types.Array) and src.dtype == dst.dtype):
            return None

        def codegen(context, builder, signature, args):
            s_, b_, r_, c_, d_ = args
            lanes = h.lanes_of(src)
            align = src.dtype.bitwidth // 8
            loaded = [builder.load(h.pointer(context, builder, src, s_, b_, builder.add(r_, ir.Constant(r_.type, r)), c_), align=align)
                      for r in range(lanes)]
            zero = ir.Constant(b_.type, 0)
            for w, value in enumerate(h.transpose(builder, loaded)):
                builder.store(value, h.pointer(context, builder, dst, d_, zero, builder.add(c_, ir.Constant(c_.type, w)), r_), align=align)
            return context.get_dummy_value()

        return types.none(src, b, r0, c0, dst), codegen

    store_fence = h.store_fence

    @_njit_for(dtype, "aaaaabi")
    def product(a, z, zt, out, scratch, z_rows, lanes):
        """``zt`` is ``z`` transposed (``[B, N, K]``), read when ``z`` is column-major."""
        batch, rows, cols = out.shape
        inner = a.shape[2]
        full = rows - rows % 6
        for b in range(batch):
            source, bz = z, b
            if not z_rows:
                for r0 in range(0, cols, lanes):
                    for c0 in range(0, inner, lanes):
                        transpose_tile(zt, b, r0, c0, scratch)
                source, bz = scratch, 0
            for j0 in range(0, cols, 2 * lanes):
                for i0 in range(0, full, 6):
                    block6(a, source, out, bz, b, i0, j0)
                i0 = full
                if rows - i0 >= 4:
                    block4(a, source, out, bz, b, i0, j0)
                    i0 += 4
                if rows - i0 >= 2:
                    block2(a, source, out, bz, b, i0, j0)
                    i0 += 2
                if rows - i0 >= 1:
                    block1(a, source, out, bz, b, i0, j0)
        if stream:
            store_fence()

    return product
