"""Checks shared by the public functions of the graph core (raise early, name the problem)."""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import IndexDtypeError


def check_edge_index(edge_index: Tensor, num_nodes: int | None, name: str = "edge_index") -> int:
    """Validate a ``[2, num_edges]`` integer index and return ``num_nodes`` (inferred if None)."""
    if not isinstance(edge_index, Tensor):
        raise IndexDtypeError(f"{name} must be a torch.Tensor of shape [2, num_edges], got {type(edge_index).__name__}")
    if edge_index.dtype in (torch.bool,) or edge_index.is_floating_point() or edge_index.is_complex():
        raise IndexDtypeError(f"{name} must have an integer dtype (torch.long), got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"{name} must have shape [2, num_edges], got {list(edge_index.shape)}")
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
    num_nodes = check_size(num_nodes, "num_nodes", 0)
    if edge_index.numel():
        lo, hi = int(edge_index.min()), int(edge_index.max())
        if lo < 0:
            raise ValueError(f"{name} contains a negative node index ({lo}); node indices must lie in [0, {num_nodes})")
        if hi >= num_nodes:
            raise ValueError(
                f"{name} contains node index {hi}, out of range for num_nodes={num_nodes} "
                f"(valid indices are 0..{num_nodes - 1})"
            )
    return num_nodes


def check_batch(batch: Tensor | None, num_nodes: int) -> Tensor | None:
    """Validate a PyG ``batch`` vector ``[num_nodes]`` (sorted graph ids)."""
    if batch is None:
        return None
    if not isinstance(batch, Tensor) or batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
        raise IndexDtypeError(f"batch must be an integer tensor of shape [num_nodes], got {getattr(batch, 'dtype', type(batch))}")
    if batch.dim() != 1 or batch.numel() != num_nodes:
        raise ValueError(f"batch must have shape [{num_nodes}] (one graph id per node), got {list(batch.shape)}")
    if batch.numel() and (int(batch.min()) < 0 or bool((batch[1:] < batch[:-1]).any())):
        raise ValueError("batch must hold non-negative graph ids sorted in ascending order (PyG's convention)")
    return batch.long()


def ptr_from_batch(batch: Tensor, num_graphs: int | None = None) -> Tensor:
    """``ptr`` ``[num_graphs + 1]``: node offsets of each graph of a sorted ``batch`` vector."""
    check_tensor(batch, "batch", "index", 1, shape="[num_nodes]")
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    counts = torch.bincount(batch, minlength=num_graphs)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def check_ptr(
    ptr: Tensor,
    length: int,
    *,
    name: str = "ptr",
    length_name: str = "the number of elements along the reduced dim",
    count_name: str = "num_segments",
    min_segments: int = 0,
) -> None:
    """Validate CSR offsets ``[num_segments + 1]`` (PyG's ``ptr``, flash-attn's ``cu_seqlens``).

    Segment ``i`` holds the elements ``ptr[i] .. ptr[i+1] - 1`` of a dimension of size
    ``length``: the offsets must be integers, start at 0, never decrease (an empty segment
    repeats an offset) and end at ``length``.

    Args:
        ptr: the offsets to check.
        length: the size of the segmented dimension.
        name: the argument's name in messages (``"ptr"``, ``"cu_seqlens"``).
        length_name: what ``length`` is, in messages.
        count_name: what the segments are called in the expected shape (``num_seqs``).
        min_segments: the smallest number of segments accepted.

    Raises:
        IndexDtypeError: ``ptr`` is not an integer tensor (a ``TypeError`` and ``ValueError``).
        ValueError: a wrong shape, first or last entry, or a decreasing step (entries named).
    """
    shape = f"[{count_name} + 1]"
    if not isinstance(ptr, Tensor):
        raise IndexDtypeError(f"{name} must be a 1-D integer torch.Tensor {shape}, got {type(ptr).__name__}")
    if ptr.dtype == torch.bool or ptr.is_floating_point() or ptr.is_complex():
        raise IndexDtypeError(
            f"{name} must be a 1-D integer tensor {shape} with an integer dtype (torch.long or torch.int32), "
            f"got dtype {ptr.dtype}"
        )
    if ptr.dim() != 1:
        raise ValueError(f"{name} must be a 1-D integer tensor {shape}, got shape {list(ptr.shape)}")
    if ptr.numel() < min_segments + 1:
        raise ValueError(f"{name} needs at least {min_segments + 1} entries [0, ..., {length}], got {ptr.tolist()}")
    first, last = int(ptr[0]), int(ptr[-1])
    if first != 0:
        raise ValueError(f"{name} must start at 0, got {first}")
    if last != length:
        raise ValueError(f"{name} must end at {length_name} = {length}, got {last}")
    steps = ptr.diff()
    if bool((steps < 0).any()):
        bad = int(torch.nonzero(steps < 0)[0])
        raise ValueError(
            f"{name} must be increasing (non-decreasing: an empty segment repeats an offset), but entry "
            f"{bad + 1} = {int(ptr[bad + 1])} < entry {bad} = {int(ptr[bad])}"
        )
# -------------------------------------------------------------- arguments of public entry points
def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def check_size(value: object, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int >= minimum``; ``TypeError`` for a non-integer (floats that are
    whole numbers are refused too: ``2.0`` nodes is a bug, not a size) or a bool."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point() and not value.is_complex()
        and value.dtype != torch.bool
    ):
        import numpy as np

        if not isinstance(value, np.integer):
            raise TypeError(f"{name} must be an integer with {name} >= {minimum}, got {_describe(value)}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer with {name} >= {minimum}, got {value}")
    return value


def check_number(
    value: object, name: str, *, minimum: float | None = None, maximum: float | None = None, strict: bool = False
) -> float:
    """``value`` as a float within ``[minimum, maximum]`` (open bounds if ``strict``);
    ``TypeError`` for a non-number (a string, a bool, a tensor of several entries),
    ``ValueError`` for NaN or a value out of range."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    value = float(value)
    too_low = minimum is not None and (value <= minimum if strict else value < minimum)
    too_high = maximum is not None and (value >= maximum if strict else value > maximum)
    if value != value or too_low or too_high:
        low = "-inf" if minimum is None else minimum
        high = "inf" if maximum is None else maximum
        interval = f"({low}, {high})" if strict else f"[{low}, {high}]"
        raise ValueError(f"{name} must be a number in {interval}, got {value}")
    return value


def check_choice(value: object, name: str, choices: tuple | list) -> object:
    """``value`` if it is one of ``choices`` (compared with ``==``), else ``ValueError``."""
    if not isinstance(value, (str, type(None), int, float)) or isinstance(value, bool) and True not in choices:
        raise TypeError(f"{name} must be one of {list(choices)}, got {_describe(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_flag(value: object, name: str) -> bool:
    """``value`` if it is a bool, else ``TypeError`` (a string such as ``'no'`` would be truthy)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_describe(value)}")
    return value


def check_callable(value: object, name: str, what: str = "a callable") -> object:
    if not callable(value):
        raise TypeError(f"{name} must be {what}, got {_describe(value)}")
    return value


def check_tensor(
    value: object,
    name: str,
    kind: str = "float",
    ndim: int | tuple[int, ...] | None = None,
    shape: str = "",
) -> Tensor:
    """``value`` if it is a tensor of the right kind of dtype (``"float"``: floating point;
    ``"inexact"``: floating point or complex; ``"index"``: integer, not bool; ``"bool"``: bool;
    ``"any"``) and, when given, number of
    axes; ``TypeError``/``ValueError`` naming ``name``, the expected and the given otherwise.
    ``shape`` (e.g. ``"[B, L, D]"``) only improves the message."""
    expected = f"a {kind} tensor" + (f" of shape {shape}" if shape else "")
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be {expected}, got {_describe(value)}")
    if kind == "float" and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor{' ' + shape if shape else ''}, got dtype {value.dtype}")
    if kind == "inexact" and not (value.is_floating_point() or value.is_complex()):
        raise TypeError(f"{name} must be a floating point or complex tensor{' ' + shape if shape else ''}, got dtype {value.dtype}")
    if kind == "index" and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer tensor (torch.long){' ' + shape if shape else ''}, got dtype {value.dtype}")
    if kind == "bool" and value.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor{' ' + shape if shape else ''}, got dtype {value.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            axes = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {axes} axes{' (' + shape + ')' if shape else ''}, got shape {list(value.shape)}")
    return value
