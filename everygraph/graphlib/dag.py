"""Directed acyclic graphs: validation, topological levels, line graphs."""

from __future__ import annotations

from functools import cached_property
from typing import NamedTuple

import networkx as nx
import torch
from torch import Tensor

from .errors import CycleError
from .validation import check_batch, check_edge_index, check_ptr, ptr_from_batch


class LineGraph(NamedTuple):
    """The line graph of a DAG: its nodes are the DAG's edges.

    Attributes:
        edge_index: ``[2, num_line_edges]`` pairs ``(e_in, e_out)`` of DAG edge ids such that
            ``e_in`` enters a node ``n`` and ``e_out`` leaves the same ``n``. Sorted by ``n``,
            then ``e_in``, then ``e_out``.
        node: ``[num_line_edges]`` the DAG node ``n`` each pair passes through.
    """

    edge_index: Tensor
    node: Tensor


def _topological_levels(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Longest-path level of every node (sources 0) by Kahn's algorithm; raises on a cycle.

    Plain Python over adjacency lists: O(N + E) whatever the depth, where a per-level tensor
    loop would pay a kernel launch per level (a path of 10^5 nodes has 10^5 levels).
    """
    src, dst = edge_index.tolist() if edge_index.numel() else ([], [])
    successors: list[list[int]] = [[] for _ in range(num_nodes)]
    indegree = [0] * num_nodes
    for u, v in zip(src, dst):
        successors[u].append(v)
        indegree[v] += 1
    level = [0] * num_nodes
    stack = [v for v in range(num_nodes) if indegree[v] == 0]
    seen = 0
    while stack:
        u = stack.pop()
        seen += 1
        lu = level[u] + 1
        for v in successors[u]:
            if level[v] < lu:
                level[v] = lu
            indegree[v] -= 1
            if indegree[v] == 0:
                stack.append(v)
    if seen < num_nodes:
        raise CycleError(_find_cycle(src, dst, indegree))
    return torch.tensor(level, dtype=torch.long)


def _find_cycle(src: list[int], dst: list[int], indegree: list[int]) -> list[int]:
    """One directed cycle among the nodes Kahn's algorithm could not remove.

    Every such node keeps a predecessor that is also left over, so walking predecessors
    must revisit a node; the revisited stretch is a cycle.
    """
    left = {v for v, d in enumerate(indegree) if d > 0}
    predecessor: dict[int, int] = {}
    for u, v in zip(src, dst):
        if v in left and u in left and v not in predecessor:
            predecessor[v] = u
    node = next(iter(sorted(left)))
    walk: list[int] = []
    position: dict[int, int] = {}
    while node not in position:
        position[node] = len(walk)
        walk.append(node)
        node = predecessor[node]
    cycle = walk[position[node]:]
    cycle.reverse()  # predecessors were followed backwards; report edges forwards
    return cycle


class DAG:
    r"""A directed acyclic graph, possibly a PyG batch of many (a disjoint union).

    Acyclicity is checked at construction: a cycle raises :class:`CycleError` naming its
    nodes. Topological data is computed once and cached:

    * ``levels`` ``[num_nodes]``: 0 for sources, else :math:`1 + \max` over predecessors;
      nodes of one level are independent, so a scan can process a level in one batched step.
    * ``order`` ``[num_nodes]``: a topological order (by level, ties by node id).
    * ``level_nodes``: the nodes of each level, a list of ``num_levels`` tensors.
    * :meth:`line_graph`: the transitions between consecutive edges.

    Args:
        edge_index: ``[2, num_edges]`` directed edges ``src -> dst`` (parallel edges allowed).
        num_nodes: number of nodes (inferred from ``edge_index`` if None).
        batch: ``[num_nodes]`` sorted graph id of each node (PyG ``Batch.batch``), optional.
        ptr: ``[num_graphs + 1]`` node offsets of each graph, optional (derived from ``batch``).

    Example:
        >>> dag = DAG(torch.tensor([[0, 0, 1], [1, 2, 2]]))
        >>> dag.levels
        tensor([0, 1, 2])
    """

    def __init__(
        self,
        edge_index: Tensor,
        num_nodes: int | None = None,
        *,
        batch: Tensor | None = None,
        ptr: Tensor | None = None,
    ):
        num_nodes = check_edge_index(edge_index, num_nodes)
        batch = check_batch(batch, num_nodes)
        if ptr is not None:
            check_ptr(ptr, num_nodes, length_name="num_nodes", count_name="num_graphs")
            ptr = ptr.long()
            if batch is not None:
                implied = ptr_from_batch(batch, ptr.numel() - 1)
                if implied.numel() != ptr.numel() or not torch.equal(implied.to(ptr.device), ptr):
                    raise ValueError(f"ptr {ptr.tolist()[:12]} disagrees with batch, whose offsets are {implied.tolist()[:12]}")
        elif batch is not None:
            ptr = ptr_from_batch(batch)
        if batch is None and ptr is not None:
            batch = torch.repeat_interleave(torch.arange(ptr.numel() - 1), ptr.diff())
        self.edge_index = edge_index.long()
        self.num_nodes = num_nodes
        self.batch = batch
        self.ptr = ptr
        self._levels = _topological_levels(self.edge_index, num_nodes)

    @classmethod
    def _trusted(cls, edge_index: Tensor, num_nodes: int, levels: Tensor) -> "DAG":
        """A DAG whose acyclicity and levels are known in closed form (lattices)."""
        dag = cls.__new__(cls)
        dag.edge_index, dag.num_nodes, dag.batch, dag.ptr, dag._levels = edge_index, num_nodes, None, None, levels
        return dag

    @classmethod
    def from_data(cls, data) -> "DAG":
        """A DAG from a PyG ``Data`` or ``Batch`` (keeps ``batch`` and ``ptr``)."""
        batch = getattr(data, "batch", None)
        ptr = getattr(data, "ptr", None)
        return cls(data.edge_index, data.num_nodes, batch=batch, ptr=ptr)

    # -- sizes --------------------------------------------------------------------------
    @property
    def num_edges(self) -> int:
        return self.edge_index.size(1)

    @property
    def num_graphs(self) -> int:
        return 1 if self.ptr is None else self.ptr.numel() - 1

    @property
    def device(self) -> torch.device:
        return self.edge_index.device

    # -- topology -------------------------------------------------------------------------
    @property
    def levels(self) -> Tensor:
        return self._levels.to(self.device)

    @property
    def num_levels(self) -> int:
        return int(self._levels.max()) + 1 if self.num_nodes else 0

    @cached_property
    def order(self) -> Tensor:
        return torch.sort(self.levels, stable=True).indices

    @cached_property
    def level_nodes(self) -> list[Tensor]:
        counts = torch.bincount(self._levels, minlength=self.num_levels).tolist()
        return list(torch.split(self.order, counts))

    @cached_property
    def in_degree(self) -> Tensor:
        return torch.bincount(self.edge_index[1], minlength=self.num_nodes)

    @cached_property
    def out_degree(self) -> Tensor:
        return torch.bincount(self.edge_index[0], minlength=self.num_nodes)

    def line_graph(self) -> LineGraph:
        """The line graph: one pair ``(e_in, e_out)`` for every edge entering and edge leaving
        the same node. Cached."""
        if getattr(self, "_line_graph", None) is None:
            self._line_graph = _line_graph(self.edge_index, self.num_nodes, self.out_degree)
        return self._line_graph

    def reverse(self) -> "DAG":
        """The same graph with every edge reversed (same column order)."""
        return DAG(self.edge_index.flip(0), self.num_nodes, batch=self.batch, ptr=self.ptr)

    def to_networkx(self) -> nx.DiGraph:
        """A ``networkx.DiGraph`` (``MultiDiGraph`` if there are parallel edges); each edge
        carries its column as ``edge_id``."""
        pairs = self.edge_index.t().tolist()
        graph = nx.MultiDiGraph() if len(set(map(tuple, pairs))) < len(pairs) else nx.DiGraph()
        graph.add_nodes_from(range(self.num_nodes))
        for e, (u, v) in enumerate(pairs):
            graph.add_edge(u, v, edge_id=e)
        return graph

    def __repr__(self) -> str:
        graphs = f", num_graphs={self.num_graphs}" if self.ptr is not None else ""
        return f"DAG(num_nodes={self.num_nodes}, num_edges={self.num_edges}, num_levels={self.num_levels}{graphs})"


def _line_graph(edge_index: Tensor, num_nodes: int, out_degree: Tensor) -> LineGraph:
    src, dst = edge_index
    device = edge_index.device
    in_sorted = torch.sort(dst, stable=True).indices  # incoming edges grouped by node, by id
    out_sorted = torch.sort(src, stable=True).indices  # outgoing edges grouped by node, by id
    out_start = torch.cumsum(out_degree, 0) - out_degree
    pairs_per_in_edge = out_degree[dst[in_sorted]]
    e_in = in_sorted.repeat_interleave(pairs_per_in_edge)
    node = dst[e_in]
    first_pair = torch.cumsum(pairs_per_in_edge, 0) - pairs_per_in_edge
    offset = torch.arange(e_in.numel(), device=device) - first_pair.repeat_interleave(pairs_per_in_edge)
    e_out = out_sorted[out_start[node] + offset]
    return LineGraph(torch.stack([e_in, e_out]), node)
