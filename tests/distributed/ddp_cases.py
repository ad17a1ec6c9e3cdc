"""One short data-parallel training run per layer of ``everygraph.nn``, and its single-process twin.

Each case gives a model, a list of samples and a loss that is a *sum* of per-element terms
with the number of elements. Training divides the summed loss by the global number of
elements (all-reduced), times the world size because DDP averages gradients over ranks:

    loss_r = world_size * sum_{i in rank r} l_i / N,   mean_r grad(loss_r) = grad(sum_i l_i / N),

which is the single-process loss on the concatenated batch whatever the ranks' batch sizes
(the per-rank mean, ``sum_r mean_r / world_size``, is equal only for equal sizes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

import everygraph.nn as egnn

CHANNELS = 4
STEPS = 3
LR = 0.1


@dataclass
class Case:
    build: Callable[[], nn.Module]
    samples: Callable[[], list]
    loss: Callable[[nn.Module, list], tuple[Tensor, int]]
    # Sample indices of each rank (two ranks): an even split and an uneven one; in graph cases
    # the last sample has no edges and is the whole batch of rank 1 in the uneven split.
    splits: tuple[tuple[list[int], list[int]], ...] = (([0, 1], [2, 3]), ([0, 1, 2], [3]))


def _graph(num_nodes: int, num_edges: int, seed: int) -> Data:
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    dst = (src + torch.randint(1, num_nodes, (num_edges,), generator=gen)) % num_nodes
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1) if num_edges else torch.zeros(2, 0, dtype=torch.long)
    x = torch.randn(num_nodes, CHANNELS, generator=gen, dtype=torch.float64)
    y = torch.randn(num_nodes, CHANNELS, generator=gen, dtype=torch.float64)
    return Data(x=x, edge_index=edge_index, y=y, num_nodes=num_nodes)


def graphs() -> list[Data]:
    # A star-ish graph gives in-degrees >= 2 (the LCM operator runs); the last graph has no edges.
    return [_graph(5, 6, 1), _graph(4, 3, 2), _graph(6, 8, 3), _graph(3, 0, 4)]


def _node_mse(out: Tensor, batch: Batch) -> tuple[Tensor, int]:
    return ((out - batch.y) ** 2).sum(), batch.num_nodes


def _graph_case(forward: Callable[[nn.Module, Batch], Tensor]) -> Callable[[nn.Module, list], tuple[Tensor, int]]:
    def loss(model: nn.Module, samples: list) -> tuple[Tensor, int]:
        batch = Batch.from_data_list(samples)
        return _node_mse(forward(model, batch), batch)

    return loss


def _sequences(shape: tuple[int, ...], count: int = 4) -> Callable[[], list]:
    def make() -> list:
        gen = torch.Generator().manual_seed(7)
        return [(torch.randn(shape, generator=gen, dtype=torch.float64), torch.randn(shape, generator=gen, dtype=torch.float64))
                for _ in range(count)]

    return make


def _dense_loss(model: nn.Module, samples: list) -> tuple[Tensor, int]:
    x = torch.stack([s[0] for s in samples])
    y = torch.stack([s[1] for s in samples])
    return ((model(x) - y) ** 2).sum(), len(samples)


class _Aggregate(nn.Module):
    """Node ``v`` aggregates the features of its in-neighbours with ``aggr``."""

    def __init__(self, aggr: nn.Module):
        super().__init__()
        self.aggr = aggr

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.aggr(x[edge_index[0]], edge_index[1], dim_size=x.size(0))


class _Head(nn.Module):
    """A linear head on the node features of a parameter-free layer."""

    def __init__(self, layer: nn.Module, in_channels: int):
        super().__init__()
        self.layer, self.head = layer, nn.Linear(in_channels, CHANNELS)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        features = self.layer(edge_index, batch, num_nodes=x.size(0))["node"]
        return self.head(torch.cat([x, features.to(x.dtype)], 1))


class _Pairs(nn.Module):
    def __init__(self, monoid: nn.Module):
        super().__init__()
        self.monoid = monoid

    def forward(self, x: Tensor) -> Tensor:  # [B, 2, F] -> [B, F]
        return self.monoid(x[:, 0], x[:, 1])


class _Block(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x, torch.ones(x.shape[:2], dtype=torch.bool))


def _polynomial_features() -> nn.Module:
    layer = egnn.PolynomialFeatures(2, outputs=("node",))
    return _Head(layer, CHANNELS + layer.num_features["node"])


def _ppgn_loss(model: nn.Module, samples: list) -> tuple[Tensor, int]:
    batch = Batch.from_data_list(samples)
    out = model(batch.x, batch.edge_index, batch.batch)  # [num_graphs, 1]
    target = torch.stack([s.y.sum() for s in samples])[:, None]
    return ((out - target) ** 2).sum(), len(samples)


CASES: dict[str, Case] = {
    "DeltaProduct": Case(lambda: egnn.DeltaProduct(CHANNELS, num_heads=2, num_householder=2), _sequences((5, CHANNELS)),
                         _dense_loss),
    "Mamba": Case(lambda: egnn.Mamba(CHANNELS, d_state=4, d_conv=2, expand=1), _sequences((6, CHANNELS)), _dense_loss),
    "Mamba2d": Case(lambda: egnn.Mamba2d(CHANNELS, d_state=4, d_conv=3, expand=1), _sequences((3, 3, CHANNELS)),
                    _dense_loss),
    "GraphMamba": Case(
        lambda: egnn.GraphMamba(CHANNELS, d_state=4, d_conv=2, expand=1),
        graphs,
        # An explicit within-graph order: training mode otherwise draws a random order per call.
        _graph_case(lambda m, b: m(b.x, b.edge_index, b.batch, order=torch.arange(b.num_nodes))),
    ),
    "GMN": Case(
        lambda: egnn.GMN(CHANNELS, walk_length=2, tokens_per_length=2, d_state=4, d_conv=2, expand=1, rwse_steps=2),
        graphs,
        # the walks are keyed by each node's index inside its own graph: the same on every rank
        _graph_case(lambda m, b: m(b.x, b.edge_index, b.batch)),
    ),
    "GatedLinearAttention": Case(lambda: egnn.GatedLinearAttention(CHANNELS, num_heads=2, gate_low_rank_dim=2),
                                 _sequences((6, CHANNELS)), _dense_loss),
    "LightNet": Case(lambda: egnn.LightNet(CHANNELS, num_heads=2), _sequences((6, CHANNELS)), _dense_loss),
    "LCMAggregation": Case(lambda: _Aggregate(egnn.LCMAggregation(CHANNELS, CHANNELS)), graphs,
                           _graph_case(lambda m, b: m(b.x, b.edge_index))),
    "CommutativeMonoid": Case(lambda: _Pairs(egnn.CommutativeMonoid(nn.Bilinear(CHANNELS, CHANNELS, CHANNELS))),
                              _sequences((2, CHANNELS)), lambda m, s: _dense_loss(m, [(a, b[0]) for a, b in s])),
    "S4D": Case(lambda: egnn.S4D(CHANNELS, d_state=4, transposed=False), _sequences((6, CHANNELS)), _dense_loss),
    "PLSTM1d": Case(lambda: egnn.PLSTM1d(CHANNELS), _sequences((5, CHANNELS)), _dense_loss),
    "PLSTM2d": Case(lambda: egnn.PLSTM2d(CHANNELS), _sequences((3, 3, CHANNELS)), _dense_loss),
    "PLSTMGraph": Case(lambda: egnn.PLSTMGraph(CHANNELS, CHANNELS), graphs,
                       _graph_case(lambda m, b: m(b.x, b.edge_index, b.batch))),
    "PolynomialFeatures": Case(_polynomial_features, graphs, _graph_case(lambda m, b: m(b.x, b.edge_index, b.batch))),
    "PPGN": Case(lambda: egnn.PPGN(1 + CHANNELS, 4, 1), graphs, _ppgn_loss),
    "PPGNBlock": Case(lambda: _Block(egnn.PPGNBlock(1 + CHANNELS, CHANNELS)), _sequences((3, 3, 1 + CHANNELS)),
                      lambda m, s: _dense_loss(m, [(x, y[..., :CHANNELS]) for x, y in s])),
}
# Exported names that are not modules: trained through the cases above.
NOT_LAYERS = {
    "associativity_loss": "a loss on LCMAggregation's operator, not a module",
    "InferenceParams": "Mamba's decoding cache, not a module",
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return CASES[name].build().double()


def train(name: str, model: nn.Module, samples: list, num_elements_global: Callable[[int], int],
          world_size: int) -> tuple[list[Tensor], list[Tensor]]:
    """``STEPS`` of SGD; returns (gradients of the first step, parameters after the last)."""
    case = CASES[name]
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    first_grads: list[Tensor] = []
    for step in range(STEPS):
        optimizer.zero_grad()
        loss_sum, count = case.loss(model, samples)
        (loss_sum * world_size / num_elements_global(count)).backward()
        if step == 0:
            first_grads = [p.grad.detach().clone() for p in model.parameters()]
        optimizer.step()
    return first_grads, [p.detach().clone() for p in model.parameters()]


def single_process(name: str) -> tuple[list[Tensor], list[Tensor]]:
    return train(name, build(name), CASES[name].samples(), lambda count: count, 1)


def ddp_worker(rank: int, world_size: int, names: list[str]) -> dict:
    """Every case under plain ``DistributedDataParallel`` (no ``find_unused_parameters``), each split."""
    from torch.nn.parallel import DistributedDataParallel

    def global_count(count: int) -> int:
        total = torch.tensor([count])
        dist.all_reduce(total)
        return int(total)

    results = {}
    for name in names:
        case = CASES[name]
        samples = case.samples()
        for split_id, split in enumerate(case.splits):
            model = DistributedDataParallel(build(name))
            mine = [samples[i] for i in split[rank]]
            results[name, split_id] = train(name, model, mine, global_count, world_size)
    return results
