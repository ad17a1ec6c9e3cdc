"""PPGN and PPGN++: provably powerful graph networks on dense padded batches.

Papers: Maron, Ben-Hamu, Serviansky, Lipman, *Provably Powerful Graph Networks*, NeurIPS 2019,
https://arxiv.org/abs/1905.11136; Puny, Lim, Kiani, Maron, Lipman, *Equivariant Polynomials
for Graph Neural Networks*, ICML 2023, https://arxiv.org/abs/2302.11556 (PPGN++).

A PPGN block maps a pair tensor :math:`X \\in \\mathbb{R}^{B \\times n \\times n \\times c}` to

.. math::
    X' = W \\big[\\, X \\;\\|\\; m_1(X) \\cdot m_2(X) \\,\\big],

where :math:`m_1, m_2` are MLPs applied to every pair :math:`(i, j)` and :math:`\\cdot` is the
matrix product over the node axis, channel by channel. It computes exactly the 2-FWL
polynomials (treewidth <= 2 patterns). PPGN++ (``plus=True``, as described by Puny et al., 2023) feeds
:math:`X` and :math:`X^T` through one MLP first, appends an identity channel before every
block, divides the matrix product by the graph size (our choice, it keeps activations of
graphs of different sizes on one scale) and reads out the means over diagonal and off-diagonal
entries. Plain PPGN (``plus=False``) reads out the sums over diagonal and off-diagonal entries
of the last block. Padding is masked after every block, so each graph's output is independent
of the rest of the batch.

Input from PyG: ``forward(x, edge_index, batch, edge_attr, dense_features)`` builds the dense
``[B, n, n, in_channels]`` tensor ``[adjacency | diag(x) | edge_attr | dense_features]``; e.g.
``dense_features`` are polynomial channels from :class:`~everygraph.nn.PolynomialFeatures`
(``as_matrix=True``), which is how PPGN++(6) adds the degree-6 patterns PPGN cannot compute.

Example:
    >>> from everygraph.nn import PPGN
    >>> model = PPGN(in_channels=1 + 16, hidden=32, num_blocks=3, out_channels=1)
    >>> y = model(x, edge_index, batch)  # [num_graphs, 1]  # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..contractions import check_graph_inputs
from ..graphlib import check_size, check_tensor, to_dense_pairs

__all__ = ["PPGN", "PPGNBlock"]


def _mlp(in_channels: int, out_channels: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = in_channels
    for i in range(depth):
        layers.append(nn.Linear(c, out_channels))
        if i < depth - 1:
            layers.append(nn.ReLU())
        c = out_channels
    return nn.Sequential(*layers)


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()


def _ppgn_input(
    x: Tensor | None,
    edge_index: Tensor,
    batch: Tensor | None,
    edge_attr: Tensor | None,
    dense_features: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """``([B, n, n, 1 + f + e + k], mask [B, n])``: :func:`~everygraph.graphlib.to_dense_pairs`
    (adjacency, ``x`` on the diagonal, ``edge_attr``) with ``dense_features [B, n, n, k]``
    appended."""
    if x is not None and torch.is_floating_point(x):
        dtype = x.dtype
    elif dense_features is not None and torch.is_floating_point(dense_features):
        dtype = dense_features.dtype
    else:
        dtype = torch.get_default_dtype()
    pairs, mask = to_dense_pairs(x, edge_index, batch, edge_attr, dtype=dtype)
    if dense_features is None:
        return pairs, mask
    if tuple(dense_features.shape[:3]) != tuple(pairs.shape[:3]):
        raise ValueError(
            f"dense_features must be [B, n, n, k] with [B, n, n] = {tuple(pairs.shape[:3])}; "
            f"got {tuple(dense_features.shape)}"
        )
    return torch.cat([pairs, dense_features.to(dtype)], dim=-1), mask


class PPGNBlock(nn.Module):
    """One PPGN block: ``[B, n, n, in_channels] -> [B, n, n, out_channels]``.

    Args:
        in_channels: input pair channels.
        out_channels: output pair channels (also the width of the two MLPs).
        depth: layers per MLP.
        normalize: divide the matrix product by the number of real nodes.
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int = 2, normalize: bool = False) -> None:
        in_channels = check_size(in_channels, "in_channels", 1)
        out_channels = check_size(out_channels, "out_channels", 1)
        depth = check_size(depth, "depth", 1)
        super().__init__()
        self.in_channels, self.out_channels, self.normalize = in_channels, out_channels, normalize
        self.mlp1 = _mlp(in_channels, out_channels, depth)
        self.mlp2 = _mlp(in_channels, out_channels, depth)
        self.skip = nn.Linear(in_channels + out_channels, out_channels)

    def reset_parameters(self) -> None:
        _reset(self)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        check_tensor(x, "x", "float", 4, shape=f"[B, n, n, {self.in_channels}]")
        check_tensor(mask, "mask", "any", 2, shape="[B, n]")
        if x.shape[1] != x.shape[2] or tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"x must be [B, n, n, channels] and mask [B, n]; got x {list(x.shape)} and mask {list(mask.shape)}")
        pair = (mask[:, :, None] & mask[:, None, :]).to(x.dtype)[..., None]
        m1 = self.mlp1(x) * pair
        m2 = self.mlp2(x) * pair
        mult = torch.einsum("bikh,bkjh->bijh", m1, m2)
        if self.normalize:
            mult = mult / mask.sum(1).clamp(min=1).to(x.dtype).view(-1, 1, 1, 1)
        return torch.relu(self.skip(torch.cat([x, mult], dim=-1))) * pair

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels})"


class PPGN(nn.Module):
    """PPGN / PPGN++ for graph-level prediction.

    Args:
        in_channels: channels of the dense pair input (1 adjacency + node features + edge
            features + extra dense features; see :func:`~everygraph.graphlib.to_dense_pairs`).
        hidden: pair channels inside.
        num_blocks: number of PPGN blocks.
        out_channels: graph-level outputs.
        depth: layers of each block MLP.
        plus: PPGN++ (X and X^T input MLP, identity channel, mean readout) instead of PPGN.

    Shapes: ``forward(x [N, f], edge_index [2, E], batch [N], edge_attr [E, e],
    dense_features [B, n, n, k]) -> [B, out_channels]``; ``forward_dense(X [B, n, n, c],
    mask [B, n]) -> [B, out_channels]``.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        num_blocks: int,
        out_channels: int = 1,
        depth: int = 2,
        plus: bool = True,
    ) -> None:
        in_channels = check_size(in_channels, "in_channels", 1)
        hidden = check_size(hidden, "hidden", 1)
        num_blocks = check_size(num_blocks, "num_blocks", 0)
        out_channels = check_size(out_channels, "out_channels", 1)
        depth = check_size(depth, "depth", 1)
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.in_channels, self.hidden, self.num_blocks = in_channels, hidden, num_blocks
        self.out_channels, self.plus = out_channels, plus
        if plus:
            self.input_mlp = _mlp(2 * in_channels, hidden, depth)
            widths = [hidden + 1] + [hidden + 1] * (num_blocks - 1)
        else:
            self.input_mlp = None
            widths = [in_channels] + [hidden] * (num_blocks - 1)
        self.blocks = nn.ModuleList(PPGNBlock(w, hidden, depth, normalize=plus) for w in widths)
        # PPGN++'s readout MLP is hidden wide: a width of out_channels (1 for a regression) would
        # be a single ReLU unit, which dies for every graph and leaves a constant output
        self.readout = (nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_channels))
                        if plus else nn.Linear(2 * hidden, out_channels))

    def reset_parameters(self) -> None:
        _reset(self)

    def forward_dense(self, x: Tensor, mask: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != x.shape[2] or x.shape[-1] != self.in_channels:
            raise ValueError(f"expected [B, n, n, {self.in_channels}] pairs, got {tuple(x.shape)}")
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"mask must be [B, n] = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        mask = mask.bool()
        pair = (mask[:, :, None] & mask[:, None, :]).to(x.dtype)
        n = x.shape[1]
        eye = torch.eye(n, dtype=x.dtype, device=x.device) * pair
        h = x * pair[..., None]
        if self.plus:
            h = self.input_mlp(torch.cat([h, h.transpose(1, 2)], dim=-1)) * pair[..., None]
        for block in self.blocks:
            if self.plus:
                h = torch.cat([h, eye[..., None]], dim=-1)
            h = block(h, mask)
        diag = torch.diagonal(h, dim1=1, dim2=2)  # [B, hidden, n]
        diag_sum = diag.sum(-1)
        off_sum = h.sum((1, 2)) - diag_sum
        if self.plus:
            nodes = mask.sum(1).clamp(min=1).to(x.dtype)[:, None]
            pairs = (nodes * (nodes - 1)).clamp(min=1)
            features = torch.cat([diag_sum / nodes, off_sum / pairs], dim=-1)
        else:
            features = torch.cat([diag_sum, off_sum], dim=-1)
        return self.readout(features)

    def forward(
        self,
        x: Tensor | None,
        edge_index: Tensor,
        batch: Tensor | None = None,
        edge_attr: Tensor | None = None,
        dense_features: Tensor | None = None,
    ) -> Tensor:
        if x is not None:
            check_tensor(x, "x", "float", (1, 2), shape="[num_nodes, node_channels]")
        check_graph_inputs(edge_index, batch, x.shape[0] if x is not None else None, edge_attr)
        if dense_features is not None:
            check_tensor(dense_features, "dense_features", "float", 4, shape="[B, n, n, k]")
        dense, mask = _ppgn_input(x, edge_index, batch, edge_attr, dense_features)
        if dense.shape[-1] != self.in_channels:
            raise ValueError(
                f"the dense input has {dense.shape[-1]} channels (1 adjacency + node {0 if x is None else x.view(x.shape[0], -1).shape[1]}"
                f" + edge {0 if edge_attr is None else edge_attr.view(edge_attr.shape[0], -1).shape[1]}"
                f" + dense {0 if dense_features is None else dense_features.shape[-1]}) but in_channels={self.in_channels}"
            )
        weight = next(self.parameters())
        return self.forward_dense(dense.to(weight.dtype), mask)

    def __repr__(self) -> str:
        name = "PPGN++" if self.plus else "PPGN"
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, hidden={self.hidden}, "
            f"num_blocks={self.num_blocks}, variant={name})"
        )
