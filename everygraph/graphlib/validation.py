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
    num_nodes = int(num_nodes)
    if num_nodes < 0:
        raise ValueError(f"num_nodes must be non-negative, got {num_nodes}")
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
    if not isinstance(batch, Tensor) or batch.is_floating_point() or batch.dtype == torch.bool:
        raise IndexDtypeError(f"batch must be an integer tensor of shape [num_nodes], got {getattr(batch, 'dtype', type(batch))}")
    if batch.dim() != 1 or batch.numel() != num_nodes:
        raise ValueError(f"batch must have shape [{num_nodes}] (one graph id per node), got {list(batch.shape)}")
    if batch.numel() and (int(batch.min()) < 0 or bool((batch[1:] < batch[:-1]).any())):
        raise ValueError("batch must hold non-negative graph ids sorted in ascending order (PyG's convention)")
    return batch.long()


def ptr_from_batch(batch: Tensor, num_graphs: int | None = None) -> Tensor:
    """``ptr`` ``[num_graphs + 1]``: node offsets of each graph of a sorted ``batch`` vector."""
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
