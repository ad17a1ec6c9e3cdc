"""Equivariant graph polynomials: enumerate, draw, evaluate, and learn substructure counts.

Puny et al., *Equivariant Polynomials for Graph Neural Networks*, ICML 2023,
https://arxiv.org/abs/2302.11556.

1. Enumerate the basis of node-valued polynomials of degree 3 on simple graphs and draw it
   (special vertex red; loops and parallel edges show up in the symmetric domain, drawn too).
2. Evaluate patterns on a molecule-like graph (naphthalene with a side chain): triangle and
   4-cycle counts through the closed forms tr(A^3) / 6 and the 4-cycle formula, checked against networkx.
3. Learn to count triangles and 4-cycles per graph: a message-passing network (GIN, which
   cannot count cycles) against an MLP on polynomial features up to degree 4; plot the errors.

Run:  python examples/equivariant_polynomials.py [--quick] [--out out/]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import torch  # noqa: E402
from torch_geometric.data import Batch, Data  # noqa: E402
from torch_geometric.loader import DataLoader  # noqa: E402
from torch_geometric.nn import GINConv, global_add_pool  # noqa: E402
from torch_geometric.utils import from_networkx  # noqa: E402
from tqdm import tqdm  # noqa: E402

from everygraph.contractions import Pattern, basis, compile_plan, draw_patterns, evaluate  # noqa: E402
from everygraph.transforms import AddPolynomialFeatures  # noqa: E402


def molecule_like() -> nx.Graph:
    """Naphthalene-like fused 6-rings with a side chain ending in a 3-ring and a 4-ring."""
    g = nx.cycle_graph(6)
    g.add_edges_from([(0, 6), (6, 7), (7, 8), (8, 9), (9, 1)])  # second ring fused on edge 0-1
    g.add_edges_from([(4, 10), (10, 11), (11, 12), (12, 13), (13, 14), (14, 12)])  # chain + 3-ring
    g.add_edges_from([(2, 15), (15, 16), (16, 17), (17, 2)])  # a 4-ring (cyclobutyl) on atom 2
    return g


def count_cycles(g: nx.Graph, length: int) -> int:
    return sum(1 for c in nx.simple_cycles(g, length_bound=length) if len(c) == length)


def part_basis(out: str) -> dict:
    simple = basis(3, "node", "simple")
    symmetric = basis(2, "edge", "symmetric")[:24]
    draw_patterns(simple, os.path.join(out, "basis_node_deg3.png"), ncols=7,
                  suptitle="node-valued basis, degree 3, simple graphs (14)")
    draw_patterns(symmetric, os.path.join(out, "basis_edge_deg2_symmetric.png"), ncols=8,
                  suptitle="edge-valued basis, degree 2, symmetric inputs (first 24 of 56)")
    counts = {o: [len(basis(d, o, "simple")) for d in range(5)] for o in ("invariant", "node", "edge")}
    print("basis sizes on simple graphs, degree 0..4:", counts)
    return counts


def part_molecule() -> dict:
    g = molecule_like()
    adj = torch.tensor(nx.to_numpy_array(g, weight=None), dtype=torch.float64)[None]
    names = {
        "tr(A^3)": "ab,bc,ca->",
        "tr(A^4)": "ab,bc,cd,da->",
        "sum deg^2": "ab,ac->",
        "2m": "ab->",
        "(A^3)_aa": "ab,bc,ca->a",
    }
    patterns = [Pattern.from_string(s) for s in names.values()]
    out = evaluate(compile_plan(patterns), adj)
    inv, node = out["invariant"][0], out["node"][0, :, 0]
    triangles = inv[0].item() / 6
    four_cycles = (inv[1] - 2 * inv[2] + inv[3]).item() / 8
    result = {
        "triangles (tr(A^3) / 6)": triangles,
        "triangles (networkx)": sum(nx.triangles(g).values()) / 3,
        "4-cycles ((tr A^4 - 2 sum d^2 + 2m) / 8)": four_cycles,
        "4-cycles (networkx)": count_cycles(g, 4),
        "triangles at node 12 ((A^3)_aa / 2)": node[12].item() / 2,
    }
    for k, v in result.items():
        print(f"  {k:45s} {v:g}")
    return result


def make_dataset(num_graphs: int, seed: int) -> list[Data]:
    gen = torch.Generator().manual_seed(seed)
    data = []
    for i in range(num_graphs):
        n = int(torch.randint(8, 16, (1,), generator=gen))
        p = float(torch.empty(1).uniform_(0.15, 0.4, generator=gen))
        g = nx.gnp_random_graph(n, p, seed=seed * 100003 + i)
        d = from_networkx(g)
        y = torch.tensor([[sum(nx.triangles(g).values()) / 3, count_cycles(g, 4)]], dtype=torch.float)
        data.append(Data(edge_index=d.edge_index, num_nodes=n, y=y))
    return data


class GIN(torch.nn.Module):
    def __init__(self, hidden: int = 64, layers: int = 4) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList()
        c = 1
        for _ in range(layers):
            mlp = torch.nn.Sequential(torch.nn.Linear(c, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden))
            self.convs.append(GINConv(mlp))
            c = hidden
        self.head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))

    def forward(self, batch: Batch) -> torch.Tensor:
        h = torch.ones(batch.num_nodes, 1)
        for conv in self.convs:
            h = torch.relu(conv(h, batch.edge_index))
        return self.head(global_add_pool(h, batch.batch))


class PolyMLP(torch.nn.Module):
    """Linear map + MLP on invariant polynomial features precomputed by the
    ``AddPolynomialFeatures`` transform (raw homomorphism counts, standardised)."""

    def __init__(self, num_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.linear = torch.nn.Linear(num_features, 2)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(num_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))

    def forward(self, batch: Batch) -> torch.Tensor:
        f = (batch.poly_graph - self.mean) / self.std
        return self.linear(f) + self.mlp(f)


def train(model, train_data, test_data, epochs: int, name: str) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loader = DataLoader(train_data, batch_size=32, shuffle=True)
    test_batch = Batch.from_data_list(test_data)
    errors = []
    for _ in tqdm(range(epochs), desc=name, leave=False):
        model.train()
        for batch in loader:
            opt.zero_grad()
            loss = torch.nn.functional.l1_loss(model(batch), batch.y)
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            errors.append((model(test_batch) - test_batch.y).abs().mean(0).tolist())
    return errors


def part_training(out: str, quick: bool, seed: int) -> dict:
    torch.manual_seed(seed)
    n_train, n_test, epochs = (120, 60, 10) if quick else (1500, 300, 80)
    train_data, test_data = make_dataset(n_train, seed), make_dataset(n_test, seed + 1)
    # precompute hom counts of every invariant basis element of degree 1..4 once per graph
    transform = AddPolynomialFeatures(4, outputs=("invariant",), normalize=None)
    poly_train = [transform(d) for d in train_data]
    poly_test = [transform(d) for d in test_data]
    f = torch.cat([d.poly_graph for d in poly_train])
    poly = PolyMLP(f.shape[1])
    poly.mean.copy_(f.mean(0))
    poly.std.copy_(f.std(0).clamp(min=1e-6))
    # Both counts are linear in hom counts (tr A^3 / 6; (tr A^4 - 2 sum d^2 + 2m) / 8), so a
    # least-squares fit of the linear part on the training set is the natural start.
    y = torch.cat([d.y for d in poly_train])
    z = torch.cat([(f - poly.mean) / poly.std, torch.ones(len(f), 1)], dim=1).double()
    sol = torch.linalg.lstsq(z, y.double()).solution.float()
    with torch.no_grad():
        poly.linear.weight.copy_(sol[:-1].T)
        poly.linear.bias.copy_(sol[-1])
        poly.mlp[-1].weight.zero_()
        poly.mlp[-1].bias.zero_()
    results = {}
    curves = {}
    runs = [("GIN (MPNN)", GIN(), train_data, test_data), ("polynomial features (deg <= 4)", poly, poly_train, poly_test)]
    for name, model, tr, te in runs:
        start = time.perf_counter()
        errs = train(model, tr, te, epochs, name)
        curves[name] = errs
        results[name] = {"triangle MAE": errs[-1][0], "4-cycle MAE": errs[-1][1], "seconds": time.perf_counter() - start}
        print(f"  {name:32s} test MAE triangles {errs[-1][0]:.3f}  4-cycles {errs[-1][1]:.3f}")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for k, title in enumerate(["triangles", "4-cycles"]):
        for name, errs in curves.items():
            axes[k].plot([e[k] for e in errs], label=name)
        axes[k].set_yscale("log")
        axes[k].set_title(f"test MAE, {title} per graph")
        axes[k].set_xlabel("epoch")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "counting_errors.png"), dpi=90)
    plt.close(fig)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny run (< 30 s)")
    parser.add_argument("--out", default="out", help="directory for plots and results.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small ops: 1 is fastest on busy cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    print("1. basis")
    counts = part_basis(args.out)
    print("2. a molecule-like graph")
    molecule = part_molecule()
    print("3. learning to count triangles and 4-cycles")
    training = part_training(args.out, args.quick, args.seed)
    with open(os.path.join(args.out, "equivariant_polynomials.json"), "w") as f:
        json.dump({"basis_sizes": counts, "molecule": molecule, "training": training}, f, indent=2)
    print(f"plots and results in {args.out}/")


if __name__ == "__main__":
    main()
