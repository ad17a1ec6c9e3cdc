"""Benchmark: a context-parallel selective scan of one long sequence over 1 and 2 gloo ranks.

    python benchmarks/context_parallel.py                 # L = 1,000,000, D = N = 16, forward
    python benchmarks/context_parallel.py --backward      # forward + backward
    python benchmarks/context_parallel.py --quick         # L = 100,000

For each world size the script spawns that many processes on 127.0.0.1 (gloo, one torch
thread each); rank ``r`` holds positions ``[r L / W, (r + 1) L / W)`` and runs
``selective_scan_context_parallel`` (world size 1: plain ``selective_scan``). A time is the
slowest rank's, between two barriers, median of ``--repeats``. The ratio "1 rank / W ranks"
is the speed-up. Each rank runs two scans of its piece (from zero, then the correction as a
second scan whose only input is the entering state), so the ideal speed-up on W free cores
is about W / 2. Two processes on a machine with two busy cores share those cores with
everything else, so the measured speed-up there is a lower bound.

Communication per rank is counted from the tensors the collectives move (what gloo sends,
not counting its headers): forward, the ``all_gather`` of the ``(total transition, final
state)`` pair; backward, the all-reduce of their gradients. It is independent of ``L``;
shown next to the bytes of the piece's ``u`` alone, which gathering the sequence itself
would move.

Anchor: flash-linear-attention's ``fla.ops.cp`` (Triton kernels, GPU only) splits chunked
linear attention over ranks the same way (chunk-local states, a prefix over ranks, a
correction pass); it needs Triton and a GPU, so it is described here, not run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _inputs(length: int, channels: int, state: int, start: int, stop: int, grad: bool) -> dict:
    gen = torch.Generator().manual_seed(0)
    full = dict(
        u=torch.randn(1, channels, length, generator=gen),
        delta=torch.randn(1, channels, length, generator=gen),
        B=torch.randn(1, state, length, generator=gen),
        C=torch.randn(1, state, length, generator=gen),
    )
    piece = {n: t[..., start:stop].clone().requires_grad_(grad) for n, t in full.items()}
    piece["A"] = -torch.linspace(0.5, 4.0, channels * state).reshape(channels, state).requires_grad_(grad)
    return piece


def _worker(rank: int, world_size: int, port: int, args: argparse.Namespace, queue) -> None:
    from everygraph.sequence import selective_scan, selective_scan_context_parallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=600))
    start, stop = rank * args.length // world_size, (rank + 1) * args.length // world_size
    x = _inputs(args.length, args.channels, args.state, start, stop, args.backward)
    scan = selective_scan if world_size == 1 else selective_scan_context_parallel
    scan(**_inputs(1000, args.channels, args.state, 0, 1000 // world_size, args.backward))  # warm-up (lazy kernels)
    times = []
    for _ in range(args.repeats):
        dist.barrier()
        t0 = time.perf_counter()
        out = scan(**x, delta_softplus=True)
        if args.backward:
            out.sum().backward()
        dist.barrier()
        times.append(time.perf_counter() - t0)
    if rank == 0:
        queue.put(statistics.median(times))
    dist.destroy_process_group()


def run(world_size: int, args: argparse.Namespace) -> float:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_worker, args=(world_size, port, args, queue), nprocs=world_size, start_method="spawn")
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=1_000_000)
    parser.add_argument("--channels", type=int, default=16, help="D")
    parser.add_argument("--state", type=int, default=16, help="N")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backward", action="store_true")
    parser.add_argument("--quick", action="store_true", help="L = 100,000, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.length, args.repeats = 100_000, 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    pass_ = "forward + backward" if args.backward else "forward"
    print(f"selective scan, L = {args.length:,}, batch 1, D = {args.channels}, N = {args.state}, float32, {pass_}; "
          f"{os.cpu_count()} CPU cores visible, 1 torch thread per rank")
    state_bytes = 4 * args.channels * args.state
    print("\ncommunication per rank (bytes, independent of L):")
    print("| ranks | forward all_gather (sent / received) | backward all-reduce (tensor) | u of one piece |")
    print("|---|---|---|---|")
    for w in (2, 4, 8):
        print(f"| {w} | {2 * state_bytes:,} / {2 * state_bytes * (w - 1):,} | {2 * state_bytes * w:,} | "
              f"{4 * args.channels * args.length // w:,} |")
    print("\n| ranks | time (s) | speed-up vs 1 rank |")
    print("|---|---|---|")
    single = run(1, args)
    print(f"| 1 | {single:.2f} | 1.00 |", flush=True)
    double = run(2, args)
    print(f"| 2 | {double:.2f} | {single / double:.2f} |")


if __name__ == "__main__":
    main()
