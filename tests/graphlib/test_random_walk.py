"""Seeded random walks, GMN's walk tokens and random-walk encodings, against loops written
from their definitions (a scalar re-implementation of the hash, Python sets, a dense matrix
power)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from everygraph.graphlib import WalkTokens, random_walk_encoding, random_walk_tokens, random_walks

M32 = 0xFFFFFFFF


# ------------------------------------------------------------------- scalar reference of the draws
def mix32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def hash_keys(*keys: int) -> int:
    h = None
    for k in keys:
        k &= M32
        h = mix32(k ^ 0x9E3779B9) if h is None else mix32(h ^ mix32(k ^ 0x85EBCA6B))
    return h


def loop_walks(edges: list[tuple[int, int]], num_nodes: int, length: int, num_walks: int, seed: int,
               ptr: list[int] | None = None, stream: int = 0) -> list:
    """walks[v][k] = [v, w_1, ...]: one node, one walk, one step at a time."""
    neighbours = {v: sorted(w for u, w in edges if u == v) for v in range(num_nodes)}
    graph_start = {}
    bounds = ptr if ptr is not None else [0, num_nodes]
    for g in range(len(bounds) - 1):
        for v in range(bounds[g], bounds[g + 1]):
            graph_start[v] = bounds[g]
    out = []
    for v in range(num_nodes):
        per_node = []
        for k in range(num_walks):
            key = hash_keys(seed & M32, seed >> 32, stream, v - graph_start[v], k)
            walk, current = [v], v
            for step in range(length):
                options = neighbours[current]
                if options:
                    current = options[hash_keys(key, step) % len(options)]
                walk.append(current)
            per_node.append(walk)
        out.append(per_node)
    return out


def random_graph(num_nodes: int, p: float, seed: int, directed: bool = False) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    pairs = [(u, w) for u in range(num_nodes) for w in range(num_nodes) if u != w and rng.random() < p]
    if not directed:
        pairs = sorted({(u, w) for u, w in pairs} | {(w, u) for u, w in pairs})
    return torch.tensor(pairs, dtype=torch.long).t().reshape(2, -1)


def batched(graphs: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    edges, batch, ptr = [], [], [0]
    for g, (edge_index, n) in enumerate(graphs):
        edges.append(edge_index + ptr[-1])
        batch += [g] * n
        ptr.append(ptr[-1] + n)
    return torch.cat(edges, 1), torch.tensor(batch), ptr


# ------------------------------------------------------------------------------- walks
@pytest.mark.parametrize("directed", [False, True])
def test_walks_equal_the_scalar_loop_and_follow_edges(directed):
    edge_index = random_graph(9, 0.25, seed=1, directed=directed)
    edge_index = torch.cat([edge_index, edge_index[:, :2]], 1)  # a repeated edge counts twice
    walks = random_walks(edge_index, 10, walk_length=5, num_walks=3, seed=7)  # node 9 is isolated
    assert walks.shape == (10, 3, 6)
    edges = [tuple(e) for e in edge_index.t().tolist()]
    assert walks.tolist() == loop_walks(edges, 10, 5, 3, seed=7)
    edge_set, has_out = set(edges), {u for u, _ in edges}
    for walk in walks.reshape(-1, 6).tolist():
        for a, b in zip(walk, walk[1:]):
            assert (a, b) in edge_set or (a == b and a not in has_out)


def test_walks_are_deterministic_under_a_seed_and_a_generator():
    edge_index = random_graph(12, 0.3, seed=2)
    a = random_walks(edge_index, 12, 6, 4, seed=3)
    assert torch.equal(a, random_walks(edge_index, 12, 6, 4, seed=3))
    assert not torch.equal(a, random_walks(edge_index, 12, 6, 4, seed=4))
    assert not torch.equal(a, random_walks(edge_index, 12, 6, 4, seed=3, stream=1))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(random_walks(edge_index, 12, 6, 4, seed=g1), random_walks(edge_index, 12, 6, 4, seed=g2))
    big = 2**40 + 17  # both halves of a 64-bit seed matter
    assert not torch.equal(random_walks(edge_index, 12, 6, 4, seed=big), random_walks(edge_index, 12, 6, 4, seed=17))


def test_walks_and_tokens_are_batch_independent():
    graphs = [(random_graph(n, 0.3, seed=n), n) for n in (5, 8, 1, 6)]
    edge_index, batch, ptr = batched(graphs)
    together = random_walks(edge_index, ptr[-1], 4, 3, seed=11, batch=batch)
    assert together.tolist() == loop_walks([tuple(e) for e in edge_index.t().tolist()], ptr[-1], 4, 3, 11, ptr)
    tokens = random_walk_tokens(edge_index, ptr[-1], 3, 2, 2, seed=11, batch=batch)
    for g, (ei, n) in enumerate(graphs):
        alone = random_walks(ei, n, 4, 3, seed=11)
        assert torch.equal(together[ptr[g]:ptr[g + 1]] - ptr[g], alone)
        assert token_sets(random_walk_tokens(ei, n, 3, 2, 2, seed=11)) == [
            [(length, {u - ptr[g] for u in nodes}, {(a - ptr[g], b - ptr[g]) for a, b in edges})
             for length, nodes, edges in seq]
            for seq in token_sets(tokens)[ptr[g]:ptr[g + 1]]
        ]


def test_walk_endpoints_follow_the_transition_matrix_and_relabelling():
    """Equivariance in distribution: the endpoint frequencies of many walks match P^l, for
    the graph and for a relabelled copy (different samples, the same law)."""
    edge_index = random_graph(7, 0.4, seed=3)
    n, length, walks = 7, 3, 6000
    A = np.zeros((n, n))
    np.add.at(A, (edge_index[0].numpy(), edge_index[1].numpy()), 1)
    P = np.divide(A, A.sum(1, keepdims=True), out=np.eye(n), where=A.sum(1, keepdims=True) > 0)
    law = np.linalg.matrix_power(P, length)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    relabelled = perm[edge_index]
    for ei, relabel in ((edge_index, torch.arange(n)), (relabelled, perm)):
        ends = random_walks(ei, n, length, walks, seed=9)[:, :, -1]
        for v in range(n):
            counts = torch.bincount(ends[relabel[v]], minlength=n)[relabel].double().numpy() / walks
            assert np.abs(counts - law[v]).sum() / 2 < 0.04, (v, counts, law[v])
    assert not torch.equal(random_walks(relabelled, n, length, 8, seed=9)[perm],
                           perm[random_walks(edge_index, n, length, 8, seed=9)])


# ------------------------------------------------------------------------------- tokens
def token_sets(tokens: WalkTokens) -> list:
    """Per node, its tokens as (length, node set, induced edge set as node pairs)."""
    node = tokens.node.tolist()
    edges_of: dict[int, set] = {}
    token = tokens.token.tolist()
    for a, b in tokens.edge_index.t().tolist():
        assert token[a] == token[b]
        edges_of.setdefault(token[a], set()).add((node[a], node[b]))
    ptr, cu = tokens.member_ptr.tolist(), tokens.cu_seqlens.tolist()
    return [
        [(int(tokens.length[t]), set(node[ptr[t]:ptr[t + 1]]), edges_of.get(t, set())) for t in range(cu[v], cu[v + 1])]
        for v in range(len(cu) - 1)
    ]


@pytest.mark.parametrize("m, s, M", [(3, 2, 2), (1, 1, 1), (2, 3, 1), (0, 2, 2)])
def test_tokens_equal_the_loop_over_nodes_lengths_and_walks(m, s, M):
    edge_index = random_graph(8, 0.3, seed=4, directed=True)
    edge_index = torch.cat([edge_index, torch.tensor([[2, 2], [2, 2]])], 1)  # a repeated self-loop
    n = 9  # node 8 is isolated
    tokens = random_walk_tokens(edge_index, n, m, s, M, seed=5)
    edges = [tuple(e) for e in edge_index.t().tolist()]
    expected = [[] for _ in range(n)]
    for length in range(m, 0, -1):
        walks = loop_walks(edges, n, length, s * M, seed=5, stream=length)
        for v in range(n):
            for j in range(s):
                nodes = {u for walk in walks[v][j * M:(j + 1) * M] for u in walk}
                expected[v].append((length, nodes, {(a, b) for a, b in edges if a in nodes and b in nodes}))
    for v in range(n):
        expected[v].append((0, {v}, {(a, b) for a, b in edges if a == b == v}))
    assert token_sets(tokens) == expected
    assert tokens.cu_seqlens.tolist() == list(range(0, n * (s * m + 1) + 1, s * m + 1))
    # members ascending inside each token; multiplicity of induced edges kept (the double loop)
    ptr = tokens.member_ptr.tolist()
    for t in range(tokens.num_tokens):
        assert tokens.node[ptr[t]:ptr[t + 1]].tolist() == sorted(set(tokens.node[ptr[t]:ptr[t + 1]].tolist()))
    loops = [(a, b) for a, b in tokens.edge_index.t().tolist() if tokens.node[a] == tokens.node[b] == 2]
    tokens_with_2 = sum(2 in nodes for seq in expected for _, nodes, _ in seq)
    assert len(loops) == 2 * tokens_with_2


def test_tokens_of_empty_and_edgeless_graphs():
    empty = random_walk_tokens(torch.empty(2, 0, dtype=torch.long), 0, 2, 2)
    assert empty.num_tokens == 0 and empty.cu_seqlens.tolist() == [0]
    lonely = random_walk_tokens(torch.empty(2, 0, dtype=torch.long), 3, 2, 2)
    assert lonely.node.tolist() == [v for v in range(3) for _ in range(5)]
    assert lonely.edge_index.shape == (2, 0)


@pytest.mark.parametrize("call, argument", [
    (lambda ei: random_walks(ei, 3, -1), "walk_length"),
    (lambda ei: random_walks(ei, 3, 2, 0), "num_walks"),
    (lambda ei: random_walks(ei, 3, 2.5), "walk_length"),
    (lambda ei: random_walks(ei, 3, 2, seed=-1), "seed"),
    (lambda ei: random_walks(ei, 2, 2), "edge_index"),
    (lambda ei: random_walks(ei.double(), 3, 2), "edge_index"),
    (lambda ei: random_walks(ei, 3, 2, batch=torch.tensor([0, 0, 1])), "batch"),
    (lambda ei: random_walks(ei, 3, 2, batch=torch.tensor([0, 1])), "batch"),
    (lambda ei: random_walk_tokens(ei, 3, 2, 0), "tokens_per_length"),
    (lambda ei: random_walk_tokens(ei, 3, 2, 1, 0), "walks_per_token"),
    (lambda ei: random_walk_tokens(ei, 3, -2), "walk_length"),
    (lambda ei: random_walk_encoding(ei, 3, 0), "steps"),
])
def test_bad_input_is_refused_by_name(call, argument):
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    with pytest.raises((TypeError, ValueError), match=argument):
        call(edge_index)


# --------------------------------------------------------------------------- encodings
def test_random_walk_encoding_equals_dense_matrix_powers_per_graph():
    graphs = [(random_graph(6, 0.4, seed=5, directed=True), 6), (random_graph(4, 0.6, seed=6), 4)]
    graphs[0] = (torch.cat([graphs[0][0], graphs[0][0][:, :1]], 1), 6)  # a repeated edge weighs twice
    edge_index, batch, ptr = batched(graphs)
    together = random_walk_encoding(edge_index, ptr[-1], 5, batch)
    for g, (ei, n) in enumerate(graphs):
        A = np.zeros((n, n))
        np.add.at(A, (ei[0].numpy(), ei[1].numpy()), 1)
        out_degree = A.sum(1, keepdims=True)
        P = np.divide(A, out_degree, out=np.zeros_like(A), where=out_degree > 0)
        expected = np.stack([np.diag(np.linalg.matrix_power(P, k)) for k in range(1, 6)], 1)
        np.testing.assert_allclose(random_walk_encoding(ei, n, 5).numpy(), expected, atol=1e-6)
        np.testing.assert_allclose(together[ptr[g]:ptr[g + 1]].numpy(), expected, atol=1e-6)
    assert random_walk_encoding(torch.empty(2, 0, dtype=torch.long), 2, 3).abs().sum() == 0


@pytest.mark.parametrize("structure", ["path", "grid", "dag"])
def test_tokens_on_directed_structures_stay_among_descendants(structure):
    """On a DAG (a path, a grid's lattice DAG, a random DAG) walks follow the edges, so every
    token of v holds only v and its descendants, and a walk stops at a sink."""
    import networkx as nx

    from everygraph.graphlib import DAG, Lattice, path_graph

    if structure == "path":
        dag = path_graph(6).to_dag()
    elif structure == "grid":
        dag = Lattice((3, 4)).to_dag()
    else:
        g = torch.Generator().manual_seed(8)
        pairs = torch.triu_indices(7, 7, 1)
        dag = DAG(pairs[:, torch.rand(pairs.shape[1], generator=g) < 0.4], 7)
    n = dag.num_nodes
    graph = nx.DiGraph(dag.edge_index.t().tolist())
    graph.add_nodes_from(range(n))
    tokens = random_walk_tokens(dag.edge_index, n, 3, 2, 2, seed=3)
    for v, sequence in enumerate(token_sets(tokens)):
        allowed = nx.descendants(graph, v) | {v}
        for _, nodes, _ in sequence:
            assert v in nodes and nodes <= allowed
    walks = random_walks(dag.edge_index, n, 8, 4, seed=3)
    sinks = [v for v in range(n) if graph.out_degree(v) == 0]
    assert bool(torch.isin(walks[:, :, -1], torch.tensor(sinks)).all())  # 8 steps reach a sink here
