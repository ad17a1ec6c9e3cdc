r"""Scatter and segment reductions behind one dispatch.

.. math::

    \mathrm{out}_i = \bigoplus_{j \,:\, \mathrm{index}_j = i} \mathrm{src}_j,
    \qquad \oplus \in \{\mathrm{sum}, \mathrm{mean}, \max, \min, \mathrm{mul}\}

:func:`scatter` takes one segment id per element (any order); :func:`segment` takes the
CSR offsets ``ptr`` of already-sorted segments. Both return ``[dim_size, *F]`` (with the
reduced dimension replaced) and both route to one of several kernels through
:data:`DISPATCH`, a table keyed by ``(reduce, device type, sorted, needs grad)`` whose values are
ordered preference lists of kernel names; the first kernel whose package is importable wins.
The table is data, filled in from ``benchmarks/scatter.py`` (numbers in
``benchmarks/README.md``): native PyTorch everywhere by default; ``torch_scatter`` only where
that benchmark showed it faster *and* it is installed.

Empty segments (no element maps to them) are well defined, never ``-inf`` or ``NaN``:

============  ==================
reduce        empty segment
============  ==================
``sum``       0
``mean``      0
``max``       0 (documented fill)
``min``       0 (documented fill)
``mul``       1 (the empty product)
============  ==================

Gradients flow through every kernel. At tied maxima ``max``/``min`` split the gradient
evenly on the native kernels (as :meth:`torch.Tensor.scatter_reduce` does) but give it all
to one element on ``torch_scatter`` (chosen, when installed, for max/min with gradients on
an unsorted index); pass ``backend="scatter_reduce"`` to pin the native rule.

Example::

    >>> src = torch.tensor([1., 4., 2., 3.])
    >>> index = torch.tensor([1, 0, 1, 3])
    >>> scatter(src, index, dim_size=4, reduce="max")
    tensor([4., 2., 0., 3.])
    >>> segment(torch.tensor([1., 2., 3.]), torch.tensor([0, 2, 2, 3]), reduce="sum")
    tensor([3., 0., 3.])
"""

from __future__ import annotations

import importlib.util
from typing import Callable

import torch
from torch import Tensor

from .errors import IndexDtypeError
from .validation import check_ptr, check_size

__all__ = ["scatter", "segment", "scatter_backend_info", "REDUCES", "DISPATCH"]

REDUCES: tuple[str, ...] = ("sum", "mean", "max", "min", "mul")

_HAS_TORCH_SCATTER = importlib.util.find_spec("torch_scatter") is not None


# ----------------------------------------------------------------------------- checks


def _check_reduce(reduce: str) -> str:
    if not isinstance(reduce, str):
        raise TypeError(f"reduce must be one of {', '.join(repr(r) for r in REDUCES)}, got {type(reduce).__name__} {reduce!r}")
    if reduce == "add":  # torch_scatter / PyG alias
        reduce = "sum"
    if reduce not in REDUCES:
        raise ValueError(f"unknown reduce {reduce!r}; valid options are {', '.join(repr(r) for r in REDUCES)}")
    return reduce


def _normalise_dim(dim: int, ndim: int) -> int:
    if ndim == 0:
        raise ValueError("src must have at least one dimension to reduce over, got a 0-d tensor")
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim={dim} is out of range for src with {ndim} dimension(s) (valid: {-ndim}..{ndim - 1})")
    return dim % ndim


def check_index(
    index: Tensor, length: int, dim_size: int | None, *, src_shape: torch.Size | None = None, dim: int = 0,
    name: str = "index",
) -> int:
    """Validate a segment-id vector ``[length]`` and return ``dim_size`` (inferred if None).

    Raises ``TypeError`` for a non-integer dtype and ``ValueError`` (naming the shapes or the
    bound) for a wrong shape, a negative id or an id ``>= dim_size``.
    """
    if not isinstance(index, Tensor):
        raise IndexDtypeError(f"{name} must be a torch.Tensor of integer segment ids, got {type(index).__name__}")
    if index.dtype == torch.bool or index.is_floating_point() or index.is_complex():
        raise IndexDtypeError(f"{name} must have an integer dtype (torch.long), got {index.dtype}")
    if index.dim() != 1 or index.numel() != length:
        where = f" (size of src {list(src_shape)} along dim {dim})" if src_shape is not None else ""
        raise ValueError(
            f"{name} must have shape [{length}]{where}: one segment id per element, got {name} of shape "
            f"{list(index.shape)}"
        )
    if dim_size is not None:
        dim_size = check_size(dim_size, "dim_size", 0)
    if index.numel() == 0:
        return 0 if dim_size is None else dim_size
    lo, hi = torch.aminmax(index)
    lo, hi = int(lo), int(hi)
    if lo < 0:
        raise ValueError(f"{name} contains a negative segment id ({lo}); ids must be >= 0")
    if dim_size is None:
        return hi + 1
    if hi >= dim_size:
        raise ValueError(f"{name} contains segment id {hi}, out of range for dim_size={dim_size} (valid: 0..{dim_size - 1})")
    return dim_size


# ---------------------------------------------------------------------------- kernels
# Each kernel writes in place into a fresh output buffer (the out-of-place variants would copy
# it first; autograd allows this since the buffer is not a leaf that requires grad).
# Each kernel reduces src along dim 0 ([E, *F] -> [dim_size, *F]); index is a 1-D long
# tensor and ptr (for sorted kernels) the matching offsets. The public functions move the
# reduced dim to the front and back, so kernels need not care about dim.

_FILL = {"sum": 0.0, "mean": 0.0, "max": 0.0, "min": 0.0, "mul": 1.0}


def _counts(index: Tensor, dim_size: int, like: Tensor) -> Tensor:
    dtype = like.dtype if like.is_floating_point() else torch.float
    ones = torch.ones((), dtype=dtype, device=index.device).expand(index.numel())
    return torch.zeros(dim_size, dtype=dtype, device=index.device).index_add_(0, index, ones)


def _bcast(vec: Tensor, like: Tensor) -> Tensor:
    return vec.view((-1,) + (1,) * (like.dim() - 1))


def _kernel_index_add(src: Tensor, index: Tensor, ptr: Tensor | None, dim_size: int, reduce: str) -> Tensor:
    out = src.new_zeros((dim_size,) + src.shape[1:]).index_add_(0, index, src)
    if reduce == "mean":
        out = out / _bcast(_counts(index, dim_size, src).clamp(min=1), out)
    return out


def _kernel_scatter_reduce(src: Tensor, index: Tensor, ptr: Tensor | None, dim_size: int, reduce: str) -> Tensor:
    full_index = _bcast(index, src).expand_as(src)
    shape = (dim_size,) + src.shape[1:]
    if reduce in ("sum", "mean"):
        out = src.new_zeros(shape).scatter_add_(0, full_index, src)
        if reduce == "mean":
            out = out / _bcast(_counts(index, dim_size, src).clamp(min=1), out)
        return out
    if reduce == "mul":
        return src.new_ones(shape).scatter_reduce_(0, full_index, src, reduce="prod", include_self=True)
    # include_self=False leaves untouched (empty) rows at their initial value, the 0 fill.
    return src.new_zeros(shape).scatter_reduce_(0, full_index, src, reduce="a" + reduce, include_self=False)


def _kernel_segment_reduce(src: Tensor, index: Tensor, ptr: Tensor | None, dim_size: int, reduce: str) -> Tensor:
    if ptr is None:  # sorted index: offsets from the counts
        counts = torch.bincount(index, minlength=dim_size)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    out = torch.segment_reduce(src, "prod" if reduce == "mul" else reduce, offsets=ptr, axis=0)
    if reduce in ("mean", "max", "min"):  # segment_reduce leaves nan / -inf / inf in empty rows
        empty = _bcast(ptr[1:] == ptr[:-1], out)
        out = torch.where(empty, torch.zeros((), dtype=out.dtype, device=out.device), out)
    return out


def _kernel_torch_scatter(src: Tensor, index: Tensor, ptr: Tensor | None, dim_size: int, reduce: str) -> Tensor:
    import torch_scatter

    if ptr is not None and reduce != "mul":  # segment_csr has no "mul"
        return torch_scatter.segment_csr(src, ptr, reduce=reduce)
    return torch_scatter.scatter(src, index, dim=0, dim_size=dim_size, reduce=reduce)


# name -> (kernel, needs sorted input, package it needs or None)
KERNELS: dict[str, tuple[Callable[[Tensor, Tensor, Tensor | None, int, str], Tensor], bool, str | None]] = {
    "index_add": (_kernel_index_add, False, None),
    "scatter_reduce": (_kernel_scatter_reduce, False, None),
    "segment_reduce": (_kernel_segment_reduce, True, None),
    "torch_scatter": (_kernel_torch_scatter, False, "torch_scatter"),
}
_KERNEL_REDUCES = {
    "index_add": ("sum", "mean"),
    "scatter_reduce": REDUCES,
    "segment_reduce": REDUCES,
    "torch_scatter": REDUCES,
}

# (reduce, device type, sorted, needs grad) -> kernels in order of preference, the first
# available one wins. "sorted": the caller passed CSR offsets (segment) or a sorted index;
# scatter only checks whether its index is sorted when the sorted and unsorted rows differ.
# "needs grad": src requires grad (the backward of scatter_reduce amax/amin is slow).
# Measured with benchmarks/scatter.py on CPU, torch 2.13, 2 threads, E = 1e4..1e6, F = 32
# (table in benchmarks/README.md):
# - sum/mean: scatter_add_ (kernel "scatter_reduce") ties PyG and index_add_ forward and is
#   1.5x faster than index_add_ forward+backward; torch.segment_reduce is 1.6-3x slower.
# - max/min forward: scatter_reduce_ is 2-3x faster than segment_reduce.
# - max/min forward+backward on a sorted index: segment_reduce is 1.4-1.8x faster at
#   1e5-1e6 edges (scatter_reduce's amax backward dominates).
# - torch_scatter 2.1.2 (built from source in a venv, 1 thread): sum/mean tie the native
#   kernels; max/min forward is 8-15x slower (it always computes the argmax); max/min
#   forward+backward on an unsorted index is 1.2x (1e5) to 1.6x (1e6) faster than
#   scatter_reduce (its backward is a gather by argmax), so that row lists it first; on a
#   sorted index segment_reduce is faster still (3x).
# CUDA rows are not measured here (no GPU on the machine that filled the table): they keep
# the native CPU choice.
DISPATCH: dict[tuple[str, str, bool, bool], tuple[str, ...]] = {}
for _reduce in REDUCES:
    for _device in ("cpu", "cuda"):
        for _sorted in (False, True):
            for _grad in (False, True):
                DISPATCH[(_reduce, _device, _sorted, _grad)] = ("scatter_reduce",)
for _reduce in ("max", "min"):
    DISPATCH[(_reduce, "cpu", True, True)] = ("segment_reduce", "scatter_reduce")
    DISPATCH[(_reduce, "cpu", False, True)] = ("torch_scatter", "scatter_reduce")


def _available(name: str) -> bool:
    package = KERNELS[name][2]
    return package is None or (package == "torch_scatter" and _HAS_TORCH_SCATTER)


def choose_kernel(reduce: str, device_type: str, is_sorted: bool, needs_grad: bool = False) -> str:
    """The kernel :func:`scatter`/:func:`segment` use for this case (see :data:`DISPATCH`)."""
    key = (reduce, device_type, is_sorted, needs_grad)
    prefs = DISPATCH.get(key) or DISPATCH[(reduce, "cpu", is_sorted, needs_grad)]
    for name in prefs:
        if _available(name) and (is_sorted or not KERNELS[name][1]):
            return name
    return "scatter_reduce"


def _run(src: Tensor, index: Tensor, ptr: Tensor | None, dim: int, dim_size: int, reduce: str, kernel: str) -> Tensor:
    moved = src.movedim(dim, 0) if dim != 0 else src
    if moved.shape[0] == 0:  # empty input: every segment is empty
        out = moved.new_full((dim_size,) + moved.shape[1:], _FILL[reduce])
        if src.requires_grad:  # keep the graph connected so .backward() works on empty input
            out = out + moved.sum() * 0
    else:
        out = KERNELS[kernel][0](moved, index.long(), ptr if ptr is None else ptr.long(), dim_size, reduce)
    return out.movedim(0, dim) if dim != 0 else out


# ------------------------------------------------------------------------- public API


def scatter(
    src: Tensor,
    index: Tensor,
    dim: int = 0,
    dim_size: int | None = None,
    reduce: str = "sum",
    *,
    backend: str | None = None,
) -> Tensor:
    r"""Reduce the slices of ``src`` along ``dim`` that share a segment id in ``index``.

    Args:
        src: ``[..., E, ...]`` values (``E`` at position ``dim``).
        index: ``[E]`` integer segment ids in ``[0, dim_size)``, any order.
        dim: the dimension of ``src`` to reduce over.
        dim_size: number of output segments; ``index.max() + 1`` if None.
        reduce: ``"sum"`` (alias ``"add"``), ``"mean"``, ``"max"``, ``"min"`` or ``"mul"``.
        backend: force a kernel name from :data:`KERNELS` (for tests and benchmarks);
            None uses :data:`DISPATCH`.

    Returns:
        ``[..., dim_size, ...]``. Empty segments hold 0 (1 for ``"mul"``).

    Example::

        >>> scatter(torch.tensor([[1., 2.], [3., 4.], [5., 6.]]), torch.tensor([0, 2, 0]), reduce="mean")
        tensor([[3., 4.],
                [0., 0.],
                [3., 4.]])
    """
    if not isinstance(src, Tensor):
        raise TypeError(f"src must be a torch.Tensor, got {type(src).__name__}")
    reduce = _check_reduce(reduce)
    if src.is_complex() and reduce in ("max", "min"):
        raise TypeError(f"src is complex ({src.dtype}): reduce={reduce!r} needs an ordered (real) dtype")
    dim = _normalise_dim(dim, src.dim())
    dim_size = check_index(index, src.size(dim), dim_size, src_shape=src.shape, dim=dim)
    if backend is None:
        device, grad = src.device.type, src.requires_grad
        is_sorted = False
        if choose_kernel(reduce, device, True, grad) != choose_kernel(reduce, device, False, grad) and index.numel() > 1:
            is_sorted = bool((index[1:] >= index[:-1]).all())
        backend = choose_kernel(reduce, device, is_sorted, grad)
    else:
        _check_backend(backend, reduce)
        if KERNELS[backend][1] and index.numel() > 1 and bool((index[1:] < index[:-1]).any()):
            raise ValueError(f"backend {backend!r} needs a sorted index; sort it or use another backend")
    return _run(src, index, None, dim, dim_size, reduce, backend)


def segment(src: Tensor, ptr: Tensor, reduce: str = "sum", *, dim: int = 0, backend: str | None = None) -> Tensor:
    r"""Reduce contiguous segments of ``src`` given by CSR offsets ``ptr``.

    Segment ``i`` holds ``src`` slices ``ptr[i] .. ptr[i+1]-1`` along ``dim``.

    Args:
        src: ``[..., E, ...]`` values (``E`` at position ``dim``).
        ptr: ``[num_segments + 1]`` non-decreasing offsets, ``ptr[0] == 0``, ``ptr[-1] == E``.
        reduce: ``"sum"``, ``"mean"``, ``"max"``, ``"min"`` or ``"mul"``.
        dim: the dimension of ``src`` to reduce over.
        backend: force a kernel (see :func:`scatter`).

    Returns:
        ``[..., num_segments, ...]``; empty segments hold 0 (1 for ``"mul"``).

    Example::

        >>> segment(torch.tensor([1., 5., 2.]), torch.tensor([0, 2, 3]), reduce="max")
        tensor([5., 2.])
    """
    if not isinstance(src, Tensor):
        raise TypeError(f"src must be a torch.Tensor, got {type(src).__name__}")
    reduce = _check_reduce(reduce)
    if src.is_complex() and reduce in ("max", "min"):
        raise TypeError(f"src is complex ({src.dtype}): reduce={reduce!r} needs an ordered (real) dtype")
    dim = _normalise_dim(dim, src.dim())
    check_ptr(ptr, src.size(dim), length_name="the size of src along the reduced dim")
    num_segments = ptr.numel() - 1
    if backend is None:
        backend = choose_kernel(reduce, src.device.type, True, src.requires_grad)
    else:
        _check_backend(backend, reduce)
    counts = (ptr[1:] - ptr[:-1]).long()
    index = torch.repeat_interleave(torch.arange(num_segments, device=ptr.device), counts)
    return _run(src, index, ptr if KERNELS[backend][1] or backend == "torch_scatter" else None,
                dim, num_segments, reduce, backend)


def _check_backend(backend: str, reduce: str) -> None:
    if backend not in KERNELS:
        raise ValueError(f"unknown backend {backend!r}; valid options are {', '.join(repr(k) for k in KERNELS)}")
    if reduce not in _KERNEL_REDUCES[backend]:
        raise ValueError(f"backend {backend!r} does not implement reduce={reduce!r}")
    if not _available(backend):
        raise ValueError(f"backend {backend!r} needs the package {KERNELS[backend][2]!r}, which is not installed")


def scatter_backend_info() -> str:
    """One line for ``everygraph info``: which kernels the dispatch uses on CPU."""
    choices = {
        "sum": choose_kernel("sum", "cpu", False),
        "max": choose_kernel("max", "cpu", False),
        "max+grad": choose_kernel("max", "cpu", False, True),
        "sorted max+grad": choose_kernel("max", "cpu", True, True),
    }
    kernels = "native torch + torch_scatter" if "torch_scatter" in choices.values() else "native torch"
    scatter_state = "torch_scatter installed" if _HAS_TORCH_SCATTER else "torch_scatter not installed"
    return f"{kernels} (cpu: " + ", ".join(f"{k}->{v}" for k, v in choices.items()) + f"); {scatter_state}"
