"""The compiled 2D selective scan (``grid_selective_scan(execution="fused")``, factored form,
decays formed in the kernel) against the materialised path (the gates of ``grid_mamba_gates``
through ``scan``'s reference loop) in float64, forward and backward, in every orientation, with
and without the split, on non-square grids and single rows/columns; gradcheck of the kernels'
autograd function; float32 to tolerance; the default dispatch, its fallback without the JIT
and errors."""

import pytest
import torch

import everygraph.sequence.grid_mamba as grid_mamba
from everygraph.nn import Mamba2d
from everygraph.sequence import grid_selective_scan
from everygraph.sequence.executions import fused_grid_selective as fused
from everygraph.sequence.mamba.fused_cpu import DISABLE_ENV
from scan_asserts import assert_same

DT = torch.float64
needs_numba = pytest.mark.skipif(not fused.NUMBA_AVAILABLE, reason="numba (everygraph[cpu]) is not installed")
FLIPS = [(False, False), (False, True), (True, False), (True, True)]


def operands(X, Y, D, N, seed, split=True, batch=2, dtype=DT):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.rand(*s, dtype=dtype, generator=gen)  # noqa: E731
    randn = lambda *s: torch.randn(*s, dtype=dtype, generator=gen)  # noqa: E731
    return [randn(batch, X, Y, D), rand(batch, X, Y, D), -rand(D, N) * 2, randn(batch, X, Y, N), randn(batch, X, Y, N),
            rand(batch, X, Y, D) if split else None]


def run(leaves, flip, execution):
    """Output and the gradients of every operand (None where absent) of a weighted sum."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in leaves]
    y = grid_selective_scan(*leaves, flip, execution=execution)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    (y * weights).sum().backward()
    return [y] + [t.grad if t is not None else None for t in leaves]


@needs_numba
@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("flip", FLIPS)
def test_equals_the_materialised_scan(flip, split):
    """Non-square grids, a single row and a single column; D below, at and above a vector of
    lanes (padded channels), N = 1 and more (N = 9: the gradients of B and C eight entries
    at a time, and one more)."""
    for seed, (X, Y, D, N) in enumerate([(3, 4, 3, 2), (4, 2, 9, 9), (1, 5, 8, 2), (5, 1, 2, 1)]):
        leaves = operands(X, Y, D, N, seed + 10 * sum(flip), split)
        assert_same(run(leaves, flip, "fused"), run(leaves, flip, "reference"))


@needs_numba
def test_backward_blocks_of_rows(monkeypatch):
    """More rows than one block of the backward pass (the states recomputed block by block
    from the forward pass's checkpoints), including a last, partial block."""
    monkeypatch.setattr(fused, "MAX_ROWS", 2)
    leaves = operands(7, 3, 8, 2, seed=5)
    assert fused.block_rows(7, 3, 8, 2) == 2
    assert_same(run(leaves, (True, False), "fused"), run(leaves, (True, False), "wavefront"))


@needs_numba
@pytest.mark.parametrize("split", [True, False])
def test_gradcheck_of_the_kernels(split):
    gen = torch.Generator().manual_seed(3)
    X, Y, N, lanes = 2, 3, 9, fused.LANES
    u, dt, B, C = (torch.randn(1, X, Y, d, dtype=DT, generator=gen) for d in (lanes, lanes, N, N))
    dt = dt.abs()
    rate = -torch.rand(1, N, lanes, dtype=DT, generator=gen)
    share = torch.rand(1, X, Y, lanes, dtype=DT, generator=gen) if split else None
    leaves = [t.requires_grad_() for t in (u, dt, rate, B, C) + ((share,) if split else ())]

    def f(u, dt, rate, B, C, *share):
        return fused.FusedGridSelectiveScan.apply(u, dt, rate, B, C, share[0] if share else None, (False, True))

    assert torch.autograd.gradcheck(f, tuple(leaves))


@needs_numba
def test_float32_within_tolerance():
    leaves = operands(6, 5, 16, 8, seed=7)
    want = run(leaves, (True, True), "reference")
    got = run([t.float() for t in leaves], (True, True), "fused")
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=2e-5, atol=2e-5 * b.abs().max().item())


@needs_numba
def test_default_dispatch_and_fallback(monkeypatch):
    """execution=None runs the kernels (CPU, float32/64, the JIT on); with
    EVERYGRAPH_DISABLE_JIT set it runs the materialised scan, with the same numbers; so does
    the Mamba2d layer."""
    calls = []
    original = grid_mamba.fused_grid_selective_scan
    monkeypatch.setattr(grid_mamba, "fused_grid_selective_scan", lambda *a: calls.append(1) or original(*a))
    leaves = operands(3, 4, 3, 2, seed=8)
    fast = run(leaves, (False, True), None)
    assert len(calls) == 1
    torch.manual_seed(0)
    layer = Mamba2d(d_model=4, d_state=3, expand=1).double()
    x = torch.randn(2, 3, 4, 4, dtype=DT)

    def layer_run():
        layer.zero_grad()
        out = layer(x)
        out.square().sum().backward()
        return [out] + [p.grad.clone() for p in layer.parameters()]

    layer_fast = layer_run()
    assert len(calls) == 5  # one scan per orientation
    monkeypatch.setenv(DISABLE_ENV, "1")
    assert_same(run(leaves, (False, True), None), fast)
    assert_same(layer_run(), layer_fast)
    assert len(calls) == 5
    with pytest.raises(RuntimeError, match="EVERYGRAPH_DISABLE_JIT"):
        grid_selective_scan(*leaves, (False, True), execution="fused")


@needs_numba
def test_errors(monkeypatch):
    u, dt, A, B, C, split = operands(2, 3, 3, 2, seed=9)
    with monkeypatch.context() as m:  # as where numba is not installed
        m.setattr(fused, "NUMBA_AVAILABLE", False)
        with pytest.raises(RuntimeError, match="needs numba"):
            grid_selective_scan(u, dt, A, B, C, split, execution="fused")
    with pytest.raises(ValueError, match="float32 or float64 operands of one dtype.*A is torch.float32"):
        grid_selective_scan(u, dt, A.float(), B, C, split, execution="fused")
    with pytest.raises(ValueError, match="u is torch.float16"):
        grid_selective_scan(u.half(), dt.half(), A.half(), B.half(), C.half(), None, execution="fused")
    with pytest.raises(TypeError, match="split"):
        grid_selective_scan(u, dt, A, B, C, "even", execution="fused")
    with pytest.raises(TypeError, match="flip"):
        grid_selective_scan(u, dt, A, B, C, split, flip="down", execution="fused")
    with pytest.raises(ValueError, match="split"):
        grid_selective_scan(u, dt, A, B, C, split[:, :1], execution="fused")
