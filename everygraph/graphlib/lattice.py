"""Lattices: the d-dimensional grid DAG (1D = path/sequence, 2D = image, 3D = volume)."""

from __future__ import annotations

import itertools
import math
from functools import cached_property
from typing import Sequence

import networkx as nx
import torch
from torch import Tensor

from .dag import DAG
from .validation import check_flag, check_ptr, check_size, check_tensor


class Lattice:
    r"""The grid DAG of a given ``shape`` with one edge between neighbours along each axis.

    Nodes are numbered row-major over ``shape`` (the last axis varies fastest), the layout
    of a contiguous ``[*shape]`` tensor. Edges are grouped by axis (all axis-0 edges, then
    axis 1, ...) and, inside an axis, ordered by the row-major id of their lower-coordinate
    endpoint. Along axis ``i`` an edge goes from coordinate ``c`` to ``c + 1``, or from
    ``c + 1`` to ``c`` when ``flip[i]`` is true, so the :math:`2^d` flips are the
    :math:`2^d` scan directions (:meth:`orientations`).

    A lattice knows its shape, so scans over it take dense fast paths; :meth:`to_dag` gives
    the same graph as a general :class:`DAG` (levels in closed form).

    Args:
        shape: positive sizes, one per axis.
        flip: per axis, whether edges point towards lower coordinates (default: none).

    Example:
        >>> lat = Lattice((2, 3))
        >>> lat.edge_index
        tensor([[0, 1, 2, 0, 1, 3, 4],
                [3, 4, 5, 1, 2, 4, 5]])
    """

    def __init__(self, shape: Sequence[int], flip: Sequence[bool] | None = None):
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = (shape,)
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
            raise TypeError(f"shape must be a sequence of positive integer sizes, e.g. (16,) or (8, 8), got {shape!r}")
        shape = tuple(shape)
        if len(shape) == 0:
            raise ValueError("Lattice needs at least one axis, got shape=()")
        for size in shape:
            if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
                raise ValueError(f"Lattice sizes must be positive integers, got shape={shape}")
        if flip is not None and (isinstance(flip, (str, bytes)) or not hasattr(flip, "__iter__")
                                 or not all(isinstance(f, (bool, int)) for f in flip)):
            raise TypeError(f"flip must be a sequence of bools, one per axis, got {flip!r}")
        flip = tuple(bool(f) for f in flip) if flip is not None else (False,) * len(shape)
        if len(flip) != len(shape):
            raise ValueError(f"flip must give one flag per axis: shape={shape} has {len(shape)} axes, flip={flip} has {len(flip)}")
        self.shape = shape
        self.flip = flip

    @staticmethod
    def orientations(ndim: int) -> list[tuple[bool, ...]]:
        """All :math:`2^{ndim}` flip tuples (the scan directions of a ``ndim``-lattice)."""
        return list(itertools.product((False, True), repeat=ndim))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def num_nodes(self) -> int:
        return math.prod(self.shape)

    @property
    def num_edges(self) -> int:
        return sum(self.num_nodes // s * (s - 1) for s in self.shape)

    @cached_property
    def strides(self) -> tuple[int, ...]:
        return tuple(math.prod(self.shape[i + 1:]) for i in range(self.ndim))

    @cached_property
    def edge_index(self) -> Tensor:
        ids = torch.arange(self.num_nodes).view(self.shape)
        sources, targets = [], []
        for axis, size in enumerate(self.shape):
            lower = ids.narrow(axis, 0, size - 1).reshape(-1)
            upper = lower + self.strides[axis]
            src, dst = (upper, lower) if self.flip[axis] else (lower, upper)
            sources.append(src)
            targets.append(dst)
        return torch.stack([torch.cat(sources), torch.cat(targets)])

    @cached_property
    def edge_axis(self) -> Tensor:
        counts = [self.num_nodes // s * (s - 1) for s in self.shape]
        return torch.repeat_interleave(torch.arange(self.ndim), torch.tensor(counts))

    @cached_property
    def levels(self) -> Tensor:
        """Topological level of each node: the number of steps from the source corner."""
        grids = torch.meshgrid(*[torch.arange(s) for s in self.shape], indexing="ij")
        steps = [size - 1 - g if f else g for g, size, f in zip(grids, self.shape, self.flip)]
        return torch.stack(steps).sum(0).reshape(-1)

    def coords(self, node: int) -> tuple[int, ...]:
        """The coordinates of a node id."""
        node = int(node)
        if not 0 <= node < self.num_nodes:
            raise ValueError(f"node {node} out of range for {self} (valid ids are 0..{self.num_nodes - 1})")
        return tuple((node // stride) % size for stride, size in zip(self.strides, self.shape))

    def node(self, coords: Sequence[int]) -> int:
        """The node id at the given coordinates."""
        coords = tuple(int(c) for c in coords)
        if len(coords) != self.ndim or any(not 0 <= c < s for c, s in zip(coords, self.shape)):
            raise ValueError(f"coordinates {coords} out of range for shape {self.shape}")
        return sum(c * stride for c, stride in zip(coords, self.strides))

    def all_coords(self) -> Tensor:
        """``[num_nodes, ndim]`` coordinates of every node, in node order."""
        grids = torch.meshgrid(*[torch.arange(s) for s in self.shape], indexing="ij")
        return torch.stack([g.reshape(-1) for g in grids], dim=1)

    def to_dag(self) -> DAG:
        """The lattice as a general :class:`DAG` (acyclic by construction, levels in closed form)."""
        return DAG._trusted(self.edge_index, self.num_nodes, self.levels)

    def to_data(self):
        """A PyG ``Data`` with ``edge_index``, ``num_nodes`` and ``pos`` (the coordinates)."""
        from torch_geometric.data import Data

        return Data(edge_index=self.edge_index, num_nodes=self.num_nodes, pos=self.all_coords())

    def to_networkx(self) -> nx.DiGraph:
        """A ``networkx.DiGraph`` with node attribute ``coords`` and edge attribute ``axis``."""
        graph = nx.DiGraph()
        for node, c in enumerate(self.all_coords().tolist()):
            graph.add_node(node, coords=tuple(c))
        for (u, v), axis in zip(self.edge_index.t().tolist(), self.edge_axis.tolist()):
            graph.add_edge(u, v, axis=axis)
        return graph

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lattice) and (self.shape, self.flip) == (other.shape, other.flip)

    def __hash__(self) -> int:
        return hash((self.shape, self.flip))

    def __repr__(self) -> str:
        flip = f", flip={self.flip}" if any(self.flip) else ""
        return f"Lattice(shape={self.shape}{flip})"


def path_graph(length: int) -> Lattice:
    """The path graph ``0 -> 1 -> ... -> length-1``: a sequence, ``Lattice((length,))``."""
    return Lattice((check_size(length, "length", 1),))


def packed_paths(cu_seqlens: Tensor, reverse: bool = False) -> DAG:
    """Sequences packed along one axis as a graph: the disjoint union of the paths
    ``lo -> lo+1 -> ... -> hi-1``, one per sequence ``[lo, hi)`` of ``cu_seqlens`` (the edges
    between packed sequences removed), or ``hi-1 -> ... -> lo`` when ``reverse``.

    Args:
        cu_seqlens: ``[num_seqs + 1]`` offsets (PyG's ``ptr``): integers from 0, never
            decreasing (empty sequences allowed), ending at the total length.
        reverse: point every edge towards lower positions.

    Returns:
        a :class:`DAG` on ``cu_seqlens[-1]`` nodes with ``ptr = cu_seqlens``; edges in position
        order, levels in closed form (no topological sort).

    Example:
        >>> packed_paths(torch.tensor([0, 2, 5])).edge_index
        tensor([[0, 2, 3],
                [1, 3, 4]])
    """
    check_tensor(cu_seqlens, "cu_seqlens", "index", 1, shape="[num_seqs + 1]")
    check_flag(reverse, "reverse")
    length = int(cu_seqlens[-1]) if cu_seqlens.numel() else 0
    check_ptr(cu_seqlens, length, name="cu_seqlens", length_name="the total length", count_name="num_seqs", min_segments=1)
    ptr = cu_seqlens.detach().long().cpu()
    sizes = ptr.diff()
    start = torch.repeat_interleave(ptr[:-1], sizes)  # of each position's sequence
    position = torch.arange(length)
    starts_sequence = position == start
    lower = position[1:][~starts_sequence[1:]] - 1  # t with an edge between t and t + 1
    src, dst = (lower + 1, lower) if reverse else (lower, lower + 1)
    levels = (torch.repeat_interleave(ptr[1:], sizes) - 1 - position) if reverse else position - start
    dag = DAG._trusted(torch.stack([src, dst]), length, levels)
    dag.ptr = ptr
    dag.batch = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)
    return dag
