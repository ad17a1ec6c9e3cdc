"""Second minimum of a multiset: which aggregator extrapolates to larger sets?

The benchmark task of "Learnable Commutative Monoids for Graph Neural Networks" (Ong &
Velickovic, LoG 2022, https://arxiv.org/abs/2212.08541): the input is a multiset of integers
in 0..9, the target the second-smallest element (a 10-way classification; the label is
uniform at every set size, so chance is 10%; see ``everygraph.datasets.SecondMinimum``).
Models train on sets of size 2..16 and are tested on sizes 2..64.

Every model is the same except its aggregator: ``embedding(value) -> MLP -> aggregate over
the set -> MLP -> 10 logits``. Aggregators compared:

* **sum**, **max** (PyG ``SumAggregation`` / ``MaxAggregation``);
* **GRU**: PyG ``GRUAggregation`` (reads the set as a sequence, O(n) depth);
* **PyG LCM**: PyG ``LCMAggregation`` (tree reduction over a zero-padded batch);
* **ours**: ``everygraph.nn.LCMAggregation`` (tree reduction over each set's own elements,
  learned identity), trained with the paper's two aids: ``shuffle=True`` (a random pairing
  order per step) and ``--assoc-weight`` times ``associativity_loss``.

Run it::

    python examples/lcm_second_minimum.py            # 3-6 minutes on 2 busy CPU cores
    python examples/lcm_second_minimum.py --quick    # a short run (80 steps per model), under 30 s

It prints a table of test accuracy per set size, a second one where each test batch also
holds one set of size 16 (a batch-independent aggregator scores the same; PyG's GRU and LCM,
which zero-pad every set to the batch's largest, do not), and writes ``lcm_second_minimum.png``
(accuracy vs set size) and ``lcm_second_minimum.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.aggr import GRUAggregation, MaxAggregation, SumAggregation
from torch_geometric.nn.aggr import LCMAggregation as PyGLCMAggregation
from tqdm import tqdm

from everygraph.datasets import SecondMinimum
from everygraph.nn import LCMAggregation

MODELS = ("sum", "max", "GRU", "PyG LCM", "ours")


def make_aggregator(name: str, dim: int) -> nn.Module:
    if name == "sum":
        return SumAggregation()
    if name == "max":
        return MaxAggregation()
    if name == "GRU":
        return GRUAggregation(dim, dim)
    if name == "PyG LCM":
        return PyGLCMAggregation(dim, dim)
    if name == "ours":
        return LCMAggregation(dim, dim, shuffle=True)
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")


class SetClassifier(nn.Module):
    """``embedding -> MLP -> aggregator -> MLP -> logits``; ``index`` sorted (PyG's GRU/LCM need it)."""

    def __init__(self, aggregator: nn.Module, num_values: int, dim: int):
        super().__init__()
        self.embed = nn.Sequential(nn.Embedding(num_values, dim), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.aggr = aggregator
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, num_values))

    def encode(self, values: Tensor) -> Tensor:
        return self.embed(values)

    def forward(self, values: Tensor, index: Tensor, num_sets: int) -> Tensor:
        return self.head(self.aggr(self.encode(values), index, dim_size=num_sets))


def train(name: str, model: SetClassifier, data: SecondMinimum, args, seed: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    with tqdm(total=args.steps, desc=f"train {name}", unit="step", disable=args.no_progress) as bar:
        for step in range(args.steps):
            ids = torch.randint(0, len(data), (args.batch_size,), generator=g)
            values, index, labels = data.batch(ids)
            loss = F.cross_entropy(model(values, index, ids.numel()), labels)
            if isinstance(model.aggr, LCMAggregation) and args.assoc_weight > 0:
                loss = loss + args.assoc_weight * model.aggr.associativity_loss(model.encode(values), index,
                                                                                 dim_size=ids.numel())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if step % 50 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
            bar.update(1)
    return losses


@torch.no_grad()
def accuracy_by_size(model: SetClassifier, sizes: list[int], num_sets: int, seed: int,
                     companion: int = 0) -> dict[int, float]:
    """Accuracy on ``num_sets`` test sets of each size, evaluated 256 sets per batch.

    ``companion > 0`` appends one extra set of that size to every batch (its prediction is
    ignored): a batch-independent aggregator gives the same accuracy; one that pads to the
    batch's largest set (PyG's GRU and LCM) sees different inputs."""
    model.eval()
    extra = SecondMinimum(1, companion, companion, seed=seed - 1).batch(torch.arange(1)) if companion else None
    result = {}
    for size in sizes:
        data = SecondMinimum(num_sets, size, size, seed=seed + size)
        correct = 0
        for start in range(0, num_sets, 256):
            ids = torch.arange(start, min(start + 256, num_sets))
            values, index, labels = data.batch(ids)
            num = ids.numel()
            if extra is not None:
                values, index = torch.cat([values, extra[0]]), torch.cat([index, extra[1] + num])
            logits = model(values, index, num + (extra is not None))[:num]
            correct += int((logits.argmax(-1) == labels).sum())
        result[size] = correct / num_sets
    return result


def plot(results: dict, train_max: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, r in results.items():
        sizes = sorted(int(s) for s in r["accuracy"])
        ax.plot(sizes, [r["accuracy"][s] for s in sizes], marker="o", label=name)
    ax.axvspan(2, train_max, color="0.9", label="training sizes")
    ax.axhline(0.1, color="0.5", linestyle=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("set size")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("multiset second minimum: train 2..%d, test 2..64" % train_max)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1500, help="training steps per model")
    parser.add_argument("--batch-size", type=int, default=128, help="sets per step")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--assoc-weight", type=float, default=0.1, help="weight of ours' associativity loss")
    parser.add_argument("--train-sets", type=int, default=20000)
    parser.add_argument("--test-sets", type=int, default=500, help="test sets per size")
    parser.add_argument("--sizes", default="2,4,8,16,24,32,48,64", help="test set sizes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="small models: one thread is as fast and robust to a busy CPU")
    parser.add_argument("--quick", action="store_true", help="short run (< 30 s): learns the task partly, not the tutorial's result")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--out", default="out", help="directory for the plot and results")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.train_sets, args.test_sets, args.sizes = 80, 1000, 100, "2,8,64"
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for n in names:
        if n not in MODELS:
            parser.error(f"unknown model {n!r}; valid: {', '.join(MODELS)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    data = SecondMinimum(args.train_sets, 2, 16, seed=args.seed)
    print(f"data: {len(data)} training sets of size 2..16, {args.test_sets} test sets per size {sizes}")
    results = {}
    for i, name in enumerate(names):
        torch.manual_seed(args.seed + i)
        model = SetClassifier(make_aggregator(name, args.dim), data.num_values, args.dim)
        t0 = time.time()
        losses = train(name, model, data, args, seed=args.seed + 100 + i)
        train_time = time.time() - t0
        acc = accuracy_by_size(model, sizes, args.test_sets, seed=args.seed + 1000)
        acc_companion = accuracy_by_size(model, sizes, args.test_sets, seed=args.seed + 1000, companion=16)
        results[name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": train_time,
            "final_loss": sum(losses[-50:]) / len(losses[-50:]),
            "accuracy": acc,
            "accuracy_with_companion_16": acc_companion,
        }
        print(f"{name}: {results[name]['parameters']} parameters, trained {train_time:.0f} s; accuracy "
              + ", ".join(f"{s}: {a:.3f}" for s, a in acc.items()), flush=True)

    header = "| model | " + " | ".join(f"n={s}" for s in sizes) + " |"
    print("\n" + header + "\n|" + "---|" * (len(sizes) + 1))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r['accuracy'][s]:.3f}" for s in sizes) + " |")
    print("\nthe same test sets, each batch joined by one extra set of size 16 (batch independence check):")
    print(header + "\n|" + "---|" * (len(sizes) + 1))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r['accuracy_with_companion_16'][s]:.3f}" for s in sizes) + " |")
    plot(results, 16, out / "lcm_second_minimum.png")
    (out / "lcm_second_minimum.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    print(f"wrote {out / 'lcm_second_minimum.png'} and {out / 'lcm_second_minimum.json'} ({time.time() - start:.0f} s total)")


if __name__ == "__main__":
    main()
