"""PLSTM2d on small grids runs its four orientations as one masked attention with the grid's
gating matrix: equal (float64, forward and every gradient) to the stacked scan it replaces and
to the reference loop of each orientation's own lattice, with and without the compiled loop."""

import pytest
import torch

from everygraph.nn import PLSTM2d
from everygraph.sequence.mamba.fused_cpu import DISABLE_ENV, jit_enabled
from plstm2d_orientations_loop import per_orientation_forward

JIT = [pytest.param(True, id="compiled", marks=pytest.mark.skipif(not jit_enabled(), reason="numba absent or disabled")),
       pytest.param(False, id="torch")]


def scan_forward(layer: PLSTM2d, x: torch.Tensor) -> torch.Tensor:
    """The layer with the dense form switched off: the four orientations as one stacked scan."""
    layer.dense = lambda *args: False
    try:
        return layer(x)
    finally:
        del layer.dense


def outputs_and_grads(layer, forward, x):
    layer.zero_grad()
    x.grad = None
    out = forward(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return [out, x.grad] + [p.grad.clone() for p in layer.parameters()]


@pytest.mark.parametrize("jit", JIT)
@pytest.mark.parametrize("mode,paper_gates,shape", [
    ("P", False, (6, 6)), ("D", False, (6, 6)), ("P", True, (1, 7)), ("D", True, (5, 1)), ("D", False, (3, 5)),
])
def test_dense_equals_stacked_scan_and_reference(jit, mode, paper_gates, shape, monkeypatch):
    if not jit:
        monkeypatch.setenv(DISABLE_ENV, "1")
    torch.manual_seed(sum(shape) + 7 * paper_gates)
    layer = PLSTM2d(16, num_heads=2, mode=mode, paper_gates=paper_gates).double()  # head size 8
    assert layer.dense(*shape)
    with torch.no_grad():  # gates away from their initial values, so that every path matters
        layer.gate_proj.bias.add_(torch.randn_like(layer.gate_proj.bias))
        layer.gate_proj.weight.mul_(3)
    x = torch.randn(2, *shape, 16, dtype=torch.float64, requires_grad=True)
    dense = outputs_and_grads(layer, layer, x)
    for forward in (lambda t: scan_forward(layer, t), lambda t: per_orientation_forward(layer, t, "reference")):
        for got, want in zip(dense, outputs_and_grads(layer, forward, x), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_dense_only_where_the_matrix_is_small():
    layer = PLSTM2d(32, num_heads=4)  # head size 8: dk dv = 64
    assert layer.dense(6, 6) and layer.dense(1, 42)
    assert not layer.dense(7, 7) and not layer.dense(16, 16)


def test_dense_float32_close_to_float64():
    torch.manual_seed(0)
    layer = PLSTM2d(32, num_heads=4, mode="D")
    x = torch.randn(3, 6, 6, 32)
    out = layer(x)
    torch.testing.assert_close(out.double(), layer.double()(x.double()), rtol=1e-4, atol=1e-5)
