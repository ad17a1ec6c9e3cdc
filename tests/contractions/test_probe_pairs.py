"""The probe's pair generators and the theory column, against independent references:
networkx isomorphism and WL hashes, strongly-regular parameters counted directly, a small 2-FWL
colour refinement written here, and homomorphism counts by brute force over all maps."""

import itertools

import networkx as nx
import numpy as np
import pytest

from everygraph.contractions import get_model
from everygraph.contractions.probe import (
    DEFAULT_MODEL_CLASSES,
    available_model_classes,
    cfi_graph,
    cfi_pairs,
    generate_pairs,
    hom_counts,
    pair_theory,
    find_single_pattern_pairs,
    pattern_name,
    probe_patterns,
    regular_pairs,
    single_pattern_pairs,
    strongly_regular_pairs,
)
from everygraph.graphlib import rook_graph, shrikhande_graph


# ----------------------------------------------------------------------------- references
def brute_hom(pattern_edges, num_vertices, graph: nx.Graph) -> int:
    """hom(H, G) by trying every map V(H) -> V(G) (vectorised over all but the first vertex)."""
    adj = nx.to_numpy_array(graph, nodelist=sorted(graph)).astype(bool)
    n = adj.shape[0]
    if num_vertices == 1:
        return n
    rest = np.array(list(itertools.product(range(n), repeat=num_vertices - 1)), dtype=np.int64).reshape(-1, num_vertices - 1)
    total = 0
    for first in range(n):
        maps = np.concatenate([np.full((len(rest), 1), first), rest], 1)
        ok = np.ones(len(maps), dtype=bool)
        for u, v in pattern_edges:
            ok &= adj[maps[:, u], maps[:, v]]
        total += int(ok.sum())
    return total


def two_fwl_histograms(g: nx.Graph, h: nx.Graph, rounds: int = 10) -> bool:
    """True iff 2-FWL colour refinement gives g and h the same colour histogram every round
    (a shared colour table so colours compare across the two graphs)."""
    mats = [nx.to_numpy_array(x, nodelist=sorted(x)).astype(int) for x in (g, h)]
    if mats[0].shape != mats[1].shape:
        return False
    colours = [[[(int(u == v), int(a[u, v])) for v in range(len(a))] for u in range(len(a))] for a in mats]
    for _ in range(rounds):
        table: dict = {}
        new = []
        for col in colours:
            n = len(col)
            sig = [[(col[u][v], tuple(sorted((col[u][w], col[w][v]) for w in range(n)))) for v in range(n)] for u in range(n)]
            new.append([[table.setdefault(s, len(table)) for s in row] for row in sig])
        hist = [sorted(c for row in col for c in row) for col in new]
        if hist[0] != hist[1]:
            return False
        if len(set(c for row in new[0] for c in row)) == len(set(c for row in colours[0] for c in row)) and _ > 0:
            break
        colours = new
    return True


def srg_parameters(g: nx.Graph):
    degrees = {d for _, d in g.degree()}
    adjacent = {len(set(g[u]) & set(g[v])) for u, v in g.edges}
    apart = {len(set(g[u]) & set(g[v])) for u, v in itertools.combinations(g, 2) if not g.has_edge(u, v)}
    assert len(degrees) == len(adjacent) == len(apart) == 1, "not strongly regular"
    return g.number_of_nodes(), degrees.pop(), adjacent.pop(), apart.pop()


def four_cliques(g: nx.Graph) -> int:
    return sum(1 for c in nx.enumerate_all_cliques(g) if len(c) == 4)


K4_EDGES = list(itertools.combinations(range(4), 2))


# ----------------------------------------------------------------------------- generators
def test_regular_pairs_are_1wl_equivalent_and_not_isomorphic():
    pairs = regular_pairs()
    assert len(pairs) >= 5
    for p in pairs:
        assert not nx.is_isomorphic(p.first, p.second), p.name
        d1 = {d for _, d in p.first.degree()}
        assert len(d1) == 1 and d1 == {d for _, d in p.second.degree()}, p.name
        assert nx.weisfeiler_lehman_graph_hash(p.first, iterations=6) == nx.weisfeiler_lehman_graph_hash(p.second, iterations=6)


def test_strongly_regular_pairs_share_parameters_and_differ():
    pairs = strongly_regular_pairs()
    assert len(pairs) >= 5
    for p in pairs:
        assert srg_parameters(p.first) == srg_parameters(p.second), p.name
        # different numbers of 4-cliques: not isomorphic (cheaper than VF2 on these)
        assert four_cliques(p.first) != four_cliques(p.second), p.name
    rook = next(p for p in pairs if p.name.startswith("rook"))
    assert nx.is_isomorphic(rook.first, rook_graph()) and nx.is_isomorphic(rook.second, shrikhande_graph())


def test_rook_shrikhande_is_1wl_and_2fwl_equivalent():
    g, h = rook_graph(), shrikhande_graph()
    assert nx.weisfeiler_lehman_graph_hash(g, iterations=5) == nx.weisfeiler_lehman_graph_hash(h, iterations=5)
    assert two_fwl_histograms(g, h)
    # the refinement itself tells C6 from two triangles (so the check above can fail)
    assert not two_fwl_histograms(nx.cycle_graph(6), nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3)))


def test_cfi_compact_over_k3_and_k4_are_the_classic_pairs():
    two_c3, c6 = cfi_graph(nx.complete_graph(3)), cfi_graph(nx.complete_graph(3), twisted=True)
    assert nx.is_isomorphic(c6, nx.cycle_graph(6))
    assert nx.is_isomorphic(two_c3, nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3)))
    x, y = cfi_graph(nx.complete_graph(4)), cfi_graph(nx.complete_graph(4), twisted=True)
    assert nx.is_isomorphic(x, rook_graph()) and nx.is_isomorphic(y, shrikhande_graph())


def test_cfi_k4_not_2fwl_separated_but_separated_by_k4():
    x, y = cfi_graph(nx.complete_graph(4)), cfi_graph(nx.complete_graph(4), twisted=True)
    assert two_fwl_histograms(x, y)
    # treewidth-2 patterns by brute force: equal; K4 (treewidth 3): different
    for edges, k in [([(0, 1), (1, 2), (0, 2)], 3), ([(0, 1), (1, 2), (2, 3), (0, 3)], 4),
                     ([(0, 1), (1, 2), (0, 2), (1, 3), (2, 3)], 4), ([(0, 1), (1, 2), (2, 3), (3, 4), (0, 4)], 5)]:
        assert brute_hom(edges, k, x) == brute_hom(edges, k, y)
    assert brute_hom(K4_EDGES, 4, x) != brute_hom(K4_EDGES, 4, y)
    # and the theory column agrees: no class below 3-FWL, with K4 as 3-FWL's witness
    (theory,) = pair_theory([next(p for p in cfi_pairs() if p.name == "CFI(K4)")], degree=6)
    assert not theory.separates("mpnn") and not theory.separates("subgraph") and not theory.separates("ppgn")
    assert theory.separates("3fwl") and theory.predictions["3fwl"].witness.degree == 6
    assert theory.predictions["3fwl"].counts == (brute_hom(K4_EDGES, 4, x), brute_hom(K4_EDGES, 4, y))


def test_cfi_original_gadgets_not_isomorphic_and_2fwl_equivalent():
    x = cfi_graph(nx.complete_graph(4), compact=False)
    y = cfi_graph(nx.complete_graph(4), twisted=True, compact=False)
    assert x.number_of_nodes() == 40 and y.number_of_nodes() == 40
    assert two_fwl_histograms(x, y, rounds=4)
    z = cfi_graph(nx.complete_graph(3), compact=False)
    w = cfi_graph(nx.complete_graph(3), twisted=True, compact=False)
    assert not nx.is_isomorphic(z, w)
    assert not two_fwl_histograms(z, w)  # treewidth-2 base: 2-FWL separates


def test_cfi_pairs_not_isomorphic_and_refuse_trees():
    for p in cfi_pairs():
        if p.first.number_of_nodes() <= 16:
            assert not nx.is_isomorphic(p.first, p.second), p.name
    with pytest.raises(ValueError, match="tree"):
        cfi_pairs({"path": nx.path_graph(4)})
    with pytest.raises(ValueError, match="connected"):
        cfi_graph(nx.empty_graph(3))


def test_search_finds_pairs_separated_by_one_pattern():
    from networkx.generators.atlas import graph_atlas_g

    candidates = [g for g in graph_atlas_g() if g.number_of_nodes() == 6]
    candidates += [g for p in regular_pairs() for g in (p.first, p.second)]
    pairs = find_single_pattern_pairs(candidates, max_degree=4)
    assert "only triangle" in {p.name for p in pairs}
    for p in pairs:
        (theory,) = pair_theory([p], degree=4)
        smallest = theory.differing[0]
        lower = [q for q in probe_patterns(4) if q.degree <= smallest.degree]
        differ = [q for q in lower if brute_hom(q.edges, q.num_vertices, p.first) != brute_hom(q.edges, q.num_vertices, p.second)]
        assert differ == [smallest], (p.name, differ)


@pytest.mark.slow
def test_single_pattern_pairs_differ_on_exactly_one_pattern_by_brute_force():
    pairs = single_pattern_pairs(6)
    names = {p.name for p in pairs}
    assert {"only triangle", "only C4", "only K4"} <= names
    patterns = probe_patterns(6)
    for p in pairs:
        n = p.first.number_of_nodes()
        (theory,) = pair_theory([p], degree=6)
        smallest = theory.differing[0]
        assert p.name == "only " + pattern_name(smallest)
        # brute force: every smaller connected pattern agrees, exactly one of this size differs
        # (patterns with many vertices are skipped on the larger graphs to keep the test short)
        most = 6 if n <= 8 else 5 if n <= 12 else 4
        differ = []
        for q in patterns:
            if q.degree > smallest.degree or (q.num_vertices > most and q != smallest):
                continue
            a, b = (brute_hom(q.edges, q.num_vertices, g) for g in (p.first, p.second))
            if a != b:
                differ.append(q)
        assert differ == [smallest], (p.name, differ)


def test_generate_pairs_and_families():
    pairs = generate_pairs(["regular", "cfi"])
    assert [p.family for p in pairs] == ["regular"] * len(regular_pairs()) + ["cfi"] * len(cfi_pairs())
    with pytest.raises(ValueError, match="families"):
        generate_pairs(["no-such-family"])


# ----------------------------------------------------------------------------- theory
def test_hom_counts_match_brute_force():
    graphs = [nx.petersen_graph(), nx.complete_graph(5), nx.path_graph(4), nx.empty_graph(2)]
    counts = hom_counts(graphs, 4)
    for j, q in enumerate(probe_patterns(4)):
        for i, g in enumerate(graphs):
            assert counts[i, j] == brute_hom(q.edges, q.num_vertices, g), (str(q), i)


def test_theory_is_monotone_along_the_hierarchy_and_matches_wl():
    pairs = regular_pairs() + strongly_regular_pairs()
    for t in pair_theory(pairs, degree=6):
        # the hierarchy of Zhang et al. (2024), with the local 2-GNNs where the zoo has them
        order = [c for c in ("mpnn", "subgraph", "local_2gnn", "local_2fgnn", "ppgn", "3fwl") if c in t.predictions]
        flags = [t.separates(c) for c in order]
        assert flags == sorted(flags), (t.pair.name, flags)  # weaker classes never separate more
        assert not t.separates("mpnn")  # 1-WL equivalent (checked by networkx above)
        if t.pair.family == "strongly regular":
            assert not t.separates("ppgn") and t.separates("3fwl")
        else:
            assert t.separates("subgraph")


def test_model_classes_are_data():
    names = available_model_classes()
    assert names == [n for n in DEFAULT_MODEL_CLASSES if _known(n)]
    assert {"mpnn", "subgraph", "ppgn", "3fwl"} <= set(names)
    (t,) = pair_theory(regular_pairs()[:1], degree=3)
    assert list(t.predictions) == names
    with pytest.raises(ValueError, match="model_classes"):
        available_model_classes(["mpnn", "no-such-model"])


def _known(name: str) -> bool:
    try:
        get_model(name)
    except ValueError:
        return False
    return True
