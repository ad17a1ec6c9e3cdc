import itertools

import networkx as nx
import pytest
import torch

from everygraph.graphlib import DAG, Lattice, path_graph


def reference_lattice_edges(shape, flip):
    """Edges by brute force over coordinates, in the documented order."""
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    edges = []
    for axis in range(len(shape)):
        for coords in itertools.product(*[range(s) for s in shape]):
            if coords[axis] + 1 < shape[axis]:
                lower = sum(c * s for c, s in zip(coords, strides))
                upper = lower + strides[axis]
                edges.append((upper, lower) if flip[axis] else (lower, upper))
    return edges


@pytest.mark.parametrize("shape", [(1,), (5,), (1, 4), (3, 1), (3, 4), (2, 3, 2)])
def test_edges_coords_and_levels(shape):
    for flip in Lattice.orientations(len(shape)):
        lat = Lattice(shape, flip)
        assert list(map(tuple, lat.edge_index.t().tolist())) == reference_lattice_edges(shape, flip)
        assert lat.num_edges == lat.edge_index.size(1)
        for node in range(lat.num_nodes):
            assert lat.node(lat.coords(node)) == node
        assert torch.equal(lat.levels, DAG(lat.edge_index, lat.num_nodes).levels)
        # networkx agrees this is the grid graph once directions are forgotten.
        grid = nx.convert_node_labels_to_integers(nx.grid_graph(dim=list(reversed(shape))), ordering="sorted")
        assert nx.is_isomorphic(lat.to_networkx().to_undirected(), grid)


def test_orientations_count_and_axes():
    assert len(Lattice.orientations(3)) == 8
    lat = Lattice((2, 3))
    axes = lat.edge_axis.tolist()
    for (u, v), axis in zip(lat.edge_index.t().tolist(), axes):
        cu, cv = lat.coords(u), lat.coords(v)
        assert cv[axis] - cu[axis] == 1 and sum(abs(a - b) for a, b in zip(cu, cv)) == 1


def test_to_dag_and_data():
    lat = Lattice((3, 4), flip=(True, False))
    dag = lat.to_dag()
    assert dag.levels[lat.node((2, 0))] == 0 and dag.levels[lat.node((0, 3))] == 5
    data = lat.to_data()
    assert data.num_nodes == 12 and data.pos.tolist()[lat.node((1, 2))] == [1, 2]
    assert path_graph(4) == Lattice((4,)) and path_graph(4).edge_index.tolist() == [[0, 1, 2], [1, 2, 3]]


@pytest.mark.parametrize("shape", [(0,), (3, -1), (2.5,), ()])
def test_non_positive_sizes_raise(shape):
    with pytest.raises(ValueError, match="Lattice"):
        Lattice(shape)


def test_bad_coords_and_flip():
    lat = Lattice((2, 2))
    with pytest.raises(ValueError, match="out of range"):
        lat.node((2, 0))
    with pytest.raises(ValueError, match="out of range"):
        lat.coords(4)
    with pytest.raises(ValueError, match="one flag per axis"):
        Lattice((2, 2), flip=(True,))
