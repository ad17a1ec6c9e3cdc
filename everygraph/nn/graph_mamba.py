"""Graph Mamba: a GPS-style layer whose global branch is a Mamba scan over ordered nodes."""

from __future__ import annotations

from typing import Callable, Union

import torch
from torch import Tensor, nn

from ..graphlib import node_order
from ..graphlib.validation import ptr_from_batch
from .mamba import Mamba

Order = Union[str, Tensor]


def _default_local(channels: int) -> nn.Module:
    from torch_geometric.nn import GINConv

    return GINConv(nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, channels)))


class GraphMamba(nn.Module):
    r"""Graph-Mamba layer: local message passing plus a Mamba scan over each graph's nodes.

    From *Graph-Mamba: Towards Long-Range Graph Sequence Modeling with Selective State
    Spaces* (Wang et al., 2024, https://arxiv.org/abs/2402.00789), in the GPS layout
    (*Recipe for a General, Powerful, Scalable Graph Transformer*, Rampasek et al., 2022):

    .. math::
        h^{L} &= \mathrm{Norm}(x + \mathrm{MPNN}(x, E)) \\
        h^{G} &= \mathrm{Norm}(x + P^\top\, \mathrm{Mamba}(P x)) \\
        \mathrm{out} &= \mathrm{Norm}(h + \mathrm{FFN}(h)), \quad h = h^L + h^G

    where :math:`P` orders each graph's nodes into a sequence (a path graph
    ``graphlib.path_graph(n)`` over the nodes): by degree, ascending, ties broken by a random
    key in training (fresh each call, drawn from torch's RNG), by node index at evaluation,
    or by a given permutation. All graphs of a batch are packed into one sequence and the
    scan gets ``cu_seqlens`` from ``batch``, so no graph is padded to the largest one and no
    state or convolution crosses between graphs. With ``eval_orders=k > 1`` the evaluation
    output averages the global branch over ``k`` seeded random tie-breaking orders (the
    Graph-Mamba recipe). The random keys depend only on a node's position inside its own
    graph, so a graph's output does not change when other graphs join the batch.

    **Equivariance is not claimed**: the node order breaks ties arbitrarily and the scan is
    order dependent, so relabelling nodes of equal degree can change the output (averaging
    over orders only reduces this).

    LayerNorm (not GPS's BatchNorm) keeps each graph's output independent of the batch.

    Args:
        channels: node feature size (in = out).
        local: the local MPNN ``local(x, edge_index) -> [num_nodes, channels]``; default
            ``GINConv`` with a 2-layer MLP; ``None`` disables the local branch.
        d_state, d_conv, expand, bidirectional: of the :class:`~everygraph.nn.Mamba` block.
        order: ``"degree"`` (default) or ``"index"``; ``forward(..., order=perm)`` overrides.
        eval_orders: number of random orders averaged at evaluation (1 = deterministic).
        dropout: on both branch outputs and in the feed-forward network.

    Shapes:
        ``forward(x [num_nodes, channels], edge_index [2, num_edges], batch [num_nodes] | None,
        order=None) -> [num_nodes, channels]``.

    Example:
        >>> layer = GraphMamba(channels=32)
        >>> out = layer(data.x, data.edge_index, data.batch)
    """

    def __init__(
        self,
        channels: int,
        local: nn.Module | Callable | None | str = "gin",
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        bidirectional: bool = False,
        order: str = "degree",
        eval_orders: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if order not in ("degree", "index"):
            raise ValueError(f"order must be 'degree' or 'index' (or a permutation passed to forward), got {order!r}")
        if eval_orders < 1:
            raise ValueError(f"eval_orders must be >= 1, got {eval_orders}")
        self.channels = channels
        self.order = order
        self.eval_orders = eval_orders
        self.local = _default_local(channels) if local == "gin" else local
        self.mamba = Mamba(channels, d_state=d_state, d_conv=d_conv, expand=expand, bidirectional=bidirectional)
        self.norm_local = nn.LayerNorm(channels)
        self.norm_global = nn.LayerNorm(channels)
        self.norm_out = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(
            nn.Linear(channels, 2 * channels), nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * channels, channels)
        )
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.local is not None and hasattr(self.local, "reset_parameters"):
            self.local.reset_parameters()
        self.mamba.reset_parameters()
        for module in (self.norm_local, self.norm_global, self.norm_out, self.ffn[0], self.ffn[3]):
            module.reset_parameters()

    def _global(self, x: Tensor, perm: Tensor, cu_seqlens: Tensor) -> Tensor:
        sequence = self.mamba(x[perm].unsqueeze(0), cu_seqlens=cu_seqlens).squeeze(0)
        out = torch.empty_like(sequence)
        out[perm] = sequence
        return out

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, order: Order | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.channels:
            raise ValueError(f"x must have shape [num_nodes, channels={self.channels}], got {list(x.shape)}")
        num_nodes = x.shape[0]
        if batch is not None and (batch.shape != (num_nodes,)):
            raise ValueError(f"batch must have shape [num_nodes] = [{num_nodes}], got {list(batch.shape)}")
        if batch is None:
            cu_seqlens = torch.tensor([0, num_nodes], device=x.device)
        else:
            cu_seqlens = ptr_from_batch(batch)

        if isinstance(order, Tensor):
            perms = [node_order(edge_index, num_nodes, order, batch=batch)]
        else:
            seeds: list[int | None]
            if self.training:
                seeds = [int(torch.randint(0, 2**62, (1,)))]
            elif self.eval_orders > 1:
                seeds = list(range(self.eval_orders))
            else:
                seeds = [None]
            # node_order's seeded tie keys depend only on a node's position inside its graph
            perms = [node_order(edge_index, num_nodes, self.order, batch=batch, seed=s) for s in seeds]
        h_global = sum(self._global(x, p, cu_seqlens) for p in perms) / len(perms)
        h = self.norm_global(x + self.dropout(h_global))
        if self.local is not None:
            h = h + self.norm_local(x + self.dropout(self.local(x, edge_index)))
        return self.norm_out(h + self.dropout(self.ffn(h)))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, local={self.local.__class__.__name__ if self.local is not None else None}, "
                f"order={self.order!r}, eval_orders={self.eval_orders}, mamba={self.mamba})")
