"""PLSTM2d scans its four orientations as one batch of canonical grids: equal to scanning
each orientation's own lattice separately (forward and every gradient)."""

import pytest
import torch

from everygraph.nn import PLSTM2d
from plstm2d_orientations_loop import per_orientation_forward


@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (4, 1), (5, 7), (16, 17)])
def test_batched_orientations_equal_separate_scans(mode, shape):
    torch.manual_seed(sum(shape))
    layer = PLSTM2d(8, num_heads=2, mode=mode).double()
    with torch.no_grad():  # gates away from their initial values, so that every path matters
        layer.gate_proj.bias.add_(torch.randn_like(layer.gate_proj.bias))
    x = torch.randn(2, *shape, 8, dtype=torch.float64, requires_grad=True)
    results = []
    for forward in (layer, lambda t: per_orientation_forward(layer, t, "lattice")):
        layer.zero_grad()
        x.grad = None
        out = forward(x)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append([out, x.grad] + [p.grad for p in layer.parameters()])
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
