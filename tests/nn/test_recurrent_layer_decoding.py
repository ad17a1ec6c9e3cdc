"""Decoding and carried states of the recurrent layers (GLA, DeltaProduct, S4D; LightNet has its
own in test_lightnet_layer.py), in float64: token-by-token ``step`` equals the full forward
pass position by position, the state after a prefix continues the scan exactly (split the
sequence anywhere, carry the state), and ``inference_params`` (the Mamba convention) does the
same through the cache."""

import pytest
import torch

from everygraph.graphlib import Lattice
from everygraph.nn import S4D, DeltaProduct, GatedLinearAttention, InferenceParams

F64 = torch.float64
LENGTH = 7


def _layers():
    torch.manual_seed(0)
    return {
        "GLA": GatedLinearAttention(8, expand_k=1.0, num_heads=2, gate_low_rank_dim=3, layer_idx=0),
        "DeltaProduct": DeltaProduct(8, num_heads=2, num_householder=2, layer_idx=0),
        "DeltaNet-short-conv": DeltaProduct(8, num_heads=2, num_householder=1, use_short_conv=True, conv_bias=True, layer_idx=0),
        "S4D-conv": S4D(8, d_state=6, transposed=False, mode="conv", layer_idx=0),
        "S4D-recurrent": S4D(8, d_state=6, transposed=False, mode="recurrent", layer_idx=0),
    }


def _scaled(layer):
    """float64, with output projections scaled up so that outputs are O(1) (fla's DeltaProduct
    initialisation makes them ~1e-2, which would make absolute tolerances meaningless)."""
    layer = layer.double()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("o_proj"):
                p.mul_(20)
    return layer


def _state_slots(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("name", list(_layers()))
def test_step_by_step_equals_the_full_forward(name):
    layer = _scaled(_layers()[name])
    x = torch.randn(2, LENGTH, 8, dtype=F64)
    full = layer(x)
    assert full.abs().max() > 0.1
    state = layer.allocate_inference_cache(2)
    steps = torch.cat([layer.step(x[:, t:t + 1], state)[0] for t in range(LENGTH)], dim=1)
    torch.testing.assert_close(steps, full, rtol=1e-10, atol=1e-12)
    _, final = layer(x, return_state=True)
    for got, want in zip(_state_slots(state), _state_slots(final)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(_layers()))
def test_state_after_a_prefix_continues_the_scan(name):
    layer = _scaled(_layers()[name])
    x = torch.randn(2, LENGTH, 8, dtype=F64, requires_grad=True)
    full = layer(x)
    (grad_full,) = torch.autograd.grad(full.square().sum(), x)
    for split in (0, 3, LENGTH):
        head, state = layer(x[:, :split], return_state=True)
        tail = layer(x[:, split:], initial_state=state)
        joined = torch.cat([head, tail], dim=1)
        torch.testing.assert_close(joined, full, rtol=1e-10, atol=1e-12)
        (grad,) = torch.autograd.grad(joined.square().sum(), x)
        torch.testing.assert_close(grad, grad_full, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", list(_layers()))
def test_inference_params_prompt_then_tokens(name):
    layer = _scaled(_layers()[name])
    x = torch.randn(3, LENGTH, 8, dtype=F64)
    full = layer(x)
    params = InferenceParams(max_seqlen=LENGTH, max_batch_size=3)
    outputs = [layer(x[:, :3], inference_params=params)]
    params.seqlen_offset += 3
    for t in range(3, LENGTH):
        outputs.append(layer(x[:, t:t + 1], inference_params=params))
        params.seqlen_offset += 1
    torch.testing.assert_close(torch.cat(outputs, dim=1), full, rtol=1e-10, atol=1e-12)


def test_states_are_refused_where_they_do_not_apply():
    layers = _layers()
    x = torch.randn(1, 12, 8)
    with pytest.raises(ValueError, match="sequence"):
        layers["GLA"](x, Lattice((3, 4)), return_state=True)
    with pytest.raises(ValueError, match="sequences read left to right"):
        layers["DeltaProduct"](x.view(1, 3, 4, 8), Lattice((3, 4)), return_state=True)
    with pytest.raises(ValueError, match="sequences read left to right"):
        layers["DeltaProduct"](x, reverse=True, return_state=True)
    with pytest.raises(ValueError, match="the state must be a tuple"):
        layers["DeltaProduct"](x, initial_state=torch.zeros(1, 2, 4, 8))
    with pytest.raises(ValueError, match="initial_state must have shape"):
        layers["S4D-conv"](x, initial_state=torch.zeros(1, 8, 2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="layer_idx"):
        GatedLinearAttention(8, num_heads=2)(x, inference_params=InferenceParams(12, 1))
    for name in ("GLA", "DeltaProduct"):
        with pytest.raises(ValueError, match="step takes one token"):
            layers[name].step(x[:, :2], layers[name].allocate_inference_cache(1))


def test_one_inference_params_drives_a_mixed_stack():
    """A stack of Mamba, GLA, DeltaProduct, S4D and LightNet layers, one InferenceParams shared
    through their layer_idx keys, decodes a prompt then tokens exactly as the full pass."""
    from everygraph.nn import LightNet, Mamba

    torch.manual_seed(3)
    stack = torch.nn.ModuleList([
        Mamba(8, d_state=4, layer_idx=0),
        GatedLinearAttention(8, expand_k=1.0, num_heads=2, gate_low_rank_dim=3, layer_idx=1),
        DeltaProduct(8, num_heads=2, num_householder=2, use_short_conv=True, layer_idx=2),
        S4D(8, d_state=4, transposed=False, layer_idx=3),
        LightNet(8, num_heads=2, gate_low_rank_dim=3, layer_idx=4),
    ]).double()

    def model(h, params=None):
        for layer in stack:
            h = h + layer(h, inference_params=params)
        return h

    x = torch.randn(2, LENGTH, 8, dtype=F64)
    full = model(x)
    params = InferenceParams(max_seqlen=LENGTH, max_batch_size=2)
    outputs = [model(x[:, :2], params)]
    params.seqlen_offset += 2
    for t in range(2, LENGTH):
        outputs.append(model(x[:, t:t + 1], params))
        params.seqlen_offset += 1
    assert sorted(params.key_value_memory_dict) == [0, 1, 2, 3, 4]
    torch.testing.assert_close(torch.cat(outputs, dim=1), full, rtol=1e-10, atol=1e-12)
