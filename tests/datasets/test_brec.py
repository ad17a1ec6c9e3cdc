"""The BREC loader on graph6 files written here with networkx, in each published format."""

import networkx as nx
import numpy as np
import pytest

from everygraph.datasets import BREC, BREC_CATEGORIES


def some_pairs():
    return [
        (nx.cycle_graph(6), nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))),
        (nx.complete_bipartite_graph(3, 3), nx.circular_ladder_graph(3)),
        (nx.petersen_graph(), nx.circulant_graph(10, [1, 3])),
    ]


def g6(graph: nx.Graph) -> bytes:
    return nx.to_graph6_bytes(graph, header=False).strip()


def same_graph(data, graph: nx.Graph) -> bool:
    edges = {tuple(sorted(e)) for e in data.edge_index.t().tolist()}
    return data.num_nodes == graph.number_of_nodes() and edges == {tuple(sorted(e)) for e in graph.edges}


def write(root, name, payload):
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    if name.endswith(".npy"):
        np.save(raw / name, payload)
    else:
        (raw / name).write_bytes(payload)


def check_pairs(dataset, pairs):
    assert dataset.num_pairs == len(pairs)
    for i, (a, b) in enumerate(pairs):
        first, second = dataset[2 * i], dataset[2 * i + 1]
        assert int(first.pair) == int(second.pair) == i and int(first.side) == 0 and int(second.side) == 1
        assert same_graph(first, a) and same_graph(second, b)
        assert first.x.shape == (a.number_of_nodes(), 1)
    for pair, (a, b) in zip(dataset.pairs(), pairs):
        assert {tuple(sorted(e)) for e in pair.first.edges} == {tuple(sorted(e)) for e in a.edges}
        assert nx.is_isomorphic(pair.second, b) and pair.family == "brec"


def test_flat_npy_of_strings(tmp_path):
    pairs = some_pairs()
    write(tmp_path, "basic.npy", np.array([g6(g).decode() for p in pairs for g in p]))
    check_pairs(BREC(str(tmp_path), name="basic"), pairs)


def test_paired_npy_of_bytes(tmp_path):
    pairs = some_pairs()
    write(tmp_path, "regular.npy", np.array([[g6(a), g6(b)] for a, b in pairs], dtype=object))
    check_pairs(BREC(str(tmp_path), name="regular"), pairs)


def test_g6_text_file_with_header(tmp_path):
    pairs = some_pairs()
    text = b"".join(nx.to_graph6_bytes(g, header=i == 0) for i, g in enumerate(g for p in pairs for g in p))
    write(tmp_path, "mine.g6", text + b"\n")
    check_pairs(BREC(str(tmp_path), name="mine"), pairs)


def test_relabeled_layout_with_reliability_blocks(tmp_path):
    pairs = some_pairs()
    rng = np.random.default_rng(0)
    r = 3  # relabellings per graph

    def relabel(g):
        perm = rng.permutation(g.number_of_nodes()).tolist()
        h = nx.Graph()
        h.add_nodes_from(range(g.number_of_nodes()))  # graph6 numbers nodes in insertion order
        h.add_edges_from((perm[u], perm[v]) for u, v in g.edges)
        return h

    strings, truth = [], []
    for a, b in pairs:  # pair blocks: a0 b0 a1 b1 ...
        for _ in range(r):
            for g in (a, b):
                h = relabel(g)
                strings.append(g6(h))
                truth.append(h)
    for a, _ in pairs:  # reliability blocks: 2r relabellings of one graph
        for _ in range(2 * r):
            h = relabel(a)
            strings.append(g6(h))
            truth.append(h)
    write(tmp_path, "rel.npy", np.array(strings, dtype=object))
    data = BREC(str(tmp_path), name="rel", layout="relabeled", num_relabel=r)
    assert len(data) == len(strings) and data.num_pairs == len(pairs)
    for i, h in enumerate(truth):
        assert same_graph(data[i], h)
    block = 2 * r
    d = data[block + 3]  # pair 1, relabelling 1, second graph
    assert (int(d.pair), int(d.side), int(d.relabel), int(d.reliability)) == (1, 1, 1, 0)
    d = data[len(pairs) * block + block + 4]  # reliability block of pair 1
    assert (int(d.pair), int(d.side), int(d.relabel), int(d.reliability)) == (1, -1, 4, 1)
    got = data.pairs()
    assert len(got) == len(pairs)
    for pair, (a, b) in zip(got, pairs):
        assert nx.is_isomorphic(pair.first, a) and nx.is_isomorphic(pair.second, b)
    # auto reads the same file as plain pairs (its length is not the published one)
    assert BREC(str(tmp_path), name="rel").num_pairs == len(strings) // 2


def test_published_layout_is_detected_and_categorised(tmp_path):
    r = 1
    a, b = nx.cycle_graph(6), nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
    strings = [g6(a), g6(b)] * (400 * r) + [g6(a)] * (400 * 2 * r)
    write(tmp_path, "brec_v3.npy", np.array(strings, dtype=object))
    data = BREC(str(tmp_path), num_relabel=r)
    assert data.num_pairs == 400 and int(data[400 * 2 * r].reliability) == 1
    families = [p.family for p in data.pairs()]
    assert families[0] == "brec basic" and families[270] == "brec cfi" and families[399] == "brec distance regular"
    assert sum(hi - lo for lo, hi in BREC_CATEGORIES.values()) == 400


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not download"):
        BREC(str(tmp_path / "empty"), name="brec_v3")
    write(tmp_path, "odd.npy", np.array([g6(nx.cycle_graph(4))] * 3, dtype=object))
    with pytest.raises(ValueError, match="even number"):
        BREC(str(tmp_path), name="odd")
    write(tmp_path, "bad.g6", b"not graph6 !!\n")
    with pytest.raises(ValueError, match="graph6"):
        BREC(str(tmp_path), name="bad")
    with pytest.raises(ValueError, match="layout"):
        BREC(str(tmp_path), name="odd", layout="sideways")
