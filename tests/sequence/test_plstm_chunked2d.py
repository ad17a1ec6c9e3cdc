"""The chunked 2D execution (blocks of the grid as masked attention, border states between
blocks) equals the reference loop, forward and backward, in float64."""

import pytest
import torch

from everygraph.graphlib import Lattice
from everygraph.sequence import plstm_scan
from everygraph.sequence.plstm.chunked2d import chunked_scan_2d, plstm_chunked2d
from everygraph.sequence import default_execution, lattice_gates, plstm_grid_scan, scan
from everygraph.sequence.plstm.chunked2d import block_shape

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
    big, small = Lattice((16, 19)), Lattice((15, 40))
    assert block_shape(16, 19, 256) == (4, 4) and block_shape(6, 6, 64) == (6, 6)
    assert block_shape(15, 40, 256) is None and block_shape(64, 64, 64) is None
    assert default_execution(big, "scalar", boundary_states=False, state_size=256) == "chunked2d"
    assert default_execution(big, "scalar", boundary_states=True, state_size=256) == "lattice"
    assert default_execution(small, "scalar", boundary_states=False, state_size=256) == "lattice"
    assert default_execution(big, "diagonal", boundary_states=False, state_size=256) == "wavefront"
    # the default result with boundary states (the lattice path) equals the reference
    gen = torch.Generator().manual_seed(3)
    lattice = Lattice((16, 19), (False, True))
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


@pytest.mark.parametrize("shape,d", [((6, 6), 8), ((5, 7), 2), ((16, 17), 16)])
def test_grid_scan_equals_plstm_scan(shape, d):
    """The dense entry point (blocks or the lattice loop, by block_shape) equals the flat one."""
    gen = torch.Generator().manual_seed(5)
    B, H = 1, 2
    dense = [
        torch.randn(B, *shape, H, d, dtype=DT, generator=gen),
        torch.randn(B, *shape, H, d, dtype=DT, generator=gen),
        torch.randn(B, *shape, H, d, dtype=DT, generator=gen),
        torch.rand(B, *shape, H, 2, dtype=DT, generator=gen),
        torch.rand(B, *shape, H, 2, 2, dtype=DT, generator=gen) - 0.5,
        torch.rand(B, *shape, H, 2, dtype=DT, generator=gen),
        torch.rand(B, *shape, H, dtype=DT, generator=gen),
    ]
    lattice = Lattice(shape)

    def flat(q, k, v, s, t, m, dd):
        h = plstm_scan(lattice, *(x.reshape(B, -1, H, d) for x in (q, k, v)), *lattice_gates(lattice, s, t, m, dd), execution="lattice")
        return h.reshape(B, *shape, H, d)

    want = outputs_and_grads(flat, dense)
    got = outputs_and_grads(plstm_grid_scan, dense)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match=r"transition must have shape"):
        plstm_grid_scan(*dense[:4], dense[4][..., 0], *dense[5:])
