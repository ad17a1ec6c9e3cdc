import networkx as nx
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from everygraph.graphlib import DAG, Lattice, prune_to_multitree


def path_counts(num_nodes, edges):
    """Number of directed paths between every ordered pair, by brute-force DFS."""
    successors = {v: [] for v in range(num_nodes)}
    for u, v in edges:
        successors[u].append(v)

    def count(u, target):
        return (u == target) + sum(count(w, target) for w in successors[u])

    return {(a, b): count(a, b) for a in range(num_nodes) for b in range(num_nodes) if a != b}


def assert_maximal_multitree(dag):
    line = dag.line_graph()
    keep = prune_to_multitree(dag)
    pairs = list(map(tuple, line.edge_index.t().tolist()))
    kept = [p for p, k in zip(pairs, keep.tolist()) if k]
    counts = path_counts(dag.num_edges, kept)
    assert max(counts.values(), default=0) <= 1
    for p, k in zip(pairs, keep.tolist()):
        if not k:  # maximal: putting any dropped transition back makes a second path
            assert max(path_counts(dag.num_edges, kept + [p]).values()) >= 2
    return keep


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 7), st.data())
def test_random_dags_prune_to_maximal_multitrees(n, data):
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    edges = data.draw(st.lists(st.sampled_from(pairs), max_size=2 * n, unique=True))
    dag = DAG(torch.tensor(edges, dtype=torch.long).t().reshape(2, -1), n)
    assert_maximal_multitree(dag)


def test_lattice_and_diamond():
    keep = assert_maximal_multitree(Lattice((3, 4)).to_dag())
    assert 0 < int(keep.sum()) < keep.numel()
    # A diamond 0->1->3, 0->2->3 with 3->4: edges into 3 share an ancestor edge? No: the
    # line graph has no path between 0->1 and 0->2, so both transitions into 3->4 stay.
    diamond = DAG(torch.tensor([[0, 0, 1, 2, 3], [1, 2, 3, 3, 4]]))
    assert prune_to_multitree(diamond).all()
    # A node with in-edges a, b sharing an ancestor edge e, both continuing to c: one goes.
    fork = DAG(torch.tensor([[0, 1, 1, 2, 3, 4], [1, 2, 3, 4, 4, 5]]))
    keep = assert_maximal_multitree(fork)
    assert int(keep.sum()) == keep.numel() - 1


def test_a_tree_is_left_alone():
    tree = nx.bfs_tree(nx.balanced_tree(2, 3), 0)
    dag = DAG(torch.tensor(list(tree.edges()), dtype=torch.long).t())
    assert prune_to_multitree(dag).all()


def test_empty():
    assert prune_to_multitree(DAG(torch.empty(2, 0, dtype=torch.long), 3)).numel() == 0
