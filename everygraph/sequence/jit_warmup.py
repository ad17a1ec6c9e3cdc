r"""Compile the numba kernels ahead of their first use and keep them in numba's on-disk cache.

The compiled CPU kernels (numba, the optional extra ``everygraph[cpu]``) compile on the first
call of each signature, which takes minutes of CPU time for all of them together; afterwards
every process loads them from numba's on-disk cache (``cache=True``: ``__pycache__`` next to
the module, or numba's user-wide cache directory; ``NUMBA_CACHE_DIR`` overrides it) in
seconds. Run once after installing (or after updating) everygraph::

    python -m everygraph.sequence.jit_warmup               # every group, 2 processes
    python -m everygraph.sequence.jit_warmup --processes 1 --groups selective_scan

or call :func:`warm_up` (this process) or :func:`warm_up_in_processes` (in parallel, one
subprocess per share of the groups). Nothing happens when numba is not installed or
``EVERYGRAPH_DISABLE_JIT`` is set.

Each group (:data:`GROUPS`) runs one family of kernels through the public functions on tiny
inputs, in float32 and float64, forward and backward, with and without boundary states, so
that exactly the signatures ordinary calls use are compiled. A group compiles its own numba
functions only: numba keeps one cache index per function, and two processes adding different
signatures of one function at the same time could lose one of them, so groups may run in
parallel processes but a group is never split.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..graphlib import Lattice
from .grid_mamba import grid_selective_scan
from .mamba import selective_scan
from .mamba.fused_cpu import CHUNK, jit_enabled, selective_scan_fused
from .plstm import plstm_grid_gating
from .plstm.layout import lattice_dag
from .recurrence import scan
from .transitions import Boundary

DTYPES = (torch.float32, torch.float64)


def _backward(*outputs: torch.Tensor | None) -> None:
    """One backward pass through every output (a weighted sum, so no gradient is all ones)."""
    total = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outputs if o is not None)
    total.backward()


def _selective_scan() -> None:
    """The fused selective scan's forward and adjoint kernels and the float32 softplus kernel."""
    gen = torch.Generator().manual_seed(0)
    batch, channels, n_state, length = 2, 16, 4, CHUNK + 6  # more than one chunk and one lane block
    for dtype in DTYPES:
        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, dtype=dtype, generator=gen).requires_grad_()

        u, delta, B, C = rand(batch, channels, length), rand(batch, channels, length), rand(batch, n_state, length), rand(batch, n_state, length)
        A = (-torch.rand(channels, n_state, dtype=dtype, generator=gen) - 0.5).requires_grad_()
        # through the engine (as ``selective_scan`` runs) and straight (the float32 softplus kernel)
        out, last = selective_scan(u, delta, A, B, C, rand(channels), delta_softplus=True, return_last_state=True,
                                   execution="fused")
        _backward(out, last)
        _backward(*selective_scan_fused(u, delta, A, B, C, delta_softplus=True, return_last_state=True))


def _lattice_inputs(shape: tuple[int, ...], kind: str, dtype: torch.dtype, boundary: bool) -> tuple[Lattice, dict]:
    gen = torch.Generator().manual_seed(len(shape))
    lattice = Lattice(shape)
    heads, dk, dv = 2, 3, 8  # dv = 8: the kernels' vector loops as well as their tails

    def rand(*s: int) -> torch.Tensor:
        return torch.rand(*s, dtype=dtype, generator=gen).requires_grad_()

    def gate(rows: int) -> torch.Tensor:
        per_entry = {"scalar": (), "diagonal": (dk,), "elementwise": (dk, dv), "householder": (2, dk + 2)}[kind]
        return rand(1, rows, heads, *per_entry)

    dag = lattice_dag(lattice)
    N, E, L = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()
    args = dict(q=rand(1, N, heads, dk), k=rand(1, N, heads, dk), v=rand(1, N, heads, dv), source=rand(1, E, heads),
                transition=gate(L), mark=rand(1, E, heads), direct=rand(1, N, heads))
    if boundary:
        args.update(initial_state=rand(1, N, heads, dk, dv), return_state=True,
                    boundary=Boundary(rand(1, N, heads), rand(1, N, heads), gate(E), gate(E), gate(N)))
    return lattice, args


def _fused_lattice(kinds: Sequence[str]) -> Callable[[], None]:
    def run() -> None:
        for dtype in DTYPES:
            for kind in kinds:
                for boundary in (False, True):
                    lattice, args = _lattice_inputs((3, 4), kind, dtype, boundary)
                    out = scan(lattice, **args, kind=kind, execution="fused_lattice")
                    _backward(*(out if isinstance(out, tuple) else (out,)))

    return run


def _grid_gating() -> None:
    """The compiled gating matrix of pLSTM on a small grid (:func:`plstm_grid_gating`)."""
    gen = torch.Generator().manual_seed(0)
    batch, X, Y, heads = 1, 3, 4, 2
    flips = ((False, False), (True, False))
    for dtype in DTYPES:
        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(batch, X, Y, len(flips), heads, *shape, dtype=dtype, generator=gen).requires_grad_()

        _backward(plstm_grid_gating(rand(2), rand(2, 2) / 2, rand(2), rand(), flips, compiled=True))


def _grid_selective() -> None:
    """The compiled 2D selective scan (:func:`grid_selective_scan`, ``execution="fused"``),
    forward and adjoint, with and without the split."""
    gen = torch.Generator().manual_seed(0)
    batch, X, Y, channels, n_state = 1, 2, 3, 8, 9  # one lane block; B, C gradients by vectors and tails
    for dtype in DTYPES:
        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, dtype=dtype, generator=gen).requires_grad_()

        for split in (rand(batch, X, Y, channels), None):
            _backward(grid_selective_scan(rand(batch, X, Y, channels), rand(batch, X, Y, channels), -rand(channels, n_state),
                                          rand(batch, X, Y, n_state), rand(batch, X, Y, n_state), split, execution="fused"))


@dataclass(frozen=True)
class WarmupGroup:
    """One family of kernels: ``run`` compiles them (and only numba functions of no other
    group); ``seconds`` is its measured cold compile time (CPU seconds), used to share the
    groups among processes."""

    run: Callable[[], None]
    seconds: float


#: The kernel families, by name. A new compiled kernel belongs in a group here (a new group
#: when it shares no numba function with an existing one), with its measured compile time.
GROUPS: dict[str, WarmupGroup] = {
    "selective_scan": WarmupGroup(_selective_scan, 56.0),
    "fused_lattice_scalar": WarmupGroup(_fused_lattice(("scalar",)), 27.0),
    "fused_lattice_entries": WarmupGroup(_fused_lattice(("diagonal", "elementwise")), 25.0),
    "fused_lattice_householder": WarmupGroup(_fused_lattice(("householder",)), 36.0),
    "grid_gating": WarmupGroup(_grid_gating, 8.0),
    "grid_selective": WarmupGroup(_grid_selective, 12.0),
}


def _check_groups(groups: Iterable[str] | None) -> list[str]:
    names = list(GROUPS) if groups is None else list(groups)
    unknown = [g for g in names if g not in GROUPS]
    if unknown:
        raise ValueError(f"groups must be names of GROUPS ({', '.join(GROUPS)}), got unknown {unknown}")
    return names


def warm_up(groups: Iterable[str] | None = None) -> dict[str, float]:
    """Compile the kernels of ``groups`` (names of :data:`GROUPS`; default: all) in this process,
    or load them from numba's cache where they are there already.

    Returns:
        The wall seconds each group took, by name; empty when the JIT is not enabled (numba
        not installed or ``EVERYGRAPH_DISABLE_JIT`` set): nothing is compiled then.

    Raises:
        ValueError: an unknown group name (the known ones are named).
    """
    names = _check_groups(groups)
    if not jit_enabled():
        return {}
    taken = {}
    for name in names:
        start = time.perf_counter()
        with torch.enable_grad():
            GROUPS[name].run()
        taken[name] = time.perf_counter() - start
    return taken


def share(groups: Iterable[str], processes: int) -> list[list[str]]:
    """``groups`` split into at most ``processes`` lists of about equal compile time (the
    longest group first, each to the least loaded list); empty lists are dropped."""
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        raise ValueError(f"processes must be a positive int, got {processes!r}")
    shares: list[list[str]] = [[] for _ in range(processes)]
    load = [0.0] * processes
    for name in sorted(_check_groups(groups), key=lambda g: -GROUPS[g].seconds):
        i = load.index(min(load))
        shares[i].append(name)
        load[i] += GROUPS[name].seconds
    return [s for s in shares if s]


def start_in_processes(groups: Iterable[str] | None = None, processes: int = 2) -> list[subprocess.Popen]:
    """Start :func:`warm_up` in ``processes`` subprocesses, each with a share of ``groups``
    (:func:`share`; default: all), and return them without waiting (:func:`wait`). Starts
    nothing when the JIT is not enabled. The subprocesses import this copy of the package and
    write numba's on-disk cache, from which every later process loads the kernels."""
    names = _check_groups(groups)
    shares = share(names, processes)
    if not jit_enabled():
        return []
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # also when the package is not installed
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    module = __spec__.name if __spec__ is not None else __name__  # not "__main__" under ``python -m``
    return [
        subprocess.Popen([sys.executable, "-m", module, "--processes", "1", "--groups", ",".join(part), "--quiet"],
                         env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for part in shares
    ]


def wait(children: Sequence[subprocess.Popen], timeout: float | None = None) -> bool:
    """Wait for the subprocesses of :func:`start_in_processes`, at most ``timeout`` seconds in
    all (None: no limit); kill those still running then (what they finished stays cached).
    Returns whether every one finished without an error."""
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be non-negative seconds or None, got {timeout!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    ok = True
    for child in children:
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ok = child.wait(left) == 0 and ok
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            ok = False
    return ok


def warm_up_in_processes(groups: Iterable[str] | None = None, processes: int = 2, timeout: float | None = None) -> bool:
    """:func:`warm_up` in ``processes`` subprocesses at once (:func:`start_in_processes`),
    waiting at most ``timeout`` seconds (:func:`wait`). Returns whether all of them finished
    without an error (True when there was nothing to do: the JIT not enabled)."""
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be non-negative seconds or None, got {timeout!r}")
    return wait(start_in_processes(groups, processes), timeout)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m everygraph.sequence.jit_warmup [--groups a,b] [--processes N] [--timeout S]``."""
    parser = argparse.ArgumentParser(prog="python -m everygraph.sequence.jit_warmup", description=__doc__.split("\n")[0])
    parser.add_argument("--groups", help=f"comma-separated groups, default all: {', '.join(GROUPS)}")
    parser.add_argument("--processes", type=int, default=2, help="compile in this many processes at once (default 2)")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds (with --processes > 1)")
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    args = parser.parse_args(argv)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()] if args.groups else None
    say = (lambda *a: None) if args.quiet else print
    if not jit_enabled():
        say("numba is not installed or EVERYGRAPH_DISABLE_JIT is set: nothing to compile")
        return 0
    start = time.perf_counter()
    if args.processes == 1:
        torch.set_num_threads(1)  # compiling is single-threaded; the inputs are tiny
        for name, seconds in warm_up(groups).items():
            say(f"{name:26s} {seconds:7.1f} s")
        return 0
    ok = warm_up_in_processes(groups, args.processes, args.timeout)
    say(f"{'all groups' if ok else 'FAILED or timed out'}: {time.perf_counter() - start:.1f} s in {args.processes} processes")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
