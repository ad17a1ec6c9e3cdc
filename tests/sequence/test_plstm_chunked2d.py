"""The chunked 2D execution (blocks of the grid as masked attention, border states between
blocks) equals the reference loop, forward and backward, in float64."""

import pytest
import torch

from everygraph.graphlib import Lattice
from everygraph.sequence import plstm_scan
from everygraph.sequence.plstm.chunked2d import chunked_scan_2d, plstm_chunked2d
from everygraph.sequence import default_execution, scan
from everygraph.sequence.recurrence import CHUNKED2D_MIN_SIDE

DT = torch.float64


def random_inputs(lattice, gen, B=2, H=2, dk=3, dv=2):
    dag = lattice.to_dag()
    N, E, L = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()
    transition = torch.rand(B, L, H, dtype=DT, generator=gen) * 2 - 1  # negative transitions too
    transition[:, ::4] = 0.0  # and exact zeros
    return [
        torch.randn(B, N, H, dk, dtype=DT, generator=gen),
        torch.randn(B, N, H, dk, dtype=DT, generator=gen),
        torch.randn(B, N, H, dv, dtype=DT, generator=gen),
        torch.rand(B, E, H, dtype=DT, generator=gen),
        transition,
        torch.rand(B, E, H, dtype=DT, generator=gen) * 2 - 1,
        torch.rand(B, N, H, dtype=DT, generator=gen),
    ]


def outputs_and_grads(fn, inputs):
    leaves = [t.clone().requires_grad_() for t in inputs]
    h = fn(*leaves)
    weight = torch.linspace(-1, 1, h.numel(), dtype=DT).view_as(h)
    (h * weight).sum().backward()
    return [h] + [t.grad for t in leaves]


# grids smaller than, equal to and not multiples of the block; single rows and columns
@pytest.mark.parametrize("shape,block_size", [((3, 4), 2), ((8, 8), 4), ((9, 7), 4), ((9, 7), 3), ((5, 11), 2), ((1, 6), 2), ((6, 1), 4), ((2, 2), 8), ((4, 4), 1)])
def test_equals_reference_in_all_orientations(shape, block_size):
    gen = torch.Generator().manual_seed(sum(shape) * 10 + block_size)
    for flip in Lattice.orientations(2):
        lattice = Lattice(shape, flip)
        inputs = random_inputs(lattice, gen)
        want = outputs_and_grads(lambda *a: plstm_scan(lattice, *a, execution="reference"), inputs)
        scale = 3 ** -0.5
        got = outputs_and_grads(lambda *a: plstm_chunked2d(lattice, a[0] * scale, *a[1:], block_size=block_size), inputs)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_default_block_size_through_plstm_scan():
    gen = torch.Generator().manual_seed(1)
    lattice = Lattice((10, 13), (True, False))
    inputs = random_inputs(lattice, gen, B=1, H=1, dk=4, dv=4)
    want = outputs_and_grads(lambda *a: plstm_scan(lattice, *a, execution="reference"), inputs)
    got = outputs_and_grads(lambda *a: plstm_scan(lattice, *a, execution="chunked2d"), inputs)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_gradcheck():
    """The hand-written adjoint inside (the unit-source recurrence) and everything around it."""
    gen = torch.Generator().manual_seed(2)
    B, X, Y, H, dk, dv = 1, 3, 5, 1, 2, 2
    leaves = [
        torch.randn(B, X, Y, H, dk, dtype=DT, generator=gen),
        torch.randn(B, X, Y, H, dk, dtype=DT, generator=gen),
        torch.randn(B, X, Y, H, dv, dtype=DT, generator=gen),
        torch.rand(B, X, Y, H, 2, dtype=DT, generator=gen),
        torch.rand(B, X, Y, H, 2, 2, dtype=DT, generator=gen) * 2 - 1,
        torch.rand(B, X, Y, H, 2, dtype=DT, generator=gen),
        torch.rand(B, X, Y, H, dtype=DT, generator=gen),
    ]
    leaves = [t.requires_grad_() for t in leaves]
    assert torch.autograd.gradcheck(lambda *a: chunked_scan_2d(*a, block_size=2), leaves)


def test_default_dispatch_and_fallback_with_boundary_states():
    big, small = Lattice((CHUNKED2D_MIN_SIDE, CHUNKED2D_MIN_SIDE + 3)), Lattice((CHUNKED2D_MIN_SIDE - 1, 40))
    assert default_execution(big, "scalar", boundary_states=False) == "chunked2d"
    assert default_execution(big, "scalar", boundary_states=True) == "lattice"
    assert default_execution(small, "scalar", boundary_states=False) == "lattice"
    assert default_execution(big, "diagonal", boundary_states=False) == "wavefront"
    # the default result with boundary states (the lattice path) equals the reference
    gen = torch.Generator().manual_seed(3)
    lattice = Lattice((CHUNKED2D_MIN_SIDE, 3 + CHUNKED2D_MIN_SIDE), (False, True))
    inputs = random_inputs(lattice, gen, B=1, H=1)
    state0 = torch.randn(1, lattice.num_nodes, 1, 3, 2, dtype=DT, generator=gen)
    h, state = plstm_scan(lattice, *inputs, initial_state=state0, return_state=True)
    h_ref, state_ref = plstm_scan(lattice, *inputs, initial_state=state0, return_state=True, execution="reference")
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(state, state_ref)


def test_bad_input():
    gen = torch.Generator().manual_seed(4)
    lattice = Lattice((4, 5))
    inputs = random_inputs(lattice, gen)
    with pytest.raises(ValueError, match="takes no initial_state, return_state or boundary"):
        plstm_scan(lattice, *inputs, return_state=True, execution="chunked2d")
    with pytest.raises(ValueError, match="runs the kinds scalar, not 'diagonal'"):
        scan(lattice, *inputs, kind="diagonal", execution="chunked2d")
    path = Lattice((6,))
    with pytest.raises(ValueError, match="needs a 2D Lattice"):
        plstm_scan(path, *random_inputs(path, gen), execution="chunked2d")
