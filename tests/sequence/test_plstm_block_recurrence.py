"""The hand-written adjoint of chunked2d's recurrence between blocks: gradcheck, and the whole
blocked execution against the reference loop on grids that are not multiples of the block,
with a batch and several heads."""

import pytest
import torch

from everygraph.graphlib import Lattice
from everygraph.sequence import lattice_gates, plstm_scan
from everygraph.sequence.plstm.chunked2d import BlockRecurrence, _block_order, chunked_scan_2d

DT = torch.float64


@pytest.mark.parametrize("P,R", [(2, 3), (3, 1), (1, 1)])
def test_block_recurrence_gradcheck(P, R):
    """2 x 2 blocks in a P x R arrangement, two entries per block (batch x heads)."""
    _, diagonals = _block_order(P, R)
    Z, bx, by, dk, dv = 2, 2, 2, 2, 2
    nb, e, n = P * R * Z, bx + by, bx * by
    gen = torch.Generator().manual_seed(P * 10 + R)
    shapes = [(nb, e, e), (nb, e, n), (nb, n, e), (nb, n, dk), (nb, n, dk), (nb, n, dv)]
    args = [torch.randn(*shape, dtype=DT, generator=gen).requires_grad_() for shape in shapes]
    assert torch.autograd.gradcheck(lambda *a: BlockRecurrence.apply(*a, diagonals, Z, by), args, fast_mode=True)


@pytest.mark.parametrize("B,X,Y,H,block", [(2, 7, 9, 2, 3), (1, 5, 5, 3, 2), (2, 1, 6, 1, 2), (1, 6, 4, 1, 4)])
def test_blocked_scan_equals_the_reference(B, X, Y, H, block):
    gen = torch.Generator().manual_seed(X * Y)
    dk, dv = 3, 2
    inputs = [
        torch.randn(B, X, Y, H, dk, dtype=DT, generator=gen), torch.randn(B, X, Y, H, dk, dtype=DT, generator=gen),
        torch.randn(B, X, Y, H, dv, dtype=DT, generator=gen), torch.rand(B, X, Y, H, 2, dtype=DT, generator=gen),
        torch.rand(B, X, Y, H, 2, 2, dtype=DT, generator=gen) - 0.5, torch.rand(B, X, Y, H, 2, dtype=DT, generator=gen),
        torch.rand(B, X, Y, H, dtype=DT, generator=gen),
    ]
    inputs = [t.requires_grad_() for t in inputs]
    got = chunked_scan_2d(*inputs, block_size=block)
    lattice = Lattice((X, Y))
    flat = lattice_gates(lattice, *inputs[3:])
    q, k, v = (t.reshape(B, X * Y, H, -1) for t in inputs[:3])
    want = plstm_scan(lattice, q, k, v, *flat, scale=1.0, execution="reference").reshape(got.shape)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    weights = torch.randn_like(want)
    for g, w in zip(torch.autograd.grad((got * weights).sum(), inputs), torch.autograd.grad((want * weights).sum(), inputs)):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)
