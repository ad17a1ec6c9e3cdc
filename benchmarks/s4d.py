"""Benchmark: S4D in convolution mode (Vandermonde kernel + FFT) vs recurrent mode (the scan
engine's recurrent execution on complex states), forward and forward+backward.

    python benchmarks/s4d.py                          # batch=2, H=16, N=64, L = 1k, 4k, 16k, one thread
    python benchmarks/s4d.py --lengths 1024 4096 --threads 2

Times are medians (ms) of ``--repeats`` runs in one process, the two modes interleaved (conv,
recurrent, conv, ...), so the ratio holds on a busy machine even when absolute numbers do not.
Before timing, the two modes' outputs are compared (float64 run at the smallest length).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from everygraph.sequence import s4d


def params(H: int, n: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    log_dt = torch.rand(H, generator=gen, dtype=dtype) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    A = torch.complex(torch.full((H, n), -0.5, dtype=dtype), math.pi * torch.arange(n, dtype=dtype).expand(H, n))
    C = torch.complex(torch.randn(H, n, generator=gen, dtype=dtype), torch.randn(H, n, generator=gen, dtype=dtype))
    return log_dt, A, torch.ones_like(A), C, torch.randn(H, generator=gen, dtype=dtype)


def timed(fn, backward: bool) -> float:
    start = time.perf_counter()
    y = fn()
    if backward:
        y.sum().backward()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=16, help="H")
    parser.add_argument("--state", type=int, default=64, help="N (N/2 complex modes)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.state // 2

    log_dt, A, B, C, D = params(args.channels, n, torch.float64)
    u = torch.randn(args.batch, args.channels, min(args.lengths), dtype=torch.float64)
    err = (s4d(u, log_dt, A, B, C, D, mode="conv") - s4d(u, log_dt, A, B, C, D, mode="recurrent")).abs().max().item()
    print(f"check (float64, L={min(args.lengths)}): max |conv - recurrent| = {err:.2e}")

    print(f"torch {torch.__version__}, threads={args.threads}, batch={args.batch}, H={args.channels}, N={args.state}, float32, "
          f"median of {args.repeats} (ms)")
    print(f"{'L':>6} {'pass':>9} {'conv':>10} {'recurrent':>10} {'recurrent/conv':>15}")
    for length in args.lengths:
        leaves = [t.float().requires_grad_() if t.is_floating_point() else t.to(torch.complex64).requires_grad_()
                  for t in params(args.channels, n, torch.float64)]
        x = torch.randn(args.batch, args.channels, length, requires_grad=True)
        for backward in (False, True):
            runs = {"conv": [], "recurrent": []}
            for _ in range(args.repeats):
                for mode in runs:
                    with torch.set_grad_enabled(backward):
                        runs[mode].append(timed(lambda: s4d(x, *leaves, mode=mode), backward))
            conv, rec = statistics.median(runs["conv"]), statistics.median(runs["recurrent"])
            print(f"{length:>6} {'fwd+bwd' if backward else 'fwd':>9} {conv:>10.2f} {rec:>10.2f} {rec / conv:>14.1f}x")


if __name__ == "__main__":
    main()
