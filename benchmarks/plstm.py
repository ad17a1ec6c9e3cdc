"""pLSTM's scan engine: the fast executions side by side with the reference loop.

Times forward and forward+backward of ``plstm_scan`` with ``execution="lattice"``,
``"wavefront"`` and ``"reference"`` on 1D sequences (L = 1k, 4k, 16k), 2D grids (32x32,
64x64, 128x128) and a batch of 256 molecule-sized random graphs (oriented by
``graphlib.dagify``); batch 2, one head, dk = dv = 16 (a 64x64 grid is the headline setting). Prints
best-of-N seconds and the speed-up over the reference measured in the same run.

The reference is a Python loop over nodes, so its time is linear in the number of nodes:
above ``--reference-max-nodes`` (default 4096) it is not run but extrapolated linearly from
the largest size of the same family that was measured; such rows say ``(extrapolated)``.
(The molecule batch has no smaller size: its reference is always measured.)

    python benchmarks/plstm.py            # the full table
    python benchmarks/plstm.py --quick    # small sizes, a smoke test
    python benchmarks/plstm.py --only 2D --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from everygraph.graphlib import DAG, Lattice, dagify
from everygraph.sequence.plstm import plstm_scan
from everygraph.sequence.plstm.layout import lattice_dag


def make_inputs(dag: DAG, batch: int, heads: int, dk: int, dv: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n, e, l = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()
    inputs = [
        torch.randn(batch, n, heads, dk, generator=g),
        torch.randn(batch, n, heads, dk, generator=g),
        torch.randn(batch, n, heads, dv, generator=g),
        torch.rand(batch, e, heads, generator=g),
        torch.rand(batch, l, heads, generator=g) * 0.5,  # |column sums| <= 1 on a grid
        torch.rand(batch, e, heads, generator=g),
        torch.rand(batch, n, heads, generator=g),
    ]
    return [t.requires_grad_() for t in inputs]


def timeit(structure, inputs, execution: str, repeat: int) -> tuple[float, float]:
    """Best-of-``repeat`` forward and forward+backward seconds (after one warm-up call)."""
    forward, both = [], []
    for i in range(repeat + 1):
        for t in inputs:
            t.grad = None
        t0 = time.perf_counter()
        h = plstm_scan(structure, *inputs, execution=execution)
        t1 = time.perf_counter()
        h.sum().backward()
        t2 = time.perf_counter()
        if i:
            forward.append(t1 - t0)
            both.append(t2 - t0)
    return min(forward), min(both)


def molecule_batch(num_graphs: int, seed: int = 0):
    """Random trees of 10-30 nodes plus ~10% extra edges (rings), oriented by degree."""
    g = torch.Generator().manual_seed(seed)
    edges, batch, offset = [], [], 0
    for graph in range(num_graphs):
        n = int(torch.randint(10, 31, (1,), generator=g))
        parent = [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, n)]
        pairs = [(p, i) for i, p in zip(range(1, n), parent)]
        for _ in range(max(1, n // 10)):
            u, w = torch.randint(0, n, (2,), generator=g).tolist()
            if u != w:
                pairs.append((u, w))
        edges.append(torch.tensor(pairs).t() + offset)
        batch.append(torch.full((n,), graph))
        offset += n
    dag, _ = dagify(torch.cat(edges, 1), offset, order="degree", batch=torch.cat(batch))
    return dag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference-max-nodes", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["1D", "2D", "graphs"], nargs="+", help="run only these families")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch, heads, dk, dv = 2, 1, 16, 16
    if args.quick:
        lengths, sides, graphs = [256, 512], [8, 16], 16
    else:
        lengths, sides, graphs = [1024, 4096, 16384], [32, 64, 128], 256
    families = [
        ("1D", [(f"L={n}", Lattice((n,))) for n in lengths], ["lattice", "wavefront"]),
        ("2D", [(f"{s}x{s}", Lattice((s, s))) for s in sides], ["lattice", "wavefront"]),
        ("graphs", [(f"{graphs} molecules", molecule_batch(graphs))], ["wavefront"]),
    ]
    print(f"plstm_scan, batch {batch}, heads {heads}, dk = dv = {dk}, float32, {torch.get_num_threads()} threads, best of {args.repeat}")
    header = f"{'structure':>18} {'nodes':>7} {'levels':>6} {'execution':>10} {'forward s':>10} {'fwd+bwd s':>10} {'x ref fwd':>10} {'x ref f+b':>10}"
    print(header)
    print("-" * len(header))
    for family, sizes, executions in families:
        if args.only and family not in args.only:
            continue
        per_node = None  # reference seconds per node (forward, fwd+bwd) at the largest measured size
        for name, structure in sizes:
            dag = lattice_dag(structure) if isinstance(structure, Lattice) else structure
            inputs = make_inputs(dag, batch, heads, dk, dv)
            n = dag.num_nodes
            if n <= args.reference_max_nodes or per_node is None:  # nothing smaller to extrapolate from
                ref = timeit(structure, inputs, "reference", max(1, args.repeat // 2))
                per_node = (ref[0] / n, ref[1] / n)
                note = ""
            else:
                ref = (per_node[0] * n, per_node[1] * n)
                note = " (extrapolated)"
            print(f"{name:>18} {n:>7} {dag.num_levels:>6} {'reference':>10} {ref[0]:>10.4f} {ref[1]:>10.4f} {'1.0':>10} {'1.0':>10}{note}")
            for execution in executions:
                fwd, both = timeit(structure, inputs, execution, args.repeat)
                print(f"{'':>18} {'':>7} {'':>6} {execution:>10} {fwd:>10.4f} {both:>10.4f} {ref[0] / fwd:>10.1f} {ref[1] / both:>10.1f}")
    print("x ref = reference time / this time in the same run (higher is faster).")


if __name__ == "__main__":
    main()
