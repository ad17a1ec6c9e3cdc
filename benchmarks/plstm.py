"""pLSTM's scan engine: the fast executions side by side with the reference loop.

Times forward and forward+backward of ``plstm_scan`` with ``execution="lattice"``,
``"wavefront"`` and ``"reference"`` on 1D sequences (L = 1k, 4k, 16k), 2D grids (32x32,
64x64, 128x128) and a batch of 256 molecule-sized random graphs (oriented by
``graphlib.dagify``); batch 2, one head, dk = dv = 16 (a 64x64 grid is the headline setting). Prints
best-of-N seconds and the speed-up over the reference measured in the same run.

The reference is a Python loop over nodes, so its time is linear in the number of nodes:
above ``--reference-max-nodes`` (default 4096) it is not run but extrapolated linearly from
the largest size of the same family that was measured; such rows say ``(extrapolated)``.
(The molecule batch has no smaller size: its reference is always measured.)

    python benchmarks/plstm.py            # the full table
    python benchmarks/plstm.py --quick    # small sizes, a smoke test
    python benchmarks/plstm.py --only 2D --threads 1

Two more comparisons, each printed as its own table:

* ``--official PATH`` (a checkout of https://github.com/ml-jku/plstm; never copied into this
  repository): ours against the official PyTorch functions side by side in this process, on
  the same inputs (float32, batch 2, one head, dk = dv = 16, forward+backward, medians of
  interleaved repeats), with the largest output difference as a check that both compute the
  same thing. The official side at its fastest setting with correct gradients:
  ``pLSTM2D_torch`` (``--official-levels-2d``, default 3) and ``pLSTM1D_fwbw`` with
  ``return_last_C=True`` (its gradient is wrong over several chunks otherwise) at the best of
  ``--official-levels-1d``. Ours: the default dispatch (on grids the compiled
  ``fused_lattice`` loop when numba is installed) and the previous default (grids: the
  blocked ``chunked2d`` form; paths: the chunkwise form of ``plstm/chunked1d.py``, see
  :func:`previous_path`). ``--official-cases 64x64 L=4096`` runs only those rows;
  ``--clock cpu`` times this process's CPU time instead of wall time.
* ``--tutorial``: the training step of ``examples/arrow_pointing.py`` at its default sizes:
  pLSTM by default (the four orientations as one masked attention with the grid's gating
  matrix, the numba loop, then its PyTorch fallback), the four orientations stacked into one
  scan (``plstm_grid_scan``: the compiled ``fused_lattice`` loop; without the JIT one
  ``chunked2d`` block, the default before, or the anti-diagonal loop), one scan per
  orientation, and the ViT.

    python benchmarks/plstm.py --official /tmp/plstm-official --threads 1 --only none
    python benchmarks/plstm.py --tutorial --threads 1 --only none
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import types
from pathlib import Path

import torch

from everygraph.graphlib import DAG, Lattice, dagify
from everygraph.sequence import default_execution, lattice_gates
from everygraph.sequence.plstm import plstm_scan
from everygraph.sequence.executions.fused_lattice import fused_lattice_usable
from everygraph.sequence.plstm.chunked2d import block_shape
from everygraph.sequence.recurrence import FUSED_PATH_MAX_STATE
from everygraph.sequence.plstm.layout import lattice_dag


def make_inputs(dag: DAG, batch: int, heads: int, dk: int, dv: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n, e, l = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()
    inputs = [
        torch.randn(batch, n, heads, dk, generator=g),
        torch.randn(batch, n, heads, dk, generator=g),
        torch.randn(batch, n, heads, dv, generator=g),
        torch.rand(batch, e, heads, generator=g),
        torch.rand(batch, l, heads, generator=g) * 0.5,  # |column sums| <= 1 on a grid
        torch.rand(batch, e, heads, generator=g),
        torch.rand(batch, n, heads, generator=g),
    ]
    return [t.requires_grad_() for t in inputs]


def timeit(structure, inputs, execution: str, repeat: int) -> tuple[float, float]:
    """Best-of-``repeat`` forward and forward+backward seconds (after one warm-up call)."""
    forward, both = [], []
    for i in range(repeat + 1):
        for t in inputs:
            t.grad = None
        t0 = time.perf_counter()
        h = plstm_scan(structure, *inputs, execution=execution)
        t1 = time.perf_counter()
        h.sum().backward()
        t2 = time.perf_counter()
        if i:
            forward.append(t1 - t0)
            both.append(t2 - t0)
    return min(forward), min(both)


def molecule_batch(num_graphs: int, seed: int = 0):
    """Random trees of 10-30 nodes plus ~10% extra edges (rings), oriented by degree."""
    g = torch.Generator().manual_seed(seed)
    edges, batch, offset = [], [], 0
    for graph in range(num_graphs):
        n = int(torch.randint(10, 31, (1,), generator=g))
        parent = [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, n)]
        pairs = [(p, i) for i, p in zip(range(1, n), parent)]
        for _ in range(max(1, n // 10)):
            u, w = torch.randint(0, n, (2,), generator=g).tolist()
            if u != w:
                pairs.append((u, w))
        edges.append(torch.tensor(pairs).t() + offset)
        batch.append(torch.full((n,), graph))
        offset += n
    dag, _ = dagify(torch.cat(edges, 1), offset, order="degree", batch=torch.cat(batch))
    return dag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference-max-nodes", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["1D", "2D", "graphs", "none"], nargs="+", help="run only these families of the first table")
    parser.add_argument("--official", metavar="PATH", help="a checkout of ml-jku/plstm: compare against it")
    parser.add_argument("--official-levels-2d", type=int, nargs="+", default=[3])
    parser.add_argument("--official-levels-1d", type=int, nargs="+", default=[5, 6, 7, 8])
    parser.add_argument("--official-cases", nargs="+", metavar="CASE", help="only these rows of --official (e.g. 64x64 L=4096)")
    parser.add_argument("--tutorial", action="store_true", help="time the arrow-pointing training step")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="--official: wall time or this process's CPU time (one thread either way)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.official:
        compare_official(args)
    if args.tutorial:
        compare_tutorial(args)
    if args.only == ["none"]:
        return
    batch, heads, dk, dv = 2, 1, 16, 16
    if args.quick:
        lengths, sides, graphs = [256, 512], [8, 16], 16
    else:
        lengths, sides, graphs = [1024, 4096, 16384], [32, 64, 128], 256
    families = [
        ("1D", [(f"L={n}", Lattice((n,))) for n in lengths], ["lattice", "wavefront"]),
        ("2D", [(f"{s}x{s}", Lattice((s, s))) for s in sides], ["chunked2d", "lattice", "wavefront"]),
        ("graphs", [(f"{graphs} molecules", molecule_batch(graphs))], ["wavefront"]),
    ]
    print(f"plstm_scan, batch {batch}, heads {heads}, dk = dv = {dk}, float32, {torch.get_num_threads()} threads, best of {args.repeat}")
    header = f"{'structure':>18} {'nodes':>7} {'levels':>6} {'execution':>10} {'forward s':>10} {'fwd+bwd s':>10} {'x ref fwd':>10} {'x ref f+b':>10}"
    print(header)
    print("-" * len(header))
    for family, sizes, executions in families:
        if args.only and family not in args.only:
            continue
        per_node = None  # reference seconds per node (forward, fwd+bwd) at the largest measured size
        for name, structure in sizes:
            dag = lattice_dag(structure) if isinstance(structure, Lattice) else structure
            inputs = make_inputs(dag, batch, heads, dk, dv)
            n = dag.num_nodes
            if n <= args.reference_max_nodes or per_node is None:  # nothing smaller to extrapolate from
                ref = timeit(structure, inputs, "reference", max(1, args.repeat // 2))
                per_node = (ref[0] / n, ref[1] / n)
                note = ""
            else:
                ref = (per_node[0] * n, per_node[1] * n)
                note = " (extrapolated)"
            print(f"{name:>18} {n:>7} {dag.num_levels:>6} {'reference':>10} {ref[0]:>10.4f} {ref[1]:>10.4f} {'1.0':>10} {'1.0':>10}{note}")
            for execution in executions:
                fwd, both = timeit(structure, inputs, execution, args.repeat)
                print(f"{'':>18} {'':>7} {'':>6} {execution:>10} {fwd:>10.4f} {both:>10.4f} {ref[0] / fwd:>10.1f} {ref[1] / both:>10.1f}")
    print("x ref = reference time / this time in the same run (higher is faster).")


def interleaved(contenders: dict, repeat: int, clock=time.perf_counter) -> dict:
    """Median forward+backward seconds of each contender (a function running one step), the
    contenders taking turns so that load changes hit all alike; one warm-up call each.
    ``clock``: wall time (``time.perf_counter``) or this process's CPU time
    (``time.process_time``, less dependent on other processes running on the same cores)."""
    for run in contenders.values():
        run()
    times = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, run in contenders.items():
            t0 = clock()
            run()
            times[name].append(clock() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def load_official(path: str):
    """The official PyTorch functions, imported from a checkout without running its package
    ``__init__`` (which needs its config and JAX dependencies)."""
    root = Path(path).expanduser() / "src" / "plstm"
    if not (root / "torch" / "plstm_2d.py").exists():
        raise SystemExit(f"--official {path}: no src/plstm/torch/plstm_2d.py there (expected a checkout of ml-jku/plstm)")
    for name, folder in (("plstm", root), ("plstm.torch", root / "torch")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(folder)]
            sys.modules[name] = package
    from plstm.torch.plstm_1d import pLSTM1D_fwbw
    from plstm.torch.plstm_2d import pLSTM2D_torch

    return pLSTM1D_fwbw, pLSTM2D_torch


def dense_inputs(shape: tuple[int, ...], batch: int, dk: int, dv: int, seed: int = 0) -> dict:
    """Dense per-node inputs of one head: q, k, v ``[B, *shape, 1, d]``, gates as
    :func:`lattice_gates` takes them; transitions in [0, 0.5] (bounded: column sums <= 1)."""
    g = torch.Generator().manual_seed(seed)
    d = len(shape)
    return dict(
        q=torch.randn(batch, *shape, 1, dk, generator=g),
        k=torch.randn(batch, *shape, 1, dk, generator=g),
        v=torch.randn(batch, *shape, 1, dv, generator=g),
        source=torch.rand(batch, *shape, 1, d, generator=g),
        transition=torch.rand(batch, *shape, 1, d, d, generator=g) * 0.5,
        mark=torch.rand(batch, *shape, 1, d, generator=g),
        direct=torch.rand(batch, *shape, 1, generator=g),
    )


def ours(lattice: Lattice, inputs: dict, execution: str | None) -> torch.Tensor:
    """Dense gates -> our flat layout -> ``plstm_scan`` (the conversion is timed too: the
    official functions take dense gates)."""
    batch, n = inputs["q"].shape[0], lattice.num_nodes
    flat = lattice_gates(lattice, inputs["source"], inputs["transition"], inputs["mark"], inputs["direct"])
    q, k, v = (inputs[name].reshape(batch, n, 1, -1) for name in "qkv")
    return plstm_scan(lattice, q, k, v, *flat, execution=execution)


def previous_path(lattice: Lattice, inputs: dict) -> torch.Tensor:
    """Our previous default, the default before the compiled ``fused_lattice`` loop: on grids
    the blocked ``chunked2d`` form (the anti-diagonal ``lattice`` loop where the grid is too
    small for blocks), on paths the chunkwise form of ``plstm/chunked1d.py``."""
    if lattice.ndim == 2:
        with_blocks = block_shape(*lattice.shape, inputs["q"].shape[-1] * inputs["v"].shape[-1]) is not None
        return ours(lattice, inputs, "chunked2d" if with_blocks else "lattice")
    return ours(lattice, inputs, "lattice")  # on a path: chunked1d


def official_args_2d(inputs: dict) -> list[torch.Tensor]:
    """The official 2D layout (one head in the batch; J dimensions of size 1). Axis 0 is its
    x ("right", r/l), axis 1 its y ("down", d/u); ``T[..., out, in]``."""
    q, k, v = (inputs[name][..., 0, :, None] for name in "qkv")  # [B, X, Y, d, 1]
    S, T, M, D = (inputs[name].select(3, 0) for name in ("source", "transition", "mark", "direct"))  # the one head
    scalar = lambda t, extra: t.reshape(*t.shape, *([1] * extra))
    return [
        q, k, v,
        scalar(S[..., 0], 3), scalar(S[..., 1], 3),  # S0_r, S0_d
        scalar(T[..., 0, 0], 2), scalar(T[..., 1, 1], 2), scalar(T[..., 1, 0], 2), scalar(T[..., 0, 1], 2),  # T0_rl, du, dl, ru
        scalar(M[..., 0], 3), scalar(M[..., 1], 3),  # M0_l, M0_u
        scalar(D, 4),
    ]


def official_args_1d(inputs: dict) -> list[torch.Tensor]:
    q, k, v = (inputs[name][..., 0, :, None] for name in "qkv")  # [B, T, d, 1]
    S, T, M = inputs["source"][..., 0, 0], inputs["transition"][..., 0, 0, 0], inputs["mark"][..., 0, 0]
    D = inputs["direct"][..., 0]
    return [q, k, v, S[..., None, None, None], T[..., None, None], M[..., None, None, None], D[..., None, None, None, None]]


def leaves(tensors):
    """Fresh contiguous leaves that require grad (each contender gets its own)."""
    if isinstance(tensors, dict):
        return {name: t.detach().clone().contiguous().requires_grad_() for name, t in tensors.items()}
    return [t.detach().clone().contiguous().requires_grad_() for t in tensors]


def step(forward, tensors):
    def run():
        for t in (tensors.values() if isinstance(tensors, dict) else tensors):
            t.grad = None
        out = forward()
        out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()

    return run


def compare_official(args) -> None:
    pLSTM1D_fwbw, pLSTM2D_torch = load_official(args.official)
    batch, dk, dv = 2, 16, 16
    sides, lengths = ([16, 32], [256, 1024]) if args.quick else ([64, 128, 256], [4096, 16384])
    print(f"\nours vs the official ml-jku/plstm PyTorch code: forward+backward, float32, batch {batch}, one head, "
          f"dk = dv = {dk}, {torch.get_num_threads()} thread(s), median of {args.repeat} interleaved runs, {args.clock} time")
    header = f"{'structure':>12} {'official s':>11} {'setting':>18} {'previous s':>11} {'ours s':>9} {'ours path':>13} {'x official':>11} {'x previous':>11} {'max |diff|':>11}"
    print(header)
    print("-" * len(header))
    cases = [(f"{s}x{s}", Lattice((s, s))) for s in sides] + [(f"L={n}", Lattice((n,))) for n in lengths]
    for name, lattice in cases:
        if args.official_cases and name not in args.official_cases:
            continue
        inputs = dense_inputs(lattice.shape, batch, dk, dv)
        two_d = lattice.ndim == 2
        if two_d:
            settings = {f"2D_torch levels={l}": (lambda a, l=l: pLSTM2D_torch(*a, levels=l)) for l in args.official_levels_2d
                        if all(size % (1 << l) == 0 for size in lattice.shape)}
            to_official = official_args_2d
        else:
            settings = {f"1D_fwbw levels={l}": (lambda a, l=l: pLSTM1D_fwbw(*a, levels=l, return_last_C=True)) for l in args.official_levels_1d
                        if lattice.shape[0] % (1 << l) == 0}
            to_official = official_args_1d
        # the official setting: the fastest of the candidates (one timed run each, after a warm-up)
        official_leaves = leaves(to_official(inputs))
        candidates = {label: step(lambda f=f: f(official_leaves), official_leaves) for label, f in settings.items()}
        first = interleaved(candidates, 1)
        setting = min(first, key=first.get)
        official = settings[setting]
        mine, previous = leaves(inputs), leaves(inputs)
        if fused_lattice_usable(lattice, "scalar", mine["q"], True) and (two_d or dk * dv <= FUSED_PATH_MAX_STATE):
            default = "fused_lattice"
        elif not two_d:
            default = "chunked1d"
        else:
            default = default_execution(lattice, "scalar", boundary_states=False, state_size=dk * dv)
        times = interleaved(
            {
                "official": step(lambda: official(official_leaves), official_leaves),
                "previous": step(lambda: previous_path(lattice, previous), previous),
                "ours": step(lambda: ours(lattice, mine, None), mine),
            },
            args.repeat,
            time.process_time if args.clock == "cpu" else time.perf_counter,
        )
        with torch.no_grad():
            want = official(to_official(inputs))
            want = (want[0] if isinstance(want, tuple) else want).reshape(-1)
            got = ours(lattice, inputs, None).reshape(-1)
            diff = (got - want).abs().max().item() / want.abs().max().item()
        print(f"{name:>12} {times['official']:>11.4f} {setting:>18} {times['previous']:>11.4f} {times['ours']:>9.4f} {default:>13} "
              f"{times['official'] / times['ours']:>11.1f} {times['previous'] / times['ours']:>11.1f} {diff:>11.1e}")
    print("x official / x previous = that time / ours in the same run (higher: ours faster); max |diff| relative to max |output|.")


def per_orientation_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """``PLSTM2d.forward`` as it was: one scan per orientation on ``Lattice(shape, flip)``,
    each by the anti-diagonal ``lattice`` execution (the default then)."""
    from everygraph.graphlib import compute_dtype
    from everygraph.nn.plstm_gates import default_scale, head_norm

    batch, height, width, _ = x.shape
    dtype = compute_dtype(x.dtype)
    q, k, v = (t.to(dtype).reshape(batch, height * width, layer.num_heads, layer.head_dim) for t in layer.qkv(x))
    h = 0
    for flip, gates in zip(Lattice.orientations(2), layer.gates(x)):
        lattice = Lattice((height, width), flip)
        flat = lattice_gates(lattice, gates["source"], gates["transition"], gates["mark"], gates["direct"])
        h = h + plstm_scan(lattice, q, k, v, *flat, scale=default_scale(layer.head_dim), execution="lattice")
    out = head_norm(h, layer.norm).to(x.dtype)
    return layer.out_proj(out).reshape(batch, height, width, layer.dim)


def compare_tutorial(args) -> None:
    from everygraph.nn import PLSTM2d

    path = Path(__file__).resolve().parent.parent / "examples" / "arrow_pointing.py"
    spec = importlib.util.spec_from_file_location("arrow_pointing", path)
    tutorial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tutorial)
    # the tutorial's defaults: 48 px images, 8 px patches (a 6x6 grid), dim 32, 4 heads, depth 2, batch 32
    image, patch, dim, heads, depth, batch = 48, 8, 32, 4, 2, 32
    torch.manual_seed(0)
    images = torch.rand(batch, 1, image, image)
    labels = torch.randint(0, 2, (batch,))
    models = {
        "pLSTM": tutorial.PLSTMClassifier(1, dim, heads, depth, patch),
        "ViT": tutorial.ViTClassifier(1, dim, heads, depth, patch, image // patch),
    }
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-3) for name, m in models.items()}

    import os

    import everygraph.sequence.plstm.chunked2d as chunked2d
    import everygraph.sequence.recurrence as engine
    from everygraph.sequence.mamba.fused_cpu import DISABLE_ENV

    def train_step(name: str, dense: bool = True, per_orientation: bool = False, blocks: bool = True, jit: bool = True):
        def run():
            original, original_dense, original_blocks = PLSTM2d.forward, PLSTM2d.dense, chunked2d.block_shape
            original_env = os.environ.get(DISABLE_ENV)
            if not dense:  # the scan of the four orientations stacked into the batch
                PLSTM2d.dense = lambda *args: False
            if per_orientation:
                PLSTM2d.forward = per_orientation_forward
            if not blocks:  # the dispatch then keeps the anti-diagonal loop
                engine.block_shape = chunked2d.block_shape = lambda *args: None
            if not jit:
                os.environ[DISABLE_ENV] = "1"
            try:
                loss = torch.nn.functional.cross_entropy(models[name](images), labels)
                optimizers[name].zero_grad()
                loss.backward()
                optimizers[name].step()
            finally:
                PLSTM2d.forward, PLSTM2d.dense = original, original_dense
                engine.block_shape = chunked2d.block_shape = original_blocks
                if original_env is None:
                    os.environ.pop(DISABLE_ENV, None)
                else:
                    os.environ[DISABLE_ENV] = original_env

        return run

    times = interleaved(
        {
            "pLSTM, default (gating matrix, numba)": train_step("pLSTM"),
            "pLSTM, gating matrix, PyTorch (no JIT)": train_step("pLSTM", jit=False),
            "pLSTM, batched scan, fused_lattice": train_step("pLSTM", dense=False),
            "pLSTM, batched scan, one block (before)": train_step("pLSTM", dense=False, jit=False),
            "pLSTM, batched scan, lattice loop": train_step("pLSTM", dense=False, blocks=False, jit=False),
            "pLSTM, per orientation, lattice loop": train_step("pLSTM", per_orientation=True),
            "ViT": train_step("ViT"),
        },
        max(args.repeat, 10),
        time.process_time if args.clock == "cpu" else time.perf_counter,
    )
    vit = times["ViT"]
    print(f"\narrow-pointing training step (batch {batch}, {image} px, {image // patch}x{image // patch} patches, dim {dim}, "
          f"{heads} heads, depth {depth}), {torch.get_num_threads()} thread(s), median of {max(args.repeat, 10)} interleaved steps, "
          f"{args.clock} time")
    for name, t in times.items():
        print(f"{name:>42} {t * 1000:>8.1f} ms  {t / vit:>5.2f}x the ViT step")


if __name__ == "__main__":
    main()
