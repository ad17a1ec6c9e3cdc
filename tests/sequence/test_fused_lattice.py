"""The compiled lattice execution (``fused_lattice``: 2D grids and paths) equals the reference
loop in float64, forward and backward, with and without boundary states; the default dispatch
picks it on CPU and falls back to the PyTorch executions when the JIT is disabled."""

import pytest
import torch

from everygraph.graphlib import Lattice
from everygraph.sequence import Boundary, fused_lattice_scan, lattice_gates, plstm_grid_scan, plstm_scan, scan
from everygraph.sequence.executions import fused_lattice as fused_module
from everygraph.sequence.mamba.fused_cpu import DISABLE_ENV
from everygraph.sequence.plstm.layout import lattice_dag
from scan_asserts import assert_same, scan_and_grads, spy_on_fused_lattice

DT = torch.float64
needs_numba = pytest.mark.skipif(not fused_module.NUMBA_AVAILABLE, reason="numba (everygraph[cpu]) is not installed")


def inputs(lattice, gen, B=2, H=2, dk=3, dv=4, dtype=DT):
    dag = lattice_dag(lattice)
    N, E, L = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()
    rand = lambda *s: torch.rand(*s, dtype=dtype, generator=gen)  # noqa: E731
    randn = lambda *s: torch.randn(*s, dtype=dtype, generator=gen)  # noqa: E731
    return dict(q=randn(B, N, H, dk), k=randn(B, N, H, dk), v=randn(B, N, H, dv), source=rand(B, E, H),
                transition=rand(B, L, H) - 0.3, mark=rand(B, E, H), direct=randn(B, N, H))


def run(lattice, leaves, execution, mode):
    """Outputs and the gradients of every leaf for one call of ``scan``."""
    return scan_and_grads(lattice, leaves, execution, mode)


def leaves_for(lattice, mode, seed, **sizes):
    gen = torch.Generator().manual_seed(seed)
    leaves = inputs(lattice, gen, **sizes)
    B, N, H, dk = leaves["q"].shape
    dv, E = leaves["v"].shape[-1], lattice.num_edges
    if "initial" in mode:
        leaves["initial"] = torch.randn(B, N, H, dk, dv, dtype=DT, generator=gen)
    if "boundary" in mode:
        for name, rows in (("b_mark", N), ("b_source", N), ("b_enter", E), ("b_leave", E), ("b_through", N)):
            leaves[name] = torch.rand(B, rows, H, dtype=DT, generator=gen) * 2 - 1
    return {n: t.requires_grad_() for n, t in leaves.items()}


MODES = ["", "initial", "return", "initial+return", "initial+return+boundary", "return+boundary"]


@needs_numba
@pytest.mark.parametrize("shape,flip", [((3, 4), (False, False)), ((5, 3), (True, False)), ((1, 6), (False, True)),
                                        ((6, 1), (True, True)), ((7, 9), (False, True)), ((1, 1), (False, False)),
                                        ((9,), (False,)), ((7,), (True,))])
@pytest.mark.parametrize("mode", MODES)
def test_equals_reference(shape, flip, mode):
    lattice = Lattice(shape, flip)
    leaves = leaves_for(lattice, mode, seed=sum(shape) + MODES.index(mode))
    assert_same(run(lattice, leaves, "fused_lattice", mode), run(lattice, leaves, "reference", mode))


@needs_numba
@pytest.mark.parametrize("dk,dv,H", [(2, 8, 1), (16, 16, 1), (5, 1, 3)])
def test_head_sizes(dk, dv, H):
    """dk != dv, dv a multiple of the vector width or not, several heads."""
    lattice = Lattice((6, 7), (True, False))
    for mode in ("", "initial+return+boundary"):
        leaves = leaves_for(lattice, mode, seed=dk + dv, dk=dk, dv=dv, H=H)
        assert_same(run(lattice, leaves, "fused_lattice", mode), run(lattice, leaves, "reference", mode))


@needs_numba
def test_more_rows_than_a_block_of_the_backward_pass():
    """The backward pass recomputes blocks of ROWS rows from the states kept at their first row."""
    lattice = Lattice((2 * fused_module.ROWS + 3, 4))
    leaves = leaves_for(lattice, "initial+return", seed=5, H=1)
    assert_same(run(lattice, leaves, "fused_lattice", "initial+return"), run(lattice, leaves, "reference", "initial+return"))


@needs_numba
def test_gradcheck():
    lattice = Lattice((3, 4), (False, True))
    leaves = leaves_for(lattice, "initial+return+boundary", seed=11, B=1, H=1, dk=2, dv=3)
    names = list(leaves)
    boundary_names = ["b_mark", "b_source", "b_enter", "b_leave", "b_through"]

    def fn(*tensors):
        t = dict(zip(names, tensors))
        h, state = fused_lattice_scan(lattice, *(t[n] for n in ["q", "k", "v", "source", "transition", "mark", "direct"]),
                                      initial_state=t["initial"], return_state=True,
                                      boundary=Boundary(*(t[n] for n in boundary_names)))
        return h, state

    assert torch.autograd.gradcheck(fn, tuple(leaves.values()))


@needs_numba
@pytest.mark.parametrize("axis,flip", [(0, (True, False)), (1, (False, True))])
def test_grid_cut_into_pieces_composes(axis, flip):
    """Scanning a grid equals scanning two pieces (cut across ``axis``) with the border states
    passed along, using the boundary gates of :func:`lattice_gates`."""
    gen = torch.Generator().manual_seed(2)
    B, X, Y, H, dk, dv = 2, 5, 4, 1, 3, 2
    dense = dict(q=torch.randn(B, X, Y, H, dk, dtype=DT, generator=gen), k=torch.randn(B, X, Y, H, dk, dtype=DT, generator=gen),
                 v=torch.randn(B, X, Y, H, dv, dtype=DT, generator=gen), source=torch.rand(B, X, Y, H, 2, dtype=DT, generator=gen),
                 transition=torch.rand(B, X, Y, H, 2, 2, dtype=DT, generator=gen) - 0.5,
                 mark=torch.rand(B, X, Y, H, 2, dtype=DT, generator=gen), direct=torch.rand(B, X, Y, H, dtype=DT, generator=gen))
    flat = lambda t: t.reshape(B, -1, *t.shape[3:])  # noqa: E731
    whole = Lattice((X, Y), flip)
    S, T, M, D = lattice_gates(whole, dense["source"], dense["transition"], dense["mark"], dense["direct"])
    want = scan(whole, flat(dense["q"]), flat(dense["k"]), flat(dense["v"]), S, T, M, D, execution="reference").view(B, X, Y, H, dv)
    size, cut = (X, Y)[axis], 2
    bounds = [(0, cut), (cut, size)][:: -1 if flip[axis] else 1]
    state, pieces = None, {}
    for lo, hi in bounds:
        piece = {n: t.narrow(1 + axis, lo, hi - lo) for n, t in dense.items()}
        shape = tuple(piece["q"].shape[1:3])
        lattice = Lattice(shape, flip)
        S, T, M, D, boundary = lattice_gates(lattice, piece["source"], piece["transition"], piece["mark"], piece["direct"],
                                             boundary_axis=axis)
        first = 0 if not flip[axis] else shape[axis] - 1
        initial = torch.zeros(B, *shape, H, dk, dv, dtype=DT)
        if state is not None:
            index = [slice(None)] * initial.dim()
            index[1 + axis] = slice(first, first + 1)
            initial[tuple(index)] = state
        h, states = fused_lattice_scan(lattice, flat(piece["q"]), flat(piece["k"]), flat(piece["v"]), S, T, M, D,
                                       initial_state=flat(initial), boundary=boundary, return_state=True)
        last = shape[axis] - 1 - first
        state = states.view(B, *shape, H, dk, dv).narrow(1 + axis, last, 1)
        pieces[lo] = h.view(B, *shape, H, dv)
    got = torch.cat([pieces[lo] for lo, _ in sorted(bounds)], dim=1 + axis)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@needs_numba
def test_float32_close_to_float64():
    lattice = Lattice((12, 13))
    leaves = leaves_for(lattice, "", seed=4, dk=16, dv=16, H=1)
    want = run(lattice, leaves, "reference", "")
    single = {n: t.detach().float().requires_grad_() for n, t in leaves.items()}
    got = run(lattice, single, "fused_lattice", "")
    for a, b in zip(got, want):
        if a is not None:
            torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


@needs_numba
def test_plstm_grid_scan_dense_path():
    """:func:`plstm_grid_scan` hands the dense canonical layout to the kernels directly; gates
    of edges off the grid are ignored (zero gradients), as in the reference."""
    gen = torch.Generator().manual_seed(6)
    B, X, Y, H, d = 2, 4, 5, 2, 3
    dense = [torch.randn(B, X, Y, H, d, dtype=DT, generator=gen) for _ in range(3)] + [
        torch.rand(B, X, Y, H, 2, dtype=DT, generator=gen), torch.rand(B, X, Y, H, 2, 2, dtype=DT, generator=gen) - 0.5,
        torch.rand(B, X, Y, H, 2, dtype=DT, generator=gen), torch.rand(B, X, Y, H, dtype=DT, generator=gen)]
    dense = [t.requires_grad_() for t in dense]
    h = plstm_grid_scan(*dense)
    lattice = Lattice((X, Y))
    flat = lattice_gates(lattice, *dense[3:])
    want = plstm_scan(lattice, *(t.reshape(B, X * Y, H, d) for t in dense[:3]), *flat, execution="reference").view_as(h)
    torch.testing.assert_close(h, want)
    weights = torch.linspace(-1, 1, h.numel(), dtype=DT).view_as(h)
    got_grads = torch.autograd.grad((h * weights).sum(), dense)
    want_grads = torch.autograd.grad((want * weights).sum(), dense)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b)


@needs_numba
def test_default_dispatch_and_fallback(monkeypatch):
    """2D grids on CPU run the kernels by default; with the JIT disabled (or elementwise
    weights, or a path) the PyTorch executions run, with the same results."""
    import everygraph.sequence.recurrence as engine

    calls = spy_on_fused_lattice(monkeypatch)
    lattice = Lattice((16, 17), (False, True))
    leaves = leaves_for(lattice, "", seed=8, H=1, dk=16, dv=16)
    want = run(lattice, leaves, "reference", "")
    assert_same(run(lattice, leaves, None, ""), want)
    assert len(calls) == 1
    monkeypatch.setenv(DISABLE_ENV, "1")
    assert_same(run(lattice, leaves, None, ""), want)  # chunked2d (16 x 17, dk dv = 256)
    with_states = leaves_for(lattice, "initial+return", seed=9, H=1)
    assert_same(run(lattice, with_states, None, "initial+return"), run(lattice, with_states, "reference", "initial+return"))
    assert len(calls) == 1
    with pytest.raises(RuntimeError, match="EVERYGRAPH_DISABLE_JIT"):
        run(lattice, leaves, "fused_lattice", "")
    monkeypatch.delenv(DISABLE_ENV)
    for path in (Lattice((1, 9)), Lattice((9,), (True,))):  # paths too, with boundary states
        path_leaves = leaves_for(path, "initial+return+boundary", seed=1)
        assert_same(run(path, path_leaves, None, "initial+return+boundary"),
                    run(path, path_leaves, "reference", "initial+return+boundary"))
    assert len(calls) == 3
    wide = Lattice((9,))  # a path with a large state keeps the chunked form (its matrix products win)
    assert 24 * 24 > engine.FUSED_PATH_MAX_STATE
    wide_leaves = leaves_for(wide, "", seed=2, H=1, dk=24, dv=24)
    assert_same(run(wide, wide_leaves, None, ""), run(wide, wide_leaves, "reference", ""))
    assert len(calls) == 3


@needs_numba
def test_refuses_what_it_does_not_run():
    lattice = Lattice((3, 3))
    leaves = {n: t.detach() for n, t in leaves_for(lattice, "", seed=1).items()}
    args = [leaves[n] for n in ["q", "k", "v", "source", "transition", "mark", "direct"]]
    with pytest.raises(ValueError, match="2D Lattice"):
        fused_lattice_scan(Lattice((3, 3, 1)), *args)
    elementwise = args[3][..., None, None].expand(-1, -1, -1, 3, 4)
    with pytest.raises(ValueError, match="scalar source and mark"):
        fused_lattice_scan(lattice, *args[:3], elementwise, args[4], elementwise, args[6])
    with pytest.raises(ValueError, match="float32 or float64"):
        fused_lattice_scan(lattice, *(t.half() for t in args))


def test_fallback_without_the_jit(monkeypatch):
    """With the JIT disabled the default dispatch is the PyTorch path (runs without numba too)."""
    monkeypatch.setenv(DISABLE_ENV, "1")
    lattice = Lattice((4, 5), (True, True))
    leaves = leaves_for(lattice, "initial+return", seed=3, H=1)
    assert_same(run(lattice, leaves, None, "initial+return"), run(lattice, leaves, "reference", "initial+return"))
    assert not fused_module.fused_lattice_usable(lattice, "scalar", leaves["q"], True)
