"""The stateless chunkwise 1D execution (matrix products, hand-written backward) and the
injective gathers of the lattice layout: equal to the reference loop in float64, forward and
backward, with ``gradcheck`` on the hand-written parts."""

import pytest
import torch

from everygraph.graphlib import Lattice
from everygraph.sequence import plstm_scan
from everygraph.sequence.plstm.chunked1d import chunked_scan_1d_stateless, segment_products
from everygraph.sequence.plstm.layout import gather, take

DT = torch.float64


def path_inputs(B, L, H, dk, dv, seed, zero_every=3):
    gen = torch.Generator().manual_seed(seed)
    transition = torch.rand(B, L, H, dtype=DT, generator=gen) * 2 - 1
    transition[:, ::zero_every] = 0.0  # exact zeros: the product's gradient has no division
    return [
        torch.randn(B, L, H, dk, dtype=DT, generator=gen),
        torch.randn(B, L, H, dk, dtype=DT, generator=gen),
        torch.randn(B, L, H, dv, dtype=DT, generator=gen),
        torch.rand(B, L, H, dtype=DT, generator=gen),
        transition,
        torch.rand(B, L, H, dtype=DT, generator=gen) * 2 - 1,
        torch.rand(B, L, H, dtype=DT, generator=gen),
    ]


def loop(q, k, v, S, T, M, D):
    """The 1D recurrence step by step: C_t = T_t C_{t-1} + S_t k_t v_t^T, h_t = M_t q_t C_{t-1} + D_t (q_t.k_t) v_t."""
    B, L, H, dk = q.shape
    C = q.new_zeros(B, H, dk, v.shape[-1])
    out = []
    for t in range(L):
        out.append(M[:, t, :, None] * torch.einsum("bhd,bhdv->bhv", q[:, t], C) + (D[:, t] * (q[:, t] * k[:, t]).sum(-1))[..., None] * v[:, t])
        C = T[:, t, :, None, None] * C + S[:, t, :, None, None] * k[:, t, :, :, None] * v[:, t, :, None, :]
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("B,L,H,chunk", [(1, 1, 1, 4), (2, 5, 1, 4), (2, 23, 3, 4), (1, 40, 2, 7), (2, 40, 1, 64), (1, 9, 1, 1)])
def test_stateless_chunks_equal_the_loop(B, L, H, chunk):
    """Partial last chunks, one chunk, chunk size 1, batch and heads: outputs and gradients."""
    inputs = [t.requires_grad_() for t in path_inputs(B, L, H, 3, 2, seed=L)]
    got = chunked_scan_1d_stateless(*inputs, chunk_size=chunk)
    want = loop(*inputs)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    weights = torch.randn_like(want)
    grads_got = torch.autograd.grad((got * weights).sum(), inputs)
    grads_want = torch.autograd.grad((want * weights).sum(), inputs, allow_unused=True)  # L = 1: S unused
    for x, g, w in zip(inputs, grads_got, grads_want):
        torch.testing.assert_close(g, torch.zeros_like(x) if w is None else w, rtol=1e-9, atol=1e-11)


def test_stateless_chunks_gradcheck():
    inputs = [t.requires_grad_() for t in path_inputs(2, 7, 1, 2, 2, seed=1)]  # two chunks and a partial one
    assert torch.autograd.gradcheck(lambda *a: chunked_scan_1d_stateless(*a, chunk_size=3), inputs, fast_mode=True)


def test_segment_products_against_a_loop():
    T = torch.tensor([[0.5, -2.0, 0.0, 3.0]], dtype=DT)
    W = segment_products(T)[0]
    for i in range(5):
        for s in range(5):
            want = torch.prod(T[0, s:i]) if s <= i else torch.tensor(0.0, dtype=DT)
            assert W[i, s] == want


@pytest.mark.parametrize("flip", [(False,), (True,)])
def test_plstm_scan_on_a_path_dispatches_here_and_equals_the_reference(flip):
    """The default 1D dispatch without boundary states, on both orientations of the path."""
    lattice = Lattice((37,), flip)
    dag = lattice.to_dag()
    gen = torch.Generator().manual_seed(3)
    B, H, dk, dv = 2, 2, 3, 4
    E, Ln = dag.num_edges, dag.line_graph().node.numel()
    inputs = [
        torch.randn(B, 37, H, dk, dtype=DT, generator=gen), torch.randn(B, 37, H, dk, dtype=DT, generator=gen),
        torch.randn(B, 37, H, dv, dtype=DT, generator=gen), torch.rand(B, E, H, dtype=DT, generator=gen),
        torch.rand(B, Ln, H, dtype=DT, generator=gen) * 2 - 1, torch.rand(B, E, H, dtype=DT, generator=gen),
        torch.rand(B, 37, H, dtype=DT, generator=gen),
    ]
    inputs = [t.requires_grad_() for t in inputs]
    got = plstm_scan(lattice, *inputs, execution="lattice")
    want = plstm_scan(lattice, *inputs, execution="reference")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for g, w in zip(torch.autograd.grad(got.square().sum(), inputs), torch.autograd.grad(want.square().sum(), inputs)):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)


def test_non_finite_values_ahead_do_not_reach_earlier_outputs():
    """An inf in a later v leaves the outputs before it finite (the autograd form runs then)."""
    q, k, v, S, T, M, D = path_inputs(1, 12, 1, 2, 2, seed=4)
    v[:, 9] = float("inf")
    lattice = Lattice((12,))
    from everygraph.sequence import lattice_gates

    flat = lattice_gates(lattice, S[..., None], T[..., None, None], M[..., None], D)
    h = plstm_scan(lattice, q, k, v, *flat, execution="lattice")
    assert torch.isfinite(h[:, :9]).all()


def test_gather_and_take_against_indexing():
    """Forward and gradient of the injective gathers equal plain indexing (which accumulates)."""
    x = torch.randn(3, 7, 2, 4, dtype=DT, requires_grad=True)
    index = torch.tensor([[6, 0], [3, 5], [1, 2]])
    got = gather(x, 1, index)
    want = x[:, index]
    assert torch.equal(got, want)
    weights = torch.randn_like(want)
    assert torch.equal(torch.autograd.grad((got * weights).sum(), x)[0], torch.autograd.grad((want * weights).sum(), x)[0])
    with_missing = torch.tensor([7, 2, 7, 0])  # 7 = no such row: zeros
    got = take(x, with_missing)
    assert torch.equal(got[:, [0, 2]], torch.zeros(3, 2, 2, 4, dtype=DT)) and torch.equal(got[:, 1], x[:, 2])
    assert torch.autograd.gradcheck(lambda t: take(t, with_missing), (x,))
    assert torch.autograd.gradgradcheck(lambda t: gather(t, 1, index), (x,))
