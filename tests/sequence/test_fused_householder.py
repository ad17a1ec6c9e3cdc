"""The ``householder`` kind in the compiled lattice execution (``fused_lattice``): equal to the
reference loop in float64, forward and backward (gradcheck of the hand-written adjoint), on
paths and grids, one or more factors per transition, with and without boundary states and
every boundary gate; float32 near float64; pieces compose; bad input is refused."""

import pytest
import torch

from everygraph.graphlib import DAG, Lattice
from everygraph.sequence import Boundary, fused_lattice_scan, scan
from everygraph.sequence.executions import fused_lattice as fused_module
from everygraph.sequence.mamba.fused_cpu import DISABLE_ENV
from everygraph.sequence.plstm.layout import lattice_dag
from scan_asserts import SCAN_INPUTS as NAMES, assert_same, scan_and_grads, scan_mode, spy_on_fused_lattice
from test_scan_boundary import grid_inputs, outputs_and_grads, path_inputs, scan_grid_in_pieces, split_path

DT = torch.float64
needs_numba = pytest.mark.skipif(not fused_module.NUMBA_AVAILABLE, reason="numba (everygraph[cpu]) is not installed")


def householder(lead, factors, dk, rand):
    """``[*lead, factors, dk + 2]``: unit ``w``, ``beta`` in [0, 2), ``gamma`` in [0.5, 1)."""
    w = rand(*lead, factors, dk) * 2 - 1
    w = w / w.norm(dim=-1, keepdim=True)
    return torch.cat([w, rand(*lead, factors, 1) * 2, rand(*lead, factors, 1) * 0.5 + 0.5], dim=-1)


def leaves_for(lattice, mode, seed, B=2, H=2, dk=3, dv=4, factors=2, entry_weights=False):
    gen = torch.Generator().manual_seed(seed)
    dag = lattice_dag(lattice)
    N, E, L = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()
    rand = lambda *s: torch.rand(*s, dtype=DT, generator=gen)  # noqa: E731
    randn = lambda *s: torch.randn(*s, dtype=DT, generator=gen)  # noqa: E731
    weight = (lambda rows: rand(B, rows, H, dk, dv)) if entry_weights else (lambda rows: rand(B, rows, H))
    leaves = dict(q=randn(B, N, H, dk), k=randn(B, N, H, dk), v=randn(B, N, H, dv), source=weight(E),
                  transition=householder((B, L, H), factors, dk, rand), mark=weight(E), direct=randn(B, N, H))
    if "initial" in mode:
        leaves["initial"] = randn(B, N, H, dk, dv)
    if "boundary" in mode:  # each gate its own number of factors
        leaves.update(b_mark=weight(N) * 2 - 1, b_source=weight(N) * 2 - 1, b_enter=householder((B, E, H), 1, dk, rand),
                      b_leave=householder((B, E, H), 3, dk, rand), b_through=householder((B, N, H), 2, dk, rand))
    return {n: t.requires_grad_() for n, t in leaves.items()}


def call(lattice, tensors, execution, mode):
    return scan_mode(lattice, tensors, execution, mode, "householder")


def run(lattice, leaves, execution, mode):
    return scan_and_grads(lattice, leaves, execution, mode, "householder")


MODES = ["", "initial+return", "initial+return+boundary", "return+boundary"]
# 1 x 6: a row run as a column
SHAPES = [((3, 4), (False, False)), ((1, 6), (False, True)), ((9,), (True,)), ((1, 1), (False, False))]
# 10 x 9: two blocks of the backward pass's recomputed rows (fewer modes: the reference loop is slow)
CASES = [(shape, flip, mode) for shape, flip in SHAPES for mode in MODES] + [
    ((10, 9), (False, True), mode) for mode in ("", "initial+return+boundary")
]


@needs_numba
@pytest.mark.parametrize("shape,flip,mode", CASES)
def test_equals_reference(shape, flip, mode):
    lattice = Lattice(shape, flip)
    factors = 1 + (len(shape) + MODES.index(mode)) % 2
    leaves = leaves_for(lattice, mode, seed=sum(shape) + MODES.index(mode), factors=factors)
    assert_same(run(lattice, leaves, "fused_lattice", mode), run(lattice, leaves, "reference", mode))


@needs_numba
@pytest.mark.parametrize("mode", ["", "initial+return+boundary"])
def test_entry_weights_heads_and_float32(mode):
    """Source and mark weights per state entry, one or three heads, dk > dv; float32 near float64."""
    lattice = Lattice((4, 5), (True, False))
    for H, dk, dv, factors in ((1, 5, 2, 3), (3, 2, 8, 1)):
        leaves = leaves_for(lattice, mode, seed=H, H=H, dk=dk, dv=dv, factors=factors, entry_weights=True)
        assert_same(run(lattice, leaves, "fused_lattice", mode), run(lattice, leaves, "reference", mode))
    single = {n: t.detach().float().requires_grad_() for n, t in leaves.items()}
    for a, b in zip(run(lattice, single, "fused_lattice", mode), run(lattice, leaves, "reference", mode)):
        if a is not None:
            torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


@needs_numba
@pytest.mark.parametrize("shape,factors,mode", [
    ((4,), 1, ""), ((4,), 2, "initial+return+boundary"), ((2, 3), 1, "initial+return+boundary"), ((2, 2), 2, "return"),
])
def test_gradcheck(shape, factors, mode):
    """The hand-written adjoint against finite differences, every boundary gate included."""
    lattice = Lattice(shape, (False, True)[: len(shape)])
    leaves = leaves_for(lattice, mode, seed=5, B=1, H=1, dk=2, dv=3, factors=factors, entry_weights=len(shape) == 2)
    names = list(leaves)

    def f(*tensors):
        return call(lattice, dict(zip(names, tensors)), "fused_lattice", mode)

    assert torch.autograd.gradcheck(f, tuple(leaves.values()))


@needs_numba
def test_paths_compose():
    """A path scanned in pieces with the state passed along equals the whole (path_scan)."""
    inputs = path_inputs("householder", 11, torch.Generator().manual_seed(8))
    want = split_path(inputs, [], "householder", "reference")
    assert_same(split_path(inputs, [], "householder", "fused_lattice"), want)
    assert_same(split_path(inputs, [4, 9], "householder", "fused_lattice"), want)


@needs_numba
@pytest.mark.parametrize("axis,flip", [(0, (True, False)), (1, (False, True))])
def test_grids_compose_across_a_cut(axis, flip):
    shape = (4, 3)
    inputs = grid_inputs("householder", shape, torch.Generator().manual_seed(3 + axis))

    def result(cut, execution):
        leaves = {n: t.clone().requires_grad_() for n, t in inputs.items()}
        return outputs_and_grads(leaves, lambda l: scan_grid_in_pieces(l, cut, axis, flip, "householder", execution))

    want = result(shape[axis], "reference")
    for cut in range(1, shape[axis] + 1):
        assert_same(result(cut, "fused_lattice"), want)


@needs_numba
def test_refuses_bad_input(monkeypatch):
    lattice = Lattice((3, 3))
    leaves = {n: t.detach() for n, t in leaves_for(lattice, "", seed=1).items()}
    args = [leaves[n] for n in NAMES]
    with pytest.raises(ValueError, match=r"transition must have shape \[B, L, H, r, dk \+ 2\]"):
        fused_lattice_scan(lattice, *args[:4], args[4][..., :-1], *args[5:], kind="householder")
    with pytest.raises(ValueError, match="r >= 1"):
        fused_lattice_scan(lattice, *args[:4], args[4][..., :0, :], *args[5:], kind="householder")
    with pytest.raises(ValueError, match=r"boundary.enter must have shape"):
        fused_lattice_scan(lattice, *args, kind="householder", initial_state=torch.zeros(2, 9, 2, 3, 4, dtype=DT),
                           boundary=Boundary(enter=args[4][:, :3]))
    with pytest.raises(ValueError, match="float32 or float64"):
        fused_lattice_scan(lattice, *(t.half() for t in args), kind="householder")
    with pytest.raises(ValueError, match="needs a 1D or 2D Lattice"):
        fused_lattice_scan(DAG(torch.tensor([[0], [1]]), 2), *args, kind="householder")
    monkeypatch.setenv(DISABLE_ENV, "1")
    with pytest.raises(RuntimeError, match="needs numba"):
        fused_lattice_scan(lattice, *args, kind="householder")


def test_fallback_without_the_jit(monkeypatch):
    """With the JIT disabled the default dispatch of the householder kind runs without numba."""
    monkeypatch.setenv(DISABLE_ENV, "1")
    for lattice in (Lattice((4, 3), (True, True)), Lattice((6,))):
        leaves = leaves_for(lattice, "initial+return", seed=7, H=1)
        assert_same(run(lattice, leaves, None, "initial+return"), run(lattice, leaves, "reference", "initial+return"))
        assert not fused_module.fused_lattice_runs(lattice, "householder", leaves["q"])


@needs_numba
def test_default_dispatch(monkeypatch):
    """Paths and 2D CPU grids run the householder kind on the compiled loop by default (DeltaProduct
    on a sequence too); other DAGs keep wavefront."""
    from everygraph.sequence import delta_product, delta_product_reference

    calls = spy_on_fused_lattice(monkeypatch)
    for lattice in (Lattice((5, 6), (False, True)), Lattice((7,))):
        leaves = leaves_for(lattice, "initial+return", seed=3)
        assert_same(run(lattice, leaves, None, "initial+return"), run(lattice, leaves, "reference", "initial+return"))
    assert len(calls) == 2
    gen = torch.Generator().manual_seed(0)
    q, v = torch.randn(2, 6, 2, 3, dtype=DT, generator=gen), torch.randn(2, 6, 2, 2, 4, dtype=DT, generator=gen)
    k = torch.nn.functional.normalize(torch.randn(2, 6, 2, 2, 3, dtype=DT, generator=gen), dim=-1)
    beta = 2 * torch.rand(2, 6, 2, 2, dtype=DT, generator=gen)
    h = delta_product(Lattice((6,)), q, k, v, beta)
    assert len(calls) == 3
    torch.testing.assert_close(h, delta_product_reference(q, k, v, beta)[0])
    dag = lattice_dag(Lattice((3, 2)))
    leaves = {n: t.detach() for n, t in leaves_for(Lattice((3, 2)), "", seed=4).items()}
    scan(dag, *(leaves[n] for n in NAMES), kind="householder")
    assert len(calls) == 3
