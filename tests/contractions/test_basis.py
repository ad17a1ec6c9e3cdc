"""Basis enumeration: counts against the table of Puny et al. (2023) and OEIS, and structural checks."""

import networkx as nx
import pytest

from everygraph.contractions import Pattern, basis
import importlib
from everygraph.contractions.basis import connected_patterns

basis_module = importlib.import_module("everygraph.contractions.basis")

# Puny et al. 2023, their table: degrees 0..4 (edge = a != b plus a = b).
TABLE = {
    ("general", "invariant"): [1, 2, 11, 52, 296],
    ("general", "node"): [1, 5, 32, 199, 1323],
    ("general", "edge"): [2, 15, 117, 877, 6719],
    ("symmetric", "invariant"): [1, 2, 7, 23, 79],
    ("symmetric", "node"): [1, 4, 17, 69, 281],
    ("symmetric", "edge"): [2, 11, 56, 266, 1238],
    ("simple", "invariant"): [1, 1, 2, 5, 11],
    ("simple", "node"): [1, 2, 5, 14, 38],
    ("simple", "edge"): [2, 6, 18, 57, 179],
}


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EVERYGRAPH_CACHE_DIR", str(tmp_path))
    basis_module._basis_cached.cache_clear()
    yield
    basis_module._basis_cached.cache_clear()


@pytest.mark.parametrize("domain,output", list(TABLE))
def test_counts_match_table(domain, output):
    assert [len(basis(d, output, domain)) for d in range(5)] == TABLE[(domain, output)]


def test_oeis_a000664_and_bell_numbers():
    # graphs with d edges and no isolated vertex: 1, 1, 2, 5, 11, 26, 68
    assert [len(basis(d, "invariant", "simple")) for d in range(7)] == [1, 1, 2, 5, 11, 26, 68]
    # degree <= 1 on general inputs: Bell numbers B(0)+B(2)=1+1... sizes of linear layers 1,1,2 / 2,5,15
    assert len(basis(1, "invariant", "general", exact=False)) == 1 + 2
    assert [len(basis(1, o, "general")) for o in ("invariant", "node", "edge")] == [2, 5, 15]


def test_connected_simple_graph_counts_oeis_a002905():
    # connected graphs with d edges: 1, 1, 3, 5, 12, 30, 79 (d = 1..7)
    assert [len(connected_patterns(d, "invariant")) for d in range(1, 8)] == [1, 1, 3, 5, 12, 30, 79]


@pytest.mark.parametrize("domain", ["simple", "symmetric", "general"])
def test_elements_distinct_and_well_formed(domain):
    rules = {"simple": (False, False, False), "symmetric": (False, True, True), "general": (True, True, True)}
    directed, loops, parallel = rules[domain]
    for output in ("invariant", "node", "edge"):
        for d in range(4):
            els = basis(d, output, domain)
            assert len(set(els)) == len(els)
            for p in els:
                assert p.degree == d and p.output == output and p.directed == directed
                if not loops:
                    assert all(u != v for u, v in p.edges)
                if not parallel:
                    assert len(set(p.edges)) == len(p.edges)
                # no isolated non-special vertex
                assert set(p.isolated_vertices) <= set(p.special)


def test_simple_invariants_match_networkx_isomorphism_classes():
    # independent check: all graphs without isolated vertices and 4 edges from the atlas
    atlas = [g for g in nx.graph_atlas_g() if g.number_of_edges() == 4 and min(dict(g.degree).values(), default=1) > 0]
    classes = []
    for g in atlas:
        if not any(nx.is_isomorphic(g, h) for h in classes):
            classes.append(g)
    # the atlas stops at 7 nodes, so 4 K_2 (8 nodes) is the one element it cannot hold
    ours = [p for p in basis(4, "invariant", "simple") if p.num_vertices <= 7]
    assert len(basis(4, "invariant", "simple")) == len(ours) + 1
    assert len(ours) == len(classes)
    for p in ours:
        g = nx.Graph(p.to_networkx())
        assert sum(nx.is_isomorphic(g, h) for h in classes) == 1


def test_node_basis_by_brute_force_isomorphism():
    # independent: rooted graphs with 3 edges, dedup by networkx isomorphism with root marked
    found = []
    for p in basis(3, "node", "simple"):
        g = p.to_networkx()
        for h in found:
            assert not nx.is_isomorphic(
                g, h, node_match=lambda a, b: a["special"] == b["special"]
            )
        found.append(g)
    assert len(found) == 14


def test_exact_false_and_order_deterministic(tmp_path, monkeypatch):
    a = basis(3, "edge", "symmetric", exact=False)
    assert [p.degree for p in a] == sorted(p.degree for p in a)
    assert len(a) == sum(TABLE[("symmetric", "edge")][:4])
    basis_module._basis_cached.cache_clear()
    b = basis(3, "edge", "symmetric", exact=False)  # now read from the disk cache
    assert [p.to_string() for p in a] == [p.to_string() for p in b]
    assert any(tmp_path.iterdir())


def test_degree6_simple_and_connected_degree7():
    counts = [len(basis(6, o, "simple")) for o in ("invariant", "node", "edge")]
    assert counts[0] == 68
    conn = basis(7, "edge", "simple", connected_only=True)
    assert all(p.is_connected for p in conn)
    # the diagonal ones are the connected node patterns
    assert sum(p.is_diagonal for p in conn) == len(basis(7, "node", "simple", connected_only=True))


def test_bad_arguments():
    with pytest.raises(ValueError, match="domain"):
        basis(2, "node", "directed")
    with pytest.raises(ValueError, match="output"):
        basis(2, "graph")
    with pytest.raises(ValueError, match="degree"):
        basis(-1)


def test_edge_basis_pairs_are_ordered():
    # the path a-b plus its reversed orientation are one element only if isomorphic: "ab->ab" vs "ab->ba"
    assert Pattern.from_string("ab->ab") == Pattern.from_string("ab->ba")
    assert Pattern.from_string("ac,b->ab") != Pattern.from_string("bc,a->ab")
    els = basis(1, "edge", "simple")
    assert Pattern.from_string("ac,b->ab") in els and Pattern.from_string("bc,a->ab") in els
    assert Pattern.from_string("ab->aa") in els and Pattern.from_string("a,bc->aa") in els
