r"""Random-walk structural encodings: the return probabilities of a random walk."""

from __future__ import annotations

import torch
from torch import Tensor

from .validation import check_batch, check_edge_index, check_size


def random_walk_encoding(edge_index: Tensor, num_nodes: int, steps: int, batch: Tensor | None = None) -> Tensor:
    r"""RWSE (*Graph Neural Networks with Learnable Structural and Positional Representations*,
    Dwivedi et al., 2022): the probability that a random walk from ``v`` is back at ``v`` after
    ``k`` steps, :math:`\mathrm{RWSE}(v)_k = (P^k)_{vv}`, ``k = 1..steps``, with
    :math:`P = D_{out}^{-1} A` (``A[u, w]`` = number of edges ``u -> w``; a node without
    out-edges has a zero row, so its walk ends and returns with probability 0).

    Computed as ``steps`` sparse products ``Q <- Q P`` (``Q = P^k`` held as its non-zero entries,
    block-diagonal over the graphs), so a node's encoding only involves its own graph: it is the same alone and in a batch.

    Args:
        edge_index: ``[2, num_edges]``.
        num_nodes: ``N``.
        steps: ``K >= 1``.
        batch: ``[N]`` graph ids, checked for consistency only (edges never cross graphs).

    Returns:
        ``[N, K]`` in the default floating dtype.

    Cost: ``O(K nnz(P^k))`` (at most ``O(K sum_g n_g^3)`` for dense graphs).
    """
    num_nodes = check_size(num_nodes, "num_nodes", 0)
    check_edge_index(edge_index, num_nodes)
    steps = check_size(steps, "steps", 1)
    batch = check_batch(batch, num_nodes)
    if batch is not None and edge_index.numel() and bool((batch[edge_index[0]] != batch[edge_index[1]]).any()):
        raise ValueError("edge_index joins nodes of different graphs of batch; every edge must stay inside one graph")
    dtype = torch.get_default_dtype()
    device = edge_index.device
    out = torch.zeros(num_nodes, steps, dtype=dtype, device=device)
    if num_nodes == 0 or edge_index.numel() == 0:
        return out
    src, dst = edge_index[0].long(), edge_index[1].long()
    degree = torch.bincount(src, minlength=num_nodes)
    order = torch.argsort(src, stable=True)
    col, weight = dst[order], (1.0 / degree[src].to(dtype))[order]  # P's rows, CSR
    rowptr = torch.cat([degree.new_zeros(1), degree.cumsum(0)])
    # Q = P^k as COO (row, col, value), starting from the identity: Q P joins Q's column c
    # with the out-edges of c, then sums the entries that land on the same (row, col)
    row = torch.arange(num_nodes, device=device)
    column, value = row.clone(), torch.ones(num_nodes, dtype=dtype, device=device)
    for k in range(steps):
        fan = degree[column]
        row, first = row.repeat_interleave(fan), rowptr[column].repeat_interleave(fan)
        within = torch.arange(first.numel(), device=device) - torch.cat(
            [fan.new_zeros(1), fan.cumsum(0)[:-1]]).repeat_interleave(fan)
        value = value.repeat_interleave(fan) * weight[first + within]
        keys, inverse = torch.unique(row * num_nodes + col[first + within], return_inverse=True)
        value = torch.zeros(keys.numel(), dtype=dtype, device=device).index_add_(0, inverse, value)
        row, column = keys // num_nodes, keys % num_nodes
        diagonal = row == column
        out[row[diagonal], k] = value[diagonal]
    return out
