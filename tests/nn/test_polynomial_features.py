"""PolynomialFeatures layer and AddPolynomialFeatures transform against networkx counts."""

import networkx as nx
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import from_networkx

from everygraph.contractions import Pattern, compile, evaluate
from everygraph.nn import PolynomialFeatures
from everygraph.transforms import AddPolynomialFeatures


def to_data(g):
    d = from_networkx(nx.convert_node_labels_to_integers(g))
    return Data(edge_index=d.edge_index, num_nodes=g.number_of_nodes())


GRAPHS = [nx.complete_graph(4), nx.petersen_graph(), nx.gnp_random_graph(7, 0.5, seed=1), nx.path_graph(3)]


def test_counts_in_pyg_layout():
    feats = PolynomialFeatures(3, select=["ab,bc,ca->", "ab,bc,ca->a", "ab,bc,ca->ab", "ab->"], normalize=None)
    batch = Batch.from_data_list([to_data(g) for g in GRAPHS])
    out = feats(batch.edge_index, batch.batch)
    assert out["invariant"].shape == (len(GRAPHS), 2)
    assert out["node"].shape == (batch.num_nodes, 1) and out["edge"].shape == (batch.num_edges, 1)
    offset = 0
    for b, g in enumerate(GRAPHS):
        tri = nx.triangles(g)
        assert out["invariant"][b, 0].item() == 2 * sum(tri.values())
        assert out["invariant"][b, 1].item() == 2 * g.number_of_edges()
        for v in g:
            assert out["node"][offset + v, 0].item() == 2 * tri[v]
        offset += g.number_of_nodes()
    for k, (u, v) in enumerate(batch.edge_index.t().tolist()):
        b = batch.batch[u].item()
        start = batch.ptr[b].item()
        g = GRAPHS[b]
        common = len(set(g[u - start]) & set(g[v - start]))
        assert out["edge"][k, 0].item() == common


def test_normalizations():
    pats = ["ab,bc,ca->", "ab,bc->a", "ab,bc,cd->ad"]
    raw = PolynomialFeatures(3, select=pats, normalize=None)
    dens = PolynomialFeatures(3, select=pats, normalize="density")
    log = PolynomialFeatures(3, select=pats, normalize="log")
    g = nx.gnp_random_graph(6, 0.5, seed=4)
    d = to_data(g)
    r, de, lg = raw(d.edge_index, num_nodes=6), dens(d.edge_index, num_nodes=6), log(d.edge_index, num_nodes=6)
    torch.testing.assert_close(de["invariant"], r["invariant"] / 6**3)  # 3 free vertices
    torch.testing.assert_close(de["node"], r["node"] / 6**2)  # b, c free
    torch.testing.assert_close(de["edge"], r["edge"] / 6**2)
    torch.testing.assert_close(lg["node"], torch.log1p(r["node"]))


def test_dense_matches_evaluate_and_padding():
    feats = PolynomialFeatures(3, normalize=None)
    batch = Batch.from_data_list([to_data(g) for g in GRAPHS[:3]])
    dense, mask = feats(batch.edge_index, batch.batch, as_matrix=True)
    assert dense.shape[-1] == feats.out_channels == (1 + 2 + 5) + (2 + 5 + 14) + (6 + 18 + 57)  # degrees 1..3
    for b, g in enumerate(GRAPHS[:3]):
        adj = torch.tensor(nx.to_numpy_array(g, weight=None), dtype=dense.dtype)[None]
        alone = evaluate(compile(feats.patterns), adj, as_matrix=True)[0]
        n = g.number_of_nodes()
        torch.testing.assert_close(dense[b, :n, :n], alone)
        assert dense[b, n:].abs().sum() == 0


def test_not_ppgn_selection_degree_5():
    feats = PolynomialFeatures(5, select="not_ppgn", normalize=None)
    # Puny et al. (2023): PPGN computes everything up to degree 4; at degree 5 it misses one edge element
    assert feats.patterns == [Pattern.from_string("ab,ac,ad,bc,cd->bd")]


def test_transform_matches_layer_on_batch():
    transform = AddPolynomialFeatures(3, normalize="log")
    datas = [to_data(g) for g in GRAPHS]
    batch = Batch.from_data_list([transform(d) for d in datas])
    plain = Batch.from_data_list(datas)
    out = PolynomialFeatures(3, normalize="log")(plain.edge_index, plain.batch)
    torch.testing.assert_close(batch.poly_graph, out["invariant"])
    torch.testing.assert_close(batch.poly_node, out["node"])
    torch.testing.assert_close(batch.poly_edge, out["edge"])
    # cat=True appends to x
    d = datas[0]
    d.x = torch.ones(d.num_nodes, 2)
    cat = AddPolynomialFeatures(3, outputs=("node",), cat=True)(d)
    assert cat.x.shape == (d.num_nodes, 2 + 2 + 5 + 14)
    assert d.x.shape == (d.num_nodes, 2)  # the input is not mutated


def test_bad_arguments():
    with pytest.raises(ValueError, match="normalize"):
        PolynomialFeatures(2, normalize="zscore")
    with pytest.raises(ValueError, match="select"):
        PolynomialFeatures(2, select="some")
    with pytest.raises(ValueError, match="output"):
        PolynomialFeatures(2, outputs=("graph",))
    with pytest.raises(ValueError, match="no pattern"):
        PolynomialFeatures(4, select="not_ppgn")
    assert "degree=2" in repr(PolynomialFeatures(2))


MULTI_PATTERNS = ["ab,bc,ca->", "ab,bc,ca->a", "ab,bc->ac", "ab->", "ab,bc->a"]


def _einsum_reference(adj):
    """The patterns' values on a dense adjacency by numpy's einsum (independent of the plan)."""
    import numpy as np

    return [np.einsum(p, *([adj] * (p.count(",") + 1))) for p in MULTI_PATTERNS]


def test_simple_domain_reads_a_multigraph_as_its_simple_graph():
    """Repeated edges count once and self loops are dropped on the simple domain (values equal
    those of networkx's simple graph); the general domain keeps multiplicities and loops."""
    import numpy as np

    multi = nx.MultiGraph()
    multi.add_nodes_from(range(6))
    multi.add_edges_from([(0, 1), (0, 1), (0, 1), (1, 2), (2, 0), (2, 3), (3, 4), (4, 4), (1, 1), (4, 5), (5, 3), (3, 5)])
    edges = [(u, v) for u, v in multi.edges()] + [(v, u) for u, v in multi.edges() if u != v]
    edge_index = torch.tensor(edges).t()
    simple = nx.Graph(multi)
    simple.remove_edges_from(nx.selfloop_edges(simple))
    simple_adj = nx.to_numpy_array(simple, nodelist=range(6), weight=None)
    counts = np.zeros((6, 6))
    for u, v in edges:
        counts[u, v] += 1

    for domain, adj in (("simple", simple_adj), ("general", counts)):
        feats = PolynomialFeatures(3, select=MULTI_PATTERNS, normalize=None, domain=domain)
        out = feats(edge_index, num_nodes=6)
        triangles, triangles_at, walks, edge_count, degree = _einsum_reference(adj)
        assert out["invariant"][0].tolist() == [triangles, edge_count]
        assert out["node"][:, 0].tolist() == triangles_at.tolist() and out["node"][:, 1].tolist() == degree.tolist()
        # rows of "edge" follow the given columns, repeated ones included
        assert out["edge"][:, 0].tolist() == [walks[u, v] for u, v in edges]
        dense, mask = feats(edge_index, num_nodes=6, as_matrix=True)
        torch.testing.assert_close(dense[0, :, :, 2], torch.as_tensor(walks, dtype=dense.dtype))
        if domain == "simple":
            # the same numbers as the coalesced input, and as networkx's triangle counts
            coalesced = torch.tensor([list(e) for e in simple.edges()] + [[v, u] for u, v in simple.edges()]).t()
            plain = feats(coalesced, num_nodes=6)
            torch.testing.assert_close(out["invariant"], plain["invariant"])
            torch.testing.assert_close(out["node"], plain["node"])
            assert out["node"][:, 0].tolist() == [2 * nx.triangles(simple)[v] for v in range(6)]
            transform = AddPolynomialFeatures(3, select=MULTI_PATTERNS, outputs=("invariant", "node"), normalize=None)
            data = transform(Data(edge_index=edge_index, num_nodes=6))
            torch.testing.assert_close(data.poly_node, out["node"])
    # the multigraph differs from its simple graph, so the two domains differ on it
    assert not np.allclose(simple_adj, counts)
