"""Scatter/segment kernels side by side: which one should the dispatch pick?

Runs every native kernel of ``everygraph.graphlib.scatter`` (``index_add``, ``scatter_reduce``,
``segment_reduce``), ``torch_scatter`` if it is installed, ``torch_geometric.utils.scatter``
and the dispatched ``everygraph.graphlib.scatter`` on random graphs of 1e4..1e6 edges with
``F`` feature channels, for sum / mean / max, with a sorted and an unsorted index, forward
only and forward+backward. Prints the best-of-N times and the ratio of each to PyG's scatter (the
anchor) from one run.

    python benchmarks/scatter.py                 # 1e4, 1e5, 1e6 edges, F=32
    python benchmarks/scatter.py --quick         # small sizes, a smoke test
    python benchmarks/scatter.py --edges 100000 --channels 64 --backward
"""

from __future__ import annotations

import argparse
import time

import torch
from torch_geometric.utils import scatter as pyg_scatter

from everygraph.graphlib import scatter as eg_scatter
from everygraph.graphlib.scatter import DISPATCH, KERNELS, _available, _KERNEL_REDUCES


def timeit(fn, repeat: int, backward: bool, src: torch.Tensor) -> float:
    times = []
    for i in range(repeat + 1):
        if backward:
            src.grad = None
        t0 = time.perf_counter()
        out = fn()
        if backward:
            out.sum().backward()
        dt = time.perf_counter() - t0
        if i:  # first call warms up
            times.append(dt)
    return min(times)  # min, not median: the CPU is shared and noise only adds time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--avg-degree", type=float, default=10.0)
    parser.add_argument("--reduces", nargs="+", default=["sum", "mean", "max"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backward", action="store_true", help="time forward+backward instead of forward only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.edges, args.repeat = [10_000, 100_000], 3
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    kernels = [k for k in KERNELS if _available(k)]
    header = ["E", "reduce", "index", "pyg ms"] + [f"{k} (x)" for k in kernels] + ["dispatch (x)"]
    print(f"# torch {torch.__version__}, threads={args.threads}, F={args.channels}, "
          f"{'forward+backward' if args.backward else 'forward'}; (x) = PyG time / this time (>1: faster than PyG)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for num_edges in args.edges:
        num_nodes = max(1, int(num_edges / args.avg_degree))
        src = torch.randn(num_edges, args.channels, requires_grad=args.backward)
        unsorted_index = torch.randint(0, num_nodes, (num_edges,))
        sorted_index = unsorted_index.sort().values
        for reduce in args.reduces:
            for label, index in (("sorted", sorted_index), ("unsorted", unsorted_index)):
                is_sorted = label == "sorted"
                anchor = timeit(lambda: pyg_scatter(src, index, 0, num_nodes, reduce), args.repeat, args.backward, src)
                row = [f"{num_edges:.0e}", reduce, label, f"{anchor * 1e3:.2f}"]
                for k in kernels:
                    if reduce not in _KERNEL_REDUCES[k] or (KERNELS[k][1] and not is_sorted):
                        row.append("-")
                        continue
                    t = timeit(lambda: eg_scatter(src, index, 0, num_nodes, reduce, backend=k), args.repeat,
                               args.backward, src)
                    row.append(f"{t * 1e3:.2f} ({anchor / t:.2f})")
                t = timeit(lambda: eg_scatter(src, index, 0, num_nodes, reduce), args.repeat, args.backward, src)
                row.append(f"{t * 1e3:.2f} ({anchor / t:.2f})")
                print("| " + " | ".join(row) + " |", flush=True)
    print("\ncurrent DISPATCH (cpu):")
    for reduce in args.reduces:
        for grad in (False, True):
            print(f"  {reduce}{' +grad' if grad else ''}: unsorted -> {DISPATCH[(reduce, 'cpu', False, grad)]}, "
                  f"sorted -> {DISPATCH[(reduce, 'cpu', True, grad)]}")


if __name__ == "__main__":
    main()
