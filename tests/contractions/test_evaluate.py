"""evaluate: brute-force homomorphism counts, networkx counts, equivariance, padding, rank."""

import random

import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from everygraph.contractions import (
    ContractionMemoryError,
    Pattern,
    basis,
    compile,
    evaluate,
    evaluate_reference,
)
from everygraph.datasets import rook_graph, shrikhande_graph
from homomorphism_reference import brute_force  # tests/contractions/homomorphism_reference.py


def graph_adj(g: nx.Graph, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(nx.to_numpy_array(g, nodelist=sorted(g.nodes), weight=None), dtype=dtype)


def _random_pattern(rng, directed, max_vertices=5, max_edges=5):
    n = rng.randint(1, max_vertices)
    edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(rng.randint(0, max_edges))]
    special = rng.sample(range(n), rng.randint(0, min(2, n)))
    if len(special) == 1 and rng.random() < 0.3:
        special = special * 2  # diagonal edge output
    return Pattern(edges, special, num_vertices=n, directed=directed)


@pytest.mark.parametrize("directed", [False, True])
def test_equals_brute_force_on_networkx_graphs(directed):
    rng = random.Random(0)
    graphs = [nx.gnp_random_graph(6, 0.5, seed=1), nx.graph_atlas(150), nx.cycle_graph(5)]
    patterns = [_random_pattern(rng, directed) for _ in range(24)]
    plan = compile(patterns)
    for g in graphs:
        adj = graph_adj(g)
        if directed:  # general input: a random non-symmetric weighted matrix on the graph
            adj = adj * torch.rand(adj.shape, dtype=torch.float64) + torch.diag(torch.rand(adj.shape[0], dtype=torch.float64))
        out = evaluate(plan, adj[None])
        for j, p in enumerate(patterns):
            got = out[p.output][..., plan.indices(p.output).index(j)][0] if isinstance(out, dict) else out[..., j][0]
            want = brute_force(p, adj[..., None])
            if p.is_diagonal:
                want = brute_force(Pattern(p.edges, p.special[:1], p.num_vertices, p.directed), adj[..., None]).diag()
            torch.testing.assert_close(got, want, msg=lambda m: f"{p}: {m}")


def test_atlas_homomorphism_counts_simple_basis():
    # every simple-graph basis element of degree <= 3, on atlas graphs of 4..5 nodes
    patterns = [p for d in range(4) for o in ("invariant", "node", "edge") for p in basis(d, o) if p.num_vertices <= 5]
    plan = compile(patterns)
    for index in (45, 52):  # 5-node atlas graphs (brute force is n^|V|)
        g = nx.graph_atlas(index)
        adj = graph_adj(g)
        out = evaluate(plan, adj[None], as_matrix=True)[0]
        for j, p in enumerate(patterns):
            want = brute_force(p if not p.is_diagonal else Pattern(p.edges, p.special[:1], p.num_vertices), adj[..., None])
            n = adj.shape[0]
            if p.output == "invariant":
                want = want * torch.ones(n, n, dtype=torch.float64)
            elif p.output == "node" or p.is_diagonal:
                want = torch.diag(want)
            torch.testing.assert_close(out[..., j], want)


def test_triangle_and_cycle_counts_against_networkx():
    tri, c4, star, k2, k4 = (Pattern.from_string(s) for s in ["ab,bc,ca->", "ab,bc,cd,da->", "ab,ac->", "ab->", "ab,ac,ad,bc,bd,cd->"])
    node_tri = Pattern.from_string("ab,bc,ca->a")
    edge_tri = Pattern.from_string("ab,bc,ca->ab")
    plan = compile([tri, c4, star, k2, node_tri, edge_tri, k4])
    for g in [nx.complete_graph(4), nx.petersen_graph(), nx.gnp_random_graph(9, 0.4, seed=3), nx.karate_club_graph()]:
        adj = graph_adj(g)
        out = evaluate(plan, adj[None])
        inv, node, edge = out["invariant"][0], out["node"][0], out["edge"][0]
        triangles = nx.triangles(g)
        assert inv[0].item() == pytest.approx(6 * sum(triangles.values()) / 3)
        assert node[:, 0].tolist() == pytest.approx([2 * triangles[v] for v in sorted(g)])
        for u, v in g.edges():
            common = len(set(g[u]) & set(g[v]))
            assert edge[u, v, 0].item() == pytest.approx(common)
        m = g.number_of_edges()
        cycles4 = sum(1 for c in nx.simple_cycles(g, length_bound=4) if len(c) == 4)
        # tr(A^4) = 8 #C4 + 2 sum d^2 - 2m
        assert ((inv[1] - 2 * inv[2] + inv[3]) / 8).item() == pytest.approx(cycles4)
        assert inv[3].item() == pytest.approx(2 * m)
        k4_count = sum(1 for c in nx.enumerate_all_cliques(g) if len(c) == 4)
        assert inv[4].item() == pytest.approx(24 * k4_count)
    k4_out = evaluate(plan, graph_adj(nx.complete_graph(4))[None])["invariant"][0]
    assert k4_out[0].item() == 24 and k4_out[1].item() == 84
    assert evaluate(plan, graph_adj(nx.petersen_graph())[None])["invariant"][0, 1].item() == 150


def _permute(t, perm, output):
    if output == "invariant":
        return t
    if output == "node":
        return t[:, perm]
    return t[:, perm][:, :, perm]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_equivariance_under_node_permutation(seed):
    gen = torch.Generator().manual_seed(seed)
    patterns = basis(3, "node", "general") + basis(2, "edge", "general") + basis(3, "invariant", "general")[:20]
    plan = compile(patterns)
    n = 5
    x = torch.randn(2, n, n, generator=gen, dtype=torch.float64)
    perm = torch.randperm(n, generator=gen)
    out = evaluate(plan, x)
    out_p = evaluate(plan, x[:, perm][:, :, perm])
    for o in plan.outputs:
        torch.testing.assert_close(out_p[o], _permute(out[o], perm, o))


def test_padded_batch_equals_each_graph_alone():
    patterns = basis(4, "edge", "simple")[::3] + basis(4, "node", "simple") + basis(4, "invariant", "simple")
    plan = compile(patterns)
    sizes = [3, 7, 5]
    graphs = [nx.gnp_random_graph(s, 0.6, seed=s) for s in sizes]
    n = max(sizes)
    adj = torch.zeros(len(sizes), n, n, dtype=torch.float64)
    mask = torch.zeros(len(sizes), n, dtype=torch.bool)
    for b, g in enumerate(graphs):
        adj[b, : sizes[b], : sizes[b]] = graph_adj(g)
        mask[b, : sizes[b]] = True
    adj[0, 4, 1] = adj[0, 1, 4] = 7.0  # garbage in the padding must not leak
    batched = evaluate(plan, adj, mask)
    for b, g in enumerate(graphs):
        alone = evaluate(plan, graph_adj(g)[None])
        s = sizes[b]
        torch.testing.assert_close(batched["invariant"][b], alone["invariant"][0])
        torch.testing.assert_close(batched["node"][b, :s], alone["node"][0])
        torch.testing.assert_close(batched["edge"][b, :s, :s], alone["edge"][0])
        assert batched["node"][b, s:].abs().sum() == 0 and batched["edge"][b, s:].abs().sum() == 0
        assert batched["edge"][b, :, s:].abs().sum() == 0


def test_matches_left_to_right_reference_forward_and_backward():
    patterns = basis(3, "edge", "general")[::7] + basis(3, "node", "symmetric") + basis(2, "invariant", "general")
    plan = compile(patterns)
    x = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    out = evaluate(plan, x, mask, as_matrix=True)
    ref = evaluate_reference(patterns, x, mask)
    eye = torch.eye(4, dtype=torch.float64)
    pm = (mask[:, :, None] & mask[:, None, :]).double()
    ref_m = []
    for p, r in zip(patterns, ref):
        ref_m.append(r[:, None, None] * pm if p.output == "invariant" else r[:, :, None] * eye if p.output == "node" else r)
    ref_m = torch.stack(ref_m, -1)
    torch.testing.assert_close(out, ref_m)
    w = torch.randn(out.shape, dtype=torch.float64)
    (g1,) = torch.autograd.grad((out * w).sum(), x)
    (g2,) = torch.autograd.grad((ref_m * w).sum(), x)
    torch.testing.assert_close(g1, g2)


def test_channels_node_and_edge_features():
    # channel 1 = node features on the diagonal, channel 2 = edge weights
    g = nx.gnp_random_graph(5, 0.6, seed=2)
    adj = graph_adj(g)
    feats = torch.diag(torch.rand(5, dtype=torch.float64))
    weights = adj * torch.rand(5, 5, dtype=torch.float64)
    weights = weights + weights.T
    x = torch.stack([adj, feats, weights], -1)
    patterns = [Pattern.from_string(s) for s in ["aa@1,ab@2->a", "ab@2,bc,cc@1->ac", "ab@2,ab@2->", "ab,bb@1->b"]]
    out = evaluate(compile(patterns), x[None, ..., :1], edge_attr=x[None, ..., 1:])
    for j, p in enumerate(patterns):
        got = out[p.output][..., plan_index(patterns, j)][0]
        torch.testing.assert_close(got, brute_force(p, x))


def plan_index(patterns, j):
    return [k for k, p in enumerate(patterns) if p.output == patterns[j].output].index(j)


def test_linear_independence_degree_at_most_two():
    # Puny et al. (2023): degree <= 2 on general X at n = 6 has full rank 1+2+11=14, 1+5+32=38, 2+15+117=134
    n, gen = 6, torch.Generator().manual_seed(0)
    for output, count, samples in [("invariant", 14, 40), ("node", 38, 30), ("edge", 134, 30)]:
        patterns = basis(2, output, "general", exact=False)
        assert len(patterns) == count
        x = torch.randn(samples, n, n, generator=gen, dtype=torch.float64)
        # broadcast invariants (e.g. "a,bc->a") give one value per sample, hence >= 14 samples
        values = evaluate(compile(patterns), x).reshape(-1, count)
        values = values / values.norm(dim=0)
        assert torch.linalg.matrix_rank(values).item() == count
        # and the rank is not trivially full: duplicating a pattern drops it
        dup = evaluate(compile(patterns + patterns[:1]), x).reshape(-1, count + 1)
        dup = dup / dup.norm(dim=0)
        assert torch.linalg.matrix_rank(dup).item() == count


def test_rook_and_shrikhande():
    r, s = rook_graph(), shrikhande_graph()  # strongly regular (16, 6, 2, 2): tests/datasets
    x = torch.stack([graph_adj(r), graph_adj(s)])
    patterns = basis(3, "invariant", "simple", exact=False)
    out = evaluate(compile(patterns), x)
    torch.testing.assert_close(out[0], out[1])
    k4 = evaluate(compile(["ab,ac,ad,bc,bd,cd->"]), x)
    assert k4[0, 0].item() == 24 * 8 and k4[1, 0].item() == 0  # rook: 8 K4 (rows, columns); Shrikhande: none


def test_pyg_batch_input():
    from torch_geometric.data import Batch, Data
    from torch_geometric.utils import from_networkx

    graphs = [nx.cycle_graph(3), nx.complete_graph(4), nx.path_graph(2)]
    datas = []
    for g in graphs:
        d = from_networkx(g)
        d.edge_attr = torch.ones(d.edge_index.shape[1], 1) * 2.0
        datas.append(Data(edge_index=d.edge_index, edge_attr=d.edge_attr, num_nodes=g.number_of_nodes()))
    batch = Batch.from_data_list(datas)
    plan = compile(["ab,bc,ca->", "ab@1,bc@1,ca@1->"])
    out = evaluate(plan, batch)
    assert out[:, 0].tolist() == [6.0, 24.0, 0.0]
    assert out[:, 1].tolist() == [48.0, 192.0, 0.0]


def test_bad_inputs():
    plan = compile(["ab,bc->a"])
    with pytest.raises(ValueError, match=r"square.*\(2, 3, 4\)"):
        evaluate(plan, torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"mask must have shape \[B, n\] = \(2, 3\).*\(2, 4\)"):
        evaluate(plan, torch.zeros(2, 3, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="reads 2 channels"):
        evaluate(compile(["ab@1->"]), torch.zeros(1, 3, 3))
    with pytest.raises(ContractionMemoryError, match="GiB") as info:
        evaluate(plan, torch.zeros(2, 3, 3), memory_limit=10)
    assert isinstance(info.value, ValueError)
    with pytest.raises(TypeError):
        evaluate(["ab->"], torch.zeros(1, 2, 2))
    x = torch.rand(1, 3, 3)
    before = x.clone()
    evaluate(plan, x)
    assert torch.equal(x, before)


def test_plan_sharing_and_estimates():
    patterns = basis(4, "edge", "simple") + basis(4, "edge", "simple")[:5]
    plan = compile(patterns)
    assert plan.stats["distinct_patterns"] == len(patterns) - 5
    assert plan.stats["components"] < len(patterns)
    assert plan.flops(32) < plan.flops_per_pattern_optimal(32) < plan.flops_left_to_right(32)
    assert plan.peak_memory(32, 8) > plan.peak_memory(16, 8) > 0
    out = evaluate(plan, torch.rand(1, 4, 4))
    torch.testing.assert_close(out[..., -5:], out[..., :5])
