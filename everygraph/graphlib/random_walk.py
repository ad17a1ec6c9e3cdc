r"""Seeded random walks and the neighbourhood tokens they induce.

A random walk of length ``l`` from ``v`` is ``v = w_0, w_1, ..., w_l`` with ``w_{i+1}`` drawn
uniformly among the out-edges of ``w_i`` (``edge_index[0] -> edge_index[1]``, so a repeated
edge counts twice); a walk that reaches a node without out-edges stays there.

The randomness is counter-based, not a stream: the choice at step ``i`` of walk ``k`` from node
``v`` is a 32-bit hash of ``(seed, stream, local index of v in its graph, k, i)``, reduced
modulo the out-degree. So a walk does not depend on which other graphs share the batch, nor on
the order in which walks are drawn, and no Python loop per node or per walk is needed: one
vectorised step per position of the walk. Neighbours are taken in ascending order of their
local index, so walks depend on node labels (a relabelled graph gets different walks drawn
from the same distribution: equivariant in distribution, not per sample).

:func:`random_walk_tokens` builds the tokens of Graph Mamba Networks (Behrouz & Hashemi, 2024):
for each node ``v`` and length ``l = m, ..., 1``, ``tokens_per_length`` tokens, each the
subgraph induced by the nodes visited by ``walks_per_token`` walks of length ``l`` from ``v``;
then the token of length 0, ``{v}`` alone. All tokens of all nodes are packed, far hops first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .validation import check_batch, check_edge_index, check_size, ptr_from_batch

_MASK32 = 0xFFFFFFFF


def _mul32(x: Tensor, constant: int) -> Tensor:
    """``x * constant mod 2**32`` for ``x`` in ``[0, 2**32)`` held in int64, without signed
    overflow: the constant is split into 16-bit halves so every product stays below ``2**48``."""
    low = x * (constant & 0xFFFF)
    high = ((x * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def _mix32(x: Tensor) -> Tensor:
    """A bijective 32-bit integer hash (the "lowbias32" finaliser: xor-shift, multiply, twice)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _key(key: Tensor | int) -> Tensor:
    """The low 32 bits of an integer key, as int64."""
    if isinstance(key, Tensor):
        return key.long() & _MASK32
    return torch.tensor(key & _MASK32, dtype=torch.long)


def _hash(first: Tensor | int, *rest: Tensor | int) -> Tensor:
    """One 32-bit hash of several integer keys (tensors broadcast; each key's low 32 bits)."""
    h = _mix32(_key(first) ^ 0x9E3779B9)
    for key in rest:
        h = _mix32(h ^ _mix32(_key(key) ^ 0x85EBCA6B))
    return h


def _seed_value(seed: object) -> int:
    if isinstance(seed, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=seed))
    return check_size(seed, "seed", 0)


def _csr(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """``(rowptr [num_nodes + 1], col [num_edges])``: out-neighbours of each node in ascending order."""
    src, dst = edge_index[0].long(), edge_index[1].long()
    order = torch.argsort(src * max(num_nodes, 1) + dst, stable=True)
    counts = torch.bincount(src, minlength=num_nodes)
    rowptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return rowptr, dst[order]


def _local_index(num_nodes: int, batch: Tensor | None, device: torch.device) -> Tensor:
    nodes = torch.arange(num_nodes, device=device)
    if batch is None:
        return nodes
    return nodes - ptr_from_batch(batch).to(device)[batch]


def _check_graph(edge_index: Tensor, num_nodes: int, batch: Tensor | None) -> tuple[int, Tensor | None]:
    num_nodes = check_size(num_nodes, "num_nodes", 0)
    check_edge_index(edge_index, num_nodes)
    batch = check_batch(batch, num_nodes)
    if batch is not None and edge_index.numel() and bool((batch[edge_index[0]] != batch[edge_index[1]]).any()):
        raise ValueError("edge_index joins nodes of different graphs of batch; every edge must stay inside one graph")
    return num_nodes, batch


def _walks(rowptr: Tensor, col: Tensor, starts: Tensor, keys: Tensor, length: int) -> Tensor:
    """``[W, length + 1]`` walks from ``starts`` ``[W]``, step ``i`` drawn by ``hash(keys, i)``."""
    degree = rowptr[1:] - rowptr[:-1]
    current = starts
    visited = [current]
    for step in range(length):
        deg = degree[current]
        draw = _hash(keys, step) % deg.clamp(min=1)
        moved = col[(rowptr[current] + draw).clamp(max=max(col.numel() - 1, 0))] if col.numel() else current
        current = torch.where(deg > 0, moved, current)
        visited.append(current)
    return torch.stack(visited, dim=1)


def random_walks(
    edge_index: Tensor,
    num_nodes: int,
    walk_length: int,
    num_walks: int = 1,
    *,
    seed: int | torch.Generator = 0,
    batch: Tensor | None = None,
    stream: int = 0,
) -> Tensor:
    r"""``num_walks`` seeded random walks of ``walk_length`` steps from every node.

    Args:
        edge_index: ``[2, num_edges]`` directed edges (both directions for an undirected graph).
        num_nodes: number of nodes ``N``.
        walk_length: steps per walk (``>= 0``; 0 gives the start node alone).
        num_walks: walks per node (``>= 1``).
        seed: an ``int >= 0`` (taken modulo ``2**64``), or a ``torch.Generator`` from which
            one seed is drawn.
        batch: ``[N]`` PyG graph ids (sorted); walks are keyed by each node's index inside its
            own graph, so a graph's walks are the same alone and in any batch.
        stream: an ``int >= 0`` naming an independent family of walks under the same seed.

    Returns:
        ``[N, num_walks, walk_length + 1]`` node indices; ``[:, :, 0]`` is the start node.

    Example:
        >>> walks = random_walks(edge_index, num_nodes, walk_length=4, num_walks=8, seed=1)
    """
    num_nodes, batch = _check_graph(edge_index, num_nodes, batch)
    walk_length = check_size(walk_length, "walk_length", 0)
    num_walks = check_size(num_walks, "num_walks", 1)
    stream = check_size(stream, "stream", 0)
    seed_value = _seed_value(seed)
    device = edge_index.device
    rowptr, col = _csr(edge_index, num_nodes)
    local = _local_index(num_nodes, batch, device)
    walk_id = torch.arange(num_walks, device=device)
    keys = _hash(seed_value & _MASK32, seed_value >> 32, stream, local[:, None], walk_id[None, :]).reshape(-1)
    starts = torch.arange(num_nodes, device=device).repeat_interleave(num_walks)
    return _walks(rowptr, col, starts, keys, walk_length).reshape(num_nodes, num_walks, walk_length + 1)


@dataclass
class WalkTokens:
    r"""The neighbourhood tokens of every node, packed (no padding).

    Token ``t`` is a subgraph: its nodes are ``node[member_ptr[t]:member_ptr[t + 1]]``
    (distinct, ascending) and its edges are the columns of ``edge_index``, which index those
    member rows (``[2, num_token_edges]``; every edge of the graph between two members, with
    its multiplicity). The tokens of node ``v`` are ``cu_seqlens[v]:cu_seqlens[v + 1]``, ordered
    from the longest walks to the node itself (the last token of every node is ``{v}``).

    Attributes:
        cu_seqlens: ``[N + 1]`` token offsets per node (the packed sequences of the scan).
        length: ``[num_tokens]`` the walk length ``l`` each token was drawn with.
        member_ptr: ``[num_tokens + 1]`` member offsets per token.
        node: ``[num_members]`` the graph node of each member row.
        edge_index: ``[2, num_token_edges]`` induced edges between member rows.
    """

    cu_seqlens: Tensor
    length: Tensor
    member_ptr: Tensor
    node: Tensor
    edge_index: Tensor

    @property
    def num_tokens(self) -> int:
        return self.length.numel()

    @property
    def token(self) -> Tensor:
        """``[num_members]`` the token each member row belongs to."""
        counts = self.member_ptr[1:] - self.member_ptr[:-1]
        return torch.arange(self.num_tokens, device=counts.device).repeat_interleave(counts)

    def to(self, device: torch.device | str) -> "WalkTokens":
        return WalkTokens(*(t.to(device) for t in (self.cu_seqlens, self.length, self.member_ptr, self.node, self.edge_index)))


def _distinct_members(visited: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """Per row of ``visited`` ``[T, K]``, its distinct nodes in ascending order: ``(counts [T],
    nodes [sum counts])`` (rows in order)."""
    ordered, _ = torch.sort(visited, dim=1)
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return first.sum(1), ordered[first]


def random_walk_tokens(
    edge_index: Tensor,
    num_nodes: int,
    walk_length: int,
    tokens_per_length: int = 1,
    walks_per_token: int = 1,
    *,
    seed: int | torch.Generator = 0,
    batch: Tensor | None = None,
) -> WalkTokens:
    r"""GMN's neighbourhood tokens of every node, from seeded random walks.

    For each node ``v``, each length ``l = m, m-1, ..., 1`` (``m = walk_length``) and each
    ``j < tokens_per_length`` (the paper's ``s``), the token :math:`G[T^j_l(v)]` is the subgraph
    induced by the nodes visited by ``walks_per_token`` (the paper's ``M``) walks of length
    ``l`` from ``v``; the sequence ends with the token of length 0, :math:`G[\{v\}]`. So every
    node has ``tokens_per_length * m + 1`` tokens, far hops first (*Graph Mamba: Towards
    Learning on Graphs with State Space Models*, Behrouz & Hashemi, 2024,
    https://arxiv.org/abs/2402.08678). The walks of length ``l`` are
    :func:`random_walks` with ``stream=l`` (independent across lengths).

    Args:
        edge_index: ``[2, num_edges]``.
        num_nodes: ``N``.
        walk_length: ``m >= 0``, the longest walk.
        tokens_per_length: ``s >= 1`` tokens per length.
        walks_per_token: ``M >= 1`` walks whose visited nodes form one token.
        seed: ``int >= 0`` or a ``torch.Generator`` (one seed drawn from it).
        batch: ``[N]`` graph ids; a graph's tokens are the same alone and in any batch.

    Returns:
        a :class:`WalkTokens`.

    Cost: ``O(N s m M)`` walk steps, ``O(N s m M log(mM))`` to deduplicate the members, and the
    out-edges of every member are tested for membership (``O(sum of member degrees)``).
    """
    num_nodes, batch = _check_graph(edge_index, num_nodes, batch)
    m = check_size(walk_length, "walk_length", 0)
    s = check_size(tokens_per_length, "tokens_per_length", 1)
    per_token = check_size(walks_per_token, "walks_per_token", 1)
    seed_value = _seed_value(seed)
    device = edge_index.device
    per_node = s * m + 1
    counts, members = [], []
    for length in range(m, 0, -1):  # far hops first
        walks = random_walks(edge_index, num_nodes, length, s * per_token, seed=seed_value, batch=batch, stream=length)
        count, nodes = _distinct_members(walks.reshape(num_nodes * s, per_token * (length + 1)), num_nodes)
        counts.append(count.reshape(num_nodes, s))
        members.append(nodes)
    arange = torch.arange(num_nodes, device=device)
    counts.append(torch.ones(num_nodes, 1, dtype=torch.long, device=device))
    members.append(arange)
    # members come grouped by length, rows (v, j) inside a group; token ids are node-major
    # (node v's tokens are v * per_node .. v * per_node + per_node - 1), so sort members by token
    token_of_row = torch.cat([
        (arange[:, None] * per_node + offset + torch.arange(c.shape[1], device=device)[None, :]).reshape(-1)
        for offset, c in zip(range(0, per_node, s), counts)
    ])
    member_token = token_of_row.repeat_interleave(torch.cat([c.reshape(-1) for c in counts]))
    node = torch.cat(members)[torch.argsort(member_token, stable=True)]
    token_counts = torch.cat(counts, dim=1).reshape(-1)  # [N * per_node], node-major
    member_ptr = torch.cat([token_counts.new_zeros(1), token_counts.cumsum(0)])
    length_row = torch.cat([torch.full((s,), length, dtype=torch.long, device=device) for length in range(m, 0, -1)]
                           + [torch.zeros(1, dtype=torch.long, device=device)])
    cu_seqlens = torch.arange(0, num_nodes * per_node + 1, per_node, device=device)
    token_edges = _induced_edges(edge_index, num_nodes, member_ptr, node)
    return WalkTokens(cu_seqlens=cu_seqlens, length=length_row.repeat(num_nodes), member_ptr=member_ptr, node=node,
                      edge_index=token_edges)


def _induced_edges(edge_index: Tensor, num_nodes: int, member_ptr: Tensor, node: Tensor) -> Tensor:
    """``[2, E_t]`` member-row pairs ``(a, b)`` of the same token with an edge ``node[a] ->
    node[b]`` (each graph edge between two members, with its multiplicity)."""
    device = node.device
    if node.numel() == 0 or edge_index.numel() == 0:
        return torch.empty(2, 0, dtype=torch.long, device=device)
    rowptr, col = _csr(edge_index, num_nodes)
    degree = rowptr[1:] - rowptr[:-1]
    num_tokens = member_ptr.numel() - 1
    token = torch.arange(num_tokens, device=device).repeat_interleave(member_ptr[1:] - member_ptr[:-1])
    # members are sorted by (token, node): their keys are sorted, so a lookup is a binary search
    keys = token * num_nodes + node
    candidates = degree[node]
    source_row = torch.arange(node.numel(), device=device).repeat_interleave(candidates)
    first = rowptr[node].repeat_interleave(candidates)
    within = torch.arange(source_row.numel(), device=device) - torch.cat(
        [candidates.new_zeros(1), candidates.cumsum(0)[:-1]]).repeat_interleave(candidates)
    target = col[first + within]
    wanted = token[source_row] * num_nodes + target
    position = torch.searchsorted(keys, wanted).clamp(max=keys.numel() - 1)
    inside = keys[position] == wanted
    return torch.stack([source_row[inside], position[inside]])
