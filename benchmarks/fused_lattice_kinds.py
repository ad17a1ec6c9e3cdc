"""The compiled lattice loop (``fused_lattice``) for the ``elementwise`` and ``diagonal`` kinds
against the PyTorch executions of 2D grids, in the same run.

Cases: Mamba on an image (:func:`~everygraph.sequence.grid_selective_scan`: the elementwise kind
with per-entry source/mark weights, one head, ``dk = N`` state size, ``dv = D`` channels) and a
GLA-style diagonal scan (``scan(kind="diagonal")``, two heads). Times forward and
forward+backward as medians of interleaved repeats and prints each execution's time and its
speed-up over ``wavefront`` (today's default for these kinds on grids) and ``lattice``.

    python benchmarks/fused_lattice_kinds.py --threads 1
    python benchmarks/fused_lattice_kinds.py --quick     # a smoke test
"""

from __future__ import annotations

import argparse
import time

import torch
from grid_selective_scan import scan_case as mamba_case
from timing import execution_medians

from everygraph.graphlib import Lattice
from everygraph.sequence import scan
from everygraph.sequence.plstm.layout import lattice_dag

EXECUTIONS = ("fused_lattice", "lattice", "wavefront")


def diagonal_case(side: int, dk: int, dv: int, heads: int = 2, batch: int = 2):
    gen = torch.Generator().manual_seed(1)
    lattice = Lattice((side, side))
    dag = lattice_dag(lattice)
    N, E, L = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()
    leaves = [torch.randn(batch, N, heads, dk, generator=gen), torch.randn(batch, N, heads, dk, generator=gen),
              torch.randn(batch, N, heads, dv, generator=gen), torch.rand(batch, E, heads, generator=gen),
              torch.rand(batch, L, heads, dk, generator=gen) * 0.5, torch.rand(batch, E, heads, generator=gen),
              torch.randn(batch, N, heads, generator=gen)]

    def call(execution):
        return scan(lattice, *leaves, kind="diagonal", execution=execution)

    return leaves, call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    parser.add_argument("--sides", type=int, nargs="+", default=[16, 32, 64], help="grid sides (square grids)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    sides = [8] if args.quick else args.sides
    cases = []
    for side in sides:
        cases.append((f"Mamba2d {side}x{side}, D=16, N=16", mamba_case(side, 16, 16)))
        cases.append((f"diagonal {side}x{side}, H=2, dk=dv=16", diagonal_case(side, 16, 16)))
    print(f"median of {args.repeat} ({args.clock} clock, {args.threads} thread(s)), batch 2; seconds forward | forward+backward")
    for name, (leaves, call) in cases:
        result = execution_medians(call, EXECUTIONS, leaves, 1 if args.quick else args.repeat, clock)
        fused_f, fused_b = result["fused_lattice"]
        row = [f"{e} {f:.4f} | {b:.4f}" for e, (f, b) in result.items()]
        speedups = [f"x{result[e][0] / fused_f:.1f} | x{result[e][1] / fused_b:.1f} over {e}" for e in EXECUTIONS[1:]]
        print(f"{name}: " + "; ".join(row) + "  -> fused_lattice " + ", ".join(speedups))


if __name__ == "__main__":
    main()
