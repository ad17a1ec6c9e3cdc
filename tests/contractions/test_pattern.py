"""Pattern: strings, canonical keys (against networkx isomorphism), networkx round trips."""

import random

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from everygraph.contractions import Pattern


def test_basic_properties():
    p = Pattern.from_string("ab,bc,ca->")
    assert (p.degree, p.output, p.num_vertices, p.special) == (3, "invariant", 3, ())
    assert p.edges == ((0, 1), (0, 2), (1, 2))
    assert p.einsum == "zab,zac,zbc->z"
    assert repr(p) == "Pattern('ab,ac,bc->')"
    assert p == Pattern([(0, 1), (1, 2), (2, 0)]) and hash(p) == hash(Pattern([(2, 1), (1, 0), (2, 0)]))
    node = Pattern.from_string("ab,bc->a")
    assert node.output == "node" and node.einsum == "zab,zbc->za"
    edge = Pattern.from_string("ab,bb,bc->ac", directed=True)
    assert edge.output == "edge" and edge.directed and edge.degree == 3
    assert "directed=True" in repr(edge)
    assert Pattern.from_string(edge.to_string(), directed=True).edges == edge.edges


def test_isolated_special_vertices_and_diagonal():
    p = Pattern.from_string("a,b->ab")
    assert p.degree == 0 and p.output == "edge" and p.isolated_vertices == (0, 1)
    assert p.einsum == "za,zb->zab"
    d = Pattern.from_string("ab->aa")
    assert d.output == "edge" and d.is_diagonal and d.einsum == "zab->za"
    assert d != Pattern.from_string("ab->a")  # same graph, different output type
    assert not Pattern.from_string("ab,c->ac").is_connected and Pattern.from_string("ab,bc->ac").is_connected


def test_parallel_edges_loops_and_channels():
    p = Pattern.from_string("ab,ab,aa->")
    assert p.degree == 3 and p.edges.count((0, 1)) == 2
    assert Pattern.from_string("ab,ab->") != Pattern.from_string("ab->")
    assert Pattern.from_string("ab@1,bc->") != Pattern.from_string("ab,bc->")
    assert Pattern.from_string("ab@1,bc->") == Pattern.from_string("ab,bc@1->")
    assert Pattern.from_string("ab@1,bc->").to_string() == "ab@1,bc->"


def test_directed_canonical_keys():
    assert Pattern.from_string("ab->", directed=True) == Pattern.from_string("ba->", directed=True)
    assert Pattern.from_string("ab->a", directed=True) != Pattern.from_string("ba->a", directed=True)
    assert Pattern.from_string("ab->ab", directed=True) != Pattern.from_string("ab->ba", directed=True)
    # undirected: the ordered pair still matters when the pattern is asymmetric
    assert Pattern.from_string("ab,bc->ac") == Pattern.from_string("ab,bc->ca")
    assert Pattern.from_string("ab,bc,bd->ac") != Pattern.from_string("ab,bc,cd->ac")


@pytest.mark.parametrize(
    "text,pos,message",
    [
        ("ab,,c->", 3, "empty term"),
        ("abc->", 2, "3 letters"),
        ("ab,b1->", 4, "unexpected character '1'"),
        ("ab,bc", 5, "missing '->'"),
        ("ab->a->", 5, "second '->'"),
        ("ab,bc->abc", 9, "at most two"),
        ("ab,bc->ad", 8, "not in the graph"),
        ("ab@x->", 3, "channel number"),
        ("a@1->", 1, "single vertex"),
        ("ab->a!", 5, "unexpected character '!'"),
    ],
)
def test_malformed_strings_point_at_character(text, pos, message):
    with pytest.raises(ValueError, match=message) as info:
        Pattern.from_string(text)
    msg = str(info.value)
    assert f"position {pos}" in msg
    lines = msg.splitlines()
    assert lines[-1].index("^") - 2 == pos and lines[-2].strip() == text


def test_constructor_errors():
    with pytest.raises(ValueError, match="at most two special"):
        Pattern([(0, 1), (1, 2)], special=(0, 1, 2))
    with pytest.raises(ValueError, match="special vertex 5 is not in the graph"):
        Pattern([(0, 1)], special=(5,), num_vertices=3)
    with pytest.raises(ValueError, match="pair"):
        Pattern([(0, 1, 2)])
    with pytest.raises(ValueError, match="non-negative"):
        Pattern([(0, -1)])


def _random_pattern(rng, directed, max_vertices=5, max_edges=6):
    n = rng.randint(1, max_vertices)
    edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(rng.randint(0, max_edges))]
    k = rng.randint(0, min(2, n))
    special = rng.sample(range(n), k)
    return Pattern(edges, special, num_vertices=n, directed=directed)


def _nx_iso(p, q):
    if (p.output, p.is_diagonal) != (q.output, q.is_diagonal):
        return False

    def count(g):
        h = nx.DiGraph() if g.is_directed() else nx.Graph()
        h.add_nodes_from(g.nodes(data=True))
        for u, v in g.edges():
            w = h.get_edge_data(u, v, {"m": 0})["m"]
            h.add_edge(u, v, m=w + 1)
        return h

    return nx.is_isomorphic(
        count(p.to_networkx()),
        count(q.to_networkx()),
        node_match=lambda a, b: a["special"] == b["special"],
        edge_match=lambda a, b: a["m"] == b["m"],
    )


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), directed=st.booleans())
def test_canonical_key_invariant_under_relabelling(seed, directed):
    rng = random.Random(seed)
    p = _random_pattern(rng, directed)
    perm = list(range(p.num_vertices))
    rng.shuffle(perm)
    q = p.relabel(perm)
    assert q.canonical_key == p.canonical_key
    assert p.canonical().to_string() == q.canonical().to_string()
    assert p.canonical() == p


def test_canonical_key_equals_networkx_isomorphism():
    rng = random.Random(1)
    pats = [_random_pattern(rng, directed, max_vertices=4, max_edges=4) for directed in (False, True) for _ in range(60)]
    for i, p in enumerate(pats):
        for q in pats[i + 1 :]:
            if p.directed == q.directed:
                assert (p == q) == _nx_iso(p, q), (p, q)


def test_networkx_round_trip():
    for text in ["ab,bc,ca->", "ab,ab,bb->a", "a,bc->ab", "ab,bc->aa", "ab@2,bc->b"]:
        p = Pattern.from_string(text)
        g = p.to_networkx()
        assert isinstance(g, nx.MultiGraph)
        assert Pattern.from_networkx(g) == p
        assert [g.nodes[v]["special"] for v in p.special[:1]] == [0] * len(p.special[:1])
    g = nx.cycle_graph(4)
    g.nodes[0]["special"] = 0
    assert Pattern.from_networkx(g) == Pattern.from_string("ab,bc,cd,da->a")
    d = Pattern.from_string("ab,bc->ac", directed=True)
    assert isinstance(d.to_networkx(), nx.MultiDiGraph)
    assert Pattern.from_networkx(d.to_networkx()) == d


def test_components_and_pickle():
    import pickle

    p = Pattern.from_string("ab,cd,de->ac")
    parts = p.components()
    assert sorted(c.degree for c in parts) == [1, 2]
    assert sorted(len(c.special) for c in parts) == [1, 1]
    assert pickle.loads(pickle.dumps(p)) == p
