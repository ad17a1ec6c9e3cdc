"""Transposed copies into output channels with non-temporal (streaming) stores, on x86-64 CPUs.

Half of the degree-6 edge patterns are transposes of others (``(H, a, b)`` beside
``(H, b, a)``): the schedule writes one channel and copies it transposed into its twin's
(:mod:`.schedule`). The twin is 512 KiB per channel at ``B = 128, n = 32`` in float32, written
once and not read again during the call, so an ordinary store pays twice: the CPU first reads
each cache line it is about to overwrite (a read-for-ownership), then writes it back, and the
line evicts something the next kernels would have read. A *non-temporal* store writes a whole
64-byte line straight to memory through a write-combining buffer: no read, no eviction.

The transposed copy transposes ``2 W`` rows at a time in registers (``W`` = the lanes of a 32-byte
vector: 8 float32, 4 float64; two ``W x W`` transposes in ``W log2 W`` shuffles) and stores each
destination row's ``2 W`` elements, one full line, back to back: a write-combining buffer that
receives only half a line before it is flushed costs a read of memory again (a first version
storing ``W x W`` tiles, half lines, was 3.3x *slower* than numpy). Measured on 48 channels
``[128, 32, 32]`` written from a cached source (``python benchmarks/contractions.py
--kernels``, one thread, CPU time): 1.39 against 4.39 ms for ``numpy.copyto`` of the
transposed view in float32, 2.64 against 5.99 ms in float64; a row-broadcast product 1.45
against 2.90 ms for ``torch.mul``, and with its transposed twin 2.69 against 4.33 ms for
``torch.mul`` and the streamed copy (float32).

The elementwise products into output channels (:func:`product_kernel`) are written the same
way, a block of ``2 W x 2 W`` at a time, with the transposed twin from the same registers.

The kernels are compiled by numba (the optional extra ``everygraph[cpu]``) on first use in a
process, once per dtype and variant (0.5-0.9 s each; they are not kept in numba's on-disk
cache, which :mod:`everygraph.sequence.jit_warmup` manages for the scan kernels only). Each
runs where every condition of its function holds; the schedule's numpy and torch kernels run
otherwise, and everywhere when numba is absent or ``EVERYGRAPH_DISABLE_JIT`` is set.
"""

from __future__ import annotations

import functools
import os
import platform
from typing import Callable

import torch

__all__ = ["streaming_enabled", "kernel_operands", "whole_lines", "transposed_copy_kernel", "product_kernel", "LINE_BYTES"]

#: A cache line: the unit a non-temporal store must fill whole.
LINE_BYTES = 64
#: The vector the kernel loads and stores (AVX2's 256 bits).
_VECTOR_BYTES = 32
_DTYPES = (torch.float32, torch.float64)
#: Set to ``1`` to turn every compiled kernel of the package off (the same switch as the scans').
DISABLE_ENV = "EVERYGRAPH_DISABLE_JIT"


@functools.cache
def _numba_available() -> bool:
    try:
        import numba  # noqa: F401  (the optional extra everygraph[cpu])
    except ImportError:  # pragma: no cover - exercised where numba is absent
        return False
    return True


def streaming_enabled() -> bool:
    """Whether the compiled kernels (these and :mod:`.small_gemm`'s) may be returned: an
    x86-64 CPU (the store fence the kernels end with is an x86 instruction), numba importable
    and ``EVERYGRAPH_DISABLE_JIT`` unset (or ``0``/empty)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    if os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return False
    return _numba_available()


def kernel_operands(*tensors: torch.Tensor) -> bool:
    """Whether every tensor is one a compiled kernel takes: a 3-D CPU tensor of one dtype,
    float32 or float64, not requiring grad (and :func:`streaming_enabled` holds)."""
    dtype = tensors[0].dtype
    return streaming_enabled() and all(
        t.device.type == "cpu" and t.dtype == dtype and t.dtype in _DTYPES and not t.requires_grad and t.dim() == 3 for t in tensors
    )


def whole_lines(t: torch.Tensor) -> bool:
    """Whether ``t``'s start, batch stride and row stride are whole cache lines, so that its
    rows can be written with streaming stores a line at a time."""
    return t.data_ptr() % LINE_BYTES == 0 and all(s * t.element_size() % LINE_BYTES == 0 for s in t.stride()[:2])


def transposed_copy_kernel(dst: torch.Tensor, src: torch.Tensor) -> Callable[[], object] | None:
    """A no-argument callable writing ``dst[b, i, j] = src[b, i, j]`` with streaming stores,
    where one of the two is row-contiguous (unit last stride) and the other the transpose of
    row-contiguous memory (unit stride along axis 1); ``None`` where the kernel does not
    apply (below, ``src`` and ``dst`` named as in the first case):

    * :func:`streaming_enabled` is false, or a tensor is not a float32 / float64 CPU tensor
      (both of one dtype) without grad, or not 3-D, or the two overlap in memory;
    * ``src``'s rows (``src.shape[1]``) are not a multiple of two vectors (16 float32, 8
      float64: one destination line) or its columns not a multiple of one vector;
    * the destination's start, batch stride or row stride is not a whole number of lines.
    """
    if not kernel_operands(dst, src) or src.shape != dst.shape:
        return None
    if not (src.stride(2) == 1 and dst.stride(1) == 1):
        # the same copy seen from the other side: a transposed source into row-contiguous memory
        dst, src = dst.transpose(1, 2), src.transpose(1, 2)
        if not (src.stride(2) == 1 and dst.stride(1) == 1):
            return None
    item = src.element_size()
    lanes = _VECTOR_BYTES // item
    _, rows, cols = src.shape
    if rows % (2 * lanes) or cols % lanes or rows == 0 or cols == 0:
        return None
    rows_out = dst.transpose(1, 2)  # [B, cols, rows], unit last stride
    if not whole_lines(rows_out) or _overlap(dst, src):
        return None
    kernel = _compiled(src.dtype)
    return functools.partial(kernel, src.numpy(), rows_out.numpy(), lanes)


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the memory spans of ``a`` and ``b`` intersect (spans, not elements: a
    conservative answer)."""

    def span(t: torch.Tensor) -> tuple[int, int]:
        last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
        return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()

    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


@functools.cache
def _llvm():
    """The LLVM IR helpers the kernels share (numba imported only here, on first use)."""
    from types import SimpleNamespace

    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    i32 = ir.IntType(32)

    def lanes_of(array_type) -> int:
        return _VECTOR_BYTES * 8 // array_type.dtype.bitwidth

    def transpose(builder, rows):
        """The ``W x W`` transpose of ``W`` vectors of ``W`` lanes (``out[j][i] = rows[i][j]``):
        at each stage, half-size ``h`` from ``W / 2`` down to 1, rows ``i`` and ``i + h`` swap
        the upper ``h`` lanes of each ``2 h`` segment of ``i`` with the lower ones of ``i + h``
        (the off-diagonal blocks), leaving ``h x h`` blocks to transpose in the next stage."""
        width = len(rows)
        rows = list(rows)
        h = width // 2
        while h:
            first = [x for s in range(0, width, 2 * h) for x in [*range(s, s + h), *range(width + s, width + s + h)]]
            second = [x + h for x in first]
            for i in range(width):
                if i % (2 * h) < h:
                    a, b = rows[i], rows[i + h]
                    rows[i] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, width), first))
                    rows[i + h] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, width), second))
            h //= 2
        return rows

    def pointer(context, builder, array_type, array, b, row, col, vector=True):
        """A pointer to ``array[b, row, col]`` of a 3-D array (any strides, zero ones too), as
        a pointer to a vector of ``W`` elements or to one element."""
        arr = context.make_array(array_type)(context, builder, array)
        strides = cgutils.unpack_tuple(builder, arr.strides, 3)
        offset = builder.add(builder.add(builder.mul(b, strides[0]), builder.mul(row, strides[1])), builder.mul(col, strides[2]))
        element = context.get_value_type(array_type.dtype)
        target = ir.VectorType(element, lanes_of(array_type)) if vector else element
        base = builder.bitcast(arr.data, ir.IntType(8).as_pointer())
        return builder.bitcast(builder.gep(base, [offset]), target.as_pointer())

    def stream(builder, value, ptr):
        """A non-temporal store of one vector to a 32-byte aligned address."""
        store = builder.store(value, ptr, align=_VECTOR_BYTES)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(i32, 1)]))

    def splat(builder, scalar, lanes):
        vector_type = ir.VectorType(scalar.type, lanes)
        one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), scalar, ir.Constant(i32, 0))
        return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined), ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))

    @intrinsic
    def store_fence(typingctx):
        """``sfence``: the streaming stores before it are ordered before any later store, so
        that another thread reading the output (torch's intra-op pool) sees them."""

        def codegen(context, builder, signature, args):
            fence = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence")
            builder.call(fence, [])
            return context.get_dummy_value()

        return types.none(), codegen

    return SimpleNamespace(ir=ir, types=types, intrinsic=intrinsic, lanes_of=lanes_of, transpose=transpose,
                           pointer=pointer, stream=stream, splat=splat, store_fence=store_fence)


def _njit_for(dtype: torch.dtype, arguments: str):
    """``numba.njit`` with one explicit signature: ``arguments`` spells each argument, ``a`` a
    3-D array of ``dtype`` in any layout, ``i`` an integer, ``b`` a bool. With every array
    typed ``'A'``, one compilation per dtype serves every stride pattern (numba would compile
    once per combination of contiguous and strided arrays otherwise, about a second each)."""
    from numba import njit, types

    element = types.float32 if dtype == torch.float32 else types.float64
    kinds = {"a": types.Array(element, 3, "A"), "i": types.int64, "b": types.boolean}
    return njit(types.none(*(kinds[c] for c in arguments)), nogil=True)


@functools.cache
def _compiled(dtype: torch.dtype):
    """The transposed copy, compiled on first call."""
    h = _llvm()
    ir, types = h.ir, h.types

    @h.intrinsic
    def stream_line_pair(typingctx, src, dst, b, i0, j0):
        """``dst[b, j0 + w, i0 + r] = src[b, i0 + r, j0 + w]`` for ``r < 2 W``, ``w < W``:
        ``2 W`` source rows loaded, two ``W x W`` transposes, each destination row's line
        stored whole (two vectors, non-temporal)."""
        if not (isinstance(src, types.Array) and isinstance(dst, types.Array) and src.dtype == dst.dtype):
            return None

        def codegen(context, builder, signature, args):
            s, d, b_, i_, j_ = args
            lanes = h.lanes_of(src)
            halves = []
            for half in range(2):
                rows = []
                for r in range(lanes):
                    row = builder.add(i_, ir.Constant(i_.type, half * lanes + r))
                    rows.append(builder.load(h.pointer(context, builder, src, s, b_, row, j_), align=src.dtype.bitwidth // 8))
                halves.append(h.transpose(builder, rows))
            for w in range(lanes):
                row = builder.add(j_, ir.Constant(j_.type, w))
                for half in range(2):
                    col = builder.add(i_, ir.Constant(i_.type, half * lanes))
                    h.stream(builder, halves[half][w], h.pointer(context, builder, dst, d, b_, row, col))
            return context.get_dummy_value()

        return types.none(src, dst, b, i0, j0), codegen

    store_fence = h.store_fence

    @_njit_for(dtype, "aai")
    def transposed_copy(src, rows_out, lanes):
        batch, rows, cols = src.shape
        for b in range(batch):
            for i0 in range(0, rows, 2 * lanes):
                for j0 in range(0, cols, lanes):
                    stream_line_pair(src, rows_out, b, i0, j0)
        store_fence()

    return transposed_copy


@functools.cache
def _compiled_product(a_splat: bool, b_splat: bool, with_twin: bool, dtype: torch.dtype):
    """``out = a * b`` on ``2 W x 2 W`` blocks, streamed, and with ``with_twin`` its transpose
    into ``twin`` too; an operand with ``*_splat`` is read one element per row (a zero column
    stride: ``x[b, i, j] = v[b, i]``), the other one vector at a time (unit column stride; its
    row stride may be zero: ``x[b, i, j] = v[b, j]``)."""
    h = _llvm()
    ir, types = h.ir, h.types

    @h.intrinsic
    def product_block(typingctx, a, b, out, twin, bi, i0, j0):
        if not all(isinstance(t, types.Array) and t.dtype == out.dtype for t in (a, b, out, twin)):
            return None

        def codegen(context, builder, signature, args):
            a_, b_, o_, t_, bi_, i_, j_ = args
            lanes = h.lanes_of(out)
            align = out.dtype.bitwidth // 8

            def operand(array_type, value, is_splat, row, col):
                if is_splat:
                    zero = ir.Constant(col.type, 0)
                    element = builder.load(h.pointer(context, builder, array_type, value, bi_, row, zero, vector=False))
                    return h.splat(builder, element, lanes)
                return builder.load(h.pointer(context, builder, array_type, value, bi_, row, col), align=align)

            # block[r][c]: rows i0 + r (r < 2 W), columns j0 + c W .. (c < 2)
            block = []
            for r in range(2 * lanes):
                row = builder.add(i_, ir.Constant(i_.type, r))
                values = []
                for c in range(2):
                    col = builder.add(j_, ir.Constant(j_.type, c * lanes))
                    values.append(builder.fmul(operand(a, a_, a_splat, row, col), operand(b, b_, b_splat, row, col)))
                for c in range(2):
                    col = builder.add(j_, ir.Constant(j_.type, c * lanes))
                    h.stream(builder, values[c], h.pointer(context, builder, out, o_, bi_, row, col))
                block.append(values)
            if with_twin:
                # twin[bi, j0 + c W + w, i0 + r] for r < 2 W: a line per (c, w)
                for c in range(2):
                    tiles = [h.transpose(builder, [block[half * lanes + r][c] for r in range(lanes)]) for half in range(2)]
                    for w in range(lanes):
                        row = builder.add(j_, ir.Constant(j_.type, c * lanes + w))
                        for half in range(2):
                            col = builder.add(i_, ir.Constant(i_.type, half * lanes))
                            h.stream(builder, tiles[half][w], h.pointer(context, builder, twin, t_, bi_, row, col))
            return context.get_dummy_value()

        return types.none(a, b, out, twin, bi, i0, j0), codegen

    store_fence = h.store_fence

    @_njit_for(dtype, "aaaai")
    def product(a, b, out, twin, lanes):
        batch, rows, cols = out.shape
        for bi in range(batch):
            for i0 in range(0, rows, 2 * lanes):
                for j0 in range(0, cols, 2 * lanes):
                    product_block(a, b, out, twin, bi, i0, j0)
        store_fence()

    return product


def product_kernel(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, twin: torch.Tensor | None = None) -> Callable[[], object] | None:
    """A no-argument callable writing ``out = a * b`` (all ``[B, rows, cols]``) with
    streaming stores, and with ``twin`` (the same values, ``twin[b, i, j] = out[b, i, j]``, in
    the transposed storage order) that copy too; ``None`` where it does not apply:

    * :func:`streaming_enabled` is false, or a tensor is not a 3-D float32 / float64 CPU
      tensor (all of one dtype) without grad;
    * ``out`` has no unit stride on axis 2 (or, seen transposed, on axis 1); an operand has
      neither a unit nor a zero stride on that axis (a transposed operand); ``twin`` is not
      the transposed order;
    * ``rows`` or ``cols`` is not a multiple of two vectors (16 float32, 8 float64), or a
      destination's start, batch stride or row stride is not a whole number of lines;
    * a destination overlaps an operand or the other destination.
    """
    tensors = [t for t in (out, a, b, twin) if t is not None]
    if not kernel_operands(*tensors) or any(t.shape != out.shape for t in tensors):
        return None
    if out.stride(2) != 1:
        out, a, b, twin = (None if t is None else t.transpose(1, 2) for t in (out, a, b, twin))
        if out.stride(2) != 1:
            return None
    if any(t.stride(2) not in (0, 1) for t in (a, b)) or (twin is not None and twin.stride(1) != 1):
        return None
    item = out.element_size()
    block = 2 * _VECTOR_BYTES // item
    _, rows, cols = out.shape
    if rows % block or cols % block or rows == 0 or cols == 0:
        return None
    destinations = [out] if twin is None else [out, twin.transpose(1, 2)]
    if not all(whole_lines(d) for d in destinations):
        return None
    if any(_overlap(d, s) for d in destinations for s in (a, b)) or (twin is not None and _overlap(out, twin)):
        return None
    kernel = _compiled_product(a.stride(2) == 0, b.stride(2) == 0, twin is not None, out.dtype)
    rows_twin = out.numpy() if twin is None else twin.transpose(1, 2).numpy()
    return functools.partial(kernel, a.numpy(), b.numpy(), out.numpy(), rows_twin, _VECTOR_BYTES // item)
