"""Model factories for the ``everygraph probe`` command-line test (imported by the console
script, so it lives outside the test files)."""

import torch
from torch_geometric.utils import to_dense_adj


class DegreeHistogram(torch.nn.Module):
    """A 1-WL-bounded embedding: sums of functions of node degrees, with a random projection."""

    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Linear(3, 4)

    def forward(self, batch):
        deg = torch.bincount(batch.edge_index[0], minlength=batch.num_nodes).float()
        feats = torch.stack([torch.ones_like(deg), deg, deg**2], 1)
        pooled = torch.zeros(batch.num_graphs, 3).index_add_(0, batch.batch, feats)
        return self.mix(pooled)


class ClosedWalks(torch.nn.Module):
    """tr A^k for k = 2..4: hom(C3) and hom(C4) among them."""

    def forward(self, batch):
        adj = to_dense_adj(batch.edge_index, batch.batch).double()
        out, power = [], adj
        for _ in range(3):
            power = power @ adj
            out.append(power.diagonal(dim1=1, dim2=2).sum(-1))
        return torch.stack(out, 1)


def degree_histogram():
    return DegreeHistogram()


def closed_walks():
    return ClosedWalks()
