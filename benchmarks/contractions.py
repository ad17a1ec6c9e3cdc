"""Benchmark: compiled contraction plans against opt_einsum and torch.einsum, and the FLOP floor.

Default run (one process, one torch thread, interleaved repeats, both dtypes):

* the 604 connected degree-6 simple-graph patterns with 0, 1 or 2 special vertices (30
  invariant, 114 node, 460 edge), 128 graphs G(32, 0.3);
* the 174 connected degree-5 patterns (12 + 37 + 125), 64 graphs G(24, 0.3);

in float32 and float64, each timed as

* **ours**: ``evaluate(plan, x, out=out)`` on a plan from ``compile_plan`` (compile time printed
  once; the output and the plan's workspace reused across calls, as a training loop would);
  **ours, fresh output**: the same without ``out=`` (a new output tensor per call);
  **ours, chains not regrouped**: ours with the plan's chains of one-index contractions on
  ``[B, n, n, n]`` tensors run as planned (``everygraph/contractions/regroup.py`` off);
  **ours, no compiled CPU kernels**: the same schedule bound without
  ``everygraph/contractions/streaming.py`` and ``small_gemm.py`` (torch and numpy for every
  kernel, as where numba is absent);
  **ours, shared sides not stacked**: ours with each regrouped chain's wide product run on
  its own (``everygraph/contractions/stack.py`` off);
* **opt_einsum cached**: one ``opt_einsum.contract_expression`` per pattern (``dp`` paths,
  built once), called per pattern on the same operands;
* **opt_einsum shared**: the same calls inside ``opt_einsum.shared_intermediates()``, which
  reuses intermediates common to several patterns within the context;
* **torch.einsum**: one ``torch.einsum`` per pattern, its path found on every call (torch's
  default opt_einsum strategy);
* **FLOP floor**: the plan's FLOPs (opt_einsum's count) at this machine's sgemm / dgemm rate,
  measured in the same run (square ``torch.mm``, 1024 x 1024, interleaved with the rest).

The methods run in turn, the order rotated by one each round. Each row prints, over the
interleaved repeats, the median wall time with its 10th and 90th
percentiles and the call-to-call spread (p90 - p10) / median, the same median and spread in
CPU time of the calling thread (``time.thread_time``: what the call itself computed, less
sensitive to other processes than wall time), the ratio to ours, and the peak resident memory
one call adds (VmHWM after resetting it through ``/proc/self/clear_refs``; "n/a" where the
kernel forbids that). Every method's values are checked against ours. The plan is compiled
once per case and shared by both dtypes.

``--full-basis`` runs the older comparison instead: the whole degree-6 basis (2292 patterns,
disconnected ones included) against per-pattern opt_einsum without caching and an
extrapolated left-to-right execution (what the authors' code does).

Run:  python benchmarks/contractions.py              (the comparison above, ~10-30 min)
      python benchmarks/contractions.py --cases 6    (the degree-6 case alone, ~2 min)
      python benchmarks/contractions.py --quick      (a smoke run: degree 4, small batches)
      python benchmarks/contractions.py --full-basis (n = 16, 32, 64; batch 128)
      python benchmarks/contractions.py --kernels    (the schedule's kernel choices alone)
      python benchmarks/contractions.py --profile    (the degree-6 call's CPU time per kind of kernel)
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import random
import statistics
import sys
import time

# numpy's OpenBLAS (which the plan's small CPU products go through) gets the thread count torch
# gets; it reads it when numpy is first imported, so before any import below
_threads = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv[:-1] else "1"
os.environ.setdefault("OPENBLAS_NUM_THREADS", _threads)

import opt_einsum  # noqa: E402  (after the thread setting above)
import torch  # noqa: E402

import everygraph.contractions.schedule as schedule_module  # noqa: E402
from everygraph.contractions import Workspace, basis, compile_plan, connected_patterns, evaluate, streaming  # noqa: E402
from everygraph.contractions.pattern import Pattern  # noqa: E402
from everygraph.contractions.plan import _opt_equation, left_to_right_flops  # noqa: E402


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


def full_basis(args) -> None:
    """The whole basis of one degree (disconnected patterns included) against per-pattern
    opt_einsum and the extrapolated left-to-right execution."""
    if args.quick:
        args.degree, args.sizes, args.batch, args.ltr_sample = 4, [16], 16, 20

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



# --------------------------------------------------------------------------- the comparison
def peak_rss_reset() -> bool:
    """Reset the kernel's peak-RSS counter of this process (False where not permitted)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _release_free_heap() -> None:
    """Give freed heap memory back to the OS, so that RSS counts live memory only."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory(fn) -> float | None:
    """MiB the peak resident set grows by during one call of ``fn`` over the live memory
    before it (freed heap returned to the OS first; None if unmeasurable)."""
    import gc

    gc.collect()
    _release_free_heap()
    if not peak_rss_reset():
        return None
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def connected_case(degree: int) -> list[Pattern]:
    return [p for o in ("invariant", "node", "edge") for p in connected_patterns(degree, o, "simple")]


def _unscheduled_copy(plan):
    """A copy of ``plan`` without its schedules, workspace and bound kernels (built anew on
    its first call)."""
    fresh = copy.copy(plan)
    for cached in ("_schedules", "_workspace"):
        fresh.__dict__.pop(cached, None)
    return fresh


def _scheduled_without(plan, x: torch.Tensor, stage: str):
    """A copy of ``plan`` whose schedule is built with the schedule stage ``stage`` (a
    function of ``schedule.py`` that rewrites the steps) left out, and its first output."""
    plain = _unscheduled_copy(plan)
    rewrite = getattr(schedule_module, stage)
    setattr(schedule_module, stage, lambda steps, *args: steps)
    try:
        with torch.no_grad():
            return plain, evaluate(plain, x, memory_limit=float("inf"))
    finally:
        setattr(schedule_module, stage, rewrite)


class Methods:
    """The executions compared, each a no-argument callable returning its outputs."""

    def __init__(self, patterns: list[Pattern], plan, x: torch.Tensor) -> None:
        self.patterns, self.plan, self.x = patterns, plan, x
        B, n = x.shape[0], x.shape[1]
        self.ones = torch.ones(B, n, dtype=x.dtype)
        self.equations, self.ops = [], []
        for p in patterns:
            eq, _ = _opt_equation(p, n)
            terms = eq.split("->")[0].split(",")
            self.equations.append(eq)
            # the very same operand objects in every pattern: shared_intermediates keys on them
            self.ops.append([x if len(t) == 3 else self.ones for t in terms])
        self.expressions = [
            opt_einsum.contract_expression(eq, *[tuple(o.shape) for o in ops], optimize="dp")
            for eq, ops in zip(self.equations, self.ops)
        ]
        self.fresh_workspace = Workspace()
        with torch.no_grad():
            self.out = evaluate(plan, x, memory_limit=float("inf"))
        # the same plan scheduled without regrouping (the chains of one-index contractions
        # that regroup.py turns into wide products run as the plan has them)
        self.plain_plan, self.plain_out = _scheduled_without(plan, x, "regroup_wide_products")
        # the same plan scheduled without stacking the chains that share a side (stack.py off)
        self.unstacked_plan, self.unstacked_out = _scheduled_without(plan, x, "stack_shared_sides")
        # the same schedule bound without the compiled CPU kernels (streaming.py, small_gemm.py):
        # torch and numpy everywhere, as where numba is absent
        self.plain_kernels_plan = _unscheduled_copy(plan)
        previous = os.environ.get(streaming.DISABLE_ENV)
        os.environ[streaming.DISABLE_ENV] = "1"
        try:
            with torch.no_grad():
                self.plain_kernels_out = evaluate(self.plain_kernels_plan, x, memory_limit=float("inf"))
        finally:
            if previous is None:
                del os.environ[streaming.DISABLE_ENV]
            else:
                os.environ[streaming.DISABLE_ENV] = previous

    def ours(self):
        with torch.no_grad():
            return evaluate(self.plan, self.x, out=self.out, memory_limit=float("inf"))

    def ours_plain_chains(self):
        with torch.no_grad():
            return evaluate(self.plain_plan, self.x, out=self.plain_out, memory_limit=float("inf"))

    def ours_unstacked(self):
        with torch.no_grad():
            return evaluate(self.unstacked_plan, self.x, out=self.unstacked_out, memory_limit=float("inf"))

    def ours_plain_kernels(self):
        with torch.no_grad():  # bound once without the compiled kernels; the same out: not rebound
            return evaluate(self.plain_kernels_plan, self.x, out=self.plain_kernels_out, memory_limit=float("inf"))

    def ours_fresh(self):
        with torch.no_grad():
            return evaluate(self.plan, self.x, memory_limit=float("inf"), workspace=self.fresh_workspace)

    def opt_cached(self):
        return [e(*ops, backend="torch") for e, ops in zip(self.expressions, self.ops)]

    def opt_shared(self):
        with opt_einsum.shared_intermediates():
            return [e(*ops, backend="torch") for e, ops in zip(self.expressions, self.ops)]

    def torch_einsum(self):
        return [torch.einsum(eq, *ops) for eq, ops in zip(self.equations, self.ops)]

    def check(self, values: list[torch.Tensor]) -> float:
        """Largest relative difference between ``values`` (per pattern) and ours."""
        out = self.out if isinstance(self.out, dict) else {self.plan.outputs[0]: self.out}
        worst = 0.0
        for j, (p, v) in enumerate(zip(self.patterns, values)):
            ours = out[p.output][..., self.plan.indices(p.output).index(j)]
            scale = ours.abs().max().clamp(min=1)
            worst = max(worst, float((ours - v).abs().max() / scale))
        return worst


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    """(p10, median, p90) of ``values`` (linear interpolation between order statistics)."""
    v = sorted(values)
    if len(v) < 2:
        return v[0], v[0], v[0]
    deciles = statistics.quantiles(v, n=10, method="inclusive")
    return deciles[0], statistics.median(v), deciles[-1]


def compare(label: str, degree: int, batch: int, n: int, dtype: torch.dtype, repeats: int, einsum_repeats: int, density: float, compiled=None) -> dict:
    patterns = connected_case(degree)
    if compiled is None:
        start = time.perf_counter()
        plan = compile_plan(patterns, n_hint=n)
        t_compile = time.perf_counter() - start
    else:
        plan, t_compile = compiled
    x = random_graphs(batch, n, density, seed=n).to(dtype)
    m = Methods(patterns, plan, x)
    flops = plan.flops(n, batch)
    gemm_size = 1024
    gemm_flops = 2 * gemm_size**3
    names = ["ours", "ours_plain_kernels", "ours_unstacked", "ours_plain_chains", "ours_fresh", "opt_cached", "opt_shared", "torch_einsum", "gemm"]
    gemm_a = torch.randn(gemm_size, gemm_size, dtype=dtype)
    gemm_b = torch.randn(gemm_size, gemm_size, dtype=dtype)
    calls = {
        "ours": m.ours,
        "ours_plain_kernels": m.ours_plain_kernels,
        "ours_unstacked": m.ours_unstacked,
        "ours_plain_chains": m.ours_plain_chains,
        "ours_fresh": m.ours_fresh,
        "opt_cached": m.opt_cached,
        "opt_shared": m.opt_shared,
        "torch_einsum": m.torch_einsum,
        "gemm": lambda: torch.mm(gemm_a, gemm_b),
    }
    diffs = {k: m.check(calls[k]()) for k in ("opt_cached", "opt_shared", "torch_einsum")}  # also warms up
    fresh = m.ours_fresh()
    diffs["ours_fresh"] = m.check([
        (fresh if not isinstance(fresh, dict) else fresh[p.output])[..., plan.indices(p.output).index(j)]
        for j, p in enumerate(patterns)
    ])
    del fresh
    plain_kernels = m.ours_plain_kernels()
    diffs["ours_plain_kernels"] = m.check([
        (plain_kernels if not isinstance(plain_kernels, dict) else plain_kernels[p.output])[..., plan.indices(p.output).index(j)]
        for j, p in enumerate(patterns)
    ])
    unstacked = m.ours_unstacked()
    diffs["ours_unstacked"] = m.check([
        (unstacked if not isinstance(unstacked, dict) else unstacked[p.output])[..., plan.indices(p.output).index(j)]
        for j, p in enumerate(patterns)
    ])
    plain = m.ours_plain_chains()
    diffs["ours_plain_chains"] = m.check([
        (plain if not isinstance(plain, dict) else plain[p.output])[..., plan.indices(p.output).index(j)]
        for j, p in enumerate(patterns)
    ])
    m.ours()
    peaks = {k: peak_memory(calls[k]) for k in names if k != "gemm"}  # results dropped at once
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        # the order rotates each round: every method follows each of the others in turn (the
        # one after the GEMM or a baseline starts with their data in the caches, not its own)
        for k in names[r % len(names):] + names[: r % len(names)]:
            if k == "torch_einsum" and r >= einsum_repeats:
                continue
            c0 = time.thread_time()
            start = time.perf_counter()
            result = calls[k]()
            wall[k].append(time.perf_counter() - start)
            cpu[k].append(time.thread_time() - c0)
            del result
    for clock in (wall, cpu):
        # the floor: the plan's FLOPs at the GEMM rate of each timed GEMM
        clock["floor"] = [t * flops / gemm_flops for t in clock["gemm"]]
    rate = gemm_flops / statistics.median(wall["gemm"])
    out_mib = sum(v.numel() for v in (m.out.values() if isinstance(m.out, dict) else [m.out])) * x.element_size() / 2**20
    print(f"\n== {label}: {len(patterns)} connected degree-{degree} patterns, B={batch} G({n}, {density}), "
          f"{str(dtype).replace('torch.', '')}, {torch.get_num_threads()} thread ==")
    print(f"compile: {t_compile:.2f} s ({plan}); plan {flops / 1e9:.2f} GFLOP; "
          f"{'s' if dtype == torch.float32 else 'd'}gemm {rate / 1e9:.1f} GFLOP/s (median, {gemm_size}^2); output {out_mib:.0f} MiB; "
          f"workspace {plan._workspace.nbytes / 2**20:.0f} MiB")
    print(f"{'method':<36} {'median s':>9} {'p10 s':>7} {'p90 s':>7} {'spread':>7} {'CPU s':>7} {'CPU spr':>8} "
          f"{'x ours':>7} {'peak MiB':>9} {'max rel diff':>12}")
    med_ours = statistics.median(wall["ours"])
    titles = {
        "ours": "ours (evaluate, out= reused)",
        "ours_plain_kernels": "ours, no compiled CPU kernels",
        "ours_unstacked": "ours, shared sides not stacked",
        "ours_plain_chains": "ours, chains not regrouped",
        "ours_fresh": "ours (evaluate, fresh output)",
        "opt_cached": "opt_einsum contract_expression",
        "opt_shared": "  ... in shared_intermediates()",
        "torch_einsum": "torch.einsum (path each call)",
        "floor": "FLOP floor (plan FLOPs at gemm rate)",
    }
    summary = {}
    for k in ["ours", "ours_plain_kernels", "ours_unstacked", "ours_plain_chains", "ours_fresh", "opt_cached", "opt_shared", "torch_einsum", "floor"]:
        p10, med, p90 = _quantiles(wall[k])
        c10, cmed, c90 = _quantiles(cpu[k])
        peak = peaks.get(k)
        peak_s = "n/a" if peak is None else f"{peak:.0f}"
        diff = diffs.get(k)
        summary[k] = {"median": med, "spread": (p90 - p10) / med, "cpu": cmed, "cpu_spread": (c90 - c10) / cmed}
        print(f"{titles[k]:<36} {med:>9.3f} {p10:>7.3f} {p90:>7.3f} {100 * (p90 - p10) / med:>6.0f}% {cmed:>7.3f} "
              f"{100 * (c90 - c10) / cmed:>7.0f}% {med / med_ours:>7.2f} {peak_s:>9} {'' if diff is None else f'{diff:.1e}':>12}")
    ours, floor = summary["ours"], summary["floor"]
    print(f"targets: ours vs shared_intermediates {summary['opt_shared']['median'] / ours['median']:.2f}x (target >= 3); "
          f"ours / floor {ours['median'] / floor['median']:.2f}x wall, {ours['cpu'] / floor['cpu']:.2f}x CPU (target <= 3); "
          f"ours spread {100 * ours['spread']:.0f}% wall, {100 * ours['cpu_spread']:.0f}% CPU (target < 20%); "
          f"faster than every baseline: {all(summary[k]['median'] > ours['median'] for k in ('opt_cached', 'opt_shared', 'torch_einsum'))}")
    return summary


def kernels(args) -> None:
    """The kernel choices of the schedule, timed alone: ``torch.bmm`` against ``numpy.matmul``
    on ``[B, n, n]`` batches (row- and column-major operand), a column-major ``out=`` against
    the transposed product, grouping k products over patterns (separate calls, one call
    stacked over ``[k * B, n, n]``, one wide product with the shared left operand; in cache and
    with distinct operands out of cache), the compiled CPU kernels against the calls they
    replace, the matrix-vector steps' kernels and the ``n^4`` product of a chain before and
    after regrouping."""
    import numpy as np

    B, n = 128, 32
    print(f"kernels: B={B}, n={n}, {torch.get_num_threads()} thread, {args.repeats} interleaved calls, median us (GFLOP/s)")
    for dtype in (torch.float32, torch.float64):
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(B, n, n, generator=gen, dtype=dtype)
        y = torch.randn(B, n, n, generator=gen, dtype=dtype)
        o = torch.empty(B, n, n, dtype=dtype)
        ot = torch.empty(B, n, n, dtype=dtype).transpose(1, 2)
        k = 8
        ys = [torch.randn(B, n, n, generator=gen, dtype=dtype) for _ in range(k)]
        os_ = [torch.empty(B, n, n, dtype=dtype) for _ in range(k)]
        a_stacked, y_stacked, o_stacked = a.repeat(k, 1, 1), torch.cat(ys), torch.empty(k * B, n, n, dtype=dtype)
        y_wide, o_wide = torch.cat(ys, dim=2), torch.empty(B, n, k * n, dtype=dtype)
        cases = {
            "torch.bmm": (lambda: torch.bmm(a, y, out=o), 1),
            "numpy.matmul": (lambda: np.matmul(a.numpy(), y.numpy(), out=o.numpy()), 1),
            "torch.bmm, column-major y": (lambda: torch.bmm(a, y.transpose(1, 2), out=o), 1),
            "numpy.matmul, column-major y": (lambda: np.matmul(a.numpy(), y.transpose(1, 2).numpy(), out=o.numpy()), 1),
            "torch.bmm, column-major out=": (lambda: torch.bmm(a, y, out=ot), 1),
            "torch.bmm, its transpose y^T a^T": (lambda: torch.bmm(y.transpose(1, 2), a.transpose(1, 2), out=ot.transpose(1, 2)), 1),
            f"{k} products, separate torch.bmm": (lambda: [torch.bmm(a, yi, out=oi) for yi, oi in zip(ys, os_)], k),
            f"{k} products, one bmm over [{k}B, n, n]": (lambda: torch.bmm(a_stacked, y_stacked, out=o_stacked), k),
            f"{k} products, one wide a @ [y1..y{k}]": (lambda: torch.bmm(a, y_wide, out=o_wide), k),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, (fn, _) in cases.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        print(f"-- {str(dtype).replace('torch.', '')}")
        for name, (_, products) in cases.items():
            t = statistics.median(times[name]) / products
            print(f"{name:<40} {t * 1e6:>8.0f} us per product ({2 * B * n**3 / t / 1e9:.1f} GFLOP/s)")
        grouping_out_of_cache(dtype, B, n, k, args.repeats)
        compiled_kernels(dtype, B, n, args.repeats)
        matrix_vector(dtype, B, n, args.repeats)
        wide_products(dtype, B, n, args.repeats)


def compiled_kernels(dtype: torch.dtype, B: int, n: int, repeats: int, channels: int = 48) -> None:
    """The compiled CPU kernels of the schedule (``streaming.py``, ``small_gemm.py``) against
    the torch / numpy calls they replace, on ``channels`` distinct ``[B, n, n]`` results (as
    the schedule writes them: out of cache) from cached operands: matrix products (row- and
    column-major right operand), transposed copies, and elementwise products alone and with
    their transposed twin."""
    import numpy as np

    from everygraph.contractions.small_gemm import matmul_kernel
    from everygraph.contractions.streaming import product_kernel, transposed_copy_kernel

    if matmul_kernel(torch.empty(1, 16, 16), torch.randn(1, 16, 16), torch.randn(1, 16, 16)) is None:
        print("   compiled kernels: not available here (numba and an x86-64 CPU needed)")
        return
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(B, n, n, generator=gen, dtype=dtype)
    ys = torch.randn(channels, B, n, n, generator=gen, dtype=dtype)
    row = torch.randn(B, 1, n, generator=gen, dtype=dtype).expand(B, n, n)
    outs = torch.empty(2 * channels, B, n, n, dtype=dtype)
    twin = [outs[channels + i].transpose(1, 2) for i in range(channels)]
    an, outn = a.numpy(), outs.numpy()
    y_col = [ys[i].transpose(1, 2) for i in range(channels)]
    gemm_row = [matmul_kernel(outs[i], a, ys[i]) for i in range(channels)]
    gemm_col = [matmul_kernel(outs[i], a, y_col[i]) for i in range(channels)]
    copies = [transposed_copy_kernel(twin[i], a) for i in range(channels)]
    copies_of_products = [transposed_copy_kernel(twin[i], outs[i]) for i in range(channels)]
    products = [product_kernel(outs[i], row, a) for i in range(channels)]
    with_twin = [product_kernel(outs[i], row, a, twin=twin[i]) for i in range(channels)]
    flops = 2 * B * n**3 * channels
    gemm = {
        "torch.bmm, row-major y": lambda: [torch.bmm(a, ys[i], out=outs[i]) for i in range(channels)],
        "numpy.matmul, row-major y": lambda: [np.matmul(an, ys[i].numpy(), out=outn[i]) for i in range(channels)],
        "compiled, row-major y": lambda: [f() for f in gemm_row],
        "torch.bmm, column-major y": lambda: [torch.bmm(a, y_col[i], out=outs[i]) for i in range(channels)],
        "numpy.matmul, column-major y": lambda: [np.matmul(an, y_col[i].numpy(), out=outn[i]) for i in range(channels)],
        "compiled, column-major y": lambda: [f() for f in gemm_col],
    }
    print(f"   compiled kernels, {channels} distinct results (out of cache): matrix products GFLOP/s wall, CPU")
    for name, (wall, cpu) in _timed(gemm, repeats).items():
        print(f"   {name:<40} {flops / wall / 1e9:>6.1f} {flops / cpu / 1e9:>6.1f}")
    writes = {
        "transposed copy, numpy.copyto": lambda: [np.copyto(twin[i].numpy(), an) for i in range(channels)],
        "transposed copy, streamed": lambda: [f() for f in copies],
        "row-broadcast product, torch.mul": lambda: [torch.mul(row, a, out=outs[i]) for i in range(channels)],
        "row-broadcast product, streamed": lambda: [f() for f in products],
        "product and twin, torch.mul + streamed copy": lambda: [(torch.mul(row, a, out=outs[i]), copies_of_products[i]()) for i in range(channels)],
        "product and twin, streamed together": lambda: [f() for f in with_twin],
    }
    print(f"   the same channels written: ms per {channels} channels, wall, CPU")
    for name, (wall, cpu) in _timed(writes, repeats).items():
        print(f"   {name:<46} {wall * 1e3:>7.2f} {cpu * 1e3:>7.2f}")


def _timed(cases: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median wall and calling-thread CPU seconds of each no-argument callable, interleaved."""
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            c0, w0 = time.thread_time(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.thread_time() - c0)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in cases}


def grouping_out_of_cache(dtype: torch.dtype, B: int, n: int, k: int, repeats: int, groups: int = 6) -> None:
    """Grouping k products ``A @ Y_i`` that share their left operand, as the plan's would run:
    ``groups`` groups of distinct right operands and results (``groups * k`` of each, about
    24 / 48 MiB in float32 / float64: out of the per-core cache), each group as k separate
    products, as one call over a ``[k, B, n, n]`` stack (numpy broadcasts ``A``; torch needs
    ``A`` repeated, a copy, so it is not timed), or as one wide product ``A @ [Y_1 ... Y_k]``
    (the operands and results stored side by side)."""
    import numpy as np

    gen = torch.Generator().manual_seed(1)
    a = torch.randn(B, n, n, generator=gen, dtype=dtype)
    ys = torch.randn(groups, k, B, n, n, generator=gen, dtype=dtype)
    outs = torch.ones(groups, k, B, n, n, dtype=dtype)
    wide_y = torch.randn(groups, B, n, k * n, generator=gen, dtype=dtype)
    wide_out = torch.ones(groups, B, n, k * n, dtype=dtype)
    an, ysn, outsn, wyn, won = a.numpy(), ys.numpy(), outs.numpy(), wide_y.numpy(), wide_out.numpy()
    cases = {
        "separate torch.bmm": lambda: [torch.bmm(a, ys[g, i], out=outs[g, i]) for g in range(groups) for i in range(k)],
        "separate numpy.matmul": lambda: [np.matmul(an, ysn[g, i], out=outsn[g, i]) for g in range(groups) for i in range(k)],
        "stacked numpy.matmul over [k, B, n, n]": lambda: [np.matmul(an, ysn[g], out=outsn[g]) for g in range(groups)],
        "wide torch.bmm": lambda: [torch.bmm(a, wide_y[g], out=wide_out[g]) for g in range(groups)],
        "wide numpy.matmul": lambda: [np.matmul(an, wyn[g], out=won[g]) for g in range(groups)],
    }
    flops = 2 * B * n**3 * groups * k
    print(f"   grouping {k} products sharing A, {groups} groups of distinct operands (out of cache): GFLOP/s wall, CPU")
    for name, (wall, cpu) in _timed(cases, repeats).items():
        print(f"   {name:<40} {flops / wall / 1e9:>6.1f} {flops / cpu / 1e9:>6.1f}")


def matrix_vector(dtype: torch.dtype, B: int, n: int, repeats: int) -> None:
    """A matrix-vector step ``out[b, i] = sum_j Y[b, i, j] v[b, j]`` (node outputs) and its
    3-axis form ``out[b, i, j] = sum_k T[b, i, j, k] v[b, i, k]`` (one chunk of 2 graphs):
    broadcast product and sum (torch), ``torch.bmm`` and ``numpy.matmul`` (BLAS gemv)."""
    import numpy as np

    gen = torch.Generator().manual_seed(2)
    y, v, o = torch.randn(B, n, n, generator=gen, dtype=dtype), torch.randn(B, n, generator=gen, dtype=dtype), torch.empty(B, n, dtype=dtype)
    t3, v3, o3 = torch.randn(2, n, n, n, generator=gen, dtype=dtype), torch.randn(2, n, n, generator=gen, dtype=dtype), torch.empty(2, n, n, dtype=dtype)
    tmp, tmp3 = torch.empty(B, n, n, dtype=dtype), torch.empty(2, n, n, n, dtype=dtype)
    cases = {
        "[B, n, n] product and sum": lambda: (torch.mul(y, v[:, None, :], out=tmp), torch.sum(tmp, (2,), out=o)),
        "[B, n, n] torch.bmm": lambda: torch.bmm(y, v[:, :, None], out=o[:, :, None]),
        "[B, n, n] numpy.matmul": lambda: np.matmul(y.numpy(), v[:, :, None].numpy(), out=o[:, :, None].numpy()),
        "[2, n, n, n] product and sum": lambda: (torch.mul(t3, v3[:, :, None, :], out=tmp3), torch.sum(tmp3, (3,), out=o3)),
        "[2, n, n, n] torch.bmm": lambda: torch.bmm(t3.view(2 * n, n, n), v3.reshape(2 * n, n, 1), out=o3.view(2 * n, n, 1)),
        "[2, n, n, n] numpy.matmul": lambda: np.matmul(t3.numpy(), v3[..., None].numpy(), out=o3[..., None].numpy()),
    }
    print("   matrix-vector steps: us per call (wall, CPU)")
    for name, (wall, cpu) in _timed(cases, max(repeats, 21)).items():
        print(f"   {name:<40} {wall * 1e6:>8.0f} {cpu * 1e6:>8.0f}")


def wide_products(dtype: torch.dtype, B: int, n: int, repeats: int, chunk: int = 4) -> None:
    """The ``n^4`` product of a chain on ``[B, n, n, n]`` tensors, graph chunk by graph chunk:
    as the plan has it (``[n, n] @ [n, n^2]``, inner size ``n``, the right operand
    column-major) and regrouped (``[n, n^2] @ [n^2, n]``, inner size ``n^2``, the right
    operand column-major: ``everygraph/contractions/regroup.py``), each through ``torch.bmm``
    and ``numpy.matmul``."""
    import numpy as np

    gen = torch.Generator().manual_seed(3)
    a = torch.randn(B, n, n, generator=gen, dtype=dtype)
    t = torch.randn(B, n * n, n, generator=gen, dtype=dtype)  # [b, (i, j), k]
    o = torch.empty(B, n, n * n, dtype=dtype)
    left = torch.randn(B, n, n * n, generator=gen, dtype=dtype)
    right = torch.randn(B, n, n * n, generator=gen, dtype=dtype)
    r = torch.empty(B, n, n, dtype=dtype)
    an, tn, on, ln, rn, outn = a.numpy(), t.numpy(), o.numpy(), left.numpy(), right.numpy(), r.numpy()
    chunks = [slice(g, min(B, g + chunk)) for g in range(0, B, chunk)]
    cases = {
        "inner n, torch.bmm": lambda: [torch.bmm(a[c], t[c].transpose(1, 2), out=o[c]) for c in chunks],
        "inner n, numpy.matmul": lambda: [np.matmul(an[c], tn[c].transpose(0, 2, 1), out=on[c]) for c in chunks],
        "inner n^2, torch.bmm": lambda: [torch.bmm(left[c], right[c].transpose(1, 2), out=r[c]) for c in chunks],
        "inner n^2, numpy.matmul": lambda: [np.matmul(ln[c], rn[c].transpose(0, 2, 1), out=outn[c]) for c in chunks],
    }
    flops = 2 * B * n**4
    print(f"   the n^4 product of a chain, chunks of {chunk} graphs: GFLOP/s wall, CPU")
    for name, (wall, cpu) in _timed(cases, repeats).items():
        print(f"   {name:<40} {flops / wall / 1e9:>6.1f} {flops / cpu / 1e9:>6.1f}")


def profile(args) -> None:
    """Where the degree-6 call's CPU time goes: every bound kernel of the schedule timed with
    ``time.thread_time`` (``args.repeats`` calls, medians per kind of kernel), by what it does
    and where it writes (an output channel or the workspace)."""
    import collections
    import itertools

    patterns = connected_case(6)
    plan = compile_plan(patterns, n_hint=32)
    for dtype in (torch.float32, torch.float64):
        x = random_graphs(128, 32, args.density, seed=32).to(dtype)
        plan.__dict__.pop("_workspace", None)
        with torch.no_grad():
            out = evaluate(plan, x, memory_limit=float("inf"))
            calls = []
            for _ in range(args.repeats):
                start = time.thread_time()
                evaluate(plan, x, out=out, memory_limit=float("inf"))
                calls.append(time.thread_time() - start)
        ((_, key, _, _), entry), = plan._workspace._entries.items()  # one shape held at a time
        schedule = plan._schedules[key]

        def kind(op) -> str:
            if op[0] in ("chunked", "einsum", "fill"):
                return {"chunked": "graph-chunked runs on [B, n, n, n] tensors"}.get(op[0], op[0])
            refs = [r for r in op[1:] if hasattr(r, "kind")]
            target = op[2] if op[0] == "sum" else (op[3] if op[0] == "matvec" else refs[-1])
            where = "an output channel" if target.kind == "slot" else "the workspace"
            if op[0] == "copy" and refs[0].kind == "slot":
                return "copies of output channels (transposed twins, duplicates)"
            name = {
                "bmm": "matrix products", "mul": "elementwise products", "sum": "sums", "copy": "copies",
                "matvec": "matrix-vector steps", "take": "gathers", "add": "additions",
            }[op[0]]
            return f"{name} into {where}"

        kinds = [kind(op) for op in schedule.ops]
        # the kernels of the graph-chunked runs one by one too, by kind (a second listing)
        inner = [
            (f"  in chunked runs: {kind(op)}", f)
            for run, bound in zip(schedule.ops, entry["bound"]) if run[0] == "chunked"
            for op, f in zip(itertools.cycle(run[1]), bound.args[0])
        ]
        times: dict[str, list[float]] = collections.defaultdict(list)
        for _ in range(args.repeats):
            total: dict[str, float] = collections.defaultdict(float)
            for k, kernel in [*zip(kinds, entry["bound"]), *inner]:
                start = time.thread_time()
                kernel()
                total[k] += time.thread_time() - start
            for k, t in total.items():
                times[k].append(t)
        num_kernels = len(kinds)
        kinds += [k for k, _ in inner]
        elementwise_kernels(schedule, entry["bound"], args.repeats)
        counts = collections.Counter(kinds)
        print(f"\n== profile: degree 6, B=128, n=32, {str(dtype).replace('torch.', '')}: call {statistics.median(calls) * 1e3:.1f} ms CPU "
              f"(median of {args.repeats}); kernels {num_kernels} ==")
        for k in sorted(times, key=lambda k: (k.startswith(" "), -statistics.median(times[k]))):
            print(f"{k:<58} {counts[k]:>5} {statistics.median(times[k]) * 1e3:>8.2f} ms")


def elementwise_kernels(schedule, bound, repeats: int) -> None:
    """The schedule's elementwise products bound both ways, ``torch.mul`` (what the schedule
    runs) and ``numpy.multiply`` (alternating which runs first), summed over the products
    with and without a broadcast (zero-stride) operand."""
    import itertools

    import numpy as np

    products = []
    for op, kernel in zip(schedule.ops, bound):
        pairs = zip(itertools.cycle(op[1]), kernel.args[0]) if op[0] == "chunked" else [(op, kernel)]
        for inner, k in pairs:
            if inner[0] == "mul" and "out" in getattr(k, "keywords", {}):  # not the streamed ones
                a, b, o = (t if isinstance(t, np.ndarray) else t.numpy() for t in (*k.args, k.keywords["out"]))
                t_mul = functools.partial(torch.mul, torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(o))
                broadcast = any(st == 0 and size > 1 for t in (a, b) for size, st in zip(t.shape, t.strides))
                products.append((broadcast, t_mul, functools.partial(np.multiply, a, b, out=o)))
    totals = {(bc, name): 0.0 for bc in (False, True) for name in ("torch.mul", "numpy.multiply")}
    # products in place (an assembly's scalar factor) grow on every repeat: overflow is harmless here
    np.seterr(over="ignore")
    for r in range(repeats):
        for broadcast, t_mul, n_mul in products:
            for name, fn in (("torch.mul", t_mul), ("numpy.multiply", n_mul))[:: 1 if r % 2 else -1]:
                start = time.thread_time()
                fn()
                totals[(broadcast, name)] += time.thread_time() - start
    print(f"elementwise products, both kernels (ms CPU per call, mean of {repeats}):")
    for broadcast in (False, True):
        count = sum(1 for p in products if p[0] == broadcast)
        print(f"   {'with' if broadcast else 'without'} a broadcast operand ({count}): "
              + ", ".join(f"{name} {totals[(broadcast, name)] / repeats * 1e3:.2f}" for name in ("torch.mul", "numpy.multiply")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=11, help="interleaved timed calls per method")
    parser.add_argument("--einsum-repeats", type=int, default=3, help="torch.einsum is slow: fewer calls")
    parser.add_argument("--density", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a busy shared machine)")
    parser.add_argument("--quick", action="store_true", help="smoke run: degree 4 and 3, small batches")
    parser.add_argument("--full-basis", action="store_true", help="the whole-basis / left-to-right comparison")
    parser.add_argument("--kernels", action="store_true", help="the schedule's kernel choices timed alone")
    parser.add_argument("--profile", action="store_true", help="the degree-6 call's CPU time per kind of kernel")
    parser.add_argument("--degree", type=int, default=6, help="--full-basis only")
    parser.add_argument("--cases", type=int, nargs="+", default=[6, 5], choices=[6, 5], help="the comparison's cases by degree (6: B=128, n=32; 5: B=64, n=24)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64], help="--full-basis only")
    parser.add_argument("--batch", type=int, default=128, help="--full-basis only")
    parser.add_argument("--ltr-sample", type=int, default=60, help="--full-basis: patterns timed left to right")
    parser.add_argument("--ltr-graphs", type=int, default=2, help="--full-basis: graphs timed left to right")
    parser.add_argument("--memory-gib", type=float, default=1.5, help="--full-basis only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.full_basis:
        full_basis(args)
        return
    if args.kernels:
        kernels(args)
        return
    if args.profile:
        profile(args)
        return
    print(f"torch {torch.__version__}, opt_einsum {opt_einsum.__version__}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    cases = [case for case in [("degree 6", 6, 128, 32), ("degree 5", 5, 64, 24)] if case[1] in args.cases]
    if args.quick:
        cases = [("degree 4 (quick)", 4, 16, 12), ("degree 3 (quick)", 3, 8, 10)]
        args.repeats, args.einsum_repeats = 3, 2
    for label, degree, batch, n in cases:
        start = time.perf_counter()
        plan = compile_plan(connected_case(degree), n_hint=n)
        compiled = (plan, time.perf_counter() - start)
        for dtype in (torch.float32, torch.float64):
            compare(label, degree, batch, n, dtype, args.repeats, args.einsum_repeats, args.density, compiled)


if __name__ == "__main__":
    main()
