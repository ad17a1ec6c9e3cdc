"""Benchmark: ``delta_product`` on a sequence (one path with inline read-out nodes, the scan
engine's recurrent execution) against the same sequence given as a DAG (sub-node chains with
read-out leaves, the wavefront execution: the route every sequence took before) and the
paper's loop ``delta_product_reference``, forward and forward+backward.

    python benchmarks/delta_product.py                  # B=4, H=2, dk=dv=16, n_h = 1, 2, 3, L = 64, 256
    python benchmarks/delta_product.py --quick

Times are medians (ms) of ``--repeats`` runs, the three interleaved, one thread. Ratios are
the sequence route's time over the others' (below 1: the sequence route is faster). Before
timing, the outputs are compared.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from everygraph.graphlib import Lattice
from everygraph.sequence import delta_product, delta_product_reference


def inputs(B, L, H, n_h, d, grad):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, L, H, d, generator=gen)
    k = torch.nn.functional.normalize(torch.randn(B, L, H, n_h, d, generator=gen), dim=-1)
    v = torch.randn(B, L, H, n_h, d, generator=gen)
    beta = 2 * torch.rand(B, L, H, n_h, generator=gen)
    gate = torch.rand(B, L, H, generator=gen)
    return [t.requires_grad_(grad) for t in (q, k, v, beta, gate)]


def timed(fn, backward):
    start = time.perf_counter()
    out = fn()
    if backward:
        out.sum().backward()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--householder", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.householder, args.repeats = [16], [2], 2
    torch.set_num_threads(args.threads)
    print("| L | n_h | pass | sequence ms | DAG ms | loop ms | sequence / DAG | sequence / loop |")
    print("|---|---|---|---|---|---|---|---|")
    for L in args.lengths:
        for n_h in args.householder:
            q, k, v, beta, gate = inputs(args.batch, L, args.heads, n_h, args.dim, False)
            engine = delta_product(Lattice((L,)), q, k, v, beta, gate=gate)
            loop, _ = delta_product_reference(q, k, v, beta, gate=gate)
            assert torch.allclose(engine, loop, atol=1e-4, rtol=1e-4), (engine - loop).abs().max()
            dag = Lattice((L,)).to_dag()
            for backward in (False, True):
                xs = inputs(args.batch, L, args.heads, n_h, args.dim, backward)
                run_engine = lambda: delta_product(Lattice((L,)), *xs[:4], gate=xs[4])  # noqa: E731
                run_dag = lambda: delta_product(dag, *xs[:4], gate=xs[4])  # noqa: E731
                run_loop = lambda: delta_product_reference(*xs[:4], gate=xs[4])[0]  # noqa: E731
                run_engine(), run_dag(), run_loop()  # warm-up (builds the expanded DAG and its plan once)
                times = {"engine": [], "dag": [], "loop": []}
                for _ in range(args.repeats):
                    times["engine"].append(timed(run_engine, backward))
                    times["dag"].append(timed(run_dag, backward))
                    times["loop"].append(timed(run_loop, backward))
                e, d, lo = (statistics.median(times[name]) for name in ("engine", "dag", "loop"))
                print(f"| {L} | {n_h} | {'fwd+bwd' if backward else 'fwd'} | {e:.1f} | {d:.1f} | {lo:.1f} | {e / d:.2f} | {e / lo:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
