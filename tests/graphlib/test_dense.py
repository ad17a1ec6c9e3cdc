"""graphlib.to_dense_pairs (the one PyG -> dense pairs conversion) against an explicit loop."""

import pytest
import torch
from torch_geometric.data import Batch, Data

from everygraph.graphlib import IndexDtypeError, to_dense_pairs


def _loop_reference(graphs: list[Data]) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, n, n, 1 + f + e] filled entry by entry from each graph alone."""
    n = max(g.num_nodes for g in graphs)
    f = graphs[0].x.shape[1]
    e = graphs[0].edge_attr.shape[1]
    out = torch.zeros(len(graphs), n, n, 1 + f + e, dtype=torch.float64)
    mask = torch.zeros(len(graphs), n, dtype=torch.bool)
    for b, g in enumerate(graphs):
        mask[b, : g.num_nodes] = True
        for i in range(g.num_nodes):
            for c in range(f):
                out[b, i, i, 1 + c] = g.x[i, c]
        for k in range(g.edge_index.shape[1]):
            i, j = int(g.edge_index[0, k]), int(g.edge_index[1, k])
            out[b, i, j, 0] += 1
            for c in range(e):
                out[b, i, j, 1 + f + c] += g.edge_attr[k, c]
    return out, mask


def test_batch_equals_loop_with_features_multi_edges_and_empty_graph():
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for num_nodes, num_edges in [(5, 9), (0, 0), (3, 4), (7, 12)]:
        edge_index = torch.randint(0, max(num_nodes, 1), (2, num_edges), generator=gen)
        if num_edges:
            edge_index[:, 1] = edge_index[:, 0]  # a repeated edge counts twice
        graphs.append(Data(
            x=torch.randn(num_nodes, 2, generator=gen, dtype=torch.float64),
            edge_index=edge_index,
            edge_attr=torch.randn(num_edges, 3, generator=gen, dtype=torch.float64),
            num_nodes=num_nodes,
        ))
    batch = Batch.from_data_list(graphs)
    pairs, mask = to_dense_pairs(batch.x, batch.edge_index, batch.batch, batch.edge_attr)
    expected, expected_mask = _loop_reference(graphs)
    torch.testing.assert_close(pairs, expected)
    assert torch.equal(mask, expected_mask)
    assert pairs.dtype == torch.float64


def test_without_features_and_without_nodes():
    pairs, mask = to_dense_pairs(None, torch.tensor([[0, 1], [1, 0]]))
    assert pairs.shape == (1, 2, 2, 1) and mask.all()
    torch.testing.assert_close(pairs[0, :, :, 0], torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    pairs, mask = to_dense_pairs(None, torch.zeros(2, 0, dtype=torch.long), num_nodes=0)
    assert pairs.shape == (1, 0, 0, 1) and mask.shape == (1, 0)


def test_bad_inputs_are_named():
    with pytest.raises(IndexDtypeError, match="edge_index must have an integer dtype"):
        to_dense_pairs(None, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"x must have one row per node, \[3, f\], got \[2, 1\]"):
        to_dense_pairs(torch.ones(2, 1), torch.tensor([[0, 2], [2, 0]]), num_nodes=3)
    with pytest.raises(ValueError, match=r"edge_attr must have one row per edge, \[2, e\], got \[3\]"):
        to_dense_pairs(None, torch.tensor([[0, 1], [1, 0]]), edge_attr=torch.ones(3))
    with pytest.raises(ValueError, match="sorted"):
        to_dense_pairs(None, torch.tensor([[0, 1], [1, 0]]), batch=torch.tensor([1, 0]))
