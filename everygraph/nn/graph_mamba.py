"""Graph Mamba: a GPS-style layer whose global branch is a Mamba scan over ordered nodes, or
over the DAG that a node order makes of the graph."""

from __future__ import annotations

import math
from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graphlib import DAG, check_batch, check_edge_index, check_size, check_tensor, dagify, node_order, ptr_from_batch
from ..sequence import dag_selective_scan
from .mamba import Mamba

Order = Union[str, Tensor]


def _default_local(channels: int) -> nn.Module:
    from torch_geometric.nn import GINConv

    return GINConv(nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, channels)))


class DAGMamba(nn.Module):
    r"""The Mamba block with its scan on a DAG and on the reversed DAG (no convolution: a DAG
    has no fixed window of predecessors).

    .. math::
        (x, z) = W_{in} h, \quad
        y = \sum_{s \in \{\rightarrow, \leftarrow\}} \big(\mathrm{dag\_selective\_scan}_s(x, \Delta^s, A^s, B^s, C^s)
            + D^s x\big), \quad \mathrm{out} = W_{out}(y \odot \mathrm{silu}(z))

    with :math:`(\delta, B, C) = W^s_x x`, :math:`\Delta = \mathrm{softplus}(W^s_{dt}\delta + b^s_{dt})`,
    :math:`A^s = -e^{A^s_{log}}` per direction (parameter names as Mamba's, ``_b`` for the
    reversed DAG); the scan is :func:`~everygraph.sequence.dag_selective_scan`.

    Shapes: ``forward(x [num_nodes, d_model], dag) -> [num_nodes, d_model]``.
    """

    def __init__(self, d_model: int, d_state: int = 16, expand: int = 2, dt_rank: int | str = "auto",
                 dt_min: float = 0.001, dt_max: float = 0.1) -> None:
        super().__init__()
        self.d_model, self.d_state, self.expand = d_model, d_state, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.dt_min, self.dt_max = dt_min, dt_max
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        for suffix in ("", "_b"):
            self.add_module("x_proj" + suffix, nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False))
            self.add_module("dt_proj" + suffix, nn.Linear(self.dt_rank, self.d_inner))
            self.register_parameter("A_log" + suffix, nn.Parameter(torch.empty(self.d_inner, d_state)))
            self.register_parameter("D" + suffix, nn.Parameter(torch.empty(self.d_inner)))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Mamba's initialisation, per direction."""
        self.in_proj.reset_parameters()
        self.out_proj.reset_parameters()
        for suffix in ("", "_b"):
            getattr(self, "x_proj" + suffix).reset_parameters()
            dt_proj: nn.Linear = getattr(self, "dt_proj" + suffix)
            std = self.dt_rank ** -0.5
            nn.init.uniform_(dt_proj.weight, -std, std)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(self.dt_max) - math.log(self.dt_min)) + math.log(self.dt_min))
            dt = dt.clamp(min=1e-4)
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            getattr(self, "A_log" + suffix).copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).expand(self.d_inner, -1))
            getattr(self, "D" + suffix).fill_(1.0)

    def forward(self, x: Tensor, dag: DAG) -> Tensor:
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u = F.silu(u)
        y = 0
        for suffix, structure in (("", dag), ("_b", dag.reverse())):
            low, B, C = torch.split(getattr(self, "x_proj" + suffix)(u), [self.dt_rank, self.d_state, self.d_state], dim=-1)
            dt = F.softplus(getattr(self, "dt_proj" + suffix)(low))
            A = -torch.exp(getattr(self, "A_log" + suffix).to(u.dtype))
            y = y + dag_selective_scan(structure, u, dt, A, B, C) + getattr(self, "D" + suffix).to(u.dtype) * u
        return self.out_proj(y * F.silu(z))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(d_model={self.d_model}, d_state={self.d_state}, expand={self.expand})"


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

    **Equivariance is not claimed** for the sequence scan: the node order breaks ties arbitrarily and the scan is
    order dependent, so relabelling nodes of equal degree can change the output (averaging
    over orders only reduces this).

    LayerNorm (not GPS's BatchNorm) keeps each graph's output independent of the batch.

    **scan="dag"**: instead of a sequence, the global branch runs Mamba's recurrence on the
    DAG that the same node order makes of each graph (:func:`~everygraph.graphlib.dagify`:
    every edge points from the earlier endpoint to the later one) and on its reverse
    (:class:`DAGMamba`, :func:`~everygraph.sequence.dag_selective_scan`): a node's state
    averages its predecessors' states, so information flows along the graph's edges only.
    The output depends on the order only through the orientation of the edges, hence it is
    permutation-equivariant exactly for relabellings that keep every edge's orientation:
    always when the order is given and relabelled with the nodes (``forward(..., order=perm)``
    with ``perm`` mapped through the relabelling); with ``order="degree"`` (ties by node id at
    evaluation) whenever no edge joins two nodes of equal degree. Graphs of a batch are
    disjoint DAGs, so each graph's output is independent of the batch.

    Args:
        channels: node feature size (in = out).
        local: the local MPNN ``local(x, edge_index) -> [num_nodes, channels]``; default
            ``GINConv`` with a 2-layer MLP; ``None`` disables the local branch.
        d_state, d_conv, expand, bidirectional: of the :class:`~everygraph.nn.Mamba` block.
        order: ``"degree"`` (default) or ``"index"``; ``forward(..., order=perm)`` overrides.
        eval_orders: number of random orders averaged at evaluation (1 = deterministic).
        dropout: on both branch outputs and in the feed-forward network.
        scan: ``"sequence"`` (default: nodes in order as one packed sequence) or ``"dag"``
            (the oriented graph and its reverse; ``d_conv`` and ``bidirectional`` unused).

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
        scan: str = "sequence",
    ) -> None:
        super().__init__()
        if scan not in ("sequence", "dag"):
            raise ValueError(f"scan must be 'sequence' or 'dag', got {scan!r}")
        self.scan = scan
        if order not in ("degree", "index"):
            raise ValueError(f"order must be 'degree' or 'index' (or a permutation passed to forward), got {order!r}")
        channels = check_size(channels, "channels", 1)
        eval_orders = check_size(eval_orders, "eval_orders", 1)
        if isinstance(local, str) and local != "gin":
            raise ValueError(f"local must be 'gin', None or a module local(x, edge_index), got {local!r}")
        if not isinstance(local, str) and local is not None and not callable(local):
            raise TypeError(f"local must be 'gin', None or a module local(x, edge_index), got {type(local).__name__}")
        self.channels = channels
        self.order = order
        self.eval_orders = eval_orders
        self.local = _default_local(channels) if local == "gin" else local
        if scan == "dag":
            self.mamba = DAGMamba(channels, d_state=d_state, expand=expand)
        else:
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

    def _global(self, x: Tensor, perm: Tensor, cu_seqlens: Tensor, edge_index: Tensor | None = None,
                batch: Tensor | None = None) -> Tensor:
        if self.scan == "dag":
            dag, _ = dagify(edge_index, x.shape[0], perm, batch=batch)
            return self.mamba(x, dag)
        sequence = self.mamba(x[perm].unsqueeze(0), cu_seqlens=cu_seqlens).squeeze(0)
        out = torch.empty_like(sequence)
        out[perm] = sequence
        return out

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, order: Order | None = None) -> Tensor:
        check_tensor(x, "x", "float", 2, shape=f"[num_nodes, {self.channels}]")
        check_edge_index(edge_index, x.shape[0])
        if batch is not None:
            check_tensor(batch, "batch", "index", 1, shape=f"[num_nodes] = [{x.shape[0]}]")
            check_batch(batch, x.shape[0])
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
        h_global = sum(self._global(x, p, cu_seqlens, edge_index, batch) for p in perms) / len(perms)
        h = self.norm_global(x + self.dropout(h_global))
        if self.local is not None:
            h = h + self.norm_local(x + self.dropout(self.local(x, edge_index)))
        return self.norm_out(h + self.dropout(self.ffn(h)))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, local={self.local.__class__.__name__ if self.local is not None else None}, "
                f"order={self.order!r}, eval_orders={self.eval_orders}, scan={self.scan!r}, mamba={self.mamba})")
