"""Benchmark: Mamba's selective scan, the fused CPU kernels (numba, what ``selective_scan``
runs on CPU when numba is installed) vs the pure-PyTorch recurrent path (the fallback, with
its hand-written backward) vs the plain loop vs torch's prototype associative_scan, forward and
forward+backward, with peak memory.

    python benchmarks/selective_scan.py                  # B=2, D=256, N=16, L = 1k, 4k, 16k
    python benchmarks/selective_scan.py --lengths 1024 --threads 1
    python benchmarks/selective_scan.py --tune           # slab size sweep at L=4k
    python benchmarks/selective_scan.py --torch-compile 16   # torch.compile of 16-step blocks vs the fused kernel
    python benchmarks/selective_scan.py --route --threads 1 --lengths 4096   # selective_scan through scan vs the direct dispatch
    python benchmarks/selective_scan.py --compare-with /tmp/old_fused_cpu.py   # an earlier fused_cpu.py alongside

Times are the median of ``--repeats`` runs (ms; the loop: of ``--loop-repeats``), in one process, the fused kernels and
the PyTorch recurrence interleaved (fused, recurrent, fused, ...), so ratios hold on a busy machine even when absolute
numbers do not. The first fused call (numba compilation, or loading it from numba's cache) is made before timing. Peak memory,
in one more call of each function after the timed ones: resident set size (RSS, from
/proc/self/statm) sampled every millisecond by a background thread while the call runs, minus
the RSS just before it, after handing freed heap pages back to the OS (glibc malloc_trim), so
each call starts from the same baseline; it counts the call's new tensors (activations, saved
tensors, gradients), not the inputs. The timed calls run without the sampler (its thread's
CPU time would count in the process's CPU clock) and without the trim (the allocator reuses
freed memory, as in a training loop). For scale, one ``[B, D, L, N]`` float32 tensor is printed too: the loop's
autograd keeps several of them (the step states and decays) for the backward pass.

The floor: a fixed cost model of the fused recurrence, its floating-point operations per state
update (``FORWARD_FLOPS``, ``BACKWARD_FLOPS``: forward, and the adjoint with the states
recomputed per chunk; derived below and printed) times ``B * D * L * N``, divided by this
core's single-thread float32 peak as measured in the same run by a large ``torch.mm`` (the best
of ``--peak-repeats``; sgemm runs close to the FMA units' peak, so this is, if anything, a
slightly low peak and a slightly high floor). The model stays fixed so that a cheaper kernel
shows as a lower ratio; the kernels' own, smaller count gives the "own floor" column (how close
they run to the FMA units' peak). ``--compare-with`` times another version of ``fused_cpu.py``
interleaved with the current one. Every timing is reported in CPU time and wall time
(medians of interleaved repeats); the ratios use ``--clock``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import threading
import time

import torch

from everygraph.sequence import selective_scan, selective_scan_reference
from everygraph.sequence.mamba.fused_cpu import NUMBA_AVAILABLE, jit_enabled, selective_scan_fused
from everygraph.sequence.mamba.recurrent import selective_scan_recurrent

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so the next baseline is honest."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


class PeakRSS:
    """Peak RSS above the value at entry, sampled every millisecond."""

    def __enter__(self):
        release_free_memory()
        self.base = rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.peak = max(self.peak, rss_bytes())
        self._stop.set()
        self._thread.join()
        self.extra = self.peak - self.base


def cpu_name() -> str:
    """The CPU model (Linux), for the header."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def make_inputs(batch, channels, state, length, device, requires_grad):
    g = torch.Generator().manual_seed(0)
    t = lambda *s: torch.randn(*s, generator=g).to(device).requires_grad_(requires_grad)  # noqa: E731
    A = (-torch.arange(1, state + 1.0).repeat(channels, 1)).to(device).requires_grad_(requires_grad)
    return (t(batch, channels, length), t(batch, channels, length), A, t(batch, state, length), t(batch, state, length))


def associative_scan_selective(u, delta, A, B, C, delta_softplus=True):
    """The same scan through torch's prototype associative_scan on [B, D, L, N] pairs."""
    from torch._higher_order_ops.associative_scan import associative_scan

    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    decay = torch.exp(delta[..., None] * A[:, None, :])
    inputs = (delta * u)[..., None] * B.transpose(1, 2)[:, None]

    def combine(left, right):
        a0, b0 = left
        a1, b1 = right
        return a1 * a0, a1 * b0 + b1

    _, states = associative_scan(combine, (decay, inputs), dim=2, combine_mode="generic")
    return (states * C.transpose(1, 2)[:, None]).sum(-1)


#: The floor's cost model, fixed (it does not shrink when a kernel finds a cheaper exp):
#: floating-point operations per state update ``(b, d, t, n)`` of the fused forward recurrence
#: with a Cephes-style float32 exp (an FMA counts 2): the log-decay ``dt * A`` 1; the exp 24
#: (clamp 2, ``k = floor(x log2e + 1/2)`` 3, ``r = x - k ln2`` in two parts 4, a degree-5
#: polynomial by Horner 10, ``r^2`` 1, ``p r^2 + r`` 2, ``+ 1`` 1, times ``2^k`` 1; building
#: ``2^k`` from the exponent bits is integer work, not counted); ``h = a h + x B`` 3;
#: ``y += h C`` 2.
FORWARD_FLOPS = 1 + 24 + 3 + 2
#: The adjoint in the same model: the states are recomputed from the chunk's entering state
#: (log-decay, exp, state: 28; storing them instead would move a ``[B, D, L, N]`` tensor through
#: memory twice, slower than recomputing) and the adjoint step ``g + C gy`` 2, ``gC += h gy`` 2,
#: ``gB += g x`` 2, ``gx += g B`` 2, ``g a h`` 2, ``g_log += . A`` 2, ``gA += . dt`` 2,
#: ``g = g a`` 1 (15). Forward+backward: 73.
BACKWARD_FLOPS = 28 + 15
#: What the current kernels execute per state update (``fused_cpu``): the exp by the shifter
#: trick is 20 (clamp 2, ``x log2e + shifter`` 2, ``- shifter`` 1, ``r`` 4, a degree-5 Horner
#: polynomial with its constant term 10, times ``2^k`` 1), so the forward is 26; the backward
#: recomputes with it (24) and its adjoint step is 14 (``g a`` once, then ``(g a) h``): 38.
KERNEL_FORWARD_FLOPS = 1 + 20 + 3 + 2
KERNEL_BACKWARD_FLOPS = 24 + 14
FLOP_DERIVATION = (
    "floor model, flops per state update: forward 30 = log-decay 1 + exp 24 (clamp 2, k=floor(x*log2e+1/2) 3, "
    "r=x-k*ln2 in two parts 4, degree-5 Horner 10, r^2 1, p*r^2+r 2, +1 1, *2^k 1) + h=a*h+x*B 3 + y+=h*C 2; "
    "backward 43 = recomputation 28 + adjoint 15 (g+C*gy 2, gC 2, gB 2, gx 2, g*a*h 2, g_log 2, gA 2, g*a 1); "
    "FMA = 2 flops; per-position work (softplus, dt*u, D, z) not counted. The kernels' own count "
    f"(exp 20): forward {KERNEL_FORWARD_FLOPS}, backward {KERNEL_BACKWARD_FLOPS} (column fused/own)"
)


def load_previous_kernels(path: str):
    """``selective_scan_fused`` of another version of ``fused_cpu.py`` (e.g. ``git show
    main~3:everygraph/sequence/mamba/fused_cpu.py > /tmp/old_fused_cpu.py``), loaded as a module
    of the same package so its relative imports resolve, for a before/after in one run."""
    import importlib.util
    import re
    import sys

    # named after the file: numba's on-disk cache records the module name with the file's path
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    name = f"everygraph.sequence.mamba._previous_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.selective_scan_fused


def measure_peak_gflops(repeats: int, size: int = 2048) -> float:
    """This core's float32 peak as reached by ``torch.mm`` on the current thread count, in
    GFLOP/s (best of ``repeats``, CPU time)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        torch.mm(a, b)
        best = min(best, time.process_time() - start)
    return 2 * size**3 / best / 1e9


#: ``--clock cpu`` times with the process's CPU time: on one thread it leaves out the time the
#: process waited for a core, which dominates wall times on a machine with other work running.
CLOCK = time.perf_counter


def run_once(fn, args, backward, sync) -> None:
    for a in args:
        a.grad = None
    out = fn(*args)
    if backward:
        out.sum().backward()
    sync()
    del out


def measure_once(fn, args, backward, sync, both=False):
    """Elapsed by CLOCK, or with ``both`` ``(cpu s, wall s)``. Timed without the memory sampler:
    its thread's CPU time would count (the process's CPU clock covers all its threads) and it
    competes for the core; memory is measured in a separate call (:func:`peak_memory`)."""
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    run_once(fn, args, backward, sync)
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start_wall
    if both:
        return cpu, wall
    return cpu if CLOCK is time.process_time else wall


def peak_memory(fn, args, backward, sync) -> float:
    """Peak extra RSS of one call in MiB (after handing freed heap pages back to the OS)."""
    with PeakRSS() as mem:
        run_once(fn, args, backward, sync)
    return mem.extra / 2**20


def measure(fn, args, backward, repeats, sync):
    times = [measure_once(fn, args, backward, sync) for _ in range(repeats)]
    return statistics.median(times) * 1e3, peak_memory(fn, args, backward, sync)


def measure_interleaved(fns, args, backward, repeats, sync):
    """``{name: (median cpu ms, median wall ms, peak MiB)}``, one run of every function per round,
    the order rotated from round to round (a function timed right after another one that leaves
    the caches and the allocator in a different state would otherwise always pay for it), then
    one call of each for its memory."""
    runs = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name].append(measure_once(fns[name], args, backward, sync, both=True))
    return {
        name: (statistics.median(c for c, _ in r) * 1e3, statistics.median(w for _, w in r) * 1e3,
               peak_memory(fns[name], args, backward, sync))
        for name, r in runs.items()
    }


def route_comparison(B: int, D: int, N: int, lengths: list[int], repeats: int) -> None:
    """What the route through the engine costs: ``selective_scan`` (operands built as the
    engine's factored form, ``scan`` recognises it and calls the kernel) against
    ``_selective_scan_direct`` (the dispatch straight to the kernel that ``selective_scan``
    made before), the same kernel underneath. Interleaved in alternating order (route, direct,
    direct, route, ...), process CPU time, medians of ``repeats``; plus the fixed cost per call
    at a tiny size, where the kernel's time is negligible."""
    from everygraph.sequence.mamba import _selective_scan_direct

    fns = {"route": lambda *a: selective_scan(*a, delta_softplus=True),
           "direct": lambda *a: _selective_scan_direct(*a, delta_softplus=True)}
    warm = make_inputs(1, 2, N, 3, "cpu", True)
    for fn in fns.values():  # compile (or load) the kernels outside the timings
        fn(*warm).sum().backward()
    print(f"{'L':>6} {'mode':>8} {'route ms':>9} {'direct ms':>10} {'route/direct':>12}")
    sizes = [(B, D, N, L) for L in lengths] + [(1, 8, 4, 16)]
    for b, d, n, L in sizes:
        for backward in (False, True):
            x = make_inputs(b, d, n, L, "cpu", backward)
            runs = {name: [] for name in fns}
            for r in range(repeats):
                for name in (fns if r % 2 == 0 else reversed(list(fns))):
                    for a in x:
                        a.grad = None
                    with torch.enable_grad() if backward else torch.no_grad():
                        start = time.process_time()
                        out = fns[name](*x)
                        if backward:
                            out.sum().backward()
                        runs[name].append(time.process_time() - start)
            t_route, t_direct = (statistics.median(runs[k]) * 1e3 for k in ("route", "direct"))
            label = f"{L}" if (b, d, n) == (B, D, N) else f"{L} (B={b}, D={d}, N={n})"
            print(f"{label:>6} {'fwd+bwd' if backward else 'fwd':>8} {t_route:>9.3f} {t_direct:>10.3f} "
                  f"{t_route / t_direct:>12.3f}", flush=True)
    print(f"medians of {repeats} interleaved repeats, process CPU time; the same kernel runs in both "
          f"({'fused' if NUMBA_AVAILABLE and jit_enabled() else 'recurrent'})")


def torch_compile_comparison(block: int, B: int, D: int, N: int, L: int, repeats: int) -> None:
    """Forward only: ``torch.compile`` of a block of ``block`` recurrence steps (the Python loop
    unrolled into the graph), called ``L / block`` times, against the fused kernel; CPU time."""

    def steps(h, u, dt, A, Bm, Cm):
        ys = []
        for t in range(u.shape[0]):
            h = torch.exp(dt[t, :, :, None] * A) * h + (dt[t] * u[t])[:, :, None] * Bm[t]
            ys.append((h * Cm[t]).sum(-1))
        return h, torch.stack(ys)

    u, delta, A, Bm, Cm = (t.detach() for t in make_inputs(B, D, N, L, "cpu", False))
    dt = torch.nn.functional.softplus(delta)
    u_t, dt_t = u.permute(2, 0, 1).contiguous(), dt.permute(2, 0, 1).contiguous()
    B_t, C_t = Bm.permute(2, 0, 1).contiguous(), Cm.permute(2, 0, 1).contiguous()
    B_t, C_t = B_t[:, :, None, :], C_t[:, :, None, :]

    def run(fn):
        h, out = u.new_zeros(B, D, N), []
        for s in range(0, L, block):
            h, y = fn(h, u_t[s:s + block], dt_t[s:s + block], A, B_t[s:s + block], C_t[s:s + block])
            out.append(y)
        return torch.cat(out).permute(1, 2, 0)

    compiled = torch.compile(steps, dynamic=False)
    with torch.no_grad():
        start = time.perf_counter()
        got = run(compiled)
        compile_s = time.perf_counter() - start
        want = selective_scan_fused(u, dt, A, Bm, Cm) if NUMBA_AVAILABLE else run(steps)
        print(f"torch.compile, {block}-step blocks: compile + first call {compile_s:.1f} s, "
              f"max |difference| to the fused kernel {(got - want).abs().max().item():.2e}")
        times = {"compiled blocks": [], "eager blocks": [], "fused": []}
        for _ in range(repeats):
            for name, fn in (("compiled blocks", lambda: run(compiled)), ("eager blocks", lambda: run(steps)),
                             ("fused", lambda: selective_scan_fused(u, dt, A, Bm, Cm))):
                if name == "fused" and not NUMBA_AVAILABLE:
                    continue
                start = time.process_time()
                fn()
                times[name].append(time.process_time() - start)
    for name, ts in times.items():
        if ts:
            print(f"  {name:>16}: {statistics.median(ts) * 1e3:8.1f} ms CPU time (median of {len(ts)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-repeats", type=int, default=1)
    parser.add_argument("--peak-repeats", type=int, default=5, help="torch.mm runs for the peak (best of)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--assoc-max-length", type=int, default=4096,
                        help="skip associative_scan above this length (it is slow)")
    parser.add_argument("--tune", action="store_true", help="sweep the slab size at L=4096")
    parser.add_argument("--torch-compile", type=int, default=0, metavar="BLOCK",
                        help="compare torch.compile of BLOCK-step blocks with the fused kernel at the first length, forward")
    parser.add_argument("--route", action="store_true",
                        help="selective_scan through the scan engine vs the direct dispatch to the kernel, same run")
    parser.add_argument("--compare-with", metavar="FUSED_CPU_PY", default=None,
                        help="another version of fused_cpu.py, timed interleaved with the current one (column 'prev')")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time; cpu: process CPU time (use with --threads 1 on a busy machine)")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    B, D, N = args.batch, args.channels, args.state
    print(f"selective scan, B={B}, D={D}, N={N}, float32, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.clock} clock, {cpu_name()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")

    cpu_sync = lambda: None  # noqa: E731

    if args.route:
        route_comparison(B, D, N, args.lengths, args.repeats)
        return

    if args.torch_compile:
        torch_compile_comparison(args.torch_compile, B, D, N, args.lengths[0], args.repeats)
        return

    if args.tune:
        x = make_inputs(B, D, N, 4096, "cpu", True)
        print(f"{'slab elems':>11} {'slab len':>9} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak MiB':>9}")
        for slab in (2**15, 2**16, 2**17, 2**18, 2**19, 2**20, 2**21, 2**22):
            fn = lambda *a: selective_scan_recurrent(*a, delta_softplus=True, slab_elements=slab)  # noqa: E731,B023
            with torch.no_grad():
                f, _ = measure(fn, x, False, args.repeats, cpu_sync)
            fb, mem = measure(fn, x, True, args.repeats, cpu_sync)
            print(f"{slab:>11} {slab // (B * D * N):>9} {f:>9.1f} {fb:>11.1f} {mem:>9.1f}", flush=True)
        return

    assoc_error = None
    try:
        from torch._higher_order_ops.associative_scan import associative_scan  # noqa: F401
    except Exception as e:  # noqa: BLE001
        assoc_error = f"{type(e).__name__}: {e}"

    fused_ok = NUMBA_AVAILABLE and jit_enabled()
    fused = lambda *a: selective_scan_fused(*a, delta_softplus=True)  # noqa: E731
    recurrent = lambda *a: selective_scan_recurrent(*a, delta_softplus=True)  # noqa: E731
    ours = lambda *a: selective_scan(*a, delta_softplus=True)  # noqa: E731
    loop = lambda *a: selective_scan_reference(*a, delta_softplus=True)  # noqa: E731
    previous = None
    if fused_ok and args.compare_with:
        previous_fused = load_previous_kernels(args.compare_with)
        previous = lambda *a: previous_fused(*a, delta_softplus=True)  # noqa: E731
    if fused_ok:  # compile (or load from numba's cache) outside the timings
        warm = make_inputs(1, 2, N, 3, "cpu", True)
        for fn in (fused, previous) if previous else (fused,):
            fn(*warm).sum().backward()
            with torch.no_grad():
                fn(*warm)
    else:
        print("fused kernels unavailable (numba missing or EVERYGRAPH_DISABLE_JIT set): the fused column is empty")
    peak = measure_peak_gflops(args.peak_repeats)
    print(f"float32 peak of this core (torch.mm 2048^3, {torch.get_num_threads()} threads, best of "
          f"{args.peak_repeats}, CPU time): {peak:.1f} GFLOP/s")
    print(FLOP_DERIVATION)
    ratio_index = 0 if args.clock == "cpu" else 1
    header = (f"{'L':>6} {'mode':>8} {'floor ms':>9} {'own floor':>9} {'fused cpu':>9} {'fused wall':>10} {'recur cpu':>9} "
              f"{'recur wall':>10} {'loop ms':>9} {'assoc ms':>9} {'fused/floor':>11} {'recur/fused':>11} "
              f"{'loop/fused':>10} {'fused/own':>9} {'prev cpu':>9} {'prev wall':>9} {'prev/fused':>10} {'fused MiB':>9} {'recur MiB':>9} {'loop MiB':>9} {'[B,D,L,N] MiB':>14}")
    print(header)
    nan = (float("nan"),) * 3
    for L in args.lengths:
        full = B * D * L * N * 4 / 2**20
        for backward in (False, True):
            flops = (FORWARD_FLOPS + (BACKWARD_FLOPS if backward else 0)) * B * D * L * N
            floor_ms = flops / (peak * 1e9) * 1e3
            own_flops = (KERNEL_FORWARD_FLOPS + (KERNEL_BACKWARD_FLOPS if backward else 0)) * B * D * L * N
            own_floor_ms = own_flops / (peak * 1e9) * 1e3
            x = make_inputs(B, D, N, L, "cpu", backward)
            ctx = torch.enable_grad() if backward else torch.no_grad()
            with ctx:
                fns = {"fused": fused, "recurrent": recurrent} if fused_ok else {"recurrent": recurrent}
                if previous:
                    fns["previous"] = previous
                timed = measure_interleaved(fns, x, backward, args.repeats, cpu_sync)
                t_fused = timed.get("fused", nan)
                t_rec = timed["recurrent"]
                t_loop, m_loop = measure(loop, x, backward, args.loop_repeats, cpu_sync)
                t_assoc = float("nan")
                if assoc_error is None and L <= args.assoc_max_length:
                    try:
                        t_assoc, _ = measure(associative_scan_selective, x, backward, 1, cpu_sync)
                    except Exception as e:  # noqa: BLE001
                        assoc_error = f"{type(e).__name__}: {str(e)[:200]}"
            mode = "fwd+bwd" if backward else "fwd"
            f_t, r_t = t_fused[ratio_index], t_rec[ratio_index]
            t_prev = timed.get("previous", nan)
            print(f"{L:>6} {mode:>8} {floor_ms:>9.1f} {own_floor_ms:>9.1f} {t_fused[0]:>9.1f} {t_fused[1]:>10.1f} {t_rec[0]:>9.1f} "
                  f"{t_rec[1]:>10.1f} {t_loop:>9.1f} {t_assoc:>9.1f} {f_t / floor_ms:>11.2f} {r_t / f_t:>11.2f} "
                  f"{t_loop / f_t:>10.2f} {f_t / own_floor_ms:>9.2f} {t_prev[0]:>9.1f} {t_prev[1]:>9.1f} "
                  f"{t_prev[ratio_index] / f_t:>10.2f} {t_fused[2]:>9.1f} {t_rec[2]:>9.1f} {m_loop:>9.1f} {full:>14.1f}", flush=True)
    if assoc_error:
        print(f"associative_scan unavailable or failed: {assoc_error}")
    else:
        print(f"associative_scan: torch's prototype, eager, combine_mode='generic', only up to L={args.assoc_max_length}")
    print("fused: selective_scan_fused (numba kernels, what selective_scan runs on CPU with numba); "
          "recur: selective_scan_recurrent (pure PyTorch, the fallback); loop: selective_scan_reference; "
          f"cpu / wall: medians of {args.repeats} interleaved repeats (loop: {args.loop_repeats}, by --clock); "
          f"ratios by the {args.clock} clock; floor: the model's flops / peak; own floor: the kernels' own flops / peak; "
          "prev: --compare-with's selective_scan_fused")

    if torch.cuda.is_available():
        print("\nGPU (CUDA):")
        sync = torch.cuda.synchronize
        for L in args.lengths:
            x = make_inputs(B, D, N, L, "cuda", True)
            t_ours, _ = measure(ours, x, True, args.repeats, sync)
            t_loop, _ = measure(loop, x, True, args.loop_repeats, sync)
            line = f"{L:>6} fwd+bwd ours {t_ours:.1f} ms, loop {t_loop:.1f} ms, ratio {t_loop / t_ours:.2f}"
            try:
                from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

                t_m, _ = measure(lambda *a: selective_scan_fn(*a, delta_softplus=True), x, True, args.repeats, sync)
                line += f", mamba_ssm CUDA {t_m:.1f} ms"
            except ImportError:
                line += ", mamba_ssm not installed"
            print(line)


if __name__ == "__main__":
    main()
