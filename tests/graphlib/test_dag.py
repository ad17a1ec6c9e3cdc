import itertools

import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data

from everygraph.graphlib import DAG, CycleError


@st.composite
def random_dags(draw, max_nodes=12):
    """Edges of a random DAG: pairs (i, j), i < j in a hidden permutation, then relabelled."""
    n = draw(st.integers(0, max_nodes))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), max_size=3 * n, unique=True)) if pairs else []
    relabel = draw(st.permutations(range(n)))
    edges = [(relabel[i], relabel[j]) for i, j in chosen]
    return n, edges


def _edge_index(edges):
    return torch.tensor(edges, dtype=torch.long).t().reshape(2, -1)


def networkx_levels(n, edges):
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(edges)
    level = {}
    for v in nx.topological_sort(graph):
        level[v] = max((level[u] + 1 for u in graph.predecessors(v)), default=0)
    return [level[v] for v in range(n)], graph


@settings(max_examples=60, deadline=None)
@given(random_dags())
def test_levels_and_order_match_networkx(dag_edges):
    n, edges = dag_edges
    dag = DAG(_edge_index(edges), n)
    expected, graph = networkx_levels(n, edges)
    assert dag.levels.tolist() == expected
    assert dag.num_levels == (max(expected) + 1 if n else 0)
    order = dag.order.tolist()
    assert sorted(order) == list(range(n))
    position = {v: i for i, v in enumerate(order)}
    assert all(position[u] < position[v] for u, v in edges)
    assert [dag.levels[v] for v in order] == sorted(expected)
    # Nodes of one level are pairwise independent.
    for nodes in dag.level_nodes:
        nodes = nodes.tolist()
        assert all(not graph.has_edge(u, v) for u, v in itertools.permutations(nodes, 2))
    assert dag.in_degree.tolist() == [graph.in_degree(v) for v in range(n)]
    assert dag.out_degree.tolist() == [graph.out_degree(v) for v in range(n)]


@settings(max_examples=40, deadline=None)
@given(random_dags(max_nodes=9))
def test_line_graph_matches_networkx(dag_edges):
    n, edges = dag_edges
    dag = DAG(_edge_index(edges), n)
    line = dag.line_graph()
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(edges)
    expected = {(edges.index(a), edges.index(b)) for a, b in nx.line_graph(graph).edges()}
    got = list(map(tuple, line.edge_index.t().tolist()))
    assert set(got) == expected and len(got) == len(expected)
    src, dst = dag.edge_index
    assert torch.equal(dst[line.edge_index[0]], line.node)
    assert torch.equal(src[line.edge_index[1]], line.node)
    assert got == sorted(got, key=lambda p: (int(dst[p[0]]), p[0], p[1]))


def test_line_graph_with_parallel_edges():
    dag = DAG(torch.tensor([[0, 0, 1], [1, 1, 2]]))
    assert dag.line_graph().edge_index.tolist() == [[0, 1], [2, 2]]


def test_cycle_error_names_a_real_cycle():
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 1, 5, 0]])
    with pytest.raises(CycleError) as info:
        DAG(edge_index)
    cycle = info.value.cycle
    pairs = set(map(tuple, edge_index.t().tolist()))
    assert len(cycle) >= 1
    assert all((cycle[i], cycle[(i + 1) % len(cycle)]) in pairs for i in range(len(cycle)))
    assert "->" in str(info.value) and isinstance(info.value, ValueError)


def test_self_loop_is_a_cycle():
    with pytest.raises(CycleError) as info:
        DAG(torch.tensor([[0, 1], [1, 1]]))
    assert info.value.cycle == [1]


@pytest.mark.parametrize(
    "edge_index, num_nodes, message",
    [
        (torch.tensor([[0, 1], [1, 5]]), 3, "out of range"),
        (torch.tensor([[0, -1], [1, 2]]), 3, "negative"),
        (torch.tensor([0, 1, 2]), 3, "shape"),
        (torch.tensor([[0.0, 1.0], [1.0, 2.0]]), 3, "dtype"),
    ],
)
def test_bad_edge_index(edge_index, num_nodes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        DAG(edge_index, num_nodes)


def test_empty_graphs_and_isolated_nodes():
    empty = DAG(torch.empty(2, 0, dtype=torch.long), 0)
    assert empty.num_levels == 0 and empty.order.numel() == 0 and empty.line_graph().edge_index.shape == (2, 0)
    isolated = DAG(torch.empty(2, 0, dtype=torch.long), 4)
    assert isolated.levels.tolist() == [0, 0, 0, 0] and isolated.num_levels == 1
    assert [t.tolist() for t in isolated.level_nodes] == [[0, 1, 2, 3]]


def test_long_path_is_fast_enough_and_right():
    n = 20000
    edge_index = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
    dag = DAG(edge_index, n)
    assert dag.num_levels == n and torch.equal(dag.levels, torch.arange(n))


def test_reverse_and_batch():
    g1 = Data(edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3)
    g2 = Data(edge_index=torch.tensor([[1], [0]]), num_nodes=2)
    batch = Batch.from_data_list([g1, g2])
    dag = DAG.from_data(batch)
    assert dag.num_graphs == 2 and dag.ptr.tolist() == [0, 3, 5] and dag.batch.tolist() == [0, 0, 0, 1, 1]
    assert dag.levels.tolist() == [0, 1, 2, 1, 0]
    rev = dag.reverse()
    assert rev.levels.tolist() == [2, 1, 0, 0, 1] and rev.num_graphs == 2
    assert torch.equal(rev.edge_index, dag.edge_index.flip(0))


def test_to_networkx():
    dag = DAG(torch.tensor([[0, 0, 1], [1, 2, 2]]))
    graph = dag.to_networkx()
    assert sorted(graph.edges()) == [(0, 1), (0, 2), (1, 2)] and nx.is_directed_acyclic_graph(graph)
