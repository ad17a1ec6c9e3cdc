"""The compiled lattice execution (``fused_lattice``) with gates per state entry: the
``diagonal`` and ``elementwise`` kinds (and elementwise source/mark weights) equal the reference
loop in float64, forward and backward, on grids and paths, with and without boundary states;
the default dispatch picks it for those kinds on 2D CPU grids and falls back without the JIT."""

import pytest
import torch

from everygraph.graphlib import Lattice
from everygraph.sequence import fused_lattice_scan, grid_selective_scan
from everygraph.sequence.executions import fused_lattice as fused_module
from everygraph.sequence.mamba.fused_cpu import DISABLE_ENV
from everygraph.sequence.plstm.layout import lattice_dag
from scan_asserts import SCAN_INPUTS as NAMES, assert_same, scan_and_grads, scan_mode, spy_on_fused_lattice

DT = torch.float64
needs_numba = pytest.mark.skipif(not fused_module.NUMBA_AVAILABLE, reason="numba (everygraph[cpu]) is not installed")


def gate(kind, lead, dk, dv, rand):
    return rand(*lead, dk, dv) if kind == "elementwise" else rand(*lead, dk) if kind == "diagonal" else rand(*lead)


def leaves_for(lattice, kind, mode, seed, B=2, H=2, dk=3, dv=4, entry_weights=False):
    gen = torch.Generator().manual_seed(seed)
    dag = lattice_dag(lattice)
    N, E, L = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()
    rand = lambda *s: torch.rand(*s, dtype=DT, generator=gen)  # noqa: E731
    randn = lambda *s: torch.randn(*s, dtype=DT, generator=gen)  # noqa: E731
    weight = (lambda rows: rand(B, rows, H, dk, dv)) if entry_weights else (lambda rows: rand(B, rows, H))
    leaves = dict(q=randn(B, N, H, dk), k=randn(B, N, H, dk), v=randn(B, N, H, dv), source=weight(E),
                  transition=gate(kind, (B, L, H), dk, dv, rand) - 0.3, mark=weight(E), direct=randn(B, N, H))
    if "initial" in mode:
        leaves["initial"] = randn(B, N, H, dk, dv)
    if "boundary" in mode:
        leaves.update(b_mark=weight(N) * 2 - 1, b_source=weight(N) * 2 - 1, b_enter=gate(kind, (B, E, H), dk, dv, rand) * 2 - 1,
                      b_leave=gate(kind, (B, E, H), dk, dv, rand) * 2 - 1, b_through=gate(kind, (B, N, H), dk, dv, rand) * 2 - 1)
    return {n: t.requires_grad_() for n, t in leaves.items()}


def run(lattice, kind, leaves, execution, mode):
    return scan_and_grads(lattice, leaves, execution, mode, kind)


MODES = ["", "initial+return", "initial+return+boundary", "return+boundary"]
SHAPES = [((3, 4), (False, False)), ((5, 3), (True, False)), ((1, 6), (False, True)), ((6, 1), (True, True)),
          ((10, 9), (False, True)), ((1, 1), (False, False)), ((7,), (True,))]


@needs_numba
@pytest.mark.parametrize("shape,flip", SHAPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["elementwise", "diagonal"])
def test_equals_reference(kind, shape, flip, mode):
    lattice = Lattice(shape, flip)
    leaves = leaves_for(lattice, kind, mode, seed=sum(shape) + MODES.index(mode))
    assert_same(run(lattice, kind, leaves, "fused_lattice", mode), run(lattice, kind, leaves, "reference", mode))


@needs_numba
@pytest.mark.parametrize("kind", ["elementwise", "diagonal"])
@pytest.mark.parametrize("mode", ["", "initial+return+boundary"])
def test_elementwise_weights_heads_and_float32(kind, mode):
    """Weights per state entry (Mamba's), one or three heads, dk > dv, and float32 near float64."""
    lattice = Lattice((4, 5), (True, False))
    for H, dk, dv in ((1, 5, 2), (3, 2, 8), (2, 3, 16)):
        leaves = leaves_for(lattice, kind, mode, seed=H, H=H, dk=dk, dv=dv, entry_weights=True)
        assert_same(run(lattice, kind, leaves, "fused_lattice", mode), run(lattice, kind, leaves, "reference", mode))
    single = {n: t.detach().float().requires_grad_() for n, t in leaves.items()}
    for a, b in zip(run(lattice, kind, single, "fused_lattice", mode), run(lattice, kind, leaves, "reference", mode)):
        if a is not None:
            torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


@needs_numba
@pytest.mark.parametrize("mode,dv", [("initial+return+boundary", 3), ("", 8)])  # dv = 8: the vector loops
def test_gradcheck(mode, dv):
    lattice = Lattice((2, 3), (False, True))
    leaves = leaves_for(lattice, "elementwise", mode, seed=5, B=1, H=1, dk=2, dv=dv, entry_weights=True)
    names = list(leaves)

    def f(*tensors):
        return scan_mode(lattice, dict(zip(names, tensors)), "fused_lattice", mode, "elementwise")

    assert torch.autograd.gradcheck(f, tuple(leaves.values()))


@needs_numba
def test_default_dispatch_and_fallback(monkeypatch):
    """2D CPU grids and paths run the kernels by default for the diagonal and elementwise kinds
    (Mamba on images too); with the JIT disabled the PyTorch path runs."""

    calls = spy_on_fused_lattice(monkeypatch)
    lattice = Lattice((5, 6), (False, True))
    for kind in ("elementwise", "diagonal"):
        leaves = leaves_for(lattice, kind, "initial+return", seed=3)
        assert_same(run(lattice, kind, leaves, None, "initial+return"), run(lattice, kind, leaves, "reference", "initial+return"))
    assert len(calls) == 2
    gen = torch.Generator().manual_seed(0)
    u, dt = torch.randn(2, 4, 5, 3, dtype=DT, generator=gen), torch.rand(2, 4, 5, 3, dtype=DT, generator=gen)
    A = -torch.rand(3, 2, dtype=DT, generator=gen)
    B, C = torch.randn(2, 4, 5, 2, dtype=DT, generator=gen), torch.randn(2, 4, 5, 2, dtype=DT, generator=gen)
    split = torch.rand(2, 4, 5, 3, dtype=DT, generator=gen)
    args = (u, dt, A, B, C, split, (True, False))
    # grid_selective_scan runs its own kernel by default (test_fused_grid_selective.py); its
    # materialised gates through fused_lattice on request
    torch.testing.assert_close(grid_selective_scan(*args, execution="fused_lattice"), grid_selective_scan(*args, execution="reference"))
    assert len(calls) == 3
    path = Lattice((7,))
    for kind in ("elementwise", "diagonal"):  # paths too (benchmarks/fused_householder.py --part paths-kinds)
        leaves = leaves_for(path, kind, "", seed=4)
        assert_same(run(path, kind, leaves, None, ""), run(path, kind, leaves, "reference", ""))
    assert len(calls) == 5
    monkeypatch.setenv(DISABLE_ENV, "1")
    leaves = leaves_for(lattice, "elementwise", "initial+return", seed=6)
    assert_same(run(lattice, "elementwise", leaves, None, "initial+return"),
                run(lattice, "elementwise", leaves, "reference", "initial+return"))
    assert len(calls) == 5


def test_fallback_without_the_jit(monkeypatch):
    """With the JIT disabled the default dispatch of the elementwise kind runs without numba."""
    monkeypatch.setenv(DISABLE_ENV, "1")
    lattice = Lattice((4, 3), (True, True))
    leaves = leaves_for(lattice, "elementwise", "initial+return", seed=7, H=1)
    assert_same(run(lattice, "elementwise", leaves, None, "initial+return"),
                run(lattice, "elementwise", leaves, "reference", "initial+return"))
    assert not fused_module.fused_lattice_runs(lattice, "elementwise", leaves["q"])


@needs_numba
def test_refuses_what_it_does_not_run():
    lattice = Lattice((3, 3))
    leaves = {n: t.detach() for n, t in leaves_for(lattice, "elementwise", "", seed=1).items()}
    args = [leaves[n] for n in NAMES]
    with pytest.raises(ValueError, match="float32 or float64"):
        fused_lattice_scan(lattice, *(t.half() for t in args), kind="elementwise")


@needs_numba
@pytest.mark.parametrize("shape,flip", [((1, 6), (False, True)), ((6, 1), (True, True)), ((7,), (True,)), ((5, 7), (True, True))])
def test_vector_adjoint_equals_reference(shape, flip):
    """dv a multiple of 8 without boundary states: the adjoint's explicit vector loops."""
    lattice = Lattice(shape, flip)
    for kind in ("elementwise", "diagonal"):
        leaves = leaves_for(lattice, kind, "", seed=11, dk=3, dv=8, entry_weights=kind == "elementwise")
        assert_same(run(lattice, kind, leaves, "fused_lattice", ""), run(lattice, kind, leaves, "reference", ""))
