"""packed_paths: sequences packed along one axis as a DAG of paths, against a loop and against
the DAG built from the same edges by a topological sort."""

import pytest
import torch

from everygraph.graphlib import DAG, Lattice, packed_paths


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cu", [[0, 7], [0, 3, 3, 7], [0, 0, 1, 4, 4], [0, 0], [0, 1, 2, 3]])
def test_edges_and_levels(cu, reverse):
    dag = packed_paths(torch.tensor(cu), reverse)
    edges = []
    for lo, hi in zip(cu[:-1], cu[1:]):
        for t in range(lo, hi - 1):
            edges.append([t + 1, t] if reverse else [t, t + 1])
    assert dag.num_nodes == cu[-1]
    assert dag.edge_index.t().tolist() == edges
    assert torch.equal(dag.levels, DAG(dag.edge_index, cu[-1]).levels)  # the closed form = a topological sort
    assert dag.ptr.tolist() == cu


def test_one_sequence_is_the_path_lattice():
    for reverse in (False, True):
        assert torch.equal(packed_paths(torch.tensor([0, 6]), reverse).edge_index, Lattice((6,), (reverse,)).edge_index)


def test_bad_input():
    with pytest.raises(ValueError, match="cu_seqlens"):
        packed_paths(torch.tensor([0, 3, 2]))
    with pytest.raises(TypeError, match="cu_seqlens"):
        packed_paths(torch.tensor([0.0, 2.0]))
    with pytest.raises(TypeError, match="reverse"):
        packed_paths(torch.tensor([0, 2]), "yes")
