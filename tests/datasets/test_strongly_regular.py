"""rook_graph and shrikhande_graph: strongly regular (16, 6, 2, 2), not isomorphic, told apart
by their 4-cliques."""

import itertools

import networkx as nx
import pytest

from everygraph.datasets import rook_graph, shrikhande_graph


def strongly_regular_parameters(g: nx.Graph) -> tuple[int, int, int, int]:
    degrees = {d for _, d in g.degree()}
    adjacent = {len(set(g[u]) & set(g[v])) for u, v in itertools.combinations(g, 2) if g.has_edge(u, v)}
    apart = {len(set(g[u]) & set(g[v])) for u, v in itertools.combinations(g, 2) if not g.has_edge(u, v)}
    assert len(degrees) == len(adjacent) == len(apart) == 1, "not strongly regular"
    return g.number_of_nodes(), degrees.pop(), adjacent.pop(), apart.pop()


def test_both_strongly_regular_16_6_2_2():
    assert strongly_regular_parameters(rook_graph()) == (16, 6, 2, 2)
    assert strongly_regular_parameters(shrikhande_graph()) == (16, 6, 2, 2)


def test_rook_graph_is_the_product_of_complete_graphs():
    for size in (1, 2, 3, 5):
        product = nx.cartesian_product(nx.complete_graph(size), nx.complete_graph(size))
        assert nx.is_isomorphic(rook_graph(size), product)


def test_not_isomorphic_and_k4_count_separates():
    rook, shrikhande = rook_graph(), shrikhande_graph()
    assert not nx.is_isomorphic(rook, shrikhande)

    def k4s(g):
        return sum(1 for c in nx.enumerate_all_cliques(g) if len(c) == 4)

    assert (k4s(rook), k4s(shrikhande)) == (8, 0)


def test_bad_size():
    with pytest.raises(ValueError, match="size >= 1"):
        rook_graph(0)
