"""Graph Mamba Networks (GMN): a bidirectional Mamba scan over each node's sequence of
random-walk subgraph tokens, beside a local MPNN."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..graphlib import (
    WalkTokens,
    check_batch,
    check_choice,
    check_edge_index,
    check_flag,
    check_size,
    check_tensor,
    random_walk_encoding,
    random_walk_tokens,
    segment,
)
from .mamba import Mamba


def _mlp(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, channels))


def _default_local(channels: int) -> nn.Module:
    from torch_geometric.nn import GINConv

    return GINConv(_mlp(channels))


def _check_tokens(tokens: object, num_nodes: int) -> WalkTokens:
    if not isinstance(tokens, WalkTokens):
        raise TypeError(f"tokens must be a WalkTokens (from graphlib.random_walk_tokens), got {type(tokens).__name__}")
    if tokens.cu_seqlens.numel() != num_nodes + 1:
        raise ValueError(f"tokens must be built for the {num_nodes} nodes of x, got tokens of "
                         f"{tokens.cu_seqlens.numel() - 1} nodes")
    if tokens.node.numel() and int(tokens.node.max()) >= num_nodes:
        raise ValueError(f"tokens.node holds node {int(tokens.node.max())}, out of range for {num_nodes} nodes")
    return tokens


class GMN(nn.Module):
    r"""Graph Mamba Network layer (GMN; the paper's own name for its models, in PyG's short
    style like ``GINConv``, and distinct from :class:`GraphMamba`, which is Wang et al.'s
    Graph-Mamba with nodes ordered by degree).

    From *Graph Mamba: Towards Learning on Graphs with State Space Models* (Behrouz &
    Hashemi, 2024, https://arxiv.org/abs/2402.08678). Per node :math:`v`:

    1. **Tokenisation** (:func:`~everygraph.graphlib.random_walk_tokens`): for each length
       :math:`l = m, \dots, 1` and :math:`j < s`, the subgraph :math:`G[T^j_l(v)]` induced by
       the nodes of :math:`M` seeded random walks of length :math:`l` from :math:`v`, then
       :math:`G[\{v\}]`: a sequence of :math:`sm + 1` tokens, far hops first, the node last.
    2. **Token encoding**: one GIN step over each token's induced edges, pooled over its nodes,

       .. math::
           \phi(T) = \mathrm{pool}_{u \in T}\ \mathrm{MLP}\Big(h_u + \sum_{w \to u,\ w \in T} h_w\Big).

    3. **Bidirectional selective scan** over each node's token sequence: the
       :class:`~everygraph.nn.Mamba` block with ``bidirectional=True`` (a second set of
       weights scans the reversed sequence; the two are summed), all nodes' sequences packed
       into one with ``cu_seqlens`` (no padding, no state crosses between nodes); the node's
       output is the scan's output at its last token (``readout="last"``, the node itself,
       which the forward scan reaches after every farther token) or the mean over its tokens.
    4. **Local encoding** and combination in the GPS layout the paper builds on:

       .. math::
           h &= x + W_{se}\,\mathrm{RWSE}(x) \quad\text{(optional)} \\
           h' &= \mathrm{Norm}(h + \mathrm{BiMamba}(\phi(T_\cdot(v)))) + \mathrm{Norm}(h + \mathrm{MPNN}(h, E)) \\
           \mathrm{out} &= \mathrm{Norm}(h' + \mathrm{FFN}(h'))

    Randomness: the walks are a pure function of ``(seed, graph, node index in its graph)``
    (counter-based hashing, see :mod:`everygraph.graphlib.random_walk`), so the layer is
    deterministic for a given seed, and a graph's output is the same alone and in any batch.
    Relabelling nodes draws different walks from the same distribution: the layer is
    permutation-equivariant in distribution; given tokens relabelled with the nodes
    (``forward(..., tokens=...)``), exactly. ``resample=True`` draws a fresh seed from torch's
    RNG at every training call (augmentation); evaluation always uses ``seed``.

    Args:
        channels: node feature size (in = out).
        walk_length: :math:`m \ge 1`, the longest walk.
        tokens_per_length: :math:`s \ge 1`.
        walks_per_token: :math:`M \ge 1` walks whose nodes form one token.
        seed: ``int >= 0`` of the walks.
        local: the local MPNN ``local(x, edge_index)``; ``"gin"`` (default) or ``None``.
        d_state, d_conv, expand: of the Mamba block.
        readout: ``"last"`` or ``"mean"`` over a node's token outputs.
        token_pool: ``"mean"`` or ``"sum"`` over a token's nodes.
        rwse_steps: ``K >= 0``; ``K > 0`` adds a linear map of the random-walk structural
            encoding (:func:`~everygraph.graphlib.random_walk_encoding`) to the input.
        dropout: on both branch outputs and in the feed-forward network.
        resample: draw new walks at every training call.

    Shapes:
        ``forward(x [N, channels], edge_index [2, E], batch [N] | None, tokens: WalkTokens |
        None, rwse [N, K] | None) -> [N, channels]``.

    Cost: tokenisation :math:`O(N s m M)` walk steps plus the member edges; token encoding
    :math:`O(R\,C^2)` for :math:`R \le N(sm+1)(Mm+1)` member rows; the scan
    :math:`O(N (sm+1) \cdot d_{inner} d_{state})`.

    Example:
        >>> layer = GMN(channels=32, walk_length=3, tokens_per_length=2)
        >>> out = layer(data.x, data.edge_index, data.batch)
    """

    def __init__(
        self,
        channels: int,
        walk_length: int = 3,
        tokens_per_length: int = 2,
        walks_per_token: int = 1,
        seed: int = 0,
        local: nn.Module | Callable | None | str = "gin",
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        readout: str = "last",
        token_pool: str = "mean",
        rwse_steps: int = 0,
        dropout: float = 0.0,
        resample: bool = False,
    ) -> None:
        super().__init__()
        self.channels = check_size(channels, "channels", 1)
        self.walk_length = check_size(walk_length, "walk_length", 1)
        self.tokens_per_length = check_size(tokens_per_length, "tokens_per_length", 1)
        self.walks_per_token = check_size(walks_per_token, "walks_per_token", 1)
        self.seed = check_size(seed, "seed", 0)
        self.readout = check_choice(readout, "readout", ("last", "mean"))
        self.token_pool = check_choice(token_pool, "token_pool", ("mean", "sum"))
        self.rwse_steps = check_size(rwse_steps, "rwse_steps", 0)
        self.resample = check_flag(resample, "resample")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        if isinstance(local, str) and local != "gin":
            raise ValueError(f"local must be 'gin', None or a module local(x, edge_index), got {local!r}")
        if not isinstance(local, str) and local is not None and not callable(local):
            raise TypeError(f"local must be 'gin', None or a module local(x, edge_index), got {type(local).__name__}")
        self.local = _default_local(channels) if local == "gin" else local
        self.token_mlp = _mlp(channels)
        self.mamba = Mamba(channels, d_state=d_state, d_conv=d_conv, expand=expand, bidirectional=True)
        self.se_proj = nn.Linear(self.rwse_steps, channels) if self.rwse_steps else None
        self.norm_local = nn.LayerNorm(channels) if self.local is not None else None
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
        for module in (self.token_mlp[0], self.token_mlp[2], self.mamba, self.norm_local, self.norm_global,
                       self.norm_out, self.ffn[0], self.ffn[3], self.se_proj):
            if module is not None:
                module.reset_parameters()

    def tokenize(self, edge_index: Tensor, num_nodes: int, batch: Tensor | None = None,
                 seed: int | torch.Generator | None = None) -> WalkTokens:
        """The tokens this layer draws (with its own seed unless one is given); compute them
        once and pass them to several layers or calls with ``forward(..., tokens=...)``."""
        return random_walk_tokens(edge_index, num_nodes, self.walk_length, self.tokens_per_length,
                                  self.walks_per_token, seed=self.seed if seed is None else seed, batch=batch)

    def encode_tokens(self, h: Tensor, tokens: WalkTokens) -> Tensor:
        """``[num_tokens, channels]``: one GIN step on each token's induced subgraph, pooled."""
        members = h[tokens.node]  # [num_members, C]
        src, dst = tokens.edge_index
        aggregated = members.index_add(0, dst, members[src]) if src.numel() else members
        return segment(self.token_mlp(aggregated), tokens.member_ptr, reduce=self.token_pool)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, tokens: WalkTokens | None = None,
                rwse: Tensor | None = None) -> Tensor:
        check_tensor(x, "x", "float", 2, shape=f"[num_nodes, {self.channels}]")
        if x.shape[1] != self.channels:
            raise ValueError(f"x must have shape [num_nodes, channels={self.channels}], got {list(x.shape)}")
        num_nodes = x.shape[0]
        check_edge_index(edge_index, num_nodes)
        if batch is not None:
            check_tensor(batch, "batch", "index", 1, shape=f"[num_nodes] = [{num_nodes}]")
            batch = check_batch(batch, num_nodes)
        if tokens is None:
            seed = int(torch.randint(0, 2**62, (1,))) if self.training and self.resample else self.seed
            tokens = self.tokenize(edge_index, num_nodes, batch, seed)
        else:
            tokens = _check_tokens(tokens, num_nodes)
        h = x
        if self.se_proj is not None:
            if rwse is None:
                rwse = random_walk_encoding(edge_index, num_nodes, self.rwse_steps, batch)
            check_tensor(rwse, "rwse", "float", 2, shape=f"[num_nodes, {self.rwse_steps}]")
            if tuple(rwse.shape) != (num_nodes, self.rwse_steps):
                raise ValueError(f"rwse must have shape [num_nodes, rwse_steps] = {[num_nodes, self.rwse_steps]}, "
                                 f"got {list(rwse.shape)}")
            h = h + self.se_proj(rwse.to(x.dtype))
        elif rwse is not None:
            raise ValueError("rwse was given but the layer has rwse_steps=0; build it with GMN(..., rwse_steps=K)")

        sequence = self.encode_tokens(h, tokens)  # [num_tokens, C], node-major, far hops first
        if tokens.num_tokens:
            scanned = self.mamba(sequence.unsqueeze(0), cu_seqlens=tokens.cu_seqlens).squeeze(0)
        else:  # no nodes: nothing to scan (cu_seqlens needs one sequence)
            scanned = sequence
        if self.readout == "last":
            h_global = scanned[tokens.cu_seqlens[1:] - 1]
        else:
            h_global = segment(scanned, tokens.cu_seqlens, reduce="mean")
        out = self.norm_global(h + self.dropout(h_global))
        if self.local is not None:
            out = out + self.norm_local(h + self.dropout(self.local(h, edge_index)))
        return self.norm_out(out + self.dropout(self.ffn(out)))

    def __repr__(self) -> str:
        local = self.local.__class__.__name__ if self.local is not None else None
        return (f"{self.__class__.__name__}({self.channels}, walk_length={self.walk_length}, "
                f"tokens_per_length={self.tokens_per_length}, walks_per_token={self.walks_per_token}, "
                f"seed={self.seed}, local={local}, readout={self.readout!r}, rwse_steps={self.rwse_steps}, "
                f"mamba={self.mamba})")
