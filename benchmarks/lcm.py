"""LCM aggregation side by side: ours vs PyG's LCMAggregation vs PyG's GRUAggregation vs sum.

For each graph, messages ``x`` ``[E, F]`` are aggregated into their target nodes; we time
forward+backward (``out.sum().backward()``, gradients for ``x`` and the parameters) and
measure the peak memory of one forward+backward. Cases:

(a) N=2000 nodes, E=20000 random edges (in-degrees ~ Poisson(10), max ~22);
(b) the same plus one hub of in-degree 1000 (+5% edges);
(c) a Barabasi-Albert graph, N=50000, m=5 (both edge directions, E ~ 500k).

Peak memory: torch has no CPU ``max_memory_allocated``, so we run one forward+backward
under ``torch.profiler.profile(profile_memory=True)`` and replay the allocation / free
events of the torch ops in time order (a leaf op's bytes at its start, an enclosing op's own
frees at its end); the peak of that running sum is the peak of bytes live in tensors
created during the step (inputs and parameters excluded). It counts tensor memory exactly
as torch's allocator sees it, independent of malloc caching and RSS noise.

PyG's LCM and GRU pad every node to the batch's maximum degree (``to_dense_batch``); where
that padded tensor ``N x max_degree x F`` would exceed ``--pad-limit-gb`` (LCM) or
``N x max_degree`` exceeds ``--gru-max-rows`` (GRU: max_degree sequential steps) the method is
skipped and the table says so. Methods whose first run takes > 20 s are timed by that run.

    python benchmarks/lcm.py                   # cases a, b, c; F=32
    python benchmarks/lcm.py --cases b --repeat 3
    python benchmarks/lcm.py --quick           # small smoke run
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch_geometric.nn.aggr import GRUAggregation, SumAggregation
from torch_geometric.nn.aggr import LCMAggregation as PyGLCMAggregation
from torch_geometric.utils import barabasi_albert_graph

from everygraph.nn import LCMAggregation


def make_case(name: str, quick: bool) -> tuple[torch.Tensor, int, str]:
    """Target index [E] (sorted, as PyG's padded aggregations need) and N."""
    g = torch.Generator().manual_seed(0)
    scale = 10 if quick else 1
    if name in ("a", "b"):
        num_nodes, num_edges = 2000 // scale, 20000 // scale
        dst = torch.randint(0, num_nodes, (num_edges,), generator=g)
        label = f"(a) N={num_nodes}, E={num_edges}"
        if name == "b":
            dst = torch.cat([dst, torch.zeros(1000 // scale, dtype=torch.long)])
            label = f"(b) N={num_nodes}, E={dst.numel()}, hub of degree {1000 // scale}"
    else:
        num_nodes = 50000 // scale
        edge_index = barabasi_albert_graph(num_nodes, 5)
        dst = edge_index[1]
        label = f"(c) Barabasi-Albert N={num_nodes}, m=5, E={dst.numel()}"
    return dst.sort().values, num_nodes, label


def step(module: torch.nn.Module, x: torch.Tensor, index: torch.Tensor, num_nodes: int) -> None:
    x.grad = None
    module.zero_grad(set_to_none=True)
    out = module(x, index, dim_size=num_nodes)
    out.sum().backward()


def best_time(fn, repeat: int, slow_s: float = 20.0) -> tuple[float, int]:
    """Best of ``repeat`` timed runs after a warm-up; a method whose first (cold) run takes
    longer than ``slow_s`` is timed by that single run. Returns (seconds, runs timed)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    if first > slow_s:
        return first, 1
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), len(times)


def peak_bytes(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    points = []
    for e in prof.events():
        if e.name == "[memory]":
            points.append((e.time_range.start, e.cpu_memory_usage))
        elif e.self_cpu_memory_usage:
            at = e.time_range.end if e.cpu_children else e.time_range.start
            points.append((at, e.self_cpu_memory_usage))
    live = peak = 0
    for _, delta in sorted(points, key=lambda p: p[0]):
        live += delta
        peak = max(peak, live)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="1 by default: on a shared, oversubscribed CPU two threads wait on each other")
    parser.add_argument("--pad-limit-gb", type=float, default=1.0,
                        help="skip PyG's LCMAggregation when its padded N x max_degree x F tensor exceeds this")
    parser.add_argument("--gru-max-rows", type=float, default=1e6,
                        help="skip PyG's GRUAggregation when N x max_degree exceeds this (it runs max_degree "
                             "sequential GRU steps; at (b), 2e6, one forward+backward took 227 s here)")
    parser.add_argument("--quick", action="store_true", help="graphs 10x smaller, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 2
    torch.set_num_threads(args.threads)
    F = args.channels

    print(f"# torch {torch.__version__}, threads={args.threads}, F={F}; forward+backward, best of <= {args.repeat}")
    for case in args.cases:
        index, num_nodes, label = make_case(case, args.quick)
        max_degree = int(torch.bincount(index, minlength=num_nodes).max())
        x = torch.randn(index.numel(), F, requires_grad=True)
        padded_gb = num_nodes * max_degree * F * 4 / 1e9
        torch.manual_seed(0)
        methods = {
            "sum (PyG SumAggregation)": SumAggregation(),
            "ours LCMAggregation": LCMAggregation(F, F),
            "PyG LCMAggregation": PyGLCMAggregation(F, F),
            "PyG GRUAggregation": GRUAggregation(F, F),
        }
        print(f"\n{label}, max in-degree {max_degree}; PyG pads to N x max_degree x F = {padded_gb:.2f} GB")
        print("| method | time (ms) | peak memory (MB) | time / ours | memory / ours |")
        print("|---|---|---|---|---|")
        results = {}
        for name, module in methods.items():
            if name == "PyG LCMAggregation" and padded_gb > args.pad_limit_gb:
                results[name] = f"skipped: padded tensor {padded_gb:.1f} GB > --pad-limit-gb {args.pad_limit_gb}"
                continue
            if name == "PyG GRUAggregation" and num_nodes * max_degree > args.gru_max_rows:
                results[name] = (f"skipped: N x max_degree = {num_nodes * max_degree:.1e} padded rows > "
                                 f"--gru-max-rows {args.gru_max_rows:.0e} (would take minutes)")
                continue
            fn = lambda m=module: step(m, x, index, num_nodes)  # noqa: E731
            seconds, runs = best_time(fn, args.repeat)
            results[name] = (seconds, runs, peak_bytes(fn))
        ours_t, _, ours_m = results["ours LCMAggregation"]
        for name, res in results.items():
            if isinstance(res, str):
                print(f"| {name} | {res} | | | |")
                continue
            t, runs, m = res
            note = " (1 run)" if runs == 1 else ""
            print(f"| {name} | {t * 1e3:.1f}{note} | {m / 2**20:.1f} | {t / ours_t:.2f} | {m / max(ours_m, 1):.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
