"""The fused CPU kernels' channel blocks (LANES channels per vector) at their edges, against
selective_scan_reference in float64, forward, final states and every gradient: channel
counts that are not a multiple of LANES, groups that span blocks or are smaller than a
block, N of 5 to 33, fixed and grouped B/C, packed sequences and both directions; float32 against the reference at a
benchmark-like shape; the vector exp."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from everygraph.sequence import selective_scan_reference
from everygraph.sequence.mamba import fused_cpu

pytestmark = pytest.mark.skipif(not fused_cpu.NUMBA_AVAILABLE, reason="numba (everygraph[cpu]) not installed")
F64 = torch.float64


def scan_inputs(batch, channels, state, length, B_groups, C_groups, dtype=F64, seed=0):
    """``B_groups``/``C_groups``: an int (``[batch, G, N, L]``) or ``"fixed"`` (``[D, N]``)."""
    g = torch.Generator().manual_seed(seed)

    def operand(groups):
        if groups == "fixed":
            return torch.randn(channels, state, generator=g, dtype=dtype)
        return torch.randn(batch, groups, state, length, generator=g, dtype=dtype)

    return dict(
        u=torch.randn(batch, channels, length, generator=g, dtype=dtype),
        delta=torch.randn(batch, channels, length, generator=g, dtype=dtype) * 0.5,
        A=-torch.rand(channels, state, generator=g, dtype=dtype) * 2 - 0.1,
        B=operand(B_groups),
        C=operand(C_groups),
        D=torch.randn(channels, generator=g, dtype=dtype),
        delta_bias=torch.randn(channels, generator=g, dtype=dtype) * 0.3,
    )


def outputs_and_gradients(fn, inputs, **kwargs):
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    out, last = fn(**leaves, delta_softplus=True, return_last_state=True, **kwargs)
    w_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    w_last = torch.linspace(2, -1, last.numel(), dtype=last.dtype).view_as(last)
    grads = torch.autograd.grad((out * w_out).sum() + (last * w_last).sum(), list(leaves.values()))
    return out, last, dict(zip(leaves, grads))


# (channels, state, B groups, C groups): blocks of LANES = 8 channels
CASES = {
    "12ch-groups-span-blocks-N19": (12, 19, 3, 3),  # groups of 4: block 0 holds two
    "8ch-one-group-per-channel": (8, 5, 8, 8),  # every lane its own group, input-dependent
    "20ch-2groups-fixedC-N33": (20, 33, 2, "fixed"),  # groups of 10: one spans a block edge
    "16ch-shared-N16": (16, 16, 1, 1),  # two full blocks of one group
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_channel_blocks_equal_the_reference_float64(case, reverse, packed):
    channels, state, B_groups, C_groups = CASES[case]
    length = fused_cpu.CHUNK + 11  # two chunks: the backward pass recomputes from a saved state
    inputs = scan_inputs(2, channels, state, length, B_groups, C_groups, seed=len(case) + reverse)
    cu = torch.tensor([0, 7, 7, fused_cpu.CHUNK + 2, length]) if packed else None
    out, last, grads = outputs_and_gradients(fused_cpu.selective_scan_fused, inputs, reverse=reverse, cu_seqlens=cu)
    ref_out, ref_last, ref_grads = outputs_and_gradients(selective_scan_reference, inputs, reverse=reverse,
                                                         cu_seqlens=cu)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, ref_last, rtol=1e-10, atol=1e-10)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-9, msg=f"gradient of {name}")


def test_float32_at_a_mamba_shape_matches_the_reference():
    """float32 (the polynomial exp, FMAs) against the float64 reference at N=16, 3 blocks."""
    inputs = scan_inputs(1, 24, 16, 300, 1, 1, seed=11)
    f32 = {k: v.float() for k, v in inputs.items()}
    out, last, grads = outputs_and_gradients(fused_cpu.selective_scan_fused, f32)
    ref_out, ref_last, ref_grads = outputs_and_gradients(selective_scan_reference, inputs)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(last.double(), ref_last, rtol=1e-4, atol=1e-4)
    for name in ref_grads:
        scale = ref_grads[name].abs().max().item()
        torch.testing.assert_close(grads[name].double(), ref_grads[name], rtol=1e-3, atol=1e-4 * scale,
                                   msg=f"gradient of {name}")


def test_zero_state_size_gives_the_skip_term_only():
    inputs = scan_inputs(2, 9, 0, 70, 1, 1)
    with torch.no_grad():
        out = fused_cpu.selective_scan_fused(**inputs, delta_softplus=True)
    torch.testing.assert_close(out, inputs["u"] * inputs["D"][:, None], rtol=0, atol=0)


def test_vector_exp_propagates_nan_and_clamps():
    """The vector form (8 values at a time) keeps a NaN a NaN and clamps like the scalar form."""
    x = np.array([np.nan, -1e4, -60.0, 0.0, 1.0, 88.0, -0.5, 3.0], dtype=np.float32)
    got = fused_cpu._exp_kernel(x)
    assert np.isnan(got[0])
    assert got[1] == got[2]
    want = np.exp(x[2:].astype(np.float64))
    assert np.max(np.abs(got[2:] / want - 1)) < 3e-7
    assert abs(float(got[1]) / math.exp(fused_cpu.MIN_LOG_DECAY) - 1) < 3e-7
