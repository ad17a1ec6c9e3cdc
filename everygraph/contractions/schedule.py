"""Memory-scheduled execution of a :class:`~everygraph.contractions.ContractionPlan`.

:func:`~everygraph.contractions.evaluate` runs a plan's einsum steps. Executed naively (one
``torch.einsum`` per step, a fresh tensor per result, then an assembly pass that copies every
pattern into the output) the plan is memory-bound: the output and the large intermediates are
freshly allocated (page faults) on every call, einsum permutes operands into copies, and the
assembly rewrites the whole output once more. This module lowers the plan once per input
shape into a *schedule*:

* every step becomes one BLAS or elementwise kernel with ``out=`` (``torch.bmm``, ``torch.mul``,
  ``torch.sum``, ``copy_``) on strided views, no ``einsum`` dispatch, no hidden operand copies
  where a view will do;
* each intermediate's storage order (which axis is innermost) is chosen so that its producer
  and its consumers see it as a plain matrix batch (``[batch, rows, cols]``) without copies;
* intermediates live in a :class:`Workspace`: flat buffers assigned by liveness (a buffer is
  reused once the tensor it held has had its last use), allocated once and reused across calls
  on batches of the same shape;
* a pattern whose value is a step's result is written by that step straight into its slot of
  the output (``out=``), in whatever strides the caller's output has; only patterns that are a
  transpose or a product of other results are assembled afterwards, in place;
* on undirected inputs, a matrix product whose result is known to be symmetric (its
  sub-pattern has an automorphism swapping the two open vertices, e.g. ``A @ A``) can compute
  only the upper block rows and mirror the rest (``symmetric=True``); it is exact in exact
  arithmetic and is never used for directed patterns;
* on x86-64 CPUs with numba, the small matrix products run a compiled register-blocked
  kernel (:mod:`.small_gemm`), and output channels no later step reads (transposed twins,
  elementwise products with their twins) are written with streaming stores
  (:mod:`.streaming`); torch and numpy run wherever those kernels decline.

The schedule is planned on ``meta`` tensors (no memory touched), so its workspace size is known
before anything is allocated and enters the memory guard of ``evaluate``.
"""

from __future__ import annotations

import collections
import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .pattern import BATCH_LETTER
from .plan import ContractionPlan
from .regroup import regroup_wide_products
from .small_gemm import matmul_kernel
from .stack import StackedChains, stack_shared_sides
from .streaming import product_kernel, transposed_copy_kernel

__all__ = ["Workspace", "Schedule", "build_schedule"]


# ----------------------------------------------------------------------------- operands
@dataclass(frozen=True)
class Ref:
    """A strided view of one storage: ``kind`` is ``"buf"`` (workspace buffer ``index``),
    ``"src"`` (input source ``index``) or ``"slot"`` (output channel ``index``); ``size`` and
    ``stride`` are absolute, ``offset`` is relative to the storage's own start."""

    kind: str
    index: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int = 0


def _meta(size, stride) -> torch.Tensor:
    return torch.empty_strided(size, stride, device="meta")


def _group_order(t: torch.Tensor, dims: list[int]) -> list[int] | None:
    """``dims`` ordered so that they merge into one axis of ``t`` (outer to inner), or None."""
    dims = [d for d in dims if t.shape[d] != 1]
    order = sorted(dims, key=lambda d: -t.stride(d))
    for outer, inner in zip(order, order[1:]):
        if t.stride(outer) != t.stride(inner) * t.shape[inner]:
            return None
    return order


def _merged(t: torch.Tensor, groups: list[list[int]]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Sizes and strides of ``t`` with each group of dims merged into one axis, or None."""
    size, stride = [], []
    for g in groups:
        order = _group_order(t, g)
        if order is None:
            return None
        size.append(math.prod(t.shape[d] for d in g))
        stride.append(t.stride(order[-1]) if order else 1)
    return tuple(size), tuple(stride)


def _blas_friendly(size, stride) -> bool:
    """A batch of matrices BLAS reads without a copy: one of the two matrix axes unit-stride."""
    return size[-1] == 1 or size[-2] == 1 or stride[-1] == 1 or stride[-2] == 1


# ----------------------------------------------------------------------------- workspace
class Workspace:
    """Reusable storage for :func:`~everygraph.contractions.evaluate`.

    Holds, per input shape / dtype / device, the lowered schedule and its flat buffers; a
    repeated call on a batch of the same shape (and the same ``out`` strides) reuses both and
    allocates no intermediate. Pass one to ``evaluate(..., workspace=ws)``; by default each
    plan keeps its own. ``nbytes`` is what it holds now; :meth:`clear` frees it.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple, dict] = {}

    def clear(self) -> None:
        self._entries.clear()

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for e in self._entries.values() for b in e["buffers"])

    def buffers(self, key: tuple, schedule: "Schedule", dtype: torch.dtype, device: torch.device) -> dict:
        entry = self._entries.get(key)
        if entry is None:
            # one shape at a time: a new shape replaces the old buffers rather than adding to them
            self._entries.clear()
            buffers = [torch.empty(s, dtype=dtype, device=device) for s in schedule.buffer_sizes]
            entry = {"buffers": buffers, "bound": None, "bound_key": None}
            self._entries[key] = entry
        return entry


# ----------------------------------------------------------------------------- schedule
@dataclass
class Schedule:
    """A plan lowered for one input shape: kernels on :class:`Ref` operands, the workspace
    buffer sizes (elements) and how each output channel is filled."""

    ops: list[tuple] = field(default_factory=list)  # (kind, refs..., extra)
    buffer_sizes: list[int] = field(default_factory=list)
    symmetric_steps: int = 0
    _touches_slot: list[bool] | None = None
    _slot_reads: collections.Counter | None = None

    @property
    def workspace_elements(self) -> int:
        return sum(self.buffer_sizes)

    def bind(
        self,
        sources: list[torch.Tensor],
        buffers: list[torch.Tensor],
        slots: list[torch.Tensor],
        previous: list[Callable] | None = None,
    ) -> list[Callable]:
        """Closures running the schedule on these storages (bound once, called per batch).
        With ``previous`` (bound on the same sources and buffers), only the kernels touching
        an output slot are bound anew."""

        storages = {"buf": buffers, "src": sources, "slot": slots}

        def view(r: Ref) -> torch.Tensor:
            base = storages[r.kind][r.index]
            return base.as_strided(r.size, r.stride, base.storage_offset() + r.offset)

        if self._touches_slot is None:
            self._touches_slot = [any(r.kind == "slot" for r in _refs(op)) for op in self.ops]
        if self._slot_reads is None:
            self._slot_reads = collections.Counter(r.index for op in self.ops for r in _inputs(op) if r.kind == "slot")
        bound = []
        twin_written = False
        for position, op in enumerate(self.ops):
            if twin_written:  # this op is the twin copy the product before it wrote
                bound.append(_written_by_the_product_before)
                twin_written = False
            elif previous is not None and not self._touches_slot[position]:
                bound.append(previous[position])
            else:
                kernel, twin_written = _compiled_kernel(self.ops, position, view, self._slot_reads)
                bound.append(kernel or _bind_op(op, view))
        return bound


def _inputs(op: tuple) -> list[Ref]:
    """The operands an op reads."""
    kind = op[0]
    if kind == "chunked":
        return [r for inner in op[1] for r in _inputs(inner)]
    if kind in ("bmm", "mul", "add"):
        return [op[1], op[2]]
    if kind in ("copy", "take", "sum"):
        return [op[1]]
    if kind == "matvec":
        return [op[1], op[2], op[4], op[5]]
    if kind == "einsum":
        return list(op[2])
    return []


def _compiled_kernel(ops: list[tuple], position: int, view: Callable[[Ref], torch.Tensor], slot_reads: collections.Counter) -> tuple[Callable | None, bool]:
    """The op at ``position`` as a compiled CPU kernel, where one applies: a matrix product
    (:mod:`.small_gemm`), or an elementwise product or a copy into an output channel that no
    later op reads, with streaming stores (:mod:`.streaming`); a product also writes the
    transposed twin the op after it copies, where it can (then the product's channel is read
    by that copy only). ``(kernel or None, whether the twin is written)``. A channel another
    op reads is written with ordinary stores: a streamed one would be read back from memory."""
    op = ops[position]
    if op[0] == "copy" and op[2].kind == "slot" and not slot_reads[op[2].index]:
        return transposed_copy_kernel(view(op[2]), view(op[1])), False
    if op[0] == "bmm":
        _, a, b, o = op
        return matmul_kernel(view(o), view(a), view(b), stream=o.kind == "slot" and not slot_reads[o.index]), False
    if op[0] != "mul" or op[3].kind != "slot":
        return None, False
    _, a, b, o = op
    following = ops[position + 1] if position + 1 < len(ops) else None
    twin = following is not None and following[0] == "copy" and following[1] == o and following[2].kind == "slot"
    if twin and slot_reads[o.index] == 1 and not slot_reads[following[2].index]:
        kernel = product_kernel(view(o), view(a), view(b), twin=view(following[2]))
        if kernel is not None:
            return kernel, True
    if slot_reads[o.index]:
        return None, False
    return product_kernel(view(o), view(a), view(b)), False


def _written_by_the_product_before() -> None:
    """The kernel of a twin copy that the streamed product before it has written."""


def _refs(op: tuple) -> list[Ref]:
    if op[0] == "chunked":
        return [r for inner in op[1] for r in _refs(inner)]
    refs = [r for r in op[1:] if isinstance(r, Ref)]
    if op[0] == "einsum":
        refs += list(op[2])
    return refs


def _run_all(kernels: tuple[Callable, ...]) -> None:
    for kernel in kernels:
        kernel()


def _bind_op(op: tuple, view: Callable[[Ref], torch.Tensor]) -> Callable:
    kind = op[0]
    if kind == "chunked":
        _, run, bounds, shrunk = op
        kernels = []
        for start, stop in bounds:
            for inner in run:
                sliced = (inner[0], *(_slice_batch(r, start, stop, shrunk) if isinstance(r, Ref) else r for r in inner[1:]))
                kernels.append(_bind_op(sliced, view))
        return functools.partial(_run_all, tuple(kernels))
    if kind == "bmm":
        _, a, b, o = op
        x, y, out = view(a), view(b), view(o)
        if _numpy_matmul_pays(x, y, out):
            return functools.partial(np.matmul, x.numpy(), y.numpy(), out=out.numpy())
        return functools.partial(torch.bmm, x, y, out=out)
    if kind == "matvec":
        _, x, v, o, a, b, tmp, out, dims = op
        xv, vv, ov = view(x), view(v), view(o)
        if _numpy_matvec_pays(xv, vv, ov):
            return functools.partial(np.matmul, xv.numpy(), vv.numpy(), out=ov.numpy())
        return functools.partial(_mul_sum, view(a), view(b), view(tmp), view(out), dims)
    if kind == "mul":
        _, a, b, o = op
        return functools.partial(torch.mul, view(a), view(b), out=view(o))
    if kind == "add":
        _, a, b, o = op
        return functools.partial(torch.add, view(a), view(b), out=view(o))
    if kind == "take":
        _, a, o, indices = op
        return take_kernel(view(o), view(a), indices)
    if kind == "sum":
        _, a, o, dims = op
        return functools.partial(torch.sum, view(a), dims, out=view(o))
    if kind == "copy":
        _, a, o = op
        return copy_kernel(view(o), view(a))
    if kind == "fill":
        _, o, value = op
        return functools.partial(view(o).fill_, value)
    if kind == "einsum":
        _, eq, ins, o = op
        return functools.partial(_einsum_into, eq, [view(r) for r in ins], view(o))
    raise AssertionError(kind)  # pragma: no cover - internal


_NUMPY_DTYPES = (torch.float32, torch.float64, torch.float16)


#: Largest per-graph product (rows * inner * columns) run by numpy's ``matmul`` on CPU in
#: float64. Below it numpy's loop of BLAS calls beat ``torch.bmm`` on ``[B, 32, 32]`` batches
#: (single thread: 1.3-1.6x, ``python benchmarks/contractions.py --kernels``), and OpenBLAS
#: runs such sizes on the calling thread only; in float32 ``torch.bmm`` was as fast or
#: faster, and above this size (``[B, 32, 32] @ [B, 32, 1024]``) it is too.
NUMPY_MATMUL_MAX = 1 << 16


#: Smallest inner size (summed elements per result entry) of a product run by numpy's
#: ``matmul`` on CPU in float32 and float64 whatever its size: the regrouped products
#: ``[B, n, n^2] @ [B, n^2, n]`` (see :mod:`.regroup`) ran 1.07x (float32) and 1.5x
#: (float64) faster through OpenBLAS than through ``torch.bmm``, in CPU time on chunks of 4
#: graphs at n = 32 (``python benchmarks/contractions.py --kernels``).
NUMPY_WIDE_INNER = 512


def _numpy_matmul_pays(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> bool:
    tensors = (x, y, out)
    if any(t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64) or t.requires_grad for t in tensors):
        return False
    wide = x.shape[2] >= NUMPY_WIDE_INNER
    if not wide and (x.dtype != torch.float64 or x.shape[1] * x.shape[2] * y.shape[2] > NUMPY_MATMUL_MAX):
        return False
    # numpy calls BLAS only on matrices with a unit stride; otherwise it loops in C
    return all(t.stride(-1) == 1 or t.stride(-2) == 1 for t in tensors) and out.stride(-1) == 1


def _numpy_matvec_pays(x: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> bool:
    """Matrix-vector products go through ``numpy.matmul`` (one BLAS ``gemv`` per matrix) for
    CPU tensors in float32 / float64: 1.6-3x faster than the broadcast product and sum on
    ``[B, 32, 32]`` and ``[2, 32, 32, 32]`` batches, where ``torch.bmm`` was slower than both
    (``python benchmarks/contractions.py --kernels``); every other device keeps product and sum."""
    tensors = (x, v, out)
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and not t.requires_grad for t in tensors)


def _mul_sum(a: torch.Tensor, b: torch.Tensor, tmp: torch.Tensor, out: torch.Tensor, dims: tuple[int, ...]) -> None:
    torch.mul(a, b, out=tmp)
    torch.sum(tmp, dims, out=out)


def copy_kernel(dst: torch.Tensor, src: torch.Tensor) -> Callable[[], object]:
    """A no-argument callable copying ``src`` into ``dst`` (same shape, any strides): numpy's
    strided copy for CPU tensors (several times faster than ``Tensor.copy_`` on transposes),
    ``Tensor.copy_`` on every other device (CUDA, meta), which numpy cannot reach."""
    if dst.device.type == "cpu" and src.device.type == "cpu" and dst.dtype in _NUMPY_DTYPES and src.dtype == dst.dtype and not dst.requires_grad:
        return functools.partial(np.copyto, dst.numpy(), src.numpy())
    return functools.partial(dst.copy_, src)


def take_kernel(dst: torch.Tensor, src: torch.Tensor, indices: tuple[int, ...]) -> Callable[[], object]:
    """A no-argument callable writing ``src[..., indices]`` into ``dst``: numpy's ``take``
    for CPU tensors (``mode="clip"``: with the default mode numpy buffers the result and
    copies it, 1.5-2x slower on ``[4, 32, 1024]`` gathers), ``torch.index_select`` on the
    flattened leading axes elsewhere."""
    if dst.device.type == "cpu" and src.device.type == "cpu" and dst.dtype in _NUMPY_DTYPES and src.dtype == dst.dtype and not dst.requires_grad:
        index = np.asarray(indices, dtype=np.intp)
        return functools.partial(np.take, src.numpy(), index, axis=-1, out=dst.numpy(), mode="clip")
    index = torch.tensor(indices, dtype=torch.long, device=src.device)
    return functools.partial(_index_select_into, dst, src, index)


def _index_select_into(dst: torch.Tensor, src: torch.Tensor, index: torch.Tensor) -> None:
    dst.copy_(torch.index_select(src, -1, index))


def _einsum_into(eq: str, operands: list[torch.Tensor], target: torch.Tensor) -> None:
    target.copy_(torch.einsum(eq, *operands))


# ----------------------------------------------------------------------------- locality
#: Graphs per chunk when a run of kernels on ``[B, n, n, n]`` tensors executes graph by graph
#: chunk: a chunk's 3-axis intermediates (about this many bytes each) stay in cache between
#: the kernel that writes them and the one that reads them.
CHUNK_BYTES = 1 << 19


def _locality_order(steps: list) -> list:
    """``steps`` re-ordered so that every step reading a 3-axis (``[B, n, n, n]``) tensor runs
    right after the last of its inputs is produced: chains on such tensors become runs of
    consecutive kernels that :func:`_chunk_large_runs` executes graph chunk by graph chunk."""
    axes = {s.out: s.num_axes for s in steps if not s.is_view}
    order: list = []
    moved: set[int] = set()
    for step in steps:
        if step.is_view or not any(axes.get(t, 0) >= 3 for t in step.inputs):
            order.append(step)
            continue
        producers = {s.out: k for k, s in enumerate(order)}
        position = max((producers[t] + 1 for t in step.inputs if t in producers), default=0)
        while position < len(order) and id(order[position]) in moved:
            position += 1  # after the consumers already attached to the same producer
        order.insert(position, step)
        moved.add(id(step))
    return order


def _last_use(steps: list, assemblies: list) -> dict[int, int]:
    """Tensor id -> index (in ``steps``) of its last reader; ``len(steps)`` for assembly."""
    last: dict[int, int] = {}
    for i, step in enumerate(steps):
        for t in step.inputs:
            last[t] = i
    for a in assemblies:
        for t in [*a.scalars, *(t for t, _ in a.rooted)]:
            last[t] = len(steps)
    return last


def _slice_batch(r: Ref, start: int, stop: int, shrunk: frozenset[int] = frozenset()) -> Ref:
    """``r`` restricted to graphs ``start:stop``; a buffer in ``shrunk`` holds one chunk only,
    so every chunk's view starts at its beginning."""
    shift = 0 if r.kind == "buf" and r.index in shrunk else start * r.stride[0]
    return Ref(r.kind, r.index, (stop - start, *r.size[1:]), r.stride, r.offset + shift)


def _chunk_large_runs(ops: list[tuple], B: int, large: int, buffer_sizes: list[int], in_runs: frozenset[int] = frozenset()) -> list[tuple]:
    """Each maximal run of consecutive kernels touching a tensor of ``>= large`` elements
    (and whose operands all have the batch as their first axis) becomes one ``("chunked",
    ops, bounds, shrunk)`` op: the run executed for graphs ``bounds[0]``, then ``bounds[1]``,
    ... so that what one kernel writes is read from cache by the next. A buffer used only
    inside such runs, always written before it is read within a run, and stored graph by
    graph, needs to hold one chunk only: its size in ``buffer_sizes`` is cut to that and its
    index is in ``shrunk``."""

    def refs(op):
        return [r for r in op[1:] if isinstance(r, Ref)]

    def large_op(op):
        # in_runs: ops on a graph's halved [n, n, n] tensors (stacked groups), ids of the tuples
        return op[0] != "einsum" and (id(op) in in_runs or any(math.prod(r.size) >= large for r in refs(op)))

    def batch_first(op):
        return op[0] in ("bmm", "mul", "add", "take", "sum", "copy", "matvec") and all(len(r.size) and r.size[0] == B for r in refs(op))

    result: list[tuple] = []
    run: list[tuple] = []

    def flush():
        if len(run) > 1 and all(batch_first(op) for op in run):
            # sized by the [n, n, n] tensors of a graph; a stacked group's side-by-side
            # operands (see stack.py) are several of them per chunk
            step = max(1, min(B, CHUNK_BYTES // (4 * (large // B))))
            bounds = tuple((g, min(B, g + step)) for g in range(0, B, step))
            result.append(("chunked", tuple(run), bounds))
        else:
            result.extend(run)
        run.clear()

    for op in ops:
        if large_op(op):
            run.append(op)
        else:
            flush()
            result.append(op)
    flush()

    # which buffers can hold a single chunk
    candidate: dict[int, int] = {}  # buffer -> graphs per chunk it must hold
    excluded: set[int] = set()
    for op in result:
        if op[0] != "chunked":
            excluded.update(r.index for r in _refs(op) if r.kind == "buf")
            continue
        _, run_ops, bounds = op
        graphs = bounds[0][1] - bounds[0][0]
        written: set[int] = set()
        for inner in run_ops:
            *inputs, output = [r for r in _refs(inner)]
            outputs = [output]
            if inner[0] == "sum":
                inputs, outputs = [inner[1]], [inner[2]]
            elif inner[0] == "matvec":  # x, v, o, a, b, tmp, out: tmp written before read
                inputs, outputs = [inner[1], inner[2], inner[4], inner[5]], [inner[3], inner[6], inner[7]]
            for r in inputs:
                if r.kind == "buf" and r.index not in written:
                    excluded.add(r.index)  # read before this run writes it
            for r in (*inputs, *outputs):
                if r.kind != "buf":
                    continue
                per = buffer_sizes[r.index] // B
                extent = r.offset + sum((size - 1) * stride for size, stride in zip(r.size[1:], r.stride[1:]))
                if buffer_sizes[r.index] % B or r.stride[0] != per or extent >= per:
                    excluded.add(r.index)  # not stored graph by graph
                candidate[r.index] = max(candidate.get(r.index, 0), graphs)
            written.update(r.index for r in outputs if r.kind == "buf")
    shrunk = frozenset(b for b in candidate if b not in excluded)
    for b in shrunk:
        buffer_sizes[b] = buffer_sizes[b] // B * candidate[b]
    return [(*op, shrunk) if op[0] == "chunked" else op for op in result]


class _Planner:
    """Plans storages on meta tensors; every tensor is known by its canonical-order view."""

    def __init__(self, plan: ContractionPlan, B: int, n: int, slot_views: list[torch.Tensor | None], symmetric: bool):
        self.plan = plan
        self.B, self.n = B, n
        self.symmetric = symmetric
        self.schedule = Schedule()
        self.free: dict[int, list[int]] = {}
        self.views: dict[int, tuple[str, int, torch.Tensor]] = {}  # tensor id -> (kind, index, meta view)
        self.slot_views = slot_views
        self.scratch: set[int] = set()
        self.in_runs: list[tuple] = []  # ops a graph-chunked run must hold whatever their size
        # the tensors the output assembly reads stay as the plan computes them
        assembled = {t for a in plan.assemblies for t in (*a.scalars, *(t for t, _ in a.rooted))}
        self.steps = _locality_order(regroup_wide_products(list(plan.steps), assembled))
        undirected = {i for i, s in enumerate(plan.sources) if s[0] == "channel" and not s[2]}
        self.steps = stack_shared_sides(self.steps, assembled, undirected)
        self.last_use = _last_use(self.steps, plan.assemblies)
        self.consumers: dict[int, list[int]] = {}
        for i, step in enumerate(self.steps):
            for t in step.inputs:
                self.consumers.setdefault(t, []).append(i)

    # ---- storage
    def _alloc(self, numel: int) -> int:
        pool = self.free.get(numel)
        if pool:
            return pool.pop()
        self.schedule.buffer_sizes.append(numel)
        return len(self.schedule.buffer_sizes) - 1

    def _release(self, index: int) -> None:
        self.free.setdefault(self.schedule.buffer_sizes[index], []).append(index)

    def _ref(self, kind: str, index: int, t: torch.Tensor) -> Ref:
        return Ref(kind, index, tuple(t.shape), tuple(t.stride()), t.storage_offset())

    def _new_buffer_view(self, shape: tuple[int, ...], order: list[int]) -> tuple[int, torch.Tensor]:
        """A workspace buffer holding a tensor of ``shape`` stored with dims ``order`` outer
        to inner; returns (buffer index, canonical-order meta view)."""
        index = self._alloc(math.prod(shape))
        stride = [0] * len(shape)
        acc = 1
        for d in reversed(order):
            stride[d] = acc
            acc *= shape[d]
        return index, _meta(shape, tuple(stride))

    # ---- steps
    def _shape(self, letters: str) -> tuple[int, ...]:
        return tuple(self.B if c == BATCH_LETTER else self.n for c in letters)

    def _bmm_layout(self, la: str, lb: str, lo: str, A: torch.Tensor, Bt: torch.Tensor, O: torch.Tensor | None):
        """How ``la,lb->lo`` runs as one ``bmm`` (``A`` rows, ``Bt`` columns): the letter groups
        ``(batch, rows, contract, cols)`` in storage order, and the elements copied because an
        operand is not a matrix batch in that order (0: no copy)."""
        batch = [c for c in lo if c in la and c in lb]
        contract = [c for c in la if c in lb and c not in lo]
        rows = [c for c in lo if c in la and c not in lb]
        cols = [c for c in lo if c in lb and c not in la]

        def ordered(t, letters, group, fallback):
            order = _group_order(t, [letters.index(c) for c in group])
            return [letters[d] for d in order] + [c for c in group if t.shape[letters.index(c)] == 1] if order is not None else fallback

        batch = ordered(A, la, batch, ordered(Bt, lb, batch, batch))
        contract = ordered(A, la, contract, ordered(Bt, lb, contract, contract))
        rows = ordered(A, la, rows, rows)
        cols = ordered(Bt, lb, cols, cols)
        copies = 0
        xa = _merged_letters(A, la, [batch, rows, contract])
        if xa is None or not _blas_friendly(*xa):
            copies += A.numel()
        yb = _merged_letters(Bt, lb, [batch, contract, cols])
        if yb is None or not _blas_friendly(*yb):
            copies += Bt.numel()
        if O is not None:
            mo = _merged_letters(O, lo, [batch, rows, cols])
            if mo is None or not (mo[1][-1] == 1 or mo[1][-2] == 1):
                copies += 2 * O.numel()
        return (batch, rows, contract, cols), copies

    def _consumer_copies(self, tid: int, meta: torch.Tensor) -> int:
        """Elements the consumers of ``tid`` would copy if it were stored as ``meta``."""
        total = 0
        for i in self.consumers.get(tid, []):
            step = self.steps[i]
            if isinstance(step, StackedChains) or step.is_view or len(step.inputs) != 2:
                continue
            lhs, rhs = step.eq.split("->")
            la, lb = lhs.split(",")
            ins = []
            for t in step.inputs:
                if t == tid:
                    ins.append(meta)
                elif t in self.views:
                    ins.append(self.views[t][2])
                else:
                    ins.append(None)
            if any(x is None for x in ins):
                continue
            kind = self._kind(step.eq)
            if kind == "bmm":
                total += min(
                    self._bmm_layout(la, lb, rhs, ins[0], ins[1], None)[1],
                    self._bmm_layout(lb, la, rhs, ins[1], ins[0], None)[1],
                )
            elif kind == "dot":
                # a matrix-vector step that cannot run as one (no unit stride in its matrix)
                # falls back to a product into a temporary and a sum: two passes over it
                direct = self.direct.get(step.out)
                O = self._slot_view(*direct) if direct is not None else self._new_buffer_view_meta(self._shape(rhs), list(range(len(rhs))))[1]
                dummy = Ref("buf", 0, (), ())
                if self._matvec_refs(la, lb, rhs, ins, (dummy, dummy), O, dummy) is None:
                    total += 2 * math.prod(self._shape("".join(dict.fromkeys(rhs + la + lb))))
        return total

    @staticmethod
    def _kind(eq: str) -> str:
        lhs, lo = eq.split("->")
        terms = lhs.split(",")
        if len(terms) != 2 or any(len(set(t)) != len(t) for t in terms) or len(set(lo)) != len(lo):
            return "einsum"
        la, lb = terms
        if any(c not in lb and c not in lo for c in la) or any(c not in la and c not in lo for c in lb):
            return "einsum"  # a letter summed from one operand only
        contract = [c for c in la if c in lb and c not in lo]
        if not contract:
            return "mul"
        batch = [c for c in lo if c in la and c in lb]
        left = [c for c in lo if c in la and c not in lb]
        right = [c for c in lo if c in lb and c not in la]
        if (len(batch) > 1 and not left and not right) or (len(contract) == 1 and (not left or not right)):
            return "dot"  # torch.bmm per tiny matrix-vector product loses; see _matvec_refs
        return "bmm"

    def run(self) -> Schedule:
        plan = self.plan
        sched = self.schedule
        for i, s in enumerate(plan.sources):
            shape = (self.B, self.n) if s[0] == "mask" else (self.B, self.n, self.n)
            self.views[i] = ("src", i, _meta(shape, torch.empty(shape, device="meta").stride()))
        direct = self.direct = self._direct_targets()
        for i, step in enumerate(self.steps):
            if isinstance(step, StackedChains):
                self._stacked(step)
            else:
                self._step(i, step, direct.get(step.out))
            for t in set(step.inputs):
                if self.last_use.get(t) == i and t in self.views and self.views[t][0] == "buf":
                    self._release(self.views[t][1])
        self._assemble(direct)
        in_runs = frozenset(id(op) for op in self.in_runs)
        sched.ops = _chunk_large_runs(sched.ops, self.B, self.B * self.n**3, sched.buffer_sizes, in_runs)
        return sched

    def _direct_targets(self) -> dict[int, tuple[int, tuple[int, ...]]]:
        """Step outputs that are exactly some pattern's value: tensor id -> (channel, perm).
        Further patterns reading the same tensor in another axis order (``(H, b, a)`` beside
        ``(H, a, b)``) go to :attr:`extra_targets`: copied from the first channel right after
        the step writes it."""
        targets: dict[int, tuple[int, tuple[int, ...]]] = {}
        self.extra_targets: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
        seen_slots: set[int] = set()
        views = set(range(len(self.plan.sources))) | {s.out for s in self.plan.steps if s.is_view}
        for j, slot in enumerate(self.plan.pattern_slot):
            if slot in seen_slots:
                continue
            seen_slots.add(slot)
            a = self.plan.assemblies[slot]
            if a.scalars or a.diagonal or len(a.rooted) != 1 or a.output == "invariant":
                continue
            t, perm = a.rooted[0]
            if t in views or self.slot_views[j] is None:
                continue
            if t in targets:
                self.extra_targets.setdefault(t, []).append((j, perm))
            else:
                targets[t] = (j, perm)
        self.extra_filled: set[int] = set()
        return targets

    def _slot_view(self, j: int, perm: tuple[int, ...]) -> torch.Tensor:
        """The output slot of channel ``j`` seen in the canonical axis order of its tensor."""
        v = self.slot_views[j]
        inverse = [0] * len(perm)
        for pos, p in enumerate(perm):
            inverse[p] = pos
        return v.permute(0, *[1 + q for q in inverse])

    def _step(self, i: int, step, direct) -> None:
        sched = self.schedule
        lhs, lo = step.eq.split("->")
        terms = lhs.split(",")
        if step.is_view:  # a leaf: a source seen in another axis order, or its diagonal
            kind, index, src = self.views[step.inputs[0]]
            (li,) = terms
            size, stride = [], []
            for c in lo:
                dims = [d for d, ch in enumerate(li) if ch == c]
                size.append(src.shape[dims[0]])
                stride.append(sum(src.stride(d) for d in dims))
            self.views[step.out] = (kind, index, _meta(tuple(size), tuple(stride)))
            return
        ins = [self.views[t][2] for t in step.inputs]
        in_refs = [self._ref(self.views[t][0], self.views[t][1], self.views[t][2]) for t in step.inputs]
        out_shape = self._shape(lo)
        kind = self._kind(step.eq)

        def target(order: list[int]) -> tuple[Ref, torch.Tensor]:
            if direct is not None:
                j, perm = direct
                v = self._slot_view(j, perm)
                self.views[step.out] = ("slot", j, v)
                return self._ref("slot", j, v), v
            index, v = self._new_buffer_view(out_shape, order)
            self.views[step.out] = ("buf", index, v)
            return self._ref("buf", index, v), v

        if kind == "bmm":
            la, lb = terms
            O = self._slot_view(*direct) if direct is not None else None
            options = []
            for swap in (False, True):
                x, y, lx, ly = (ins[1], ins[0], lb, la) if swap else (ins[0], ins[1], la, lb)
                groups, copies = self._bmm_layout(lx, ly, lo, x, y, O)
                if O is None:
                    batch, rows, _, cols = groups
                    order = [lo.index(c) for c in batch + rows + cols]
                    _, meta = self._new_buffer_view_meta(out_shape, order)
                    copies += self._consumer_copies(step.out, meta)
                else:
                    order = []
                options.append((copies, swap, groups, order))
            copies, swap, groups, order = min(options, key=lambda o: o[0])
            out_ref, O = target(order)
            if swap:
                ins, in_refs, terms = ins[::-1], in_refs[::-1], terms[::-1]
            self._emit_bmm(terms, lo, ins, in_refs, O, out_ref, groups, step.out)
        elif kind == "mul":
            la, lb = terms
            # the storage order its consumers read without copies; among those, the order
            # of the operand that has every output letter (one sequential pass over it)
            natural = list(range(len(lo)))
            for t, lt in zip(ins, terms):
                if set(lt) == set(lo):
                    natural = sorted(range(len(lo)), key=lambda d: -t.stride(lt.index(lo[d])))
                    break
            order, best = natural, None
            if direct is None:
                for rest in itertools.permutations(range(1, len(lo))):
                    candidate = [0, *rest]
                    _, meta = self._new_buffer_view_meta(out_shape, candidate)
                    cost = (self._consumer_copies(step.out, meta), candidate != natural)
                    if best is None or cost < best:
                        order, best = candidate, cost
            out_ref, O = target(order)
            a_view = self._broadcast(in_refs[0], ins[0], la, lo)
            b_view = self._broadcast(in_refs[1], ins[1], lb, lo)
            sched.ops.append(("mul", a_view, b_view, out_ref))
        elif kind == "dot":
            la, lb = terms
            full = "".join(dict.fromkeys(lo + la + lb))
            index, tmp = self._new_buffer_view(self._shape(full), list(range(len(full))))
            tmp_ref = self._ref("buf", index, tmp)
            mul = ("mul", self._broadcast(in_refs[0], ins[0], la, full), self._broadcast(in_refs[1], ins[1], lb, full), tmp_ref)
            out_ref, O = target(list(range(len(lo))))
            dims = tuple(range(len(lo), len(full)))
            matvec = self._matvec_refs(la, lb, lo, ins, in_refs, O, out_ref)
            if matvec is None:
                sched.ops.append(mul)
                sched.ops.append(("sum", tmp_ref, out_ref, dims))
            else:
                # the product and sum stay in the op: the kernel for devices numpy cannot reach
                sched.ops.append(("matvec", *matvec, *mul[1:], out_ref, dims))
            self._release(index)
        else:
            out_ref, O = target(list(range(len(lo))))
            sched.ops.append(("einsum", step.eq, tuple(in_refs), out_ref))
        if direct is not None:
            self._copy_to_extra_targets(step.out, out_ref)

    def _copy_to_extra_targets(self, out: int, ref: Ref) -> None:
        """The other patterns reading result ``out`` (at ``ref``) in another axis order get
        it copied now, while it is still in cache (at the end of the schedule it is not); for
        a matrix product too, where a second product with swapped operands cost more."""
        for j, perm in self.extra_targets.get(out, []):
            self.schedule.ops.append(("copy", ref, self._ref("slot", j, self._slot_view(j, perm))))
            self.extra_filled.add(j)

    def _stacked(self, group: StackedChains) -> None:
        """Lower a :class:`~everygraph.contractions.stack.StackedChains` group: ``L`` once,
        each ``M_i`` into block ``i`` of one ``[B, k, y, K]`` buffer, one matrix product
        ``[B, k n, K] @ [B, K, n]`` into ``[B, k n, n]``, then each block copied to its result
        (and to the output channels reading it). ``K`` is the ``n^2`` pairs ``(p, q)``, or,
        when ``L`` is symmetric in ``p, q``, about half of them: the pairs ``(p, p + d mod n)``
        for ``d = 0 .. n // 2`` (``K = n (n // 2 + 1)``), which hold every unordered pair
        once (twice for ``d = n / 2``, once each way round), so that
        ``sum_{p, q} M[p, q] L[p, q] = sum_{p, d} M'[p, d] L[p, p + d]`` with ``M'`` the sum of
        ``M`` at ``(p, p + d)`` and at ``(p + d, p)`` (at ``(p, p + d)`` alone for ``d = 0``
        and ``d = n / 2``). Each factor is read at those pairs through a strided view (of a
        copy with the wrapped axis doubled, so that ``p + d`` needs no modulo): no gather
        in the graph-chunked run."""
        ops = self.schedule.ops
        B, n, k = self.B, self.n, len(group.outs)
        if group.symmetric:
            columns = n // 2 + 1
            both = (1, columns - 1 if n % 2 == 0 else columns)  # columns read both ways round
            inner = n * columns
            shape, sizes = (B, n, n, columns), (n * n * columns, n * columns, columns, 1)
            # M_i = L * W_i with W_i over p, q alone: M_i' = L' * W_i', W_i' gathered from W_i
            weights = {i: self._pair_weights(factors, columns, both) for i, (from_shared, factors) in enumerate(group.sides)
                       if from_shared and all("y" not in letters for _, letters in factors)}
            doubled: dict = {}
            read = functools.partial(self._circulant_factor, columns=columns, doubled=doubled)
        else:
            columns, inner = n, n * n
            shape, sizes = (B, n, n, n), (n**3, n * n, n, 1)
            weights = {}
            read = None
        # every factor's view first: the doubled copies they read are made before the run
        if read is None:
            shared_refs = [self._factor(f, BATCH_LETTER + "xpq") for f in group.shared]
            side_refs = {i: ([self._factor(f, BATCH_LETTER + "ypq") for f in factors], None) for i, (_, factors) in enumerate(group.sides)}
        else:
            shared_refs = [read(f, "x", False) for f in group.shared]
            side_refs = {i: ([read(f, "y", False) for f in factors], [read(f, "y", True) for f in factors])
                         for i, (_, factors) in enumerate(group.sides) if i not in weights}
        start = len(ops)
        shared_index = self._alloc(B * n * inner)
        shared = Ref("buf", shared_index, shape, sizes, 0)
        self._emit_product(shared_refs, shared)
        sides_index = self._alloc(k * B * n * inner)
        scratch = None
        for i, (from_shared, _) in enumerate(group.sides):
            block = Ref("buf", sides_index, shape, (k * n * inner, *sizes[1:]), i * n * inner)
            if i in weights:
                w = weights[i]
                ops.append(("mul", shared, Ref(w.kind, w.index, shape, (w.stride[0], 0, columns, 1), w.offset), block))
                continue
            # L reads the same both ways round (it is symmetric when read is set)
            first, second = side_refs[i]
            self._emit_product([shared, *first] if from_shared else first, block)
            if read is not None and both[1] > both[0]:
                if scratch is None:
                    scratch = self._alloc(B * n * inner)
                mirrored = _columns(Ref("buf", scratch, shape, sizes, 0), *both)
                self._emit_product([_columns(r, *both) for r in ([shared, *second] if from_shared else second)], mirrored)
                head = _columns(block, *both)
                ops.append(("add", head, mirrored, head))
        result_index = self._alloc(k * B * n * n)
        ops.append((
            "bmm",
            Ref("buf", sides_index, (B, k * n, inner), (k * n * inner, inner, 1), 0),
            Ref("buf", shared_index, (B, inner, n), (n * inner, 1, inner), 0),
            Ref("buf", result_index, (B, k * n, n), (k * n * n, n, 1), 0),
        ))
        self.in_runs.extend(ops[start:])
        for index in {shared_index, sides_index, *([scratch] if scratch is not None else [])}:
            self._release(index)
        for w in weights.values():
            self._release(w.index)
        if read is not None:
            for _, index, _ in doubled.values():
                self._release(index)
        for i, (out, letters) in enumerate(zip(group.outs, group.out_letters)):
            axis = {BATCH_LETTER: k * n * n, "y": n, "x": 1}
            stride = tuple(axis[c] for c in letters)
            block = Ref("buf", result_index, (B, n, n), stride, i * n * n)
            direct = self.direct.get(out)
            if direct is not None:
                j, perm = direct
                v = self._slot_view(j, perm)
                self.views[out] = ("slot", j, v)
                ops.append(("copy", block, self._ref("slot", j, v)))
                self._copy_to_extra_targets(out, block)
            else:
                index, v = self._new_buffer_view((B, n, n), [0, 1, 2])
                self.views[out] = ("buf", index, v)
                ops.append(("copy", block, self._ref("buf", index, v)))
        self._release(result_index)

    def _pair_weights(self, factors, columns: int, both: tuple[int, int]) -> Ref:
        """``[B, n, columns]``: the product ``W`` of ``factors`` (letters over the batch,
        ``p``, ``q``) at the pairs ``(p, p + d mod n)``, plus at ``(p + d mod n, p)`` for the
        columns ``d`` in ``both``: the weight of pair ``(p, d)`` in ``sum_{p, q} L W`` for
        ``L`` symmetric (see :meth:`_stacked`), gathered from ``W`` over the whole batch."""
        ops = self.schedule.ops
        B, n = self.B, self.n
        refs = [self._factor(f, BATCH_LETTER + "pq") for f in factors]
        if len(refs) == 1 and refs[0].stride[1:] == (n, 1):
            flat = Ref(refs[0].kind, refs[0].index, (B, n * n), (refs[0].stride[0], 1), refs[0].offset)
            product_index = None
        else:
            product_index = self._alloc(B * n * n)
            self._emit_product(refs, Ref("buf", product_index, (B, n, n), (n * n, n, 1), 0))
            flat = Ref("buf", product_index, (B, n * n), (n * n, 1), 0)
        index = self._alloc(B * n * columns)
        ops.append(("take", flat, Ref("buf", index, (B, n * columns), (n * columns, 1), 0),
                    tuple(p * n + (p + d) % n for p in range(n) for d in range(columns))))
        if both[1] > both[0]:
            width = both[1] - both[0]
            mirrored_index = self._alloc(B * n * width)
            ops.append(("take", flat, Ref("buf", mirrored_index, (B, n * width), (n * width, 1), 0),
                        tuple((p + d) % n * n + p for p in range(n) for d in range(*both))))
            head = Ref("buf", index, (B, n, width), (n * columns, columns, 1), both[0])
            ops.append(("add", head, Ref("buf", mirrored_index, (B, n, width), (n * width, width, 1), 0), head))
            self._release(mirrored_index)
        if product_index is not None:
            self._release(product_index)
        return Ref("buf", index, (B, n, columns), (n * columns, columns, 1), 0)

    def _circulant_factor(self, factor: tuple[int, str], row: str, swapped: bool, columns: int, doubled: dict) -> Ref:
        """A factor (letters over the batch, ``row``, ``p``, ``q``) read at ``(p, q) = (p, p + d)``
        (``swapped``: at ``(p + d, p)``) as a ``[B, n (row), n (p), columns (d)]`` view. The
        axis read at ``p + d`` is one of a copy with that axis doubled (``doubled`` keeps the
        copies of the group: tensor and axis -> buffer), so that ``p + d < 2 n`` is in range."""
        t, letters = factor
        B, n = self.B, self.n
        plain, wrapped = ("q", "p") if swapped else ("p", "q")
        kind, index, meta = self.views[t]
        offset = meta.storage_offset()
        if wrapped in letters:
            axis = letters.index(wrapped)
            key = (t, axis)
            if key not in doubled:
                size = list(meta.shape)
                size[axis] = 2 * n
                copy_index, copy = self._new_buffer_view(tuple(size), list(range(len(size))))
                source = self._ref(kind, index, meta)
                half = list(meta.shape)
                for h in range(2):
                    ops_ref = Ref("buf", copy_index, tuple(half), copy.stride(), h * n * copy.stride(axis))
                    self.schedule.ops.append(("copy", source, ops_ref))
                doubled[key] = ("buf", copy_index, copy)
            kind, index, meta = doubled[key]
            offset = 0
        stride = [0, 0, 0, 0]
        for axis, c in enumerate(letters):
            step = meta.stride(axis)
            if c == BATCH_LETTER:
                stride[0] += step
            elif c == row:
                stride[1] += step
            elif c == plain:
                stride[2] += step
            elif c == wrapped:
                stride[2] += step
                stride[3] += step
            else:  # pragma: no cover - the group's factors hold only these letters
                raise AssertionError(letters)
        return Ref(kind, index, (B, n, n, columns), tuple(stride), offset)

    def _factor(self, factor: tuple[int, str], out_letters: str) -> Ref:
        """A factor of a stacked group (tensor id, its letters) broadcast to ``out_letters``."""
        t, letters = factor
        kind, index, meta = self.views[t]
        return self._broadcast(self._ref(kind, index, meta), meta, letters, out_letters)

    def _emit_product(self, refs: list[Ref], out: Ref) -> None:
        """``out`` = the elementwise product of ``refs`` (broadcast views of ``out``'s shape)."""
        ops = self.schedule.ops
        if len(refs) == 1:
            ops.append(("copy", refs[0], out))
            return
        ops.append(("mul", refs[0], refs[1], out))
        for r in refs[2:]:
            ops.append(("mul", out, r, out))

    def _matvec_refs(self, la: str, lb: str, lo: str, ins, in_refs, O: torch.Tensor, out_ref: Ref) -> tuple[Ref, Ref, Ref] | None:
        """``la,lb->lo`` (one summed letter, free letters on one side only) as a batch of
        matrix-vector products ``x @ v -> o`` on views: ``x`` ``[*batch, rows, k]``, ``v``
        ``[*batch, k, 1]``, ``o`` ``[*batch, rows, 1]``, each batch letter its own axis (the
        batch letter first, so graph chunks slice axis 0); None when the free letters do not
        merge into one axis of both the matrix and the result."""
        contract = [c for c in la if c in lb and c not in lo]
        free_a = [c for c in lo if c in la and c not in lb]
        free_b = [c for c in lo if c in lb and c not in la]
        if len(contract) != 1 or bool(free_a) == bool(free_b):
            return None
        (lm, lv), (M, V), (rm, rv) = ((la, lb), ins, in_refs) if free_a else ((lb, la), ins[::-1], in_refs[::-1])
        batch = [c for c in lo if c in lm and c in lv]
        if not batch or batch[0] != BATCH_LETTER:
            return None
        order = _group_order(M, [lm.index(c) for c in lo if c in lm and c not in lv])
        if order is None:
            return None
        rows = [lm[d] for d in order] + [c for c in lo if c in lm and c not in lv and M.shape[lm.index(c)] == 1]
        x = _merged_letters(M, lm, [*([c] for c in batch), rows, contract])
        v = _merged_letters(V, lv, [*([c] for c in batch), contract])
        o = _merged_letters(O, lo, [*([c] for c in batch), rows])
        if x is None or v is None or o is None or (x[1][-1] != 1 and x[1][-2] != 1):
            return None
        return (
            Ref(rm.kind, rm.index, x[0], x[1], rm.offset),
            Ref(rv.kind, rv.index, (*v[0], 1), (*v[1], 1), rv.offset),
            Ref(out_ref.kind, out_ref.index, (*o[0], 1), (*o[1], 1), out_ref.offset),
        )

    def _new_buffer_view_meta(self, shape, order):
        stride = [0] * len(shape)
        acc = 1
        for d in reversed(order):
            stride[d] = acc
            acc *= shape[d]
        return None, _meta(shape, tuple(stride))

    def _broadcast(self, ref: Ref, t: torch.Tensor, letters: str, out_letters: str) -> Ref:
        """``t`` (axes ``letters``) as a view broadcast to ``out_letters`` (stride 0)."""
        size, stride = [], []
        for c in out_letters:
            if c in letters:
                d = letters.index(c)
                size.append(t.shape[d])
                stride.append(t.stride(d))
            else:
                size.append(self.B if c == BATCH_LETTER else self.n)
                stride.append(0)
        return Ref(ref.kind, ref.index, tuple(size), tuple(stride), ref.offset)

    def _emit_symmetric_bmm(self, x: Ref, y: Ref, o: Ref) -> None:
        """``o = x @ y`` for a result known to be symmetric: the upper block rows
        ``o[:h] = x[:h] @ y`` and the lower-right block ``o[h:, h:] = x[h:] @ y[:, h:]``
        (3/4 of the FLOPs), then the lower-left block mirrored from the upper-right."""
        n = o.size[1]
        h = n // 2

        def rows(r: Ref, start: int, stop: int) -> Ref:
            return Ref(r.kind, r.index, (r.size[0], stop - start, r.size[2]), r.stride, r.offset + start * r.stride[1])

        def cols(r: Ref, start: int, stop: int) -> Ref:
            return Ref(r.kind, r.index, (r.size[0], r.size[1], stop - start), r.stride, r.offset + start * r.stride[2])

        ops = self.schedule.ops
        ops.append(("bmm", rows(x, 0, h), y, rows(o, 0, h)))
        ops.append(("bmm", rows(x, h, n), cols(y, h, n), cols(rows(o, h, n), h, n)))
        upper_right = cols(rows(o, 0, h), h, n)
        mirrored = Ref(o.kind, o.index, (o.size[0], n - h, h), (o.stride[0], o.stride[2], o.stride[1]), upper_right.offset)
        ops.append(("copy", mirrored, cols(rows(o, h, n), 0, h)))
        self.schedule.symmetric_steps += 1

    def _emit_bmm(self, terms, lo, ins, in_refs, O, out_ref, groups, step_out: int = -1) -> None:
        sched = self.schedule
        batch, rows, contract, cols = groups
        (la, lb), (A, Bt), (ra, rb) = terms, ins, in_refs
        x_ref = self._matrix(ra, A, la, [batch, rows, contract])
        y_ref = self._matrix(rb, Bt, lb, [batch, contract, cols])
        o_groups = [batch, rows, cols]
        merged = _merged_letters(O, lo, o_groups)
        if merged is not None and (merged[1][-1] == 1 or merged[1][-2] == 1):
            o_ref = Ref(out_ref.kind, out_ref.index, merged[0], merged[1], out_ref.offset)
            # not for the wide products of regrouped chains (two summed indices): their
            # halves would be kernels outside the graph-chunked run that reads the operands
            square = len(batch) == 1 and len(rows) == 1 and len(cols) == 1 and len(contract) == 1
            if self.symmetric and step_out in self.plan.symmetric_tensors and square:
                self._emit_symmetric_bmm(x_ref, y_ref, o_ref)
            elif o_ref.stride[-1] != 1 and o_ref.size[-1] != 1:
                # a column-major result: BLAS writes only row-major blocks (torch.bmm would
                # compute into a temporary and copy), so compute its transpose, y^T x^T
                sched.ops.append(("bmm", _transposed(y_ref), _transposed(x_ref), _transposed(o_ref)))
            else:
                sched.ops.append(("bmm", x_ref, y_ref, o_ref))
            for r in (x_ref, y_ref):
                if r.kind == "buf" and r.index in self.scratch:
                    self._release(r.index)
                    self.scratch.discard(r.index)
            return
        # the output is not a matrix batch in place: compute contiguous, then copy over
        full = "".join(c for g in o_groups for c in g)
        shape = self._shape(full)
        index = self._alloc(math.prod(shape))
        sizes = tuple(math.prod(self._shape("".join(g))) if g else 1 for g in o_groups)
        sched.ops.append(("bmm", x_ref, y_ref, Ref("buf", index, sizes, (sizes[1] * sizes[2], sizes[2], 1), 0)))
        contiguous = torch.empty(shape, device="meta").stride()
        perm = [full.index(c) for c in lo]
        sched.ops.append(("copy", Ref("buf", index, tuple(shape[p] for p in perm), tuple(contiguous[p] for p in perm), 0), out_ref))
        self._release(index)
        for r in (x_ref, y_ref):
            if r.kind == "buf" and r.index in self.scratch:
                self._release(r.index)
                self.scratch.discard(r.index)

    def _matrix(self, ref: Ref, t: torch.Tensor, letters: str, groups: list[list[str]]) -> Ref:
        merged = _merged_letters(t, letters, groups)
        if merged is not None and _blas_friendly(*merged):
            return Ref(ref.kind, ref.index, merged[0], merged[1], ref.offset)
        # copy into a contiguous [batch, g1, g2] buffer
        full = "".join(c for g in groups for c in g)
        shape = self._shape(full)
        index = self._alloc(math.prod(shape))
        contiguous = torch.empty(shape, device="meta").stride()
        perm = [letters.index(c) for c in full]
        src = Ref(ref.kind, ref.index, tuple(t.shape[p] for p in perm), tuple(t.stride(p) for p in perm), ref.offset)
        self.schedule.ops.append(("copy", src, Ref("buf", index, shape, contiguous, 0)))
        sizes = tuple(math.prod(self._shape("".join(g))) if g else 1 for g in groups)
        self.scratch.add(index)  # released once the kernel reading it is emitted
        return Ref("buf", index, sizes, (sizes[1] * sizes[2], sizes[2], 1), 0)

    def _assemble(self, direct: dict[int, tuple[int, tuple[int, ...]]]) -> None:
        """Fill every output channel not written by its step (copies, products, diagonals)."""
        plan, sched = self.plan, self.schedule
        filled: dict[int, int] = {}  # assembly slot -> channel
        for t, (j, _) in direct.items():
            filled[plan.pattern_slot[j]] = j
        for j, slot in enumerate(plan.pattern_slot):
            if self.slot_views[j] is None:
                continue
            if (slot in filled and filled[slot] == j) or j in self.extra_filled:
                continue
            target = self.slot_views[j]
            tref = self._ref("slot", j, target)
            if slot in filled:
                src = self.slot_views[filled[slot]]
                sched.ops.append(("copy", self._ref("slot", filled[slot], src), tref))
                continue
            filled[slot] = j
            self._assemble_one(plan.assemblies[slot], target, tref)

    def _tensor_ref(self, tid: int) -> tuple[Ref, torch.Tensor]:
        kind, index, v = self.views[tid]
        return self._ref(kind, index, v), v

    def _assemble_one(self, a, target: torch.Tensor, tref: Ref) -> None:
        sched = self.schedule
        B, n = self.B, self.n
        scalar_ref = None
        if a.scalars:
            first, _ = self._tensor_ref(a.scalars[0])
            if len(a.scalars) == 1:
                scalar_ref = first
            else:
                index = self._alloc(B)
                scalar_ref = Ref("buf", index, (B,), (1,), 0)
                sched.ops.append(("copy", first, scalar_ref))
                for t in a.scalars[1:]:
                    r, _ = self._tensor_ref(t)
                    sched.ops.append(("mul", scalar_ref, r, scalar_ref))
                # kept allocated: a later reuse would alias it within this op list
        if a.output == "invariant":
            if scalar_ref is None:
                sched.ops.append(("fill", tref, 1.0))
            else:
                sched.ops.append(("copy", scalar_ref, tref))
            return
        if a.diagonal:
            sched.ops.append(("fill", tref, 0.0))
            diag = Ref(tref.kind, tref.index, (B, n), (target.stride(0), target.stride(1) + target.stride(2)), tref.offset)
            tref, target = diag, _meta((B, n), diag.stride)
        dims = len(target.shape) - 1

        def spread(r: Ref, letters: str) -> Ref:
            return self._broadcast(r, _meta(r.size, r.stride), letters, BATCH_LETTER + "ab"[:dims])

        if len(a.rooted) == 2:
            (ta, _), (tb, _) = a.rooted
            ra, _ = self._tensor_ref(ta)
            rb, _ = self._tensor_ref(tb)
            sched.ops.append(("mul", spread(ra, "za"), spread(rb, "zb"), tref))
        else:
            t, perm = a.rooted[0]
            r, v = self._tensor_ref(t)
            letters = BATCH_LETTER + "".join("ab"[perm.index(k)] for k in range(len(perm)))
            sched.ops.append(("copy", spread(r, letters), tref))
        if scalar_ref is not None:
            sched.ops.append(("mul", tref, spread(scalar_ref, "z"), tref))


def _columns(r: Ref, start: int, stop: int) -> Ref:
    """Columns ``start:stop`` of the last axis of ``r``."""
    return Ref(r.kind, r.index, (*r.size[:-1], stop - start), r.stride, r.offset + start * r.stride[-1])


def _transposed(r: Ref) -> Ref:
    """The batch of matrices ``r`` with its two matrix axes swapped (a view, no copy)."""
    return Ref(r.kind, r.index, (*r.size[:-2], r.size[-1], r.size[-2]), (*r.stride[:-2], r.stride[-1], r.stride[-2]), r.offset)


def _merged_letters(t: torch.Tensor, letters: str, groups: list[list[str]]):
    """Sizes/strides of ``t`` (axes ``letters``) merged into one axis per letter group, keeping
    each group's letters in the given order; None when a group is not nested in memory."""
    size, stride = [], []
    for g in groups:
        dims = [letters.index(c) for c in g if t.shape[letters.index(c)] != 1]
        for outer, inner in zip(dims, dims[1:]):
            if t.stride(outer) != t.stride(inner) * t.shape[inner]:
                return None
        size.append(math.prod(t.shape[letters.index(c)] for c in g))
        stride.append(t.stride(dims[-1]) if dims else 1)
    return tuple(size), tuple(stride)


def build_schedule(plan: ContractionPlan, B: int, n: int, slot_views: list[torch.Tensor | None], symmetric: bool = False) -> Schedule:
    """Lower ``plan`` for ``B`` graphs of ``n`` nodes writing channel ``j`` into
    ``slot_views[j]`` (a meta tensor with the output slot's sizes and strides)."""
    return _Planner(plan, B, n, slot_views, symmetric).run()
