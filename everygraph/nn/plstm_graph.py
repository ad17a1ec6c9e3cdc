"""pLSTM on graphs: orient into a DAG, scan along it (and optionally against it)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import softmax as segment_softmax

from ..graphlib import DAG, NODE_ORDERS, check_edge_index, check_size, check_tensor, compute_dtype, dagify, prune_to_multitree
from ..sequence import plstm_scan
from .plstm_gates import (
    QKVProjection,
    check_heads,
    check_mode,
    default_scale,
    head_norm,
    make_head_norm,
    transition_bias,
    transition_gate,
)

__all__ = ["PLSTMGraph"]

# Gate slots of the node-, neighbour- and edge-feature maps, per direction and head.
SOURCE, MARK, DIRECT, TRANSITION = 0, 1, 2, 3          # node's own features
NB_SOURCE, NB_MARK, NB_PREVIOUS, NB_NEXT = 0, 1, 2, 3  # the other endpoint(s)
EDGE_SOURCE, EDGE_MARK, EDGE_IN, EDGE_OUT = 0, 1, 2, 3  # edge features


class PLSTMGraph(nn.Module):
    r"""pLSTM layer on graphs: linear attention whose decay is a sum over DAG paths.

    From `pLSTM: parallelizable Linear Source Transition Mark networks
    <https://arxiv.org/abs/2506.11997>`_ (Poeppel et al., 2025). The graph is oriented into a
    DAG (:func:`~everygraph.graphlib.dagify` by a node ``order``; or taken as given with
    ``oriented=True``). Cell states live on DAG edges; for every node :math:`n`

    .. math::
        C_e = \sum_{e' \in \mathrm{in}(n)} T^n_{e e'} C_{e'} + S^n_e\, k^n (v^n)^\top
        \quad (e \in \mathrm{out}(n)),\qquad
        h^n = \sum_{e \in \mathrm{in}(n)} M^n_e (q^n)^\top C_e / \sqrt{d_k}
              + D^n (q^n \cdot k^n) v^n / \sqrt{d_k},

    run level by level (the scan engine's wavefront execution: depth = longest path), for a
    whole PyG batch of graphs at once. Gates, per head, from the features of the nodes (and
    ``edge_attr`` if ``edge_dim`` is set) involved, :math:`\sigma` the sigmoid:

    * source of edge :math:`n \to w`: :math:`\sigma(A_S x_n + B_S x_w + C_S a_e + b_S)`;
    * mark of edge :math:`u \to n`: :math:`\sigma(A_M x_n + B_M x_u + C_M a_e + b_M)`;
    * direct: :math:`\sigma(A_D x_n + b_D)`;
    * transition :math:`u \to n \to w` (a line-graph edge) from the score
      :math:`z = A_T x_n + B_T x_u + B'_T x_w + C_T a_{un} + C'_T a_{nw} + b_T`:

      - ``mode="P"``: :math:`T = \mathrm{softmax}(z)` over the line-graph edges that leave
        the same incoming edge :math:`u \to n`: each column of :math:`T^n` sums to exactly 1
        (criticality; the state arriving on an edge is split among the out-edges, never
        amplified, so state L1 norms stay bounded);
      - ``mode="D"``: :math:`T = \sigma(z)` (:math:`b_T = 3`) or, with ``paper_gates``,
        :math:`\tanh(5 z)` (:math:`b_T = 1`), on the line graph pruned to a multitree by
        :func:`~everygraph.graphlib.prune_to_multitree` (pruned transitions are 0), so that
        :math:`|T| \le 1` bounds every state.

    With ``bidirectional=True`` the reversed DAG is scanned too, with its own gates, and the
    two outputs are summed before the per-head norm and the output projection.

    Args:
        in_channels: input node features.
        out_channels: output size, also the query/key/value size (a multiple of heads).
        num_heads: heads.
        mode: ``"P"`` or ``"D"``.
        order: node order for :func:`~everygraph.graphlib.dagify`: ``"degree"``,
            ``"index"`` or a permutation tensor; ignored when ``oriented``.
        bidirectional: also scan the reversed DAG.
        oriented: take ``edge_index`` as the DAG's edges (a directed cycle raises
            :class:`~everygraph.graphlib.CycleError`).
        edge_dim: size of ``edge_attr`` (None: edge features are not used).
        paper_gates: the paper's transition parameterisation (D-mode).
        norm: per-head layer norm before the output projection.

    Shapes:
        ``x`` ``[num_nodes, in_channels]``, ``edge_index`` ``[2, num_edges]``, ``batch``
        ``[num_nodes]`` (optional), ``edge_attr`` ``[num_edges, edge_dim]`` (optional) ->
        ``[num_nodes, out_channels]``.

    Example:
        >>> layer = PLSTMGraph(16, 32, num_heads=4, mode="D", bidirectional=True)
        >>> x, edge_index = torch.randn(5, 16), torch.tensor([[0, 1, 1, 2, 3], [1, 2, 3, 4, 4]])
        >>> layer(x, edge_index).shape
        torch.Size([5, 32])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_heads: int = 1,
        mode: str = "D",
        order: str | Tensor = "degree",
        bidirectional: bool = False,
        oriented: bool = False,
        *,
        edge_dim: int | None = None,
        paper_gates: bool = False,
        norm: bool = True,
    ):
        in_channels = check_size(in_channels, "in_channels", 1)
        out_channels = check_size(out_channels, "out_channels", 1)
        num_heads = check_size(num_heads, "num_heads", 1)
        if edge_dim is not None:
            edge_dim = check_size(edge_dim, "edge_dim", 1)
        if not isinstance(order, (str, torch.Tensor)):
            raise TypeError(f"order must be one of {list(NODE_ORDERS)} or a permutation tensor, got {type(order).__name__}")
        super().__init__()
        self.mode = check_mode(mode)
        self.head_dim = check_heads(out_channels, num_heads, "out_channels")
        if isinstance(order, str) and order not in NODE_ORDERS:
            raise ValueError(f"unknown order {order!r}; valid orders are {', '.join(map(repr, NODE_ORDERS))} or a permutation tensor")
        self.in_channels, self.out_channels, self.num_heads = in_channels, out_channels, num_heads
        self.order, self.bidirectional, self.oriented = order, bidirectional, oriented
        self.edge_dim, self.paper_gates = edge_dim, paper_gates
        self.num_directions = 2 if bidirectional else 1
        width = self.num_directions * num_heads * 4
        self.qkv = QKVProjection(in_channels, out_channels, num_heads)
        self.node_gates = nn.Linear(in_channels, width)
        self.neighbour_gates = nn.Linear(in_channels, width, bias=False)
        self.edge_gates = nn.Linear(edge_dim, width, bias=False) if edge_dim else None
        self.norm = make_head_norm(out_channels, num_heads, norm)
        self.out_proj = nn.Linear(out_channels, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.qkv.reset_parameters()
        for lin in (self.node_gates, self.neighbour_gates, self.edge_gates):
            if lin is not None:
                lin.reset_parameters()
        with torch.no_grad():
            bias = self.node_gates.bias.view(self.num_directions, self.num_heads, 4)
            bias.zero_()
            if self.mode == "D":
                bias[..., TRANSITION] = transition_bias(self.paper_gates)
        if self.norm is not None:
            self.norm.reset_parameters()
        self.out_proj.reset_parameters()

    # -- structure -------------------------------------------------------------------------------
    def orient(self, edge_index: Tensor, num_nodes: int, batch: Tensor | None = None) -> tuple[DAG, Tensor]:
        """The DAG the layer scans and, for each DAG edge, its column in ``edge_index``."""
        if self.oriented:
            return DAG(edge_index, num_nodes, batch=batch), torch.arange(edge_index.size(1), device=edge_index.device)
        return dagify(edge_index, num_nodes, self.order, batch=batch)

    def gates(self, x: Tensor, dag: DAG, edge_attr: Tensor | None = None, direction: int = 0) -> dict[str, Tensor]:
        """Gates of one scan direction on ``dag`` (already reversed for direction 1).

        Returns ``source`` and ``mark`` ``[E, heads]`` (per DAG edge), ``transition``
        ``[L, heads]`` (per ``dag.line_graph()`` edge, zero where D-mode prunes) and
        ``direct`` ``[N, heads]``, in the compute dtype. ``edge_attr`` ``[E, edge_dim]``
        follows the DAG's edges.
        """
        x = x.to(compute_dtype(x.dtype))
        lin = lambda layer, inp: torch.nn.functional.linear(  # noqa: E731
            inp, layer.weight.to(x.dtype), None if layer.bias is None else layer.bias.to(x.dtype)
        ).view(-1, self.num_directions, self.num_heads, 4)[:, direction]
        own, other = lin(self.node_gates, x), lin(self.neighbour_gates, x)
        tail, head = dag.edge_index
        if self.edge_gates is not None:
            if edge_attr is None:
                raise ValueError(f"{self.__class__.__name__} was built with edge_dim={self.edge_dim} but got no edge_attr")
            edge = lin(self.edge_gates, edge_attr.to(x.dtype).view(-1, self.edge_dim))
        else:
            edge = x.new_zeros(dag.num_edges, self.num_heads, 4)
        source = torch.sigmoid(own[tail, :, SOURCE] + other[head, :, NB_SOURCE] + edge[:, :, EDGE_SOURCE])
        mark = torch.sigmoid(own[head, :, MARK] + other[tail, :, NB_MARK] + edge[:, :, EDGE_MARK])
        direct = torch.sigmoid(own[:, :, DIRECT])
        line = dag.line_graph()
        e_in, e_out = line.edge_index
        score = (
            own[line.node, :, TRANSITION]
            + other[tail[e_in], :, NB_PREVIOUS]
            + other[head[e_out], :, NB_NEXT]
            + edge[e_in, :, EDGE_IN]
            + edge[e_out, :, EDGE_OUT]
        )
        if self.mode == "P":
            transition = segment_softmax(score, e_in, num_nodes=dag.num_edges, dim=0)
        else:
            transition = transition_gate(score, self.paper_gates)
            keep = prune_to_multitree(dag)
            transition = transition * keep.unsqueeze(-1).to(transition.dtype)
        return dict(source=source, transition=transition, mark=mark, direct=direct)

    def forward(
        self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, edge_attr: Tensor | None = None
    ) -> Tensor:
        check_tensor(x, "x", "float", 2, shape="[num_nodes, in_channels]")
        check_edge_index(edge_index, x.shape[0])
        if edge_attr is not None:
            check_tensor(edge_attr, "edge_attr", "float", 2, shape="[num_edges, edge_dim]")
            if edge_attr.shape[0] != edge_index.shape[1] or (self.edge_dim is not None and edge_attr.shape[1] != self.edge_dim):
                raise ValueError(f"edge_attr must have shape [num_edges, edge_dim] = [{edge_index.shape[1]}, {self.edge_dim}], "
                                 f"got {list(edge_attr.shape)}")
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be [num_nodes, in_channels={self.in_channels}], got {list(x.shape)}")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, num_edges], got {list(edge_index.shape)}")
        if edge_attr is not None and edge_attr.shape[0] != edge_index.shape[1]:
            raise ValueError(
                f"edge_attr has {edge_attr.shape[0]} rows but edge_index has {edge_index.shape[1]} edges"
            )
        num_nodes = x.shape[0]
        if num_nodes == 0:
            return x.new_zeros(0, self.out_channels)
        dag, edge_id = self.orient(edge_index, num_nodes, batch)
        attr = edge_attr[edge_id] if edge_attr is not None else None
        dtype = compute_dtype(x.dtype)
        q, k, v = (t.to(dtype).unsqueeze(0) for t in self.qkv(x))
        h = 0
        for direction in range(self.num_directions):
            structure = dag if direction == 0 else dag.reverse()
            g = self.gates(x, structure, attr, direction)
            h = h + plstm_scan(
                structure,
                q,
                k,
                v,
                g["source"].unsqueeze(0),
                g["transition"].unsqueeze(0),
                g["mark"].unsqueeze(0),
                g["direct"].unsqueeze(0),
                scale=default_scale(self.head_dim),
            )[0]
        return self.out_proj(head_norm(h, self.norm).to(x.dtype))

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={value!r}"
            for name, value in (("bidirectional", self.bidirectional), ("oriented", self.oriented), ("edge_dim", self.edge_dim))
            if value
        )
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, num_heads={self.num_heads}, "
            f"mode={self.mode!r}{extra})"
        )
