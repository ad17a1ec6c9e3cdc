import networkx as nx
import torch
from torch_geometric.data import Data

from everygraph.graphlib import from_networkx, to_networkx


def test_round_trip_keeps_node_edge_and_graph_attributes():
    data = Data(
        x=torch.randn(4, 3),
        edge_index=torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]]),
        edge_attr=torch.randn(4, 2),
        edge_type=torch.tensor([0, 1, 1, 0]),
        y=torch.tensor([2.5]),
        num_nodes=4,
    )
    graph = to_networkx(data)
    assert graph.nodes[1]["x"] == data.x[1].tolist()
    assert graph.edges[2, 3]["edge_attr"] == data.edge_attr[2].tolist() and graph.edges[2, 3]["edge_type"] == 1
    back = from_networkx(graph)
    assert torch.equal(back.edge_index, data.edge_index)
    for key in ("x", "edge_attr", "edge_type", "y"):
        assert torch.equal(back[key], data[key]), key


def test_from_undirected_networkx_gives_both_directions():
    graph = nx.path_graph(3)
    nx.set_node_attributes(graph, {0: 1.0, 1: 2.0, 2: 3.0}, "weight")
    nx.set_edge_attributes(graph, {(0, 1): 5, (1, 2): 7}, "kind")
    data = from_networkx(graph)
    pairs = list(map(tuple, data.edge_index.t().tolist()))
    assert sorted(pairs) == [(0, 1), (1, 0), (1, 2), (2, 1)]
    assert data.weight.tolist() == [1.0, 2.0, 3.0]
    kinds = dict(zip(pairs, data.kind.tolist()))
    assert kinds[(1, 0)] == kinds[(0, 1)] == 5 and kinds[(2, 1)] == 7
    again = to_networkx(data, undirected=True)
    assert nx.utils.graphs_equal(nx.Graph(again.edges()), nx.Graph(graph.edges()))


def test_tensor_attributes_keep_their_dtype():
    graph = nx.DiGraph()
    graph.add_node(0, h=torch.tensor([1.0], dtype=torch.float64))
    graph.add_node(1, h=torch.tensor([2.0], dtype=torch.float64))
    graph.add_edge(0, 1)
    assert from_networkx(graph).h.dtype == torch.float64
