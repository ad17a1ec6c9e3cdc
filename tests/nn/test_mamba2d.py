"""Mamba2d: the documented block against a pixel loop of its 2D recurrence, gradients reach
every parameter, bad input."""

import pytest
import torch
import torch.nn.functional as F

from everygraph.graphlib import Lattice
from everygraph.nn import Mamba2d

DT = torch.float64


def pixel_scan(u, dt, A, B, C, split, flip):
    batch, X, Y, D = u.shape
    rows = range(X - 1, -1, -1) if flip[0] else range(X)
    cols = range(Y - 1, -1, -1) if flip[1] else range(Y)
    s0, s1 = (-1 if flip[0] else 1), (-1 if flip[1] else 1)
    h, y = {}, torch.zeros_like(u)
    for x in rows:
        for c in cols:
            incoming = 0
            if (x - s0, c) in h:
                incoming = incoming + split[:, x - s0, c, :, None] * h[x - s0, c]
            if (x, c - s1) in h:
                incoming = incoming + (1 - split[:, x, c - s1, :, None]) * h[x, c - s1]
            h[x, c] = torch.exp(dt[:, x, c, :, None] * A) * incoming + (dt[:, x, c] * u[:, x, c])[..., None] * B[:, x, c, None, :]
            y[:, x, c] = (h[x, c] * C[:, x, c, None, :]).sum(-1)
    return y


def test_block_equals_its_formula():
    torch.manual_seed(0)
    layer = Mamba2d(d_model=4, d_state=3, expand=1).double()
    with torch.no_grad():
        layer.split_bias.uniform_(-2, 2)  # an uneven split, different per orientation
    x = torch.randn(2, 3, 4, 4, dtype=DT)
    u, z = layer.in_proj(x).chunk(2, dim=-1)
    u = F.silu(layer.conv2d(u.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
    y = 0
    for o, flip in enumerate(Lattice.orientations(2)):
        low, B, C = torch.split(u @ layer.x_proj_weight[o].t(), [layer.dt_rank, 3, 3], dim=-1)
        dt = F.softplus(low @ layer.dt_proj_weight[o].t() + layer.dt_proj_bias[o])
        split = torch.sigmoid(low @ layer.split_weight[o].t() + layer.split_bias[o])
        y = y + pixel_scan(u, dt, -torch.exp(layer.A_log[o]), B, C, split, flip) + layer.D[o] * u
    torch.testing.assert_close(layer(x), layer.out_proj(y * F.silu(z)))


def test_gradients_reach_every_parameter_and_shapes():
    torch.manual_seed(1)
    layer = Mamba2d(d_model=8, d_state=4)
    for shape in [(2, 3, 4), (1, 1, 5), (1, 1, 1)]:
        x = torch.randn(*shape, 8)
        out = layer(x)
        assert out.shape == x.shape and torch.isfinite(out).all()
    layer.zero_grad()
    layer(torch.randn(1, 3, 3, 8)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert "stable=True" in repr(layer)


def test_unstable_variant_and_bad_input():
    torch.manual_seed(2)
    stable, naive = Mamba2d(8, d_state=4), Mamba2d(8, d_state=4, stable=False)
    naive.load_state_dict(stable.state_dict())
    x = torch.randn(1, 4, 4, 8)
    assert not torch.allclose(stable(x), naive(x))
    with pytest.raises(ValueError, match="channels last"):
        stable(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        Mamba2d(8, d_conv=4)
