"""The LightNet layer against its equations written out with the reference loop; its state dict
against flash-linear-attention's ``LightNetAttention`` layout; its decoding and state carry."""

import pytest
import torch
import torch.nn.functional as F

from everygraph.graphlib import DAG, Lattice
from everygraph.nn import InferenceParams, LightNet
from everygraph.sequence import lightnet_scan_reference

STRUCTURES = {
    "sequence": (None, 7),
    "grid": (Lattice((3, 4)), 12),
    "grid_flipped": (Lattice((3, 4), flip=(False, True)), 12),
    "dag": (DAG(torch.tensor([[0, 0, 1, 2, 1, 3, 3], [1, 2, 3, 3, 4, 4, 5]])), 6),
}


def _by_hand(layer: LightNet, x, structure):
    """fla's LightNetAttention forward, written out: silu(q), heads of width expand_ratio, the
    additive recurrence with scale 1/sqrt(dk), one RMS norm over hidden_size, a low-rank swish gate."""
    H = layer.num_heads
    q = F.silu(x @ layer.q_proj.weight.T).unflatten(-1, (H, -1))
    k = (x @ layer.k_proj.weight.T).unflatten(-1, (H, -1))
    v = (x @ layer.v_proj.weight.T).unflatten(-1, (H, -1))
    o = lightnet_scan_reference(structure, q, k, v).flatten(-2)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + layer.norm_eps) * layer.g_norm.weight
    gate = x @ layer.g_proj[0].weight.T @ layer.g_proj[1].weight.T
    return (o * F.silu(gate)) @ layer.o_proj.weight.T


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_layer_equals_its_equations(name):
    structure, N = STRUCTURES[name]
    torch.manual_seed(0)
    layer = LightNet(8, num_heads=2, expand_ratio=3, gate_low_rank_dim=5).double()
    with torch.no_grad():
        layer.g_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, N, 8, dtype=torch.float64, requires_grad=True)
    got = layer(x, structure)
    torch.testing.assert_close(got, _by_hand(layer, x, structure), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer(x[0], structure), got[0], rtol=1e-12, atol=1e-12)
    got.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_state_dict_loads_strictly_with_fla_names():
    """The key set and shapes of fla's ``LightNetAttention(hidden_size=16, num_heads=2,
    expand_ratio=4, gate_low_rank_dim=3)`` without short convolutions, built by hand from its
    module structure: a checkpoint with exactly these keys loads strictly and drives the output."""
    hidden, heads, ratio, rank = 16, 2, 4, 3
    expected = {
        "q_proj.weight": (heads * ratio, hidden),
        "k_proj.weight": (heads * ratio, hidden),
        "v_proj.weight": (hidden, hidden),
        "g_proj.0.weight": (rank, hidden),
        "g_proj.1.weight": (hidden, rank),
        "g_norm.weight": (hidden,),
        "o_proj.weight": (hidden, hidden),
    }
    layer = LightNet(hidden, num_heads=heads, expand_ratio=ratio, gate_low_rank_dim=rank)
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == expected
    g = torch.Generator().manual_seed(3)
    checkpoint = {k: torch.randn(*shape, generator=g) for k, shape in expected.items()}
    layer.load_state_dict(checkpoint, strict=True)
    x = torch.randn(1, 5, hidden, generator=g)
    torch.testing.assert_close(layer(x), _by_hand(layer, x, None), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        layer.load_state_dict({**checkpoint, "norm.weight": torch.ones(hidden)}, strict=True)


def test_decoding_equals_the_full_forward_and_states_carry():
    torch.manual_seed(2)
    layer = LightNet(8, num_heads=2, gate_low_rank_dim=4, layer_idx=3).double()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    full = layer(x)
    state = layer.allocate_inference_cache(2)
    steps = torch.cat([layer.step(x[:, t:t + 1], state)[0] for t in range(9)], dim=1)
    torch.testing.assert_close(steps, full, rtol=1e-12, atol=1e-12)
    _, full_state = layer(x, return_state=True)
    torch.testing.assert_close(state[0], full_state[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state[1], full_state[1], rtol=1e-12, atol=1e-12)
    for split in (0, 4, 9):  # prefix, then the rest from its state
        head, carried = layer(x[:, :split], return_state=True)
        tail = layer(x[:, split:], initial_state=carried)
        torch.testing.assert_close(torch.cat([head, tail], dim=1), full, rtol=1e-12, atol=1e-12)
    params = InferenceParams(max_seqlen=9, max_batch_size=2)
    prompt = layer(x[:, :5], inference_params=params)
    params.seqlen_offset += 5
    rest = [layer(x[:, t:t + 1], inference_params=params) for t in range(5, 9)]
    torch.testing.assert_close(torch.cat([prompt] + rest, dim=1), full, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="take a sequence"):
        layer(torch.randn(1, 12, 8, dtype=torch.float64), Lattice((3, 4)), return_state=True)
    with pytest.raises(ValueError, match="layer_idx"):
        LightNet(8, num_heads=2)(x, inference_params=InferenceParams(9, 2))


def test_reset_parameters_repr_and_bad_input():
    layer = LightNet(8, num_heads=2, gate_low_rank_dim=4)
    torch.manual_seed(1)
    layer.reset_parameters()
    first = {k: v.clone() for k, v in layer.state_dict().items()}
    torch.manual_seed(1)
    layer.reset_parameters()
    assert all(torch.equal(first[k], v) for k, v in layer.state_dict().items())
    assert repr(layer) == "LightNet(8, num_heads=2, key_dim=8, value_dim=8, gate_low_rank_dim=4)"
    with pytest.raises(ValueError, match=r"x of shape \[B, N, 8\]"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="num_heads=3 must divide"):
        LightNet(8, num_heads=3)
    with pytest.raises(ValueError, match="step takes one token"):
        layer.step(torch.randn(2, 2, 8), layer.allocate_inference_cache(2))
