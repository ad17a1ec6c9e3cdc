"""GraphMamba: per-graph results independent of the batch, the node order it claims (checked
with networkx degrees), packed scans without padding, gradients, bad inputs."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import from_networkx

from everygraph.graphlib import node_order
from everygraph.nn import GraphMamba, Mamba

F64 = torch.float64


def graph(nx_graph, channels=8, seed=0):
    data = from_networkx(nx_graph)
    data.x = torch.randn(nx_graph.number_of_nodes(), channels, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return Data(x=data.x, edge_index=data.edge_index)


GRAPHS = [nx.path_graph(6), nx.cycle_graph(5), nx.star_graph(4), nx.petersen_graph(), nx.complete_graph(3)]


@pytest.mark.parametrize("eval_orders", [1, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_graph_output_unchanged_when_other_graphs_join(eval_orders, bidirectional):
    layer = GraphMamba(8, d_state=4, eval_orders=eval_orders, bidirectional=bidirectional).double().eval()
    target = graph(nx.petersen_graph(), seed=1)
    alone = layer(target.x, target.edge_index)
    others = [graph(g, seed=i + 10) for i, g in enumerate(GRAPHS)]
    batch = Batch.from_data_list(others[:2] + [target] + others[2:])
    out = layer(batch.x, batch.edge_index, batch.batch)
    lo, hi = int(batch.ptr[2]), int(batch.ptr[3])
    torch.testing.assert_close(out[lo:hi], alone)
    for k, other in zip([0, 1, 3, 4, 5, 6], others):
        a, b = int(batch.ptr[k]), int(batch.ptr[k + 1])
        torch.testing.assert_close(out[a:b], layer(other.x, other.edge_index))


def test_global_branch_scans_nodes_in_degree_order():
    """With no local branch, the layer is norm(h + ffn(h)) with h = norm(x + scan over the nodes
    sorted by (networkx degree, node id)), scattered back."""
    g = nx.Graph([(0, 1), (1, 2), (2, 3), (3, 0), (0, 4), (4, 5), (0, 6)])  # degrees 4,2,2,2,2,1,1
    data = graph(g)
    layer = GraphMamba(8, local=None, d_state=4).double().eval()
    order = sorted(g.nodes, key=lambda v: (g.degree[v], v))
    assert order[:2] == [5, 6] and order[-1] == 0
    seq = layer.mamba(data.x[order].unsqueeze(0)).squeeze(0)
    h_global = torch.empty_like(seq)
    h_global[order] = seq
    h = layer.norm_global(data.x + h_global)
    want = layer.norm_out(h + layer.ffn(h))
    torch.testing.assert_close(layer(data.x, data.edge_index), want)
    # a given order replaces the degree order
    given = torch.randperm(7)
    seq = layer.mamba(data.x[given].unsqueeze(0)).squeeze(0)
    h_global[given] = seq
    h = layer.norm_global(data.x + h_global)
    torch.testing.assert_close(layer(data.x, data.edge_index, order=given), layer.norm_out(h + layer.ffn(h)))


def test_packed_scan_equals_padding_free_per_graph_scan():
    """The global branch for a batch equals Mamba run on each graph's sequence separately."""
    layer = GraphMamba(8, local=None, d_state=4).double().eval()
    graphs = [graph(g, seed=i) for i, g in enumerate(GRAPHS)]
    batch = Batch.from_data_list(graphs)
    perm = node_order(batch.edge_index, batch.num_nodes, layer.order, batch=batch.batch)
    packed = layer._global(batch.x, perm, batch.ptr)
    for k, data in enumerate(graphs):
        lo, hi = int(batch.ptr[k]), int(batch.ptr[k + 1])
        local_perm = perm[lo:hi] - lo
        seq = layer.mamba(data.x[local_perm].unsqueeze(0)).squeeze(0)
        want = torch.empty_like(seq)
        want[local_perm] = seq
        torch.testing.assert_close(packed[lo:hi], want)


def test_training_breaks_ties_randomly_evaluation_does_not():
    layer = GraphMamba(8, d_state=4).double()
    data = graph(nx.cycle_graph(8))  # all degrees equal: the order is all tie-breaking
    layer.eval()
    torch.testing.assert_close(layer(data.x, data.edge_index), layer(data.x, data.edge_index))
    layer.train()
    torch.manual_seed(0)
    first = layer(data.x, data.edge_index)
    second = layer(data.x, data.edge_index)
    assert not torch.allclose(first, second)
    torch.manual_seed(0)
    torch.testing.assert_close(layer(data.x, data.edge_index), first)  # seeded by torch's RNG


def test_gradients_and_repr():
    layer = GraphMamba(8, d_state=4, bidirectional=True)
    batch = Batch.from_data_list([graph(g, seed=i) for i, g in enumerate(GRAPHS)])
    layer(batch.x.float(), batch.edge_index, batch.batch).square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert "GraphMamba(8" in repr(layer) and "GINConv" in repr(layer)
    assert isinstance(layer.mamba, Mamba)


def test_bad_inputs():
    layer = GraphMamba(8, d_state=4)
    with pytest.raises(ValueError, match=r"channels=8.*\[5, 7\]"):
        layer(torch.randn(5, 7), torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match=r"\[5\].*\[4\]"):
        layer(torch.randn(5, 8), torch.tensor([[0], [1]]), batch=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="order must be"):
        GraphMamba(8, order="random")


def test_eval_orders_averages_the_global_branch_over_k_seeded_orders():
    """At evaluation, ``eval_orders=k`` is norm_out(h + ffn(h)) with h = norm_global(x + the mean,
    over the k orders node_order(..., seed=s), s = 0..k-1, of the scan scattered back)."""
    g = nx.cycle_graph(8)  # every degree ties: each seed gives its own order
    data = graph(g, seed=3)
    k = 3
    layer = GraphMamba(8, local=None, d_state=4, eval_orders=k).double().eval()
    perms = [node_order(data.edge_index, 8, "degree", seed=s) for s in range(k)]
    assert len({tuple(p.tolist()) for p in perms}) == k
    scans = []
    for perm in perms:
        seq = layer.mamba(data.x[perm].unsqueeze(0)).squeeze(0)
        back = torch.empty_like(seq)
        back[perm] = seq
        scans.append(back)
    h = layer.norm_global(data.x + sum(scans) / k)
    want = layer.norm_out(h + layer.ffn(h))
    torch.testing.assert_close(layer(data.x, data.edge_index), want, rtol=1e-10, atol=1e-10)
    # and it is not the single deterministic order
    layer.eval_orders = 1
    assert not torch.allclose(layer(data.x, data.edge_index), want, atol=1e-6)
