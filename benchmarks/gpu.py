"""Benchmark: the Triton kernels against the eager PyTorch paths and the anchors, on one GPU.

    python benchmarks/gpu.py                 # the full sizes; needs a CUDA GPU (a few minutes)
    python benchmarks/gpu.py --only scan     # one kernel: scan, chunk, wavefront
    TRITON_INTERPRET=1 python benchmarks/gpu.py --smoke   # tiny sizes on CPU: checks the script

For each kernel: forward and forward+backward time (median of ``--repeats`` runs after
warm-up, CUDA events) and peak GPU memory (``torch.cuda.max_memory_allocated`` above the
inputs), ours against the eager PyTorch execution on the same GPU and against the anchor a
user would pick instead, when it is installed in the same environment:

- selective scan (B=8, D=1536, N=16, L=2048; float32 and bfloat16): ``mamba_ssm``'s CUDA
  ``selective_scan_fn``; else ``mambapy``'s ``pscan``; the eager path is our ``recurrent``
  execution.
- chunk scan (pLSTM on a path, scalar decays; B=8, H=4, L=4096, dk=dv=64):
  flash-linear-attention's ``chunk_simple_gla`` (scalar decay per head and position, the same
  work shape); key-diagonal decays (GLA-style): fla's ``chunk_gla``.
- wavefront (pLSTM on a 256x256 grid, B=8, H=4, dk=dv=32; a batch of 512 molecule-sized
  graphs): our eager ``wavefront`` and ``lattice`` executions. (The official pLSTM code is a
  separate repository; run ``benchmarks/plstm.py --official`` for it.)

Without a GPU the script says so and exits with status 0; ``--smoke`` runs every path on
tiny sizes (on CPU under ``TRITON_INTERPRET=1``) so the script itself is tested.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from everygraph.graphlib import DAG, Lattice
from everygraph.sequence import plstm_scan, scan, selective_scan
from everygraph.sequence.plstm.layout import lattice_dag
from everygraph.sequence.triton import triton_installed, triton_runs_on


#: Ratios are printed only for real measurements (not for a smoke run under the interpreter).
SHOW_RATIOS = True


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, int]:
    """Median milliseconds of ``fn`` and its peak memory above the memory before it."""
    fn()  # warm-up: compilation, autotuning, caches
    times = []
    peak = 0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
            peak = max(peak, torch.cuda.max_memory_allocated() - base)
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), peak


def row(name: str, fwd: tuple[float, int] | None, both: tuple[float, int] | None, ours: tuple[float, float] | None) -> None:
    def fmt(x):
        return "      n/a" if x is None else f"{x[0]:9.2f}"

    mem = "" if both is None else f"{both[1] / 2**20:10.1f}"
    ratio = ""
    if SHOW_RATIOS and ours is not None and fwd is not None and both is not None:
        ratio = f"   ours is {fwd[0] / ours[0]:6.2f}x / {both[0] / ours[1]:6.2f}x faster"
    print(f"  {name:34s} {fmt(fwd)} {fmt(both)} {mem}{ratio}")


def header(title: str) -> None:
    print(f"\n{title}\n  {'execution':34s} {'fwd ms':>9s} {'fwd+bwd':>9s} {'peak MiB':>10s}")


def measure(call: Callable[[], torch.Tensor], inputs: list[torch.Tensor], repeats: int, device) -> tuple:
    def forward():
        with torch.no_grad():
            return call()

    def forward_backward():
        out = call()
        out = out[0] if isinstance(out, tuple) else out
        out.float().sum().backward()
        for x in inputs:
            x.grad = None

    return timed(forward, repeats, device), timed(forward_backward, repeats, device)


def bench_selective_scan(args, device) -> None:
    B, D, N, L = (2, 8, 4, 40) if args.smoke else (8, 1536, 16, 2048)
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator(device="cpu").manual_seed(0)
        u = torch.randn(B, D, L, generator=g).to(device, dtype).requires_grad_()
        delta = (torch.randn(B, D, L, generator=g) * 0.5).to(device, dtype).requires_grad_()
        A = (-torch.rand(D, N, generator=g) - 0.5).to(device).requires_grad_()  # float32, as mamba_ssm keeps it
        Bm = torch.randn(B, N, L, generator=g).to(device, dtype).requires_grad_()
        Cm = torch.randn(B, N, L, generator=g).to(device, dtype).requires_grad_()
        Dp = torch.randn(D, generator=g).to(device).requires_grad_()
        inputs = [u, delta, A, Bm, Cm, Dp]
        header(f"selective scan B={B} D={D} N={N} L={L} {dtype}")
        results = {}
        for name in ("triton", "recurrent"):
            results[name] = measure(
                lambda name=name: selective_scan(u, delta, A, Bm, Cm, Dp, delta_softplus=True, execution=name),
                inputs, args.repeats, device,
            )
        ours = (results["triton"][0][0], results["triton"][1][0])
        row("everygraph triton", *results["triton"], None)
        row("everygraph recurrent (eager)", *results["recurrent"], ours)
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

            anchor = measure(lambda: selective_scan_fn(u, delta, A, Bm, Cm, Dp, delta_softplus=True), inputs,
                             args.repeats, device)
            row("mamba_ssm selective_scan_fn (CUDA)", *anchor, ours)
        except ImportError:
            print("  mamba_ssm: not installed")
            try:
                from mambapy.pscan import pscan

                def mambapy_scan():
                    dt = torch.nn.functional.softplus(delta.float()).transpose(1, 2)  # [B, L, D]
                    dA = torch.exp(dt.unsqueeze(-1) * A)  # [B, L, D, N]
                    BX = dt.unsqueeze(-1) * Bm.float().transpose(1, 2).unsqueeze(2) * u.float().transpose(1, 2).unsqueeze(-1)
                    hs = pscan(dA, BX)
                    return (hs @ Cm.float().transpose(1, 2).unsqueeze(-1)).squeeze(-1)

                row("mambapy pscan", *measure(mambapy_scan, inputs, args.repeats, device), ours)
            except ImportError:
                print("  mambapy: not installed")


def bench_chunk(args, device) -> None:
    B, H, L, dk = (1, 2, 40, 16) if args.smoke else (8, 4, 4096, 64)
    for dtype in (torch.float32, torch.bfloat16):
        lattice = Lattice((L,))
        dag = lattice_dag(lattice)
        E, lines = dag.num_edges, dag.line_graph().node.numel()
        g = torch.Generator(device="cpu").manual_seed(0)

        def r(*shape, positive=False):
            x = torch.rand(*shape, generator=g) if positive else torch.randn(*shape, generator=g)
            return x.to(device, dtype).requires_grad_()

        q, k, v = r(B, L, H, dk), r(B, L, H, dk), r(B, L, H, dk)
        gates = [r(B, E, H, positive=True), r(B, lines, H, positive=True), r(B, E, H, positive=True), r(B, L, H, positive=True)]
        inputs = [q, k, v, *gates]
        header(f"chunk scan (pLSTM path) B={B} H={H} L={L} dk=dv={dk} {dtype}")
        ours = measure(lambda: plstm_scan(lattice, q, k, v, *gates, execution="triton"), inputs, args.repeats, device)
        eager = measure(lambda: plstm_scan(lattice, q, k, v, *gates, execution="lattice"), inputs, args.repeats, device)
        speed = (ours[0][0], ours[1][0])
        row("everygraph triton chunk", *ours, None)
        row("everygraph lattice (eager chunked)", *eager, speed)
        try:
            from fla.ops.simple_gla import chunk_simple_gla

            logdecay = torch.log(torch.rand(B, L, H, generator=g) * 0.5 + 0.5).to(device).requires_grad_()
            anchor = measure(lambda: chunk_simple_gla(q, k, v, logdecay)[0], [q, k, v, logdecay], args.repeats, device)
            row("fla chunk_simple_gla", *anchor, speed)
        except ImportError:
            print("  flash-linear-attention: not installed")
        alpha = (torch.rand(B, lines, H, dk, generator=g) * 0.5 + 0.5).to(device, dtype).requires_grad_()
        diag_inputs = [q, k, v, gates[0], alpha, gates[2], gates[3]]
        header(f"chunk scan (key-diagonal, GLA-style) B={B} H={H} L={L} dk=dv={dk} {dtype}")
        ours_diag = measure(lambda: scan(lattice, *diag_inputs, kind="diagonal", execution="triton"), diag_inputs,
                            args.repeats, device)
        row("everygraph triton diagonal chunk", *ours_diag, None)
        row("everygraph recurrent (eager)",
            *measure(lambda: scan(lattice, *diag_inputs, kind="diagonal", execution="recurrent"), diag_inputs,
                     args.repeats, device), (ours_diag[0][0], ours_diag[1][0]))
        try:
            from fla.ops.gla import chunk_gla

            log_alpha = torch.log(torch.rand(B, L, H, dk, generator=g) * 0.5 + 0.5).to(device).requires_grad_()
            row("fla chunk_gla", *measure(lambda: chunk_gla(q, k, v, log_alpha)[0], [q, k, v, log_alpha], args.repeats,
                                          device), (ours_diag[0][0], ours_diag[1][0]))
        except ImportError:
            print("  flash-linear-attention: not installed")


def molecule_batch(num_graphs: int, generator: torch.Generator) -> DAG:
    """``num_graphs`` random molecule-sized DAGs (15-35 nodes, a ring-closing edge every 6
    nodes), oriented from low to high node id, as one disjoint union."""
    edges, offset, batch = [], 0, []
    for graph in range(num_graphs):
        n = int(torch.randint(15, 36, (1,), generator=generator))
        parent = [int(torch.randint(0, i, (1,), generator=generator)) for i in range(1, n)]
        pairs = [(p, i + 1) for i, p in enumerate(parent)] + [(i, i + 5) for i in range(0, n - 5, 6)]
        edges += [(a + offset, b + offset) for a, b in pairs]
        batch += [graph] * n
        offset += n
    return DAG(torch.tensor(edges).t(), num_nodes=offset, batch=torch.tensor(batch))


def bench_wavefront(args, device) -> None:
    g = torch.Generator(device="cpu").manual_seed(0)
    grid = (6, 5) if args.smoke else (256, 256)
    B, H, dk = (1, 1, 4) if args.smoke else (8, 4, 32)
    cases = [("grid", Lattice(grid), ("lattice", "wavefront")),
             ("molecules", molecule_batch(4 if args.smoke else 512, g), ("wavefront",))]
    for label, structure, eager_names in cases:
        dag = lattice_dag(structure) if isinstance(structure, Lattice) else structure
        N, E, lines = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()
        b = B if label == "grid" else 1

        def r(*shape, positive=False):
            x = torch.rand(*shape, generator=g) if positive else torch.randn(*shape, generator=g)
            return x.to(device).requires_grad_()

        inputs = [r(b, N, H, dk), r(b, N, H, dk), r(b, N, H, dk), r(b, E, H, positive=True),
                  r(b, lines, H, positive=True) * 0.5, r(b, E, H, positive=True), r(b, N, H, positive=True)]
        inputs = [x.detach().requires_grad_() for x in inputs]
        shape = f"{grid[0]}x{grid[1]} grid, B={b}" if label == "grid" else f"{structure.num_graphs} molecule graphs"
        header(f"wavefront (pLSTM) {shape}, H={H}, dk=dv={dk}, float32")
        try:
            ours = measure(lambda: plstm_scan(structure, *inputs, execution="triton"), inputs, args.repeats, device)
        except torch.OutOfMemoryError:
            print("  everygraph triton: out of memory")
            continue
        speed = (ours[0][0], ours[1][0])
        row("everygraph triton wavefront", *ours, None)
        for name in eager_names:
            try:
                row(f"everygraph {name} (eager)",
                    *measure(lambda name=name: plstm_scan(structure, *inputs, execution=name), inputs, args.repeats, device),
                    speed)
            except torch.OutOfMemoryError:
                print(f"  everygraph {name}: out of memory")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("scan", "chunk", "wavefront"), action="append")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; on CPU needs TRITON_INTERPRET=1")
    args = parser.parse_args(argv)
    if not triton_installed():
        print('triton is not installed (pip install "everygraph[gpu]"): nothing to measure.')
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        print("No CUDA GPU here: the Triton kernels run only on a GPU (or on CPU under TRITON_INTERPRET=1, "
              "for tests). Nothing measured; run this script on a machine with a GPU.")
        return 0
    if not triton_runs_on(device):
        print("--smoke on CPU needs TRITON_INTERPRET=1 (Triton's interpreter).")
        return 0
    if args.smoke:
        args.repeats = 1
        global SHOW_RATIOS
        SHOW_RATIOS = device.type == "cuda"
        print("smoke run: tiny sizes; times under the interpreter are not GPU measurements")
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU (Triton interpreter)'}; "
          f"torch {torch.__version__}; ratios are eager or anchor time over ours, forward / forward+backward")
    benches = {"scan": bench_selective_scan, "chunk": bench_chunk, "wavefront": bench_wavefront}
    for name in args.only or list(benches):
        benches[name](args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
