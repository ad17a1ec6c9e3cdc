"""The fused CPU path's float32 softplus (a vector kernel) and its derivative against torch's
softplus computed in float64, over the whole range, at the threshold, on non-finite values and on
lengths that leave a partial vector."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from everygraph.sequence.mamba import fused_cpu

pytestmark = pytest.mark.skipif(not fused_cpu.NUMBA_AVAILABLE, reason="numba (everygraph[cpu]) not installed")


def exact_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """torch's softplus derivative (threshold 20) in float64."""
    x = x.double()
    return torch.sigmoid(x).masked_fill(x > 20, 1.0)


@pytest.mark.parametrize("size", [8 * 25_000 + 5, 3])
def test_softplus_and_its_derivative_within_3e7_of_float64(size):
    g = torch.Generator().manual_seed(size)
    x = torch.cat([torch.linspace(-60, 60, size - size // 2), torch.randn(size // 2, generator=g) * 4]).float()
    x = x[torch.randperm(x.numel(), generator=g)].requires_grad_()
    got = fused_cpu.FusedSoftplus.apply(x)
    want = F.softplus(x.detach().double())
    assert got.dtype == torch.float32
    assert ((got.double() - want).abs() / want).max().item() < 3e-7
    grad_out = torch.randn(size, generator=g)
    (grad,) = torch.autograd.grad(got, x, grad_out)
    want_grad = grad_out.double() * exact_sigmoid(x.detach())
    assert ((grad.double() - want_grad).abs() / want_grad.abs().clamp_min(1e-30)).max().item() < 3e-7


def test_softplus_edges():
    x = torch.tensor([math.nan, math.inf, -math.inf, 20.0, 20.001, 19.999, 0.0, -1e-8, -59.0, -1e4]).requires_grad_()
    got = fused_cpu.FusedSoftplus.apply(x)
    values = got.detach()
    assert math.isnan(values[0]) and values[1] == math.inf
    assert values[3].item() == pytest.approx(math.log1p(math.exp(20.0)), rel=3e-7)
    assert values[4].item() == pytest.approx(20.001, rel=1e-7)  # above the threshold: x itself
    assert values[6].item() == pytest.approx(math.log(2.0), rel=3e-7)
    assert values[8].item() == pytest.approx(math.exp(-59.0), rel=3e-7)
    # below the exponential's clamp: exp(-60), a step of zero for the scan
    assert values[2].item() == values[9].item() == pytest.approx(math.exp(fused_cpu.MIN_LOG_DECAY), rel=3e-7)
    (grad,) = torch.autograd.grad(got.sum(), x, allow_unused=False)
    assert math.isnan(grad[0])
    assert grad[4].item() == 1.0  # torch's threshold: the derivative is exactly 1
    assert grad[6].item() == pytest.approx(0.5, rel=1e-7)


def test_fused_scan_float32_softplus_matches_the_torch_softplus_path():
    """The fused scan with the vector softplus against the same kernels fed torch's softplus."""
    g = torch.Generator().manual_seed(3)
    u, delta = torch.randn(2, 16, 100, generator=g), torch.randn(2, 16, 100, generator=g)
    A, B, C = -torch.rand(16, 4, generator=g) - 0.1, torch.randn(2, 4, 100, generator=g), torch.randn(2, 4, 100, generator=g)
    bias = torch.randn(16, generator=g) * 0.3
    leaves = [t.clone().requires_grad_() for t in (u, delta, A, B, C, bias)]
    out = fused_cpu.selective_scan_fused(*leaves[:5], delta_bias=leaves[5], delta_softplus=True)
    grads = torch.autograd.grad(out.square().sum(), leaves)
    leaves2 = [t.clone().requires_grad_() for t in (u, delta, A, B, C, bias)]
    dt = F.softplus(leaves2[1] + leaves2[5][:, None])
    out2 = fused_cpu.selective_scan_fused(leaves2[0], dt, *leaves2[2:5])
    grads2 = torch.autograd.grad(out2.square().sum(), leaves2)
    torch.testing.assert_close(out, out2, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
