"""Node classification on a graph of a million nodes and ten million edges, in mini-batches.

The graph: ``--nodes`` nodes in 8 classes, ``--edges`` directed edges, 80% of them between
nodes of one class (homophily), node features a weak class signal drowned in noise, so a
node's neighbours say more about its class than its own features. A dense model would need the
``n x n`` adjacency (4 TB in float32 at a million nodes); a message-passing model needs only
the edges, and mini-batches bound what is held at once to one subgraph and its activations.

The model: two ``SAGEConv`` layers aggregating with ``everygraph.nn.LCMAggregation``, a linear
classifier. Mini-batches come from PyG's ``RandomNodeLoader`` (random node parts, each with
its induced subgraph; plain PyTorch, no compiled backend), or ``NeighborLoader`` (sampled
neighbourhoods around seed nodes, read at ``out[:batch_size]``) with ``--loader neighbor``
where ``pyg-lib`` or ``torch-sparse`` is installed. A progress bar (tqdm) follows each epoch;
the loss of every step is plotted to ``large_graph.png``; ``large_graph.json`` holds the
numbers. At the end the script prints the peak resident memory (``resource.getrusage``) and
checks it against ``--memory-bound-gb``.

Run it::

    python examples/large_graph.py --threads 1   # 1,000,000 nodes, 10,000,000 edges: about 8
                                                 # minutes on 2 busy cores, peak RSS 3.3 GB (bound 4 GB)
    python examples/large_graph.py --quick    # 20,000 nodes, 200,000 edges, under a minute
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.loader import RandomNodeLoader
from torch_geometric.nn import SAGEConv
from tqdm import tqdm

from everygraph.nn import LCMAggregation

NUM_CLASSES = 8
FEATURES = 16


def homophilous_graph(num_nodes: int, num_edges: int, same_class: float = 0.8, seed: int = 0) -> Data:
    """A random graph whose edges mostly join nodes of one class; ``x`` ``[n, 16]`` float32
    (class one-hot in the first 8 columns, plus noise of standard deviation 1.5 everywhere),
    ``y`` ``[n]``, a random 80/20 ``train_mask``/``test_mask``."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (num_nodes,), generator=gen)
    by_class = torch.argsort(y)
    counts = torch.bincount(y, minlength=NUM_CLASSES)
    starts = counts.cumsum(0) - counts
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    # a same-class partner: a uniform position inside the source's class block of by_class
    cls = y[src]
    offset = (torch.rand(num_edges, generator=gen) * counts[cls]).long()
    dst = by_class[starts[cls] + offset]
    del cls, offset
    random_dst = torch.rand(num_edges, generator=gen) >= same_class
    dst[random_dst] = torch.randint(0, num_nodes, (int(random_dst.sum()),), generator=gen)
    del random_dst
    x = torch.randn(num_nodes, FEATURES, generator=gen) * 1.5
    x[torch.arange(num_nodes), y] += 1.0
    train_mask = torch.rand(num_nodes, generator=gen) < 0.8
    return Data(x=x, edge_index=torch.stack([src, dst]), y=y, train_mask=train_mask, test_mask=~train_mask)


class Net(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.conv1 = SAGEConv(FEATURES, hidden, aggr=LCMAggregation(FEATURES, FEATURES))
        self.conv2 = SAGEConv(hidden, hidden, aggr=LCMAggregation(hidden, hidden))
        self.classify = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = self.conv1(x, edge_index).relu()
        h = self.conv2(h, edge_index).relu()
        return self.classify(h)


def make_loader(data: Data, args: argparse.Namespace, shuffle: bool):
    if args.loader == "random":
        return RandomNodeLoader(data, num_parts=args.parts, shuffle=shuffle)
    from torch_geometric.loader import NeighborLoader  # needs pyg-lib or torch-sparse

    return NeighborLoader(data, num_neighbors=[10, 10], batch_size=args.batch_size, shuffle=shuffle)


def seeds(batch: Data) -> slice:
    """Rows of the nodes a mini-batch is for: the ``batch_size`` seeds of a sampled
    neighbourhood, or every node of a random part."""
    return slice(0, getattr(batch, "batch_size", None) or batch.num_nodes)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: kilobytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 nodes, 200,000 edges")
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--edges", type=int, default=10_000_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--loader", choices=("random", "neighbor"), default="random")
    parser.add_argument("--parts", type=int, default=4, help="RandomNodeLoader parts per epoch")
    parser.add_argument("--batch-size", type=int, default=4096, help="NeighborLoader seed nodes per batch")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seeds the graph, the parameters and the loader's parts")
    parser.add_argument("--memory-bound-gb", type=float, default=4.0, help="fail if the peak RSS exceeds this")
    parser.add_argument("--out", default=".", help="directory for large_graph.png and large_graph.json")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.edges, args.epochs = 20_000, 200_000, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.loader == "neighbor" and not (importlib.util.find_spec("pyg_lib") or importlib.util.find_spec("torch_sparse")):
        parser.error("--loader neighbor needs pyg-lib or torch-sparse; use --loader random")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    start = time.perf_counter()
    data = homophilous_graph(args.nodes, args.edges, seed=args.seed)
    print(f"graph: {data.num_nodes:,} nodes, {data.num_edges:,} edges ({time.perf_counter() - start:.1f} s); "
          f"a dense adjacency would take {4 * data.num_nodes**2 / 1e9:,.1f} GB in float32", flush=True)
    model = Net(args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    losses: list[float] = []
    for epoch in range(args.epochs):
        model.train()
        bar = tqdm(make_loader(data, args, shuffle=True), desc=f"epoch {epoch}", unit="batch")
        for batch in bar:
            rows = seeds(batch)
            mask = batch.train_mask[rows]
            logits = model(batch.x, batch.edge_index)[rows]
            loss = F.cross_entropy(logits[mask], batch.y[rows][mask])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}", rss=f"{peak_rss_gb():.2f} GB")
        print(f"epoch {epoch}: last loss {losses[-1]:.4f}", flush=True)

    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in tqdm(make_loader(data, args, shuffle=False), desc="test", unit="batch"):
            rows = seeds(batch)
            mask = batch.test_mask[rows]
            prediction = model(batch.x, batch.edge_index)[rows].argmax(-1)
            correct += int((prediction[mask] == batch.y[rows][mask]).sum())
            total += int(mask.sum())
    accuracy = correct / max(total, 1)
    # the features alone: the best a model blind to the edges can do with this signal
    features_only = float((data.x[data.test_mask, :NUM_CLASSES].argmax(-1) == data.y[data.test_mask]).float().mean())
    peak = peak_rss_gb()
    print(f"test accuracy {accuracy:.3f} (chance {1 / NUM_CLASSES:.3f}, own features' argmax {features_only:.3f})")
    print(f"peak resident memory {peak:.2f} GB (bound {args.memory_bound_gb:.2f} GB); "
          f"total {time.perf_counter() - start:.0f} s")

    summary = dict(nodes=data.num_nodes, edges=data.num_edges, loader=args.loader, epochs=args.epochs,
                   losses=losses, test_accuracy=accuracy, features_only_accuracy=features_only,
                   peak_rss_gb=peak, memory_bound_gb=args.memory_bound_gb)
    (out / "large_graph.json").write_text(json.dumps(summary, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses)
    ax.set(xlabel="step (mini-batch)", ylabel="training loss (cross-entropy)",
           title=f"{data.num_nodes:,} nodes, {data.num_edges:,} edges, {args.loader} loader")
    fig.tight_layout()
    fig.savefig(out / "large_graph.png", dpi=120)
    if peak > args.memory_bound_gb:
        print(f"peak resident memory {peak:.2f} GB exceeds the bound of {args.memory_bound_gb:.2f} GB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
