"""plstm_grid_gating: the gating matrix of a small grid, summed over orientations, as masked
linear attention equals the reference loop of each orientation's own lattice (float64,
forward and every gradient), in both executions (numba loop and PyTorch)."""

import pytest
import torch

from everygraph.graphlib import Lattice
from everygraph.sequence import lattice_gates, plstm_grid_gating, plstm_scan
from everygraph.sequence.mamba.fused_cpu import jit_enabled

F64 = torch.float64
EXECUTIONS = [pytest.param(True, id="compiled", marks=pytest.mark.skipif(not jit_enabled(), reason="numba absent or disabled")),
              pytest.param(False, id="torch")]
ALL_FLIPS = Lattice.orientations(2)


def random_gates(B, X, Y, F, H, seed, signed=False):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g, dtype=F64)  # noqa: E731
    transition = r(B, X, Y, F, H, 2, 2) * 0.9
    if signed:  # negative and zero transitions: nothing relies on positivity
        transition = transition * torch.randint(-1, 2, transition.shape, generator=g).to(F64)
    return [t.requires_grad_() for t in (r(B, X, Y, F, H, 2), transition, r(B, X, Y, F, H, 2), r(B, X, Y, F, H))]


def reference(q, k, v, gates, flips, scale):
    """Sum over orientations of the reference loop on Lattice((X, Y), flip), node order."""
    S, T, M, D = gates
    B, X, Y = S.shape[:3]
    h = 0
    for f, flip in enumerate(flips):
        lattice = Lattice((X, Y), flip)
        flat = lattice_gates(lattice, S[:, :, :, f], T[:, :, :, f], M[:, :, :, f], D[:, :, :, f])
        h = h + plstm_scan(lattice, q, k, v, *flat, scale=scale, execution="reference")
    return h


def attention(q, k, v, G, scale):
    """((q k^T) * G) v per batch entry and head; q, k, v [B, N, H, d], G [B, H, N, N]."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    return (((scale * q) @ k.transpose(-1, -2)) * G @ v).transpose(1, 2)


@pytest.mark.parametrize("compiled", EXECUTIONS)
@pytest.mark.parametrize("shape,flips,signed", [
    ((3, 4), ALL_FLIPS, False),
    ((1, 5), ALL_FLIPS, True),
    ((4, 1), [(True, False)], False),
    ((1, 1), ALL_FLIPS[:2], False),
    ((5, 3), [(False, True), (True, True), (False, True)], True),  # a repeated orientation
])
def test_gating_attention_equals_reference(compiled, shape, flips, signed):
    B, H, dk, dv = 2, 2, 3, 2
    X, Y = shape
    g = torch.Generator().manual_seed(X * 10 + Y)
    q, k, v = (torch.randn(B, X * Y, H, d, generator=g, dtype=F64, requires_grad=True) for d in (dk, dk, dv))
    gates = random_gates(B, X, Y, len(flips), H, seed=X + Y, signed=signed)
    inputs = [q, k, v, *gates]
    weight = torch.randn(B, X * Y, H, dv, generator=g, dtype=F64)
    results = []
    for run in (lambda: reference(q, k, v, gates, flips, 0.7),
                lambda: attention(q, k, v, plstm_grid_gating(*gates, flips, compiled=compiled), 0.7)):
        out = run()
        grads = torch.autograd.grad((out * weight).sum(), inputs, allow_unused=True)  # a 1 x 1 grid has no edges
        results.append([out, *(torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads))])
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("compiled", EXECUTIONS)
def test_gating_gradcheck(compiled):
    gates = random_gates(1, 3, 2, 2, 1, seed=3, signed=True)
    fn = lambda *g: plstm_grid_gating(*g, [(False, True), (True, False)], compiled=compiled)  # noqa: E731
    assert torch.autograd.gradcheck(fn, gates)


def test_executions_agree_in_float32():
    if not jit_enabled():
        pytest.skip("numba absent or disabled")
    gates = [t.detach().float() for t in random_gates(3, 6, 6, 4, 2, seed=1)]
    a = plstm_grid_gating(*gates, ALL_FLIPS, compiled=True)
    b = plstm_grid_gating(*gates, ALL_FLIPS, compiled=False)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_off_grid_gates_have_zero_gradient():
    """Gates of edges that leave the grid never act: zero gradient, both executions."""
    for compiled in [False] + ([True] if jit_enabled() else []):
        S, T, M, D = random_gates(1, 3, 3, 1, 1, seed=4)
        G = plstm_grid_gating(S, T, M, D, compiled=compiled)
        gS, gT, gM = torch.autograd.grad(G.sum(), (S, T, M))
        assert (gS[0, 2, :, 0, 0, 0] == 0).all() and (gS[0, :, 2, 0, 0, 1] == 0).all()  # last row down, last column right
        assert (gT[0, 2, :, 0, 0, 0] == 0).all() and (gT[0, 0, :, 0, 0, :, 0] == 0).all()  # no down edge out / in
        assert (gM[0, 0, :, 0, 0, 0] == 0).all() and (gM[0, :, 0, 0, 0, 1] == 0).all()  # first row/column read nothing
        assert gS[0, :2, :, 0, 0, 0].abs().min() > 0


def test_bad_input_raises():
    S, T, M, D = (t.detach() for t in random_gates(1, 2, 2, 1, 1, seed=0))
    with pytest.raises(ValueError, match="transition must have shape"):
        plstm_grid_gating(S, T[..., 0], M, D)
    with pytest.raises(ValueError, match="flips must be 1 pairs"):
        plstm_grid_gating(S, T, M, D, flips=[(False, False), (True, True)])
    with pytest.raises(ValueError, match="dtype"):
        plstm_grid_gating(S.float(), T, M, D)
    with pytest.raises(ValueError, match="direct must be"):
        plstm_grid_gating(S, T, M, D[..., 0])
