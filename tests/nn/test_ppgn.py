"""PPGN / PPGN++: block against a plain loop, invariance, batch independence, 2-FWL limit."""

import itertools

import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data
from torch_geometric.utils import from_networkx

from everygraph.nn import PPGN, PolynomialFeatures
from everygraph.nn.ppgn import PPGNBlock, to_dense_pairs


def to_data(g, x=None):
    d = from_networkx(nx.convert_node_labels_to_integers(g))
    return Data(edge_index=d.edge_index, num_nodes=g.number_of_nodes(), x=x)


def test_block_matches_plain_loops():
    torch.manual_seed(0)
    block = PPGNBlock(3, 4).double()
    x = torch.randn(2, 4, 4, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    out = block(x, mask)
    for b in range(2):
        n = int(mask[b].sum())
        m1, m2 = block.mlp1(x[b, :n, :n]), block.mlp2(x[b, :n, :n])
        for i, j in itertools.product(range(n), repeat=2):
            mult = sum(m1[i, k] * m2[k, j] for k in range(n))
            want = torch.relu(block.skip(torch.cat([x[b, i, j], mult])))
            torch.testing.assert_close(out[b, i, j], want)
    assert out[1, 3].abs().sum() == 0 and out[1, :, 3].abs().sum() == 0


@pytest.mark.parametrize("plus", [True, False])
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 1000))
def test_permutation_invariance_and_batch_independence(plus, seed):
    torch.manual_seed(seed)
    model = PPGN(1 + 2, 8, 2, out_channels=3, plus=plus).double()
    graphs = [nx.gnp_random_graph(n, 0.5, seed=seed + n) for n in (4, 6, 5)]
    xs = [torch.randn(g.number_of_nodes(), 2, dtype=torch.float64) for g in graphs]
    batch = Batch.from_data_list([to_data(g, x) for g, x in zip(graphs, xs)])
    out = model(batch.x, batch.edge_index, batch.batch)
    for b, (g, x) in enumerate(zip(graphs, xs)):
        alone = model(x, to_data(g).edge_index, None)
        torch.testing.assert_close(out[b], alone[0])
        perm = torch.randperm(g.number_of_nodes())
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel())
        # new node i is old node perm[i]
        permuted = model(x[perm], inv[to_data(g).edge_index], None)
        torch.testing.assert_close(permuted[0], alone[0])


def test_gradients_and_shapes():
    model = PPGN(1, 8, 3, out_channels=2)
    d = to_data(nx.cycle_graph(5))
    out = model(None, d.edge_index)
    assert out.shape == (1, 2)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.reset_parameters()
    assert "PPGN++" in repr(model) and "hidden=8" in repr(model)
    assert "PPGN" in repr(PPGN(1, 4, 1, plus=False))


def _rook():
    return nx.cartesian_product(nx.complete_graph(4), nx.complete_graph(4))


def _shrikhande():
    g = nx.Graph()
    for i, j in itertools.product(range(4), repeat=2):
        for di, dj in [(1, 0), (0, 1), (1, 1)]:
            g.add_edge((i, j), ((i + di) % 4, (j + dj) % 4))
    return g


def test_ppgn_cannot_separate_rook_and_shrikhande_but_k4_feature_can():
    torch.manual_seed(0)
    datas = [to_data(_rook()), to_data(_shrikhande())]
    batch = Batch.from_data_list(datas)
    model = PPGN(1, 16, 3, out_channels=4).double()
    dense, mask = to_dense_pairs(None, batch.edge_index, batch.batch)
    out = model.forward_dense(dense.double(), mask)
    torch.testing.assert_close(out[0], out[1])  # 2-FWL bound
    k4 = PolynomialFeatures(6, outputs=("invariant",), select=["ab,ac,ad,bc,bd,cd->"], normalize="log")
    extra, _ = k4(batch.edge_index, batch.batch, as_matrix=True)
    model6 = PPGN(2, 16, 3, out_channels=4).double()
    out6 = model6(None, batch.edge_index, batch.batch, dense_features=extra.double())
    assert (out6[0] - out6[1]).abs().max() > 1e-6


def test_bad_inputs():
    model = PPGN(3, 4, 1)
    d = to_data(nx.path_graph(3), torch.randn(3, 1))
    with pytest.raises(ValueError, match="in_channels=3"):
        model(d.x, d.edge_index)
    with pytest.raises(ValueError, match=r"\[B, n, n, 3\]"):
        model.forward_dense(torch.zeros(1, 3, 4, 3), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_blocks"):
        PPGN(1, 4, 0)


@pytest.mark.parametrize("make", [lambda: PPGN(2, 8, 3, out_channels=2), lambda: PPGNBlock(3, 5)])
def test_reset_parameters_redraws_every_parameter(make):
    """After overwriting every parameter with a constant, reset_parameters redraws each one
    from PyTorch's Linear init: inside +-1/sqrt(fan_in) and no longer constant."""
    model = make()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(7.0)
    model.reset_parameters()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            bound = 1 / module.in_features**0.5
            for p in (module.weight, module.bias):
                assert p.abs().max() <= bound + 1e-7, name
                assert p.numel() == 1 or p.std() > 0, name
    assert all(not (p == 7.0).any() for p in model.parameters())


def test_plus_regression_readout_is_not_a_single_relu_unit():
    """PPGN++ with one output: its readout MLP is hidden wide, so no initialisation leaves a
    dead single ReLU unit with a constant output and zero gradients (a 1-wide hidden layer did,
    for about half of the seeds)."""
    from torch_geometric.utils import erdos_renyi_graph

    torch.manual_seed(0)
    graphs = [Data(x=torch.randn(n, 3, generator=torch.Generator().manual_seed(n)), edge_index=erdos_renyi_graph(n, 0.4))
              for n in (4, 5, 6, 7)]
    batch = Batch.from_data_list(graphs)
    for seed in range(8):
        torch.manual_seed(seed)
        model = PPGN(4, 8, 2, out_channels=1, plus=True)
        out = model(batch.x, batch.edge_index, batch.batch)
        assert out.shape == (4, 1) and out.std() > 0, seed
        out.sum().backward()
        assert model.input_mlp[0].weight.grad.abs().sum() > 0, seed
