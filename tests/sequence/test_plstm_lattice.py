"""The lattice execution: chunk boundaries, zero and negative transitions, the hand-written
adjoint of the anti-diagonal recurrence, and the dense <-> flat gate layout."""

import pytest
import torch

from everygraph.graphlib import Lattice
from everygraph.sequence import lattice_gates, plstm_scan
from everygraph.sequence.plstm.lattice import DiagonalRecurrence, plstm_lattice
from everygraph.sequence.plstm.reference import plstm_reference

DT = torch.float64


def inputs_for(lattice, gen, B=2, H=1, dk=2, dv=3, zero_every=3):
    dag = lattice.to_dag()
    N, E, L = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()
    transition = torch.rand(B, L, H, dtype=DT, generator=gen) * 2 - 1
    transition[:, ::zero_every] = 0.0  # exact zeros: the product's gradient must stay exact
    return [
        torch.randn(B, N, H, dk, dtype=DT, generator=gen),
        torch.randn(B, N, H, dk, dtype=DT, generator=gen),
        torch.randn(B, N, H, dv, dtype=DT, generator=gen),
        torch.rand(B, E, H, dtype=DT, generator=gen),
        transition,
        torch.rand(B, E, H, dtype=DT, generator=gen) * 2 - 1,
        torch.rand(B, N, H, dtype=DT, generator=gen),
        torch.randn(B, N, H, dk, dv, dtype=DT, generator=gen),
    ]


@pytest.mark.parametrize("length,chunk_size", [(1, 4), (4, 4), (5, 4), (23, 4), (23, 1), (40, 7), (40, 64)])
def test_chunked_1d_across_chunk_boundaries(length, chunk_size):
    """Many chunks, a partial last one, chunk size 1: outputs and all gradients equal the loop."""
    for flip in [(False,), (True,)]:
        lattice = Lattice((length,), flip)
        dag = lattice.to_dag()
        results = []
        for fn in (lambda *a: plstm_lattice(lattice, *a, True, chunk_size=chunk_size), lambda *a: plstm_reference(dag, *a, True)):
            leaves = [t.clone().requires_grad_() for t in inputs_for(lattice, torch.Generator().manual_seed(length))]
            h, state = fn(*leaves)
            (h.square().sum() + state.sin().sum()).backward()
            results.append([h, state] + [t.grad for t in leaves])
        for got, want in zip(*results, strict=True):
            if got is None or want is None:  # only an input nothing depends on (no edges)
                assert all(t is None or not t.any() for t in (got, want)), "a gradient is missing"
            else:
                torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_diagonal_recurrence_gradcheck():
    gen = torch.Generator().manual_seed(0)
    X, Y, B, H, K = 3, 4, 2, 1, 3  # a 3x4 grid: 6 diagonals of up to 3 rows
    diagonals = [(max(0, d - Y + 1), min(d, X - 1)) for d in range(X + Y - 1)]
    N = X * Y
    transition = (torch.rand(N, B, H, 2, 2, dtype=DT, generator=gen) * 2 - 1).requires_grad_()
    source = torch.rand(N, B, H, 2, dtype=DT, generator=gen).requires_grad_()
    kv = torch.randn(N, B, H, K, dtype=DT, generator=gen).requires_grad_()
    injected = torch.randn(N, B, H, 2, K, dtype=DT, generator=gen).requires_grad_()
    inputs = (transition, source, kv, injected)
    assert torch.autograd.gradcheck(lambda *a: DiagonalRecurrence.apply(*a, diagonals), inputs)
    assert torch.autograd.gradcheck(lambda *a: DiagonalRecurrence.apply(*a, None, diagonals), inputs[:3])


def test_2d_lattice_gradcheck_end_to_end():
    """gradcheck of the whole 2D lattice execution (gathers + custom recurrence) on a 3x4 grid."""
    lattice = Lattice((3, 4), (False, True))
    leaves = [t.requires_grad_() for t in inputs_for(lattice, torch.Generator().manual_seed(1), B=1, dk=2, dv=2)]

    def fn(*args):
        h, state = plstm_scan(lattice, *args[:7], initial_state=args[7], return_state=True, execution="lattice")
        return h, state

    assert torch.autograd.gradcheck(fn, leaves)


def test_lattice_gates_against_a_loop_over_edges():
    gen = torch.Generator().manual_seed(2)
    for shape in [(5,), (3, 4), (2, 3, 2)]:
        for flip in Lattice.orientations(len(shape)):
            lattice = Lattice(shape, flip)
            d = lattice.ndim
            source = torch.rand(2, *shape, 3, d, generator=gen)
            transition = torch.rand(2, *shape, 3, d, d, generator=gen)
            mark = torch.rand(2, *shape, 3, d, generator=gen)
            direct = torch.rand(2, *shape, 3, generator=gen)
            s, t, m, dd = lattice_gates(lattice, source, transition, mark, direct)
            src, dst = lattice.edge_index.tolist()
            axis = lattice.edge_axis.tolist()
            for e in range(lattice.num_edges):
                assert torch.equal(s[:, e], source[(slice(None), *lattice.coords(src[e]), slice(None), axis[e])])
                assert torch.equal(m[:, e], mark[(slice(None), *lattice.coords(dst[e]), slice(None), axis[e])])
            line = lattice.to_dag().line_graph()
            for l, (e_in, e_out) in enumerate(line.edge_index.t().tolist()):
                node = lattice.coords(line.node[l])
                assert torch.equal(t[:, l], transition[(slice(None), *node, slice(None), axis[e_out], axis[e_in])])
            assert torch.equal(dd, direct.reshape(2, -1, 3))


def test_lattice_gates_bad_shape():
    lattice = Lattice((3, 4))
    with pytest.raises(ValueError, match=r"transition must have shape \[2, 3, 4, 1, 2, 2\].*got \[2, 3, 4, 1, 2\]"):
        lattice_gates(lattice, torch.rand(2, 3, 4, 1, 2), torch.rand(2, 3, 4, 1, 2), torch.rand(2, 3, 4, 1, 2))


def test_float32_close_to_float64():
    """The fast paths in float32 on a 64x64 grid and a 2000-step sequence stay near float64."""
    gen = torch.Generator().manual_seed(3)
    for lattice in (Lattice((64, 64)), Lattice((2000,))):
        args = inputs_for(lattice, gen, B=1, dk=4, dv=4)
        args[4] = args[4] * 0.5  # |column sums| <= 1 on the grid
        want = plstm_scan(lattice, *args[:7], execution="lattice")
        got = plstm_scan(lattice, *[a.float() for a in args[:7]], execution="lattice")
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
