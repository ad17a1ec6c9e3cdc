"""The S4D layer: the S4 authors' state dict layout loads; the paper's initialisation; both
modes agree; the forward is the standalone block's computation written out."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from everygraph.nn import S4D
from everygraph.nn.s4d import s4d_init_A

H, N = 6, 8


def _official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the parameter names and shapes of the standalone S4D module."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "D": torch.randn(H, generator=gen),
        "kernel.log_dt": torch.rand(H, generator=gen) * -4,
        "kernel.C": torch.randn(H, N // 2, 2, generator=gen),
        "kernel.log_A_real": torch.randn(H, N // 2, generator=gen) * 0.1 + math.log(0.5),
        "kernel.A_imag": torch.randn(H, N // 2, generator=gen) * 3,
        "output_linear.0.weight": torch.randn(2 * H, H, 1, generator=gen),
        "output_linear.0.bias": torch.randn(2 * H, generator=gen),
    }


def test_official_state_dict_loads_strictly_and_forward_is_the_block():
    layer = S4D(H, d_state=N).double()
    sd = {k: v.double() for k, v in _official_state_dict().items()}
    layer.load_state_dict(sd, strict=True)
    assert set(layer.state_dict()) == set(sd)
    u = torch.randn(2, H, 30, dtype=torch.float64)
    # the block written out independently: kernel by an explicit power loop, direct convolution
    dt = sd["kernel.log_dt"].exp()
    A = torch.complex(-sd["kernel.log_A_real"].exp(), sd["kernel.A_imag"])
    C = torch.view_as_complex(sd["kernel.C"].contiguous())
    dA = torch.exp(dt[:, None] * A)
    coef = C * (dA - 1) / A
    K = torch.stack([2 * (coef * dA**l).sum(-1).real for l in range(30)], -1)  # [H, L]
    y = torch.zeros_like(u)
    for t in range(30):
        y[..., t] = (K[:, : t + 1].flip(-1) * u[..., : t + 1]).sum(-1)
    y = y + sd["D"][:, None] * u
    y = F.gelu(y)
    y = F.glu(F.conv1d(y, sd["output_linear.0.weight"], sd["output_linear.0.bias"]), dim=-2)
    torch.testing.assert_close(layer(u), y)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_conv_and_recurrent_layers_agree(discretization):
    torch.manual_seed(0)
    conv = S4D(H, d_state=N, transposed=False, discretization=discretization).double()
    rec = S4D(H, d_state=N, transposed=False, discretization=discretization, mode="recurrent").double()
    rec.load_state_dict(conv.state_dict())
    u = torch.randn(3, 25, H, dtype=torch.float64)
    y_conv, y_rec = conv(u), rec(u)
    torch.testing.assert_close(y_conv, y_rec)
    g_conv = torch.autograd.grad(y_conv.sum(), list(conv.parameters()))
    g_rec = torch.autograd.grad(y_rec.sum(), list(rec.parameters()))
    for a, b in zip(g_conv, g_rec):
        torch.testing.assert_close(a, b)


def test_initialisation_is_the_papers():
    torch.manual_seed(1)
    layer = S4D(64, d_state=16)
    assert (layer.kernel.log_dt >= math.log(1e-3)).all() and (layer.kernel.log_dt <= math.log(1e-1)).all()
    torch.testing.assert_close(-layer.kernel.log_A_real.exp(), torch.full((64, 8), -0.5))
    torch.testing.assert_close(layer.kernel.A_imag, (math.pi * torch.arange(8.0)).expand(64, 8))
    inv = S4D(4, d_state=16, init="inv")
    j = torch.arange(8.0)
    torch.testing.assert_close(inv.kernel.A_imag, (16 / math.pi * (16 / (2 * j + 1) - 1)).expand(4, 8))
    log_A_real, A_imag = s4d_init_A(2, 3, "inv")
    assert log_A_real.shape == A_imag.shape == (2, 3)
    before = layer.kernel.C.detach().clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.kernel.C)


def test_repr_and_bad_arguments():
    assert repr(S4D(4, d_state=8)) == "S4D(d_model=4, d_state=8, init='lin', discretization='zoh', mode='conv', transposed=True)"
    with pytest.raises(ValueError, match="init"):
        S4D(4, init="legs")
    with pytest.raises(ValueError, match="even"):
        S4D(4, d_state=7)
    with pytest.raises(ValueError, match="mode"):
        S4D(4, mode="fft")
    with pytest.raises(ValueError, match="channels"):
        S4D(4, d_state=8)(torch.randn(2, 5, 10))
