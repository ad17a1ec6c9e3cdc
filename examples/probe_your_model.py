"""Probe your model: which graph pairs does it tell apart, and what does theory predict?

The homomorphism-expressivity framework (Zhang et al., "Beyond Weisfeiler-Lehman: A
Quantitative Framework for GNN Expressiveness", ICLR 2024) says which homomorphism counts a
model *class* can compute: MPNN the forests, a node-marking subgraph GNN the graphs that are
forests after deleting one vertex, PPGN / 2-FWL the treewidth-2 graphs, 3-FWL treewidth 3.
``everygraph.contractions.probe_model`` checks a concrete model against that, pair by pair:

* the pairs: 1-WL-equivalent regular pairs, strongly regular pairs (2-FWL-equivalent), CFI
  pairs, and pairs told apart by exactly one small pattern;
* the theory column of each class: "yes" when a pattern the class computes (at most
  ``--degree`` edges) has different counts on the pair, computed by our evaluator;
* the model column: BREC's reliable paired comparison (Hotelling's T^2 of the embedding
  differences over random relabellings, checked against relabellings of the same graph).

Three untrained models in float64 (separation power is a property of the architecture, so no
training is needed to see it; double precision keeps round-off far below the small differences
an untrained network makes):

* **GIN** (PyG ``GINConv``, sum pooling): an MPNN, so it should follow the ``mpnn`` column;
* **subgraph GIN**: one GIN run per node on the graph with that node marked, pooled: a
  node-marking subgraph GNN, the ``subgraph`` column;
* **PPGN** (``everygraph.nn.PPGN``): 2-FWL, the ``ppgn`` column.

Then the linear probe: how well each homomorphism count up to 4 edges is a linear function of
each model's embedding on random (mostly regular) graphs, held-out R^2 per pattern, plotted.

Run:  python examples/probe_your_model.py [--quick] [--out out/]
Writes ``probe_your_model.json`` (every verdict and count) and ``probe_linear.png`` to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.nn import GINConv, global_add_pool

from everygraph.contractions import available_model_classes, generate_pairs, linear_probe, probe_model
from everygraph.nn import PPGN


def gin_layers(in_channels: int, hidden: int, num_layers: int) -> nn.ModuleList:
    # tanh, not ReLU: an untrained ReLU MLP is often linear on all of a graph's (similar) node
    # states, and sum pooling of a linear map only sees sums, which 1-WL-like pairs share.
    # eps = 0.5, not 0: with eps = 0 a node's own state and a neighbour's enter the sum alike, and
    # (with a mark) K3,3 and the prism then give the same multisets of node states
    return nn.ModuleList(
        GINConv(nn.Sequential(nn.Linear(in_channels if i == 0 else hidden, hidden), nn.Tanh(), nn.Linear(hidden, hidden)),
                eps=0.5)
        for i in range(num_layers)
    )


class GIN(nn.Module):
    """GIN (Xu et al., 2019): sum aggregation, MLP updates, sum pooling of every layer."""

    def __init__(self, hidden: int = 32, num_layers: int = 4, out_channels: int = 16):
        super().__init__()
        self.convs = gin_layers(1, hidden, num_layers)
        self.readout = nn.Linear(hidden * num_layers, out_channels)

    def node_states(self, x, edge_index):
        states = []
        for conv in self.convs:
            x = torch.tanh(conv(x, edge_index))
            states.append(x)
        return torch.cat(states, dim=-1)

    def forward(self, batch: Batch) -> torch.Tensor:
        h = self.node_states(batch.x.to(self.readout.weight.dtype), batch.edge_index)
        return self.readout(global_add_pool(h, batch.batch, size=batch.num_graphs))


class SubgraphGIN(nn.Module):
    """Node-marking subgraph GNN (DS-GNN style): for each node v, a GIN on the graph with v marked
    (an extra input feature), sum-pooled; the graph embedding sums over the marked copies."""

    def __init__(self, hidden: int = 32, num_layers: int = 4, out_channels: int = 16):
        super().__init__()
        self.convs = gin_layers(2, hidden, num_layers)
        self.readout = nn.Linear(hidden * num_layers, out_channels)

    def forward(self, batch: Batch) -> torch.Tensor:
        xs, edges, copy_of_node, graph_of_copy, offset, copies = [], [], [], [], 0, 0
        ptr = batch.ptr.tolist()
        src, dst = batch.edge_index
        for g in range(batch.num_graphs):
            lo, n = ptr[g], ptr[g + 1] - ptr[g]
            inside = (src >= lo) & (src < lo + n)
            e = batch.edge_index[:, inside] - lo
            for v in range(n):
                mark = torch.zeros(n, 1, dtype=self.readout.weight.dtype)
                mark[v] = 1.0
                xs.append(torch.cat([batch.x[lo:lo + n].to(mark.dtype), mark], dim=1))
                edges.append(e + offset)
                copy_of_node.append(torch.full((n,), copies, dtype=torch.long))
                graph_of_copy.append(g)
                offset += n
                copies += 1
        x = torch.cat(xs)
        edge_index = torch.cat(edges, dim=1)
        copy = torch.cat(copy_of_node)
        h = x
        states = []
        for conv in self.convs:
            h = torch.tanh(conv(h, edge_index))
            states.append(h)
        per_copy = global_add_pool(torch.cat(states, dim=-1), copy, size=copies)
        per_graph = global_add_pool(per_copy, torch.tensor(graph_of_copy, dtype=torch.long), size=batch.num_graphs)
        return self.readout(per_graph)


class PPGNModel(nn.Module):
    """``everygraph.nn.PPGN`` on a PyG batch (adjacency and the constant node feature). Plain
    PPGN (``plus=False``: sum readouts): PPGN++'s size-normalised means shrink an untrained
    network's differences between large graphs towards round-off."""

    def __init__(self, hidden: int = 32, num_blocks: int = 3, out_channels: int = 16):
        super().__init__()
        self.ppgn = PPGN(in_channels=2, hidden=hidden, num_blocks=num_blocks, out_channels=out_channels, plus=False)

    def forward(self, batch: Batch) -> torch.Tensor:
        dtype = next(self.parameters()).dtype
        return self.ppgn(batch.x.to(dtype), batch.edge_index, batch.batch)


MODELS = {"GIN": (GIN, "mpnn"), "subgraph GIN": (SubgraphGIN, "subgraph"), "PPGN": (PPGNModel, "ppgn")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="pairs of at most 20 nodes, 16 relabellings, a smaller linear probe (about 20 s of CPU)")
    parser.add_argument("--out", default="out", help="folder for the plot and the JSON summary")
    parser.add_argument("--degree", type=int, default=6, help="largest pattern (edges) the theory checks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small graphs: 1 is as fast)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(args.threads)
    permutations = 16 if args.quick else 32
    probe_graphs = 120 if args.quick else 400
    start = time.time()

    pairs = generate_pairs(["regular", "strongly_regular", "cfi", "single_pattern"])
    if args.quick:  # the subgraph GIN runs n copies of each graph: the 24-28-node pairs cost the most
        pairs = [p for p in pairs if max(p.num_nodes) <= 20]
    classes = available_model_classes()
    print(f"{len(pairs)} pairs; theory columns: {', '.join(classes)} (patterns up to {args.degree} edges)\n")
    summary: dict = {"settings": {"degree": args.degree, "permutations": permutations, "seed": args.seed,
                                  "quick": args.quick, "model_classes": classes}, "models": {}}
    probes = {}
    for name, (make, model_class) in MODELS.items():
        torch.manual_seed(args.seed)
        # float64: an untrained network's differences can be small; round-off must stay far below them
        model = make().double()
        report = probe_model(model, pairs=pairs, degree=args.degree, num_permutations=permutations,
                             seed=args.seed, progress=not args.no_progress, model_name=name)
        print(report)
        agreement = report.agreement(model_class)
        print(f"\n{name} against the {model_class} column: {agreement}\n")
        probes[name] = linear_probe(model, degree=4, num_graphs=probe_graphs, seed=args.seed)
        print(probes[name])
        print()
        summary["models"][name] = {"model_class": model_class, "agreement": agreement, "report": report.to_dict(),
                                   "linear_probe_r2": probes[name].as_dict()}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(probes), figsize=(5.2 * len(probes), 5.5), sharey=True)
    for ax, (name, result) in zip(axes, probes.items()):
        result.plot(ax=ax, title=name, model_classes=("mpnn", "subgraph", "ppgn"))
    fig.suptitle("linear probe: held-out R^2 of hom(H, G) read off the (untrained) graph embedding")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "probe_linear.png"), dpi=110)
    plt.close(fig)
    with open(os.path.join(args.out, "probe_your_model.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"wrote {args.out}/probe_linear.png and {args.out}/probe_your_model.json ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
