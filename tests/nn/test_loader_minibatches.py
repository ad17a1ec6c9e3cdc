"""Every graph layer on PyG loader mini-batches: sampled subgraphs, seed nodes first.

A mini-batch of a node loader is a graph of its own (``x``, ``edge_index`` relabelled to
``0..n-1``); loaders that sample around seed nodes put the ``batch_size`` seeds first, and the
outputs of a node-level model are read at ``out[:batch_size]``. ``NeighborLoader`` needs
``pyg-lib`` or ``torch-sparse`` (compiled; neither installs from a wheel everywhere), so its
format is reproduced here by PyG's ``NodeLoader`` with a full k-hop sampler in plain PyTorch;
the ``NeighborLoader`` test runs where one of the backends is installed.

What holds:

- every layer's output on a mini-batch equals the layer on the induced subgraph of the
  mini-batch's nodes, built independently (a loop over the edges): the layers read nothing
  but the mini-batch;
- with all neighbours within ``k`` hops sampled, a ``k``-layer message-passing model with
  ``LCMAggregation`` gives the seeds the outputs of the full graph (local layers are exact);
  ``PLSTMGraph``, ``GraphMamba`` and ``PolynomialFeatures`` read the whole (sub)graph, so on
  a sampled subgraph their outputs are those of that subgraph;
- gradients of a loss on the seed outputs reach every parameter.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import NodeLoader, RandomNodeLoader
from torch_geometric.nn import SAGEConv
from torch_geometric.sampler import BaseSampler, NodeSamplerInput, SamplerOutput
from torch_geometric.utils import k_hop_subgraph

from everygraph.nn import GraphMamba, LCMAggregation, PLSTMGraph, PolynomialFeatures

CHANNELS = 4


class FullKHopSampler(BaseSampler):
    """Every node within ``num_hops`` (incoming edges, as messages flow), seeds first: the
    mini-batch format of ``NeighborLoader(num_neighbors=[-1] * num_hops)``."""

    def __init__(self, data: Data, num_hops: int):
        self.edge_index, self.num_nodes, self.num_hops = data.edge_index, data.num_nodes, num_hops

    def sample_from_nodes(self, index: NodeSamplerInput, **kwargs) -> SamplerOutput:
        seeds = index.node
        subset, _, _, edge_mask = k_hop_subgraph(seeds, self.num_hops, self.edge_index, num_nodes=self.num_nodes)
        others = subset[~torch.isin(subset, seeds)]
        node = torch.cat([seeds, others])
        local = torch.full((self.num_nodes,), -1, dtype=torch.long)
        local[node] = torch.arange(node.numel())
        edge = edge_mask.nonzero().view(-1)
        src, dst = self.edge_index[:, edge]
        return SamplerOutput(node=node, row=local[src], col=local[dst], edge=edge, metadata=(index.input_id, index.time))

    def sample_from_edges(self, index, neg_sampling=None):
        raise NotImplementedError("node sampling only")


class LCMNet(nn.Module):
    """Two SAGE layers aggregating with ``LCMAggregation``: each output reads 2 hops."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([SAGEConv(CHANNELS, CHANNELS, aggr=LCMAggregation(CHANNELS, CHANNELS)) for _ in range(2)])

    def forward(self, x, edge_index):
        for conv in self.convs:
            x = conv(x, edge_index).tanh()
        return x


class PolynomialNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = PolynomialFeatures(3, outputs=("node",))
        self.head = nn.Linear(CHANNELS + self.features.num_features["node"], CHANNELS)

    def forward(self, x, edge_index):
        return self.head(torch.cat([x, self.features(edge_index, num_nodes=x.size(0))["node"].to(x.dtype)], 1))


MODELS = {
    "LCMAggregation": LCMNet,
    "PLSTMGraph": lambda: PLSTMGraph(CHANNELS, CHANNELS),
    "GraphMamba": lambda: GraphMamba(CHANNELS, d_state=4, d_conv=2, expand=1),
    "PolynomialFeatures": PolynomialNet,
}


def make_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name]().double().eval()  # eval: GraphMamba's order is then deterministic


def graph(num_nodes: int = 60, num_edges: int = 150) -> Data:
    gen = torch.Generator().manual_seed(1)
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    dst = (src + torch.randint(1, num_nodes, (num_edges,), generator=gen)) % num_nodes
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1)
    x = torch.randn(num_nodes, CHANNELS, generator=gen, dtype=torch.float64)
    return Data(x=x, edge_index=edge_index, num_nodes=num_nodes, node_id=torch.arange(num_nodes))


def induced_subgraph(data: Data, nodes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` and ``edge_index`` of the subgraph induced by ``nodes`` (in that order), by a loop."""
    position = {v: i for i, v in enumerate(nodes)}
    edges = [(position[u], position[v]) for u, v in data.edge_index.t().tolist() if u in position and v in position]
    edge_index = torch.tensor(edges, dtype=torch.long).t().reshape(2, -1)
    return data.x[nodes], edge_index


def _same_graph(edge_index_a, edge_index_b):
    key = lambda e: sorted(map(tuple, e.t().tolist()))  # noqa: E731
    return key(edge_index_a) == key(edge_index_b)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_random_node_loader_batches_are_their_induced_subgraphs(name):
    data, model = graph(), make_model(name)
    seen = []
    for part in RandomNodeLoader(data, num_parts=3, shuffle=True):
        nodes = part.node_id.tolist()
        seen += nodes
        x, edge_index = induced_subgraph(data, nodes)
        assert _same_graph(part.edge_index, edge_index)
        torch.testing.assert_close(model(part.x, part.edge_index), model(x, edge_index), rtol=1e-12, atol=1e-12)
    assert sorted(seen) == list(range(data.num_nodes))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_seed_first_batches(name):
    data, model = graph(), make_model(name)
    loader = NodeLoader(data, node_sampler=FullKHopSampler(data, 2), input_nodes=torch.arange(0, 60, 3), batch_size=7)
    full = model(data.x, data.edge_index)
    for batch in loader:
        seeds = batch.n_id[: batch.batch_size]
        assert batch.batch_size == batch.input_id.numel() and torch.equal(seeds, batch.input_id * 3)
        out = model(batch.x, batch.edge_index)
        x, edge_index = induced_subgraph(data, batch.n_id.tolist())
        torch.testing.assert_close(out, model(x, edge_index), rtol=1e-12, atol=1e-12)
        if name == "LCMAggregation":  # all 2-hop in-neighbours are sampled: exact seed outputs
            torch.testing.assert_close(out[: batch.batch_size], full[seeds], rtol=1e-12, atol=1e-12)
    model.train()
    if name == "GraphMamba":
        out = model(batch.x, batch.edge_index, order=torch.arange(batch.num_nodes))
    else:
        out = model(batch.x, batch.edge_index)
    out[: batch.batch_size].pow(2).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: no gradient for {missing}"


@pytest.mark.skipif(
    importlib.util.find_spec("pyg_lib") is None and importlib.util.find_spec("torch_sparse") is None,
    reason="NeighborLoader needs pyg-lib or torch-sparse (not installed)",
)
def test_neighbor_loader_seed_outputs_are_exact():
    from torch_geometric.loader import NeighborLoader

    data, model = graph(), make_model("LCMAggregation")
    full = model(data.x, data.edge_index)
    for batch in NeighborLoader(data, num_neighbors=[-1, -1], batch_size=7, input_nodes=torch.arange(0, 60, 3)):
        out = model(batch.x, batch.edge_index)[: batch.batch_size]
        torch.testing.assert_close(out, full[batch.n_id[: batch.batch_size]], rtol=1e-12, atol=1e-12)
