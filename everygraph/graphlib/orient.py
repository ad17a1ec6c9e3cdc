"""Node orderings, and orienting undirected graphs into DAGs by an order."""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

from .dag import DAG
from .validation import check_batch, check_edge_index, check_size, ptr_from_batch

Order = Union[str, Tensor]
Seed = Union[int, torch.Generator, None]

#: The named node orders of :func:`node_order` and :func:`dagify` (or pass a permutation tensor).
NODE_ORDERS = ("index", "degree")


def _undirected_pairs(edge_index: Tensor) -> tuple[Tensor, Tensor]:
    """Each column as ``(min, max)``, so ``(u, v)`` and ``(v, u)`` coincide."""
    lo = torch.minimum(edge_index[0], edge_index[1])
    hi = torch.maximum(edge_index[0], edge_index[1])
    return lo, hi


def undirected_degree(edge_index: Tensor, num_nodes: int) -> Tensor:
    """``[num_nodes]`` number of distinct neighbours, whether each edge is given once or twice
    (self-loops ignored)."""
    num_nodes = check_edge_index(edge_index, check_size(num_nodes, "num_nodes", 0))
    lo, hi = _undirected_pairs(edge_index)
    keep = lo != hi
    key = torch.unique(lo[keep] * num_nodes + hi[keep])
    ends = torch.cat([key // num_nodes, key % num_nodes]) if num_nodes else key
    return torch.bincount(ends, minlength=num_nodes)


def _tie_key(num_nodes: int, seed: Seed, device: torch.device, batch: Tensor | None) -> Tensor:
    """Node ids without a seed; with one, a random key per position inside the node's graph,
    so that a graph's order does not depend on what else is in the batch."""
    if seed is None:
        return torch.arange(num_nodes, device=device, dtype=torch.float64)
    if not isinstance(seed, torch.Generator):
        seed = check_size(seed, "seed", 0)
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    if batch is None:
        return torch.rand(num_nodes, generator=generator, dtype=torch.float64).to(device)
    local = torch.arange(num_nodes, device=device) - ptr_from_batch(batch)[batch]
    largest = int(local.max()) + 1 if num_nodes else 0
    return torch.rand(largest, generator=generator, dtype=torch.float64).to(device)[local]


def node_order(
    edge_index: Tensor,
    num_nodes: int | None = None,
    order: Order = "index",
    *,
    batch: Tensor | None = None,
    seed: Seed = None,
) -> Tensor:
    r"""A permutation of the nodes, grouped per graph and sorted inside each graph.

    Graphs stay contiguous and in ``batch`` order, so ``perm`` read in runs of
    ``ptr.diff()`` gives each graph's node sequence (what a sequence model over nodes needs).

    Args:
        edge_index: ``[2, num_edges]`` edges (undirected graphs may list each edge once or twice).
        num_nodes: number of nodes (inferred if None).
        order: ``"index"`` (node id), ``"degree"`` (number of distinct neighbours, ascending),
            or a ``[num_nodes]`` permutation tensor giving the order itself (``perm[i]`` is
            the node at position ``i``); with ``batch`` it is applied inside each graph.
        batch: ``[num_nodes]`` sorted graph id per node (PyG), optional.
        seed: breaks ties of ``"degree"`` (and ``"index"`` is then a random order): ``None``
            breaks ties by node id; an ``int`` or ``torch.Generator`` by a seeded random key.
            With ``batch``, the key depends only on the seed and the node's position inside its
            graph, so each graph is ordered the same whatever else is in the batch.

    Returns:
        ``perm`` ``[num_nodes]``: the nodes in order.
    """
    num_nodes = check_edge_index(edge_index, num_nodes)
    batch = check_batch(batch, num_nodes)
    device = edge_index.device
    if isinstance(order, Tensor):
        if order.dim() != 1 or order.numel() != num_nodes or order.is_floating_point():
            raise ValueError(f"an order tensor must be a permutation of shape [{num_nodes}], got {order.dtype} {list(order.shape)}")
        position = torch.full((num_nodes,), -1, dtype=torch.long, device=device)
        position[order.long()] = torch.arange(num_nodes, device=device)
        if num_nodes and (bool((position < 0).any()) or int(order.max()) >= num_nodes or int(order.min()) < 0):
            raise ValueError(f"an order tensor must be a permutation: every node 0..{num_nodes - 1} exactly once, got {order.tolist()}")
        primary, tie = position.double(), torch.zeros(num_nodes, dtype=torch.float64, device=device)
    elif order == "index":
        primary, tie = torch.zeros(num_nodes, dtype=torch.float64, device=device), _tie_key(num_nodes, seed, device, batch)
    elif order == "degree":
        primary = undirected_degree(edge_index, num_nodes).double()
        tie = _tie_key(num_nodes, seed, device, batch)
    else:
        raise ValueError(f"unknown node order {order!r}; valid orders are {NODE_ORDERS} or a permutation tensor")
    perm = torch.sort(tie, stable=True).indices
    perm = perm[torch.sort(primary[perm], stable=True).indices]
    if batch is not None:
        perm = perm[torch.sort(batch[perm], stable=True).indices]
    return perm


def dagify(
    edge_index: Tensor,
    num_nodes: int | None = None,
    order: Order = "index",
    *,
    batch: Tensor | None = None,
    seed: Seed = None,
) -> tuple[DAG, Tensor]:
    r"""Orient an undirected graph into a DAG: each edge points from the endpoint earlier in a
    node order to the later one.

    An edge given in both directions, or several times, becomes one DAG edge; self-loops are
    dropped. DAG edges keep the order of their first appearance in ``edge_index``.

    Args:
        edge_index: ``[2, num_edges]`` undirected edges (each once or twice).
        num_nodes, order, batch, seed: as in :func:`node_order`.

    Returns:
        ``(dag, edge_id)``: the :class:`DAG` (with ``batch`` kept) and ``edge_id``
        ``[dag.num_edges]``, the column of ``edge_index`` each DAG edge came from, so edge
        features follow as ``edge_attr[edge_id]``.

    Example:
        >>> dag, edge_id = dagify(torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), order="index")
        >>> dag.edge_index, edge_id
        (tensor([[0, 1], [1, 2]]), tensor([0, 2]))
    """
    num_nodes = check_edge_index(edge_index, num_nodes)
    perm = node_order(edge_index, num_nodes, order, batch=batch, seed=seed)
    device = edge_index.device
    rank = torch.empty(num_nodes, dtype=torch.long, device=device)
    rank[perm] = torch.arange(num_nodes, device=device)
    src, dst = edge_index.long()
    forward = rank[src] < rank[dst]
    first, second = torch.where(forward, src, dst), torch.where(forward, dst, src)
    columns = torch.nonzero(src != dst).view(-1)
    key = first[columns] * num_nodes + second[columns]
    unique_key, inverse = torch.unique(key, return_inverse=True)
    first_column = torch.full((unique_key.numel(),), edge_index.size(1), dtype=torch.long, device=device)
    first_column.scatter_reduce_(0, inverse, columns, reduce="amin")
    edge_id = torch.sort(first_column).values
    oriented = torch.stack([first[edge_id], second[edge_id]])
    return DAG(oriented, num_nodes, batch=batch), edge_id
