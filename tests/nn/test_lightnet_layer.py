"""The LightNet layer against its equations written out with the reference loop."""

import pytest
import torch
import torch.nn.functional as F

from everygraph.graphlib import DAG, Lattice
from everygraph.nn import LightNet
from everygraph.sequence import lightnet_scan_reference

STRUCTURES = {
    "sequence": (None, 7),
    "grid": (Lattice((3, 4)), 12),
    "grid_flipped": (Lattice((3, 4), flip=(False, True)), 12),
    "dag": (DAG(torch.tensor([[0, 0, 1, 2, 1, 3, 3], [1, 2, 3, 3, 4, 4, 5]])), 6),
}


def _by_hand(layer: LightNet, x, structure):
    H = layer.num_heads
    q = F.silu(x @ layer.q_proj.weight.T).unflatten(-1, (H, -1))
    k = (x @ layer.k_proj.weight.T).unflatten(-1, (H, -1))
    v = (x @ layer.v_proj.weight.T).unflatten(-1, (H, -1))
    o = lightnet_scan_reference(structure, q, k, v)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + layer.norm_eps) * layer.norm.weight
    gate = torch.sigmoid(x @ layer.g_proj.weight.T).unflatten(-1, (H, -1))
    return (o * gate).flatten(-2) @ layer.o_proj.weight.T


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_layer_equals_its_equations(name):
    structure, N = STRUCTURES[name]
    torch.manual_seed(0)
    layer = LightNet(8, num_heads=2, expand_k=0.5).double()
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, N, 8, dtype=torch.float64, requires_grad=True)
    got = layer(x, structure)
    torch.testing.assert_close(got, _by_hand(layer, x, structure), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer(x[0], structure), got[0], rtol=1e-12, atol=1e-12)
    got.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_reset_parameters_repr_and_bad_input():
    layer = LightNet(8, num_heads=2)
    torch.manual_seed(1)
    layer.reset_parameters()
    first = {k: v.clone() for k, v in layer.state_dict().items()}
    torch.manual_seed(1)
    layer.reset_parameters()
    assert all(torch.equal(first[k], v) for k, v in layer.state_dict().items())
    assert repr(layer) == "LightNet(8, num_heads=2, key_dim=8, value_dim=8)"
    with pytest.raises(ValueError, match=r"x of shape \[B, N, 8\]"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="num_heads=3 must divide"):
        LightNet(8, num_heads=3)
