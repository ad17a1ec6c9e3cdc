"""The reliable paired comparison, the report and the linear probe of
everygraph.contractions.probe, on synthetic "models" whose answer is known: noisy but
invariant, not invariant, and exact homomorphism counts computed here with numpy/networkx."""

import math

import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.utils import to_dense_adj

from everygraph.contractions.probe import (
    GraphPair,
    f_quantile,
    hotelling_t2,
    hotelling_threshold,
    linear_probe,
    pattern_name,
    probe_model,
    regular_pairs,
    reliable_separation,
)


class CycleCounter(torch.nn.Module):
    """Graph embedding: (n, tr A^2, tr A^3, tr A^4) per graph, plus optional Gaussian noise drawn
    anew on every call (an invariant model whose outputs jitter)."""

    def __init__(self, noise: float = 0.0, seed: int = 0):
        super().__init__()
        self.noise = noise
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, batch):
        adj = to_dense_adj(batch.edge_index, batch.batch).double()
        powers = [adj]
        for _ in range(3):
            powers.append(powers[-1] @ adj)
        n = torch.bincount(batch.batch).double()
        out = torch.stack([n] + [p.diagonal(dim1=1, dim2=2).sum(-1) for p in powers[1:]], 1)
        if self.noise:
            out = out + self.noise * out.abs().mean() * torch.randn(out.shape, generator=self.generator, dtype=out.dtype)
        return out


class DegreeSum(torch.nn.Module):
    """1-WL-bounded: sums of functions of node degrees."""

    def forward(self, batch):
        deg = torch.bincount(batch.edge_index[0], minlength=batch.num_nodes).double()
        feats = torch.stack([torch.ones_like(deg), deg, deg**2, torch.sin(deg)], 1)
        return torch.zeros(batch.num_graphs, 4, dtype=torch.float64).index_add_(0, batch.batch, feats)


class BatchPosition(torch.nn.Module):
    """Not a function of the graph alone: adds the graph's position in the batch (as a model
    with state carried across the batch would)."""

    def forward(self, batch):
        return CycleCounter()(batch) + torch.arange(batch.num_graphs, dtype=torch.float64)[:, None]


C6 = nx.cycle_graph(6)
TWO_C3 = nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))


def test_f_quantile_closed_forms():
    # F(2, 2): P(F <= f) = f / (1 + f); F(d1, d2) with d1 = d2: the median is 1
    for p in (0.1, 0.5, 0.9, 0.999):
        assert math.isclose(f_quantile(p, 2, 2), p / (1 - p), rel_tol=1e-9)
    assert math.isclose(f_quantile(0.5, 7, 7), 1.0, rel_tol=1e-9)
    scipy_stats = pytest.importorskip("scipy.stats")
    for p, a, b in [(0.999, 16, 16), (0.95, 3, 29), (0.99, 1, 5)]:
        assert math.isclose(f_quantile(p, a, b), scipy_stats.f.ppf(p, a, b), rel_tol=1e-8)


def test_hotelling_t2_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(20, 3, generator=g, dtype=torch.float64) + torch.tensor([0.5, 0.0, -0.2], dtype=torch.float64)
    mean = d.mean(0).numpy()
    cov = np.cov(d.numpy(), rowvar=False)
    expected = 20 * mean @ np.linalg.solve(cov, mean)
    assert math.isclose(hotelling_t2(d), expected, rel_tol=1e-9)
    assert hotelling_threshold(3, 20, 0.01) == pytest.approx(3 * 19 / 17 * f_quantile(0.99, 3, 17))


def test_noisy_invariant_model_does_not_separate_a_graph_from_itself():
    """Each test (the pair and two same-graph checks) has false-positive rate alpha = 1e-3 under
    Gaussian noise; over 10 graphs at most one flag is allowed (expected: 0.03)."""
    verdicts = []
    for seed in range(10):
        graph = nx.random_regular_graph(3, 10, seed=seed)
        relabelled = nx.relabel_nodes(graph, dict(zip(range(10), np.random.default_rng(seed).permutation(10).tolist())))
        test = reliable_separation(CycleCounter(noise=1e-3, seed=seed), graph, relabelled, num_permutations=32, seed=seed)
        verdicts.append(test.verdict)
        assert not test.separated
    assert verdicts.count("does not separate") >= 9, verdicts


def test_noisy_model_separates_a_real_difference_and_blind_model_does_not():
    test = reliable_separation(CycleCounter(noise=1e-3), C6, TWO_C3, seed=1)
    assert test.separated and test.verdict == "separates" and test.t2 > 100 * test.threshold
    blind = reliable_separation(DegreeSum(), C6, TWO_C3, seed=1)
    assert blind.reliable and not blind.separated and blind.t2 == pytest.approx(0.0, abs=1e-6)


def test_model_that_is_not_a_function_of_the_graph_is_unreliable():
    test = reliable_separation(BatchPosition(), C6, nx.relabel_nodes(C6, {i: (i + 2) % 6 for i in range(6)}), seed=0)
    assert not test.reliable and test.verdict == "unreliable" and not test.separated


def test_wide_embeddings_are_projected():
    class Wide(torch.nn.Module):
        def forward(self, batch):
            base = CycleCounter()(batch)
            return torch.cat([base, torch.zeros(batch.num_graphs, 60, dtype=base.dtype)], 1)

    test = reliable_separation(Wide(), C6, TWO_C3, num_permutations=16)
    assert test.dim == 8 and test.separated


def test_probe_report_table_and_agreement():
    pairs = regular_pairs()[:3]
    report = probe_model(DegreeSum(), pairs=pairs, degree=4, model_classes=["mpnn", "ppgn"], num_permutations=16)
    text = str(report)
    assert "C6 vs 2xC3" in text and "mpnn" in text and "ppgn" in text and "DegreeSum" in text
    assert all(row.model_separates is False for row in report.rows)
    assert report.agreement("mpnn") == {"both": 0, "neither": 3, "model_only": 0, "class_only": 0, "unreliable": 0}
    assert report.agreement("ppgn")["class_only"] == 3
    counting = probe_model(CycleCounter(), pairs=pairs, degree=4, model_classes=["mpnn", "ppgn"], num_permutations=16)
    # tr A^3 and tr A^4 are hom(C3) and hom(C4): the model separates exactly the pairs differing there
    for row in counting.rows:
        expected = any(pattern_name(p) in ("triangle", "C4") for p in row.theory.differing)
        assert row.model_separates is expected, row.name
    assert counting.to_dict()["rows"][0]["verdict"] == "separates"


def test_graph_pair_validation():
    with pytest.raises(TypeError, match="first"):
        GraphPair("x", "y", nx.DiGraph([(0, 1)]), C6)
    with pytest.raises(ValueError, match="self-loops"):
        GraphPair("x", "y", C6, nx.Graph([(0, 0), (0, 1)]))


# ----------------------------------------------------------------------------- linear probe
class HomOf(torch.nn.Module):
    """Outputs exactly hom(C3) = tr A^3 or hom(C4) = tr A^4, via numpy on each graph."""

    def __init__(self, power: int):
        super().__init__()
        self.power = power

    def forward(self, batch):
        out = []
        for i in range(batch.num_graphs):
            a = to_dense_adj(batch[i].edge_index, max_num_nodes=batch[i].num_nodes)[0].numpy()
            out.append([float(np.trace(np.linalg.matrix_power(a, self.power)))])
        return torch.tensor(out, dtype=torch.float64)


def test_linear_probe_recovers_exactly_the_counts_a_model_outputs():
    graphs = [nx.random_regular_graph(3, 16, seed=s) for s in range(160)]
    result = linear_probe(HomOf(3), degree=4, graphs=graphs, seed=0)
    r3 = result.as_dict()
    # the degree histogram is the same for every graph here: the baseline explains nothing
    assert result.as_dict(baseline=True)["ab,ac,bc->"] < 0.05
    r4 = linear_probe(HomOf(4), degree=4, graphs=graphs, seed=0).as_dict()
    triangle, square = "ab,ac,bc->", "ab,ac,bd,cd->"
    assert r3[triangle] > 0.999 and r4[square] > 0.999
    assert r3[square] < 0.2 and r4[triangle] < 0.2
    # every tree count is constant on 3-regular graphs of one size: reported as NaN, not a score
    assert math.isnan(r3["ab->"]) and math.isnan(r3["ac,bc->"])
