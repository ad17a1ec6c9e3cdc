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
    python benchmarks/fused_householder.py --part fla             # DeltaProduct vs fla-core's naive loop
    python benchmarks/fused_householder.py --quick                # a smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import torch
from timing import execution_medians, forward_backward_medians

from everygraph.graphlib import Lattice
from everygraph.sequence import delta_product, scan
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
    return execution_medians(lambda e: scan(lattice, *leaves, kind=kind, execution=e), executions, leaves, repeat, clock)


def report(name: str, result: dict[str, tuple[float, float]]) -> None:
    fused_f, fused_b = result["fused_lattice"]
    row = [f"{e} {f:.4f} | {b:.4f}" for e, (f, b) in result.items()]
    speedups = [f"x{f / fused_f:.1f} | x{b / fused_b:.1f} over {e}" for e, (f, b) in result.items() if e != "fused_lattice"]
    print(f"{name}: " + "; ".join(row) + "  -> fused_lattice " + ", ".join(speedups), flush=True)


def fla_naive_delta_product():
    """fla-core's naive gated DeltaProduct loop (``fla/ops/gated_delta_product/naive.py``), loaded
    from its file so that neither fla's Triton kernels nor its other dependencies are imported;
    None when fla-core is not installed (``pip install fla-core``)."""
    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "ops" / "gated_delta_product" / "naive.py"
    if not path.exists():
        return None
    module_spec = importlib.util.spec_from_file_location("fla_naive_gated_delta_product", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.naive_recurrent_gated_delta_product


def fla_case(length: int, dim: int, num_householder: int, repeat: int, clock) -> None:
    """DeltaProduct on a sequence: ours (default execution, and ``recurrent``) against fla-core's
    naive loop, same inputs; checks that the outputs agree before timing."""
    naive = fla_naive_delta_product()
    if naive is None:
        print("fla-core is not installed (pip install fla-core): no side-by-side")
        return
    gen = torch.Generator().manual_seed(0)
    batch, heads = 2, 2
    q = torch.randn(batch, length, heads, dim, generator=gen)
    k = torch.nn.functional.normalize(torch.randn(batch, length, heads, num_householder, dim, generator=gen), dim=-1)
    v = torch.randn(batch, length, heads, num_householder, dim, generator=gen)
    beta = torch.rand(batch, length, heads, num_householder, generator=gen) * 2
    log_gate = -torch.rand(batch, length, heads, generator=gen) * 0.1
    leaves = [q, k, v, beta, log_gate]
    scale = dim**-0.5

    def ours(execution):
        def run():
            return delta_product(Lattice((length,)), q, k, v, beta, gate=log_gate.exp(), scale=scale, execution=execution)
        return run

    def theirs():
        flat = lambda t: t.transpose(2, 3).flatten(1, 2)  # noqa: E731 - [B, L, H, n_h, ...] -> [B, L * n_h, H, ...]
        return naive(q, flat(k), flat(v), log_gate, flat(beta[..., None])[..., 0], scale, num_householder=num_householder)[0]

    calls = {"ours (default)": ours(None), "ours (recurrent)": ours("recurrent"), "fla naive": theirs}
    with torch.no_grad():
        error = (calls["ours (default)"]() - theirs()).abs().max().item()
    result = forward_backward_medians(calls, leaves, repeat, clock)
    mine_f, mine_b = result["ours (default)"]
    row = "; ".join(f"{n} {f:.4f} | {b:.4f}" for n, (f, b) in result.items())
    ratios = ", ".join(f"x{f / mine_f:.1f} | x{b / mine_b:.1f} over {n}" for n, (f, b) in result.items() if n != "ours (default)")
    print(f"DeltaProduct L={length}, dk=dv={dim}, n_h={num_householder} (max |ours - fla| = {error:.1e}): {row}"
          f"  -> ours {ratios}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--part", choices=["householder", "paths-kinds", "fla", "all"], default="householder")
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
    if args.part in ("fla", "all"):
        for dim in dims:
            for r in factors:
                for length in lengths:
                    fla_case(length, dim, r, repeat, clock)


if __name__ == "__main__":
    main()
