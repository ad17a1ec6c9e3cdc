"""GraphMamba(scan="dag"): batch independence, permutation equivariance exactly when the
relabelling keeps every edge's orientation, gradients, the default scan untouched."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from torch_geometric.data import Batch, Data

from everygraph.nn import GraphMamba

F64 = torch.float64


def graph(nx_graph, channels=8, seed=0):
    nx_graph = nx.convert_node_labels_to_integers(nx_graph)
    edges = torch.tensor(list(nx_graph.edges), dtype=torch.long).view(-1, 2).t()
    data = Data(edge_index=torch.cat([edges, edges.flip(0)], dim=1))
    x = torch.randn(nx_graph.number_of_nodes(), channels, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return Data(x=x, edge_index=data.edge_index)


def relabel(data, sigma):
    """Node i becomes sigma[i]."""
    x = torch.empty_like(data.x)
    x[sigma] = data.x
    return Data(x=x, edge_index=sigma[data.edge_index])


def layer(seed=0, **kwargs):
    torch.manual_seed(seed)
    return GraphMamba(8, d_state=4, scan="dag", **kwargs).double().eval()


def test_graph_output_unchanged_when_other_graphs_join():
    model = layer()
    graphs = [graph(g, seed=i) for i, g in enumerate([nx.petersen_graph(), nx.path_graph(5), nx.cycle_graph(4),
                                                      nx.complete_graph(1), nx.star_graph(3)])]
    batch = Batch.from_data_list(graphs)
    out = model(batch.x, batch.edge_index, batch.batch)
    for k, g in enumerate(graphs):
        torch.testing.assert_close(out[int(batch.ptr[k]):int(batch.ptr[k + 1])], model(g.x, g.edge_index))


def test_equivariant_when_the_order_moves_with_the_nodes():
    model = layer(1)
    data = graph(nx.gnm_random_graph(12, 20, seed=3))
    order = torch.randperm(12, generator=torch.Generator().manual_seed(4))
    out = model(data.x, data.edge_index, order=order)
    for seed in range(3):
        sigma = torch.randperm(12, generator=torch.Generator().manual_seed(seed))
        moved = relabel(data, sigma)
        torch.testing.assert_close(model(moved.x, moved.edge_index, order=sigma[order])[sigma], out)


def test_degree_order_is_equivariant_when_no_edge_joins_equal_degrees():
    """K_{2,4} plus a pendant path: every edge joins two different degrees, so the degree order
    orients every edge the same way whatever the labels (ties broken by id never matter)."""
    g = nx.complete_bipartite_graph(2, 4)
    g.add_edges_from([(0, 6), (6, 7)])  # degrees: 0 -> 5, 6 -> 2, 7 -> 1
    assert all(g.degree[u] != g.degree[v] for u, v in g.edges)
    model = layer(2)
    data = graph(g)
    out = model(data.x, data.edge_index)
    sigma = torch.randperm(8, generator=torch.Generator().manual_seed(5))
    moved = relabel(data, sigma)
    torch.testing.assert_close(model(moved.x, moved.edge_index)[sigma], out)


def test_not_equivariant_when_relabelling_flips_an_edge():
    """A cycle (all degrees equal): ties broken by node id orient edges by the labels."""
    model = layer(3, local=None)
    data = graph(nx.cycle_graph(6))
    sigma = torch.tensor([3, 0, 4, 1, 5, 2])
    moved = relabel(data, sigma)
    assert not torch.allclose(model(moved.x, moved.edge_index)[sigma], model(data.x, data.edge_index))


def test_gradients_training_mode_and_bad_scan():
    model = GraphMamba(8, d_state=4, scan="dag")
    data = graph(nx.petersen_graph())
    model(data.x.float(), data.edge_index).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    assert "scan='dag'" in repr(model)
    with pytest.raises(ValueError, match="scan must be"):
        GraphMamba(8, scan="tree")
    assert GraphMamba(8).scan == "sequence"
