"""Mamba on images: the compiled 2D selective scan in its factored form (``grid_selective_scan``
``execution="fused"``, the default on CPU) against the same scan on materialised gates
(``fused_lattice``, the default before it, and ``wavefront``), in the same run; and the whole
``nn.Mamba2d`` layer forward+backward with each.

Times forward and forward+backward as medians of interleaved repeats and prints each
execution's time and the speed-up of ``fused`` over the others.

    python benchmarks/grid_selective_scan.py --threads 1
    python benchmarks/grid_selective_scan.py --quick     # a smoke test
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
from timing import execution_medians

import everygraph.nn.mamba2d as mamba2d_module
from everygraph.nn import Mamba2d
from everygraph.sequence import grid_selective_scan

SCAN_EXECUTIONS = ("fused", "fused_lattice", "wavefront")
LAYER_EXECUTIONS = ("fused", "fused_lattice")


def scan_case(side: int, channels: int, state: int, batch: int = 2):
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(batch, side, side, channels, generator=gen)
    dt = torch.rand(batch, side, side, channels, generator=gen) * 0.1
    A = -torch.rand(channels, state, generator=gen)
    B, C = torch.randn(batch, side, side, state, generator=gen), torch.randn(batch, side, side, state, generator=gen)
    split = torch.rand(batch, side, side, channels, generator=gen)
    leaves = [u, dt, A, B, C, split]

    def call(execution):
        return grid_selective_scan(*leaves, (False, True), execution=execution)

    return leaves, call


def layer_case(side: int, d_model: int, state: int, batch: int = 2):
    """The Mamba2d layer (expand 2, four orientations); ``execution`` is the scan's."""
    torch.manual_seed(0)
    layer = Mamba2d(d_model=d_model, d_state=state)
    x = torch.randn(batch, side, side, d_model)
    original = mamba2d_module.grid_selective_scan

    def call(execution):
        mamba2d_module.grid_selective_scan = functools.partial(original, execution=execution)
        try:
            return layer(x)
        finally:
            mamba2d_module.grid_selective_scan = original

    return [x, *layer.parameters()], call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    parser.add_argument("--sides", type=int, nargs="+", default=[32, 64], help="grid sides (square grids)")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 64], help="D of the scan cases (N = 16)")
    parser.add_argument("--no-layer", action="store_true", help="skip the Mamba2d layer cases")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    sides = [8] if args.quick else args.sides
    channels = [16] if args.quick else args.channels
    repeat = 1 if args.quick else args.repeat
    cases = []
    for side in sides:
        for d in channels:
            cases.append((f"scan {side}x{side}, D={d}, N=16", scan_case(side, d, 16), SCAN_EXECUTIONS))
        if not args.no_layer:
            cases.append((f"Mamba2d layer {side}x{side}, d_model=32 (D=64), N=16", layer_case(side, 32, 16),
                          LAYER_EXECUTIONS))
    print(f"median of {repeat} ({args.clock} clock, {args.threads} thread(s)), batch 2; "
          "seconds forward | forward+backward")
    for name, (leaves, call), executions in cases:
        result = execution_medians(call, executions, leaves, repeat, clock)
        fused_f, fused_b = result["fused"]
        row = [f"{e} {f:.4f} | {b:.4f}" for e, (f, b) in result.items()]
        speedups = [f"x{result[e][0] / fused_f:.1f} | x{result[e][1] / fused_b:.1f} over {e}" for e in executions[1:]]
        print(f"{name}: " + "; ".join(row) + "  -> fused " + ", ".join(speedups), flush=True)


if __name__ == "__main__":
    main()
