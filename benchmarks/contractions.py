"""Benchmark: the full degree-6 simple-graph basis (all outputs) on a batch of random graphs.

Three executions of the same polynomials, side by side in one process:

* **compiled**: ``everygraph.contractions.compile_plan`` + ``evaluate`` (shared components and
  sub-contractions, batched over graphs); the batch is split into chunks so the estimated peak
  memory stays under ``--memory-gib``.
* **left-to-right**: what the authors' code does -- one graph and one pattern at a time,
  ``torch.einsum`` with opt_einsum disabled, so operands are contracted left to right (in
  the canonical edge order of the pattern). Running it in full would take hours (some
  disconnected patterns build n^6..n^7 intermediates), so it is timed on a stratified sample of
  patterns whose intermediates fit in memory, on ``--ltr-graphs`` graphs, and extrapolated with
  a fitted ``time = a + b * flops`` per call to all patterns x all graphs; the output says so.
* **opt_einsum**: ``opt_einsum.contract`` per pattern, batched over graphs, the path searched
  on every call (no caching, no sharing between patterns); it keeps its outputs per batch
  chunk like the plan, so both pay for writing all 2292 output channels.

Run:  python benchmarks/contractions.py            (n = 16, 32, 64; batch 128)
      python benchmarks/contractions.py --quick    (a smoke run)
"""

from __future__ import annotations

import argparse
import random
import time

import opt_einsum
import torch

from everygraph.contractions import basis, compile_plan, evaluate
from everygraph.contractions.pattern import Pattern
from everygraph.contractions.plan import _opt_equation, left_to_right_flops


def random_graphs(batch: int, n: int, p: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    upper = (torch.rand(batch, n, n, generator=gen) < p).float().triu(1)
    return upper + upper.transpose(1, 2)


def operands(pattern: Pattern, x: torch.Tensor) -> tuple[str, list[torch.Tensor]]:
    """The pattern's einsum (with batch letter) and its operands on ``x`` [B, n, n]."""
    eq, _ = _opt_equation(pattern, x.shape[-1])
    ops = []
    for term in eq.split("->")[0].split(","):
        if len(term) == 3:
            ops.append(x)
        else:  # a loop (diagonal) or a vertex without edges (all ones)
            ops.append(torch.ones(x.shape[:2]))
    return eq, ops


def batch_chunk(plan, n: int, batch: int, memory_gib: float) -> int:
    """Largest power-of-two fraction of the batch whose estimated peak fits ``memory_gib``."""
    chunk = batch
    while chunk > 1 and plan.peak_memory(n, chunk) > memory_gib * 2**30:
        chunk //= 2
    return chunk


def run_compiled(plan, x: torch.Tensor, chunk: int) -> float:
    start = time.perf_counter()
    for s in range(0, x.shape[0], chunk):
        evaluate(plan, x[s : s + chunk], memory_limit=float("inf"))
    return time.perf_counter() - start


def run_opt_einsum(patterns, x: torch.Tensor, chunk: int) -> float:
    """Per pattern ``opt_einsum.contract`` (path searched on every call), batched over the same
    chunks of graphs as the plan, keeping every output of a chunk like the plan does."""
    start = time.perf_counter()
    for s in range(0, x.shape[0], chunk):
        outputs = []
        for p in patterns:
            eq, ops = operands(p, x[s : s + chunk])
            if eq != "->":
                outputs.append(opt_einsum.contract(eq, *ops, optimize="dp"))
        del outputs
    return time.perf_counter() - start


def left_to_right_estimate(patterns, x: torch.Tensor, sample: int, graphs: int, seed: int):
    """Estimate the left-to-right time of every pattern on every graph of ``x``.

    Patterns whose left-to-right FLOPs fit are sorted by FLOPs and cut into ``sample`` strata;
    one random pattern per stratum is timed on ``graphs`` graphs and stands for its stratum
    (stratified sampling). Patterns too heavy to run (n^6.. intermediates, often more memory
    than the machine has) are charged their FLOPs at the throughput measured over the timed
    calls of >= 1 MFLOP.
    """
    n = x.shape[-1]
    flops = [left_to_right_flops(p, n) for p in patterns]
    budget = 2e8  # FLOPs per call we are willing to run
    feasible = sorted((i for i, f in enumerate(flops) if f <= budget), key=lambda i: flops[i])
    heavy = [i for i, f in enumerate(flops) if f > budget]
    rng = random.Random(seed)
    strata = [feasible[k * len(feasible) // sample : (k + 1) * len(feasible) // sample] for k in range(sample)]
    per_graph = 0.0
    big_t, big_f = 0.0, 0
    with torch.backends.opt_einsum.flags(enabled=False):
        for stratum in strata:
            if not stratum:
                continue
            i = rng.choice(stratum)
            eq, ops = operands(patterns[i], x[:graphs])
            if eq == "->":
                continue
            # the authors' way: one graph at a time, no batch letter
            lhs, rhs = eq.split("->")
            eq1 = ",".join(t[1:] for t in lhs.split(",")) + "->" + rhs[1:]
            start = time.perf_counter()
            for g in range(graphs):
                torch.einsum(eq1, *[o[g] for o in ops])
            t = (time.perf_counter() - start) / graphs
            per_graph += t * len(stratum)
            if flops[i] >= 1e6:  # compute-bound calls give the throughput for the heavy ones
                big_t, big_f = big_t + t, big_f + flops[i]
    heavy_time = sum(flops[i] for i in heavy) * (big_t / big_f if big_f else 0.0)
    return x.shape[0] * (per_graph + heavy_time), sum(1 for s in strata if s), len(heavy), x.shape[0] * heavy_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--degree", type=int, default=6)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--density", type=float, default=0.3)
    parser.add_argument("--ltr-sample", type=int, default=60, help="patterns timed left to right")
    parser.add_argument("--ltr-graphs", type=int, default=2, help="graphs timed left to right")
    parser.add_argument("--memory-gib", type=float, default=1.5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a busy shared machine)")
    parser.add_argument("--quick", action="store_true", help="degree 4, n = 16, batch 16")
    args = parser.parse_args()
    if args.quick:
        args.degree, args.sizes, args.batch, args.ltr_sample = 4, [16], 16, 20
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    patterns = [p for o in ("invariant", "node", "edge") for p in basis(args.degree, o, "simple")]
    t_basis = time.perf_counter() - start
    start = time.perf_counter()
    plan = compile_plan(patterns, n_hint=32)
    t_compile = time.perf_counter() - start
    print(f"basis: degree {args.degree} simple, {len(patterns)} patterns ({t_basis:.2f} s, cached on disk after the first run)")
    print(f"compile: {plan} in {t_compile:.2f} s")
    print(f"batch {args.batch} random graphs G(n, {args.density}), float32, {args.threads} threads\n")
    header = f"{'n':>4} {'compiled s':>11} {'opt_einsum s':>13} {'left-to-right s (est.)':>23} {'x vs opt':>9} {'x vs ltr':>10} {'FLOP x opt':>11} {'FLOP x ltr':>11}"
    print(header)
    for n in args.sizes:
        x = random_graphs(args.batch, n, args.density, seed=n)
        chunk = batch_chunk(plan, n, args.batch, args.memory_gib)
        run_compiled(plan, x[:2], chunk)  # warm-up
        t_plan = run_compiled(plan, x, chunk)
        t_opt = run_opt_einsum(patterns, x, chunk)
        t_ltr, sampled, num_heavy, t_heavy = left_to_right_estimate(patterns, x, args.ltr_sample, args.ltr_graphs, seed=n)
        f_plan = plan.flops(n)
        f_opt = plan.flops_per_pattern_optimal(n)
        f_ltr = plan.flops_left_to_right(n)
        print(
            f"{n:>4} {t_plan:>11.3f} {t_opt:>13.3f} {t_ltr:>23.1f} {t_opt / t_plan:>9.1f} {t_ltr / t_plan:>10.0f} "
            f"{f_opt / f_plan:>11.1f} {f_ltr / f_plan:>11.0f}"
        )
        print(
            f"      left-to-right: EXTRAPOLATED from {sampled} timed patterns (one per FLOP stratum) x {args.ltr_graphs} graphs "
            f"to {len(patterns)} patterns x {args.batch} graphs; {num_heavy} patterns too heavy to run charged "
            f"by FLOPs ({t_heavy:.0f} s of the estimate); the runnable patterns alone take {t_ltr - t_heavy:.0f} s, "
            f"so the speed-up is at least {(t_ltr - t_heavy) / t_plan:.0f}x"
        )
    connected = [p for p in patterns if p.is_connected]
    cplan = compile_plan(connected, n_hint=32)
    n = 32
    print(
        f"\nconnected patterns only ({len(connected)}), n = {n}: FLOP ratio vs left-to-right "
        f"{cplan.flops_left_to_right(n) / cplan.flops(n):.0f}x, vs per-pattern opt_einsum "
        f"{cplan.flops_per_pattern_optimal(n) / cplan.flops(n):.1f}x"
    )


if __name__ == "__main__":
    main()
