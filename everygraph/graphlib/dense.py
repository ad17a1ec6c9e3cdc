"""A PyG batch in dense form: one padded ``[B, n, n, c]`` pair tensor and a node mask.

Dense engines (polynomial contractions, PPGN's matrix products) read a batch of graphs of
different sizes as one padded tensor: graph ``b`` occupies the top-left ``n_b x n_b`` block
of slice ``b``, and ``mask[b, i]`` says whether row ``i`` is one of its nodes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .validation import check_batch, check_edge_index, check_tensor

__all__ = ["to_dense_pairs", "to_simple_graph"]


def to_dense_pairs(
    x: Tensor | None,
    edge_index: Tensor,
    batch: Tensor | None = None,
    edge_attr: Tensor | None = None,
    *,
    num_nodes: int | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """PyG layout -> dense pairs ``([B, n, n, 1 + f + e], mask [B, n])``.

    Channel 0 is the adjacency (an edge ``(i, j)`` listed ``k`` times counts ``k``), then the
    node features ``x [num_nodes, f]`` on the diagonal, then ``edge_attr [num_edges, e]`` at
    the edges' positions. ``n`` is the size of the largest graph; padded rows and columns are
    zero and ``mask`` is False there.

    Args:
        x: ``[num_nodes, f]`` node features, or ``None`` for none.
        edge_index: ``[2, num_edges]`` (both directions for undirected graphs).
        batch: ``[num_nodes]`` sorted graph id of each node (default: one graph).
        edge_attr: ``[num_edges]`` or ``[num_edges, e]`` edge features, optional.
        num_nodes: number of nodes (default: from ``x``, ``batch`` or ``edge_index``).
        dtype: dtype of the result (default: ``x``'s floating dtype, else torch's default).

    Returns:
        ``(pairs [B, n, n, c], mask [B, n] bool)`` with ``B`` graphs (``batch.max() + 1``).
    """
    if x is not None:
        check_tensor(x, "x", "float", shape="[num_nodes, channels]")
    from torch_geometric.utils import to_dense_adj, to_dense_batch

    if num_nodes is None:
        if x is not None:
            num_nodes = x.shape[0]
        elif batch is not None:
            num_nodes = batch.numel()
    num_nodes = check_edge_index(edge_index, num_nodes)
    batch = check_batch(batch, num_nodes)
    if x is not None and x.shape[0] != num_nodes:
        raise ValueError(f"x must have one row per node, [{num_nodes}, f], got {list(x.shape)}")
    if edge_attr is not None and edge_attr.shape[0] != edge_index.shape[1]:
        raise ValueError(
            f"edge_attr must have one row per edge, [{edge_index.shape[1]}, e], got {list(edge_attr.shape)}"
        )
    if dtype is None:
        dtype = x.dtype if x is not None and x.is_floating_point() else torch.get_default_dtype()
    device = edge_index.device
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long, device=device)
    counts = torch.bincount(batch, minlength=1)
    B, n = counts.numel(), int(counts.max())
    channels = [to_dense_adj(edge_index, batch, max_num_nodes=n, batch_size=B).to(dtype).unsqueeze(-1)]
    if x is not None:
        xd, _ = to_dense_batch(x.to(dtype).reshape(num_nodes, -1), batch, max_num_nodes=n, batch_size=B)
        channels.append(torch.diag_embed(xd.transpose(1, 2)).permute(0, 2, 3, 1))
    if edge_attr is not None:
        ea = edge_attr.to(dtype).reshape(edge_attr.shape[0], -1)
        channels.append(to_dense_adj(edge_index, batch, ea, max_num_nodes=n, batch_size=B))
    mask = torch.arange(n, device=device)[None, :] < counts[:, None]
    return torch.cat(channels, dim=-1), mask


def to_simple_graph(
    edge_index: Tensor, num_nodes: int | None = None, edge_attr: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """The simple graph of a multigraph: each ordered pair ``(i, j)`` listed once, self loops
    dropped (a 0/1 adjacency with an empty diagonal).

    The attributes of a repeated edge are added (as ``torch_geometric.utils.coalesce`` does by
    default, and as :func:`to_dense_pairs` places them); those of self loops are dropped.

    Args:
        edge_index: ``[2, num_edges]``.
        num_nodes: number of nodes (default: from ``edge_index``).
        edge_attr: ``[num_edges, ...]`` or None.

    Returns:
        ``(edge_index [2, num_simple_edges], edge_attr [num_simple_edges, ...] or None)``, the
        pairs sorted by ``(i, j)``.
    """
    num_nodes = check_edge_index(edge_index, num_nodes)
    if edge_attr is not None:
        check_tensor(edge_attr, "edge_attr", "any")
        if edge_attr.dim() == 0 or edge_attr.shape[0] != edge_index.shape[1]:
            raise ValueError(f"edge_attr must have one row per edge, [{edge_index.shape[1]}, ...], got {list(edge_attr.shape)}")
    edge_index = edge_index.long()
    keep = edge_index[0] != edge_index[1]
    keys = edge_index[0, keep] * max(num_nodes, 1) + edge_index[1, keep]
    unique, slot = torch.unique(keys, return_inverse=True)
    simple = torch.stack([unique // max(num_nodes, 1), unique % max(num_nodes, 1)])
    if edge_attr is None:
        return simple, None
    merged = edge_attr.new_zeros((unique.numel(), *edge_attr.shape[1:])).index_add(0, slot, edge_attr[keep])
    return simple, merged
