"""The compiled lattice loop (``fused_lattice``) for the ``householder`` kind (DeltaNet /
DeltaProduct transitions) against the PyTorch executions, in the same run; and, for routing,
the ``diagonal`` and ``elementwise`` kinds on paths against ``recurrent`` / ``chunked``.

Cases (float32, batch 2, two heads, scalar source/mark weights, gates drawn so the states stay
bounded): a path of length ``L`` (``recurrent`` is the PyTorch default there) and a square
grid (``wavefront`` is the PyTorch default there), ``dk = dv`` and ``r`` factors per
transition. Times forward (no autograd) and forward+backward as medians of interleaved
repeats and prints each execution's time and ``fused_lattice``'s speed-up over the others.

    python benchmarks/fused_householder.py --threads 1
    python benchmarks/fused_householder.py --part paths-kinds     # diagonal/elementwise on paths
    python benchmarks/fused_householder.py --quick                # a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from everygraph.graphlib import Lattice
from everygraph.sequence import scan
from everygraph.sequence.plstm.layout import lattice_dag


def inputs(lattice: Lattice, kind: str, dk: int, dv: int, factors: int, heads: int = 2, batch: int = 2):
    gen = torch.Generator().manual_seed(0)
    dag = lattice_dag(lattice)
    N, E, L = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()
    indegree = 2 if lattice.ndim == 2 and min(lattice.shape) > 1 else 1
    if kind == "householder":
        w = torch.nn.functional.normalize(torch.randn(batch, L, heads, factors, dk, generator=gen), dim=-1)
        beta = torch.rand(batch, L, heads, factors, 1, generator=gen) * 2
        gamma = torch.full((batch, L, heads, factors, 1), 0.9 / indegree)
        transition = torch.cat([w, beta, gamma], dim=-1)
    elif kind == "diagonal":
        transition = torch.rand(batch, L, heads, dk, generator=gen) * 0.9 / indegree
    else:
        transition = torch.rand(batch, L, heads, dk, dv, generator=gen) * 0.9 / indegree
    return [torch.randn(batch, N, heads, dk, generator=gen), torch.randn(batch, N, heads, dk, generator=gen) / dk**0.5,
            torch.randn(batch, N, heads, dv, generator=gen), torch.rand(batch, E, heads, generator=gen), transition,
            torch.rand(batch, E, heads, generator=gen), torch.randn(batch, N, heads, generator=gen)]


def measure(lattice, kind, leaves, executions, repeat: int, clock) -> dict[str, tuple[float, float]]:
    """Median forward and forward+backward seconds per execution, repeats interleaved."""
    times = {e: ([], []) for e in executions}
    for _ in range(repeat + 1):  # the first round warms up (JIT compilation, caches)
        for execution in executions:
            with torch.no_grad():
                start = clock()
                scan(lattice, *leaves, kind=kind, execution=execution)
                forward = clock() - start
            for t in leaves:
                t.requires_grad_()
            start = clock()
            scan(lattice, *leaves, kind=kind, execution=execution).square().sum().backward()
            both = clock() - start
            for t in leaves:
                t.grad = None
                t.requires_grad_(False)
            times[execution][0].append(forward)
            times[execution][1].append(both)
    return {e: (statistics.median(f[1:]), statistics.median(b[1:])) for e, (f, b) in times.items()}


def report(name: str, result: dict[str, tuple[float, float]]) -> None:
    fused_f, fused_b = result["fused_lattice"]
    row = [f"{e} {f:.4f} | {b:.4f}" for e, (f, b) in result.items()]
    speedups = [f"x{f / fused_f:.1f} | x{b / fused_b:.1f} over {e}" for e, (f, b) in result.items() if e != "fused_lattice"]
    print(f"{name}: " + "; ".join(row) + "  -> fused_lattice " + ", ".join(speedups), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--part", choices=["householder", "paths-kinds", "all"], default="householder")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096], help="path lengths")
    parser.add_argument("--sides", type=int, nargs="+", default=[32, 64], help="grid sides (square grids)")
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 32], help="dk = dv")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2], help="householder factors r")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    lengths, sides, dims, factors = ([64], [8], [8], [2]) if args.quick else (args.lengths, args.sides, args.dims, args.factors)
    repeat = 1 if args.quick else args.repeat
    print(f"median of {repeat} ({args.clock} clock, {args.threads} thread(s)), float32, B=2, H=2; "
          "seconds forward | forward+backward")
    if args.part in ("householder", "all"):
        for dim in dims:
            for r in factors:
                for length in lengths:
                    lattice = Lattice((length,))
                    leaves = inputs(lattice, "householder", dim, dim, r)
                    report(f"householder path L={length}, dk=dv={dim}, r={r}",
                           measure(lattice, "householder", leaves, ("fused_lattice", "recurrent"), repeat, clock))
                for side in sides:
                    lattice = Lattice((side, side))
                    leaves = inputs(lattice, "householder", dim, dim, r)
                    report(f"householder grid {side}x{side}, dk=dv={dim}, r={r}",
                           measure(lattice, "householder", leaves, ("fused_lattice", "wavefront"), repeat, clock))
    if args.part in ("paths-kinds", "all"):
        for dim in dims:
            for length in lengths:
                lattice = Lattice((length,))
                for kind, executions in (("diagonal", ("fused_lattice", "recurrent", "chunked")),
                                         ("elementwise", ("fused_lattice", "recurrent"))):
                    leaves = inputs(lattice, kind, dim, dim, 1)
                    report(f"{kind} path L={length}, dk=dv={dim}", measure(lattice, kind, leaves, executions, repeat, clock))


if __name__ == "__main__":
    main()
