"""The Mamba block: mamba_ssm's parameter names/shapes load, its forward equals an explicit
functional version (nn.Conv1d + the loop scan), the paper's initialisation, packed sequences."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from everygraph.nn import Mamba
from everygraph.nn.mamba import causal_conv1d
from everygraph.sequence import selective_scan_reference

F64 = torch.float64


def mamba_ssm_state_dict(d_model, d_state=16, d_conv=4, expand=2, seed=0, dtype=F64):
    """A state dict with exactly the keys and shapes of mamba_ssm.modules.mamba_simple.Mamba
    (bias=False, conv_bias=True), filled with random numbers."""
    g = torch.Generator().manual_seed(seed)
    d_inner = expand * d_model
    dt_rank = math.ceil(d_model / 16)
    shapes = {
        "in_proj.weight": (2 * d_inner, d_model),
        "conv1d.weight": (d_inner, 1, d_conv),
        "conv1d.bias": (d_inner,),
        "x_proj.weight": (dt_rank + 2 * d_state, d_inner),
        "dt_proj.weight": (d_inner, dt_rank),
        "dt_proj.bias": (d_inner,),
        "A_log": (d_inner, d_state),
        "D": (d_inner,),
        "out_proj.weight": (d_model, d_inner),
    }
    return {k: torch.randn(*s, generator=g, dtype=dtype) * 0.5 for k, s in shapes.items()}


def functional_mamba(sd, hidden, d_state, suffix="", reverse=False):
    """mamba_ssm's non-fused forward path, written out from a state dict: nn.Conv1d with
    padding d_conv-1 cut to L, SiLU, x_proj, dt_proj, the reference scan, out_proj."""
    L = hidden.shape[1]
    xz = (hidden @ sd["in_proj.weight"].t()).transpose(1, 2)
    x, z = xz.chunk(2, dim=1)
    d_inner = x.shape[1]
    w, b = sd["conv1d" + suffix + ".weight"], sd["conv1d" + suffix + ".bias"]
    if reverse:
        x = F.conv1d(x.flip(-1), w, b, padding=w.shape[-1] - 1, groups=d_inner)[..., :L].flip(-1)
    else:
        x = F.conv1d(x, w, b, padding=w.shape[-1] - 1, groups=d_inner)[..., :L]
    x = F.silu(x)
    x_dbl = x.transpose(1, 2) @ sd["x_proj" + suffix + ".weight"].t()
    dt_rank = sd["dt_proj" + suffix + ".weight"].shape[1]
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    dt = (dt @ sd["dt_proj" + suffix + ".weight"].t()).transpose(1, 2)
    A = -torch.exp(sd["A_log" if not suffix else "A_b_log"])
    return selective_scan_reference(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), sd["D" + suffix], z=z,
                                    delta_bias=sd["dt_proj" + suffix + ".bias"], delta_softplus=True,
                                    reverse=reverse)


def test_mamba_ssm_state_dict_loads_and_forward_matches():
    sd = mamba_ssm_state_dict(d_model=8, d_state=4)
    block = Mamba(d_model=8, d_state=4, dtype=F64)
    assert set(block.state_dict()) == set(sd)
    for k, v in block.state_dict().items():
        assert v.shape == sd[k].shape, k
    block.load_state_dict(sd, strict=True)
    hidden = torch.randn(2, 13, 8, dtype=F64)
    want = functional_mamba(sd, hidden, 4).transpose(1, 2) @ sd["out_proj.weight"].t()
    torch.testing.assert_close(block(hidden), want)


def test_bidirectional_is_forward_plus_reverse_branch():
    sd = mamba_ssm_state_dict(d_model=8, d_state=4)
    extra = mamba_ssm_state_dict(d_model=8, d_state=4, seed=1)
    for k in ("conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "D"):
        name, _, leaf = k.rpartition(".")
        sd[(name + "_b." + leaf) if name else k + "_b"] = extra[k]
    sd["A_b_log"] = extra["A_log"]
    block = Mamba(d_model=8, d_state=4, bidirectional=True, dtype=F64)
    block.load_state_dict(sd, strict=True)
    hidden = torch.randn(2, 11, 8, dtype=F64)
    y = functional_mamba(sd, hidden, 4) + functional_mamba(sd, hidden, 4, suffix="_b", reverse=True)
    torch.testing.assert_close(block(hidden), y.transpose(1, 2) @ sd["out_proj.weight"].t())
    # the reverse branch sees the future: the first output depends on the last input
    hidden2 = hidden.clone()
    hidden2[:, -1] += 1
    assert not torch.allclose(block(hidden2)[:, 0], block(hidden)[:, 0])


def test_paper_initialisation():
    torch.manual_seed(0)
    block = Mamba(d_model=40, d_state=16)
    assert block.d_inner == 80 and block.dt_rank == 3 and block.d_conv == 4
    torch.testing.assert_close(block.A_log, torch.log(torch.arange(1, 17.0)).expand(80, 16))
    assert torch.equal(block.D, torch.ones(80))
    dt = F.softplus(block.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert block.dt_proj.weight.abs().max() <= 3 ** -0.5
    assert "d_model=40" in repr(block) and "d_state=16" in repr(block)


@pytest.mark.parametrize("reverse", [False, True])
def test_causal_conv_matches_conv1d_on_each_sequence(reverse):
    x = torch.randn(2, 5, 30, dtype=F64)
    w, b = torch.randn(5, 1, 4, dtype=F64), torch.randn(5, dtype=F64)
    cu = torch.tensor([0, 2, 2, 13, 30])
    packed = causal_conv1d(x, w, b, cu, reverse=reverse)
    for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if hi == lo:  # an empty sequence: nothing to compare
            continue
        part = x[..., lo:hi].flip(-1) if reverse else x[..., lo:hi]
        want = F.conv1d(part, w, b, padding=3, groups=5)[..., : hi - lo]
        torch.testing.assert_close(packed[..., lo:hi], want.flip(-1) if reverse else want)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_sequences_equal_one_by_one(bidirectional):
    block = Mamba(d_model=8, d_state=4, bidirectional=bidirectional, dtype=F64)
    lengths = [3, 17, 1, 9]
    cu = torch.tensor([0, 3, 20, 21, 30])
    hidden = torch.randn(2, 30, 8, dtype=F64)
    packed = block(hidden, cu_seqlens=cu)
    for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist()):
        torch.testing.assert_close(packed[:, lo:hi], block(hidden[:, lo:hi]))
    assert sum(lengths) == 30


def test_gradients_flow_to_every_parameter():
    block = Mamba(d_model=8, d_state=4, bidirectional=True)
    block(torch.randn(2, 12, 8)).square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"d_model=8.*\[2, 5, 7\]"):
        Mamba(d_model=8)(torch.randn(2, 5, 7))
