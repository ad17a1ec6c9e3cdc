"""selective_scan_fused (the compiled CPU kernels, numba) against selective_scan_reference (the
loop), forward and every gradient in float64; the dispatch of selective_scan to it, and the
pure-PyTorch fallback when the JIT is off."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import everygraph.sequence.mamba as mamba
from everygraph.sequence import selective_scan, selective_scan_reference
from everygraph.sequence.mamba import fused_cpu

F64 = torch.float64
needs_numba = pytest.mark.skipif(not fused_cpu.NUMBA_AVAILABLE, reason="numba (everygraph[cpu]) not installed")
#: crosses a chunk boundary of the backward pass, so the recomputation from saved entries runs
LENGTH = fused_cpu.CHUNK + 9
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def operand(kind: str, batch: int, channels: int, state: int, length: int, g: torch.Generator, dtype) -> torch.Tensor:
    if kind == "variable":
        return torch.randn(batch, state, length, generator=g, dtype=dtype)
    if kind == "grouped":
        return torch.randn(batch, 2, state, length, generator=g, dtype=dtype)
    return torch.randn(channels, state, generator=g, dtype=dtype)


def make_inputs(B_kind="variable", C_kind="variable", batch=2, channels=4, state=3, length=LENGTH, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return dict(
        u=torch.randn(batch, channels, length, generator=g, dtype=dtype),
        delta=torch.randn(batch, channels, length, generator=g, dtype=dtype) * 0.5,
        A=-torch.rand(channels, state, generator=g, dtype=dtype) * 2 - 0.1,
        B=operand(B_kind, batch, channels, state, length, g, dtype),
        C=operand(C_kind, batch, channels, state, length, g, dtype),
        D=torch.randn(channels, generator=g, dtype=dtype),
        z=torch.randn(batch, channels, length, generator=g, dtype=dtype),
        delta_bias=torch.randn(channels, generator=g, dtype=dtype) * 0.3,
    )


def run_both(fast, inputs, optional, **kwargs):
    """Forward, last state and the gradients of every input of ``fast`` and the reference, for
    the same loss (weighted outputs and last state, so no gradient is trivially uniform)."""
    results = []
    for fn in (fast, selective_scan_reference):
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items() if k in NAMES[:5] or k in optional}
        out, last = fn(**leaves, return_last_state=True, **kwargs)
        w_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        w_last = torch.linspace(2, -1, last.numel(), dtype=last.dtype).view_as(last)
        loss = (out * w_out).sum() + (last * w_last).sum()
        grads = torch.autograd.grad(loss, list(leaves.values()))
        results.append((out, last, dict(zip(leaves, grads))))
    return results


LAYOUTS = [("variable", "variable"), ("grouped", "grouped"), ("fixed", "fixed"), ("fixed", "variable"), ("grouped", "fixed")]
CU = {None: None, "packed": [0, 5, 5, 30, LENGTH - 3, LENGTH], "boundary": [0, fused_cpu.CHUNK, LENGTH]}


@needs_numba
@pytest.mark.parametrize("layout", LAYOUTS, ids=["-".join(x) for x in LAYOUTS])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cu", list(CU), ids=str)
@pytest.mark.parametrize("extras", [(), ("D", "z", "delta_bias")], ids=["plain", "D-z-bias"])
def test_fused_equals_reference_float64(layout, reverse, cu, extras):
    inputs = make_inputs(*layout, seed=len(extras) + 3 * reverse)
    cu_seqlens = None if CU[cu] is None else torch.tensor(CU[cu])
    softplus = bool(extras)
    (out, last, grads), (ref_out, ref_last, ref_grads) = run_both(
        fused_cpu.selective_scan_fused, inputs, extras, delta_softplus=softplus, reverse=reverse, cu_seqlens=cu_seqlens
    )
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, ref_last, rtol=1e-10, atol=1e-10)
    assert set(grads) == set(ref_grads)
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-9, msg=f"gradient of {name}")


@needs_numba
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_gradcheck(reverse):
    """The autograd function on the kernel layout, every input and both outputs, with resets."""
    g = torch.Generator().manual_seed(1)
    batch, channels, state, length = 2, 2, 3, fused_cpu.CHUNK + 3
    u = torch.randn(batch, channels, length, generator=g, dtype=F64, requires_grad=True)
    dt = (torch.rand(batch, channels, length, generator=g, dtype=F64) * 0.5 + 0.05).requires_grad_()
    A = (-torch.rand(channels, state, generator=g, dtype=F64) - 0.1).requires_grad_()
    B = torch.randn(batch, 1, length, state, generator=g, dtype=F64, requires_grad=True)
    C = torch.randn(1, channels, 1, state, generator=g, dtype=F64, requires_grad=True)
    resets = fused_cpu._resets(torch.tensor([True] * 10 + [False] + [True] * (length - 11)), length, reverse)
    final_slot = np.full(length, -1, dtype=np.int32)
    final_slot[[9, 40, length - 1]] = [0, 1, 2]  # states read inside, at the end and before a reset

    def fn(*xs):
        return fused_cpu.FusedSelectiveScan.apply(*xs, resets, final_slot, 3, reverse, True)

    assert torch.autograd.gradcheck(fn, (u, dt, A, B, C), eps=1e-6, atol=1e-7)


@needs_numba
def test_fused_float32_and_half_inputs():
    """float32 runs the polynomial exp; half inputs are computed in float32 and cast back."""
    inputs = make_inputs(length=200, channels=8, state=16, seed=5)
    ref = selective_scan_reference(**inputs, delta_softplus=True)
    f32 = {k: v.float() for k, v in inputs.items()}
    out32 = fused_cpu.selective_scan_fused(**f32, delta_softplus=True)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), ref, rtol=1e-4, atol=1e-4)
    out16 = fused_cpu.selective_scan_fused(**{k: v.bfloat16() for k, v in inputs.items()}, delta_softplus=True)
    ref16 = selective_scan_reference(**{k: v.bfloat16() for k, v in inputs.items()}, delta_softplus=True)
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.float(), ref16.float(), rtol=2e-2, atol=2e-2)


@needs_numba
def test_float32_exp_accuracy():
    """The inlined float32 exp against libm's double exp over the whole clamped range."""
    import numpy as np

    x = np.concatenate([np.linspace(-60, 88, 200_001), np.linspace(-1, 1, 20_001)]).astype(np.float32)
    got = fused_cpu._exp_kernel(x).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got / want - 1)) < 3e-7
    below = fused_cpu._exp_kernel(np.array([-1e4, -60.0], dtype=np.float32))
    assert below[0] == below[1]  # clamped, as documented
    assert abs(float(below[0]) / math.exp(fused_cpu.MIN_LOG_DECAY) - 1) < 3e-7


@needs_numba
def test_float32_base2_decay_accuracy():
    """The scan kernels' float32 decay (a log-decay in units of log(2), the rates scaled by
    log2(e)) against numpy's double exp2 over the whole clamped range (a length that leaves a
    tail), clamped below and above, a NaN kept a NaN."""
    low, high = fused_cpu.MIN_LOG_DECAY / math.log(2), 88.0 / math.log(2)
    x = np.concatenate([np.linspace(low, high, 400_001), np.linspace(-1, 1, 20_001)]).astype(np.float32)
    got = fused_cpu._exp_kernel(x, base2=True).astype(np.float64)
    assert np.max(np.abs(got / np.exp2(x.astype(np.float64)) - 1)) < 3e-7
    edges = fused_cpu._exp_kernel(np.array([np.nan, -1e4, low, 1e4, high, 0.5, -0.5, 3.0], dtype=np.float32),
                                  base2=True)
    assert np.isnan(edges[0])
    assert edges[1] == edges[2] and edges[3] == edges[4]
    assert abs(float(edges[1]) / 2.0 ** float(np.float32(low)) - 1) < 3e-7  # exp(-60) up to rounding of -60 / log(2)
    assert np.all(np.isfinite(edges[1:]))
    want = np.exp2(np.array([0.5, -0.5, 3.0]))
    assert np.max(np.abs(edges[5:] / want - 1)) < 3e-7


@needs_numba
def test_fused_no_grad_and_partial_grads():
    inputs = make_inputs(seed=7)
    with torch.no_grad():
        out = fused_cpu.selective_scan_fused(**inputs)
    torch.testing.assert_close(out, selective_scan_reference(**inputs), rtol=1e-10, atol=1e-10)
    # only B needs a gradient; non-contiguous u
    B = inputs["B"].clone().requires_grad_()
    u_strided = inputs["u"].transpose(0, 1).contiguous().transpose(0, 1)
    args = dict(inputs, u=u_strided, B=B)
    (gB,) = torch.autograd.grad(fused_cpu.selective_scan_fused(**args).square().sum(), [B])
    B2 = inputs["B"].clone().requires_grad_()
    (gB_ref,) = torch.autograd.grad(selective_scan_reference(**dict(inputs, B=B2)).square().sum(), [B2])
    torch.testing.assert_close(gB, gB_ref, rtol=1e-10, atol=1e-10)


@needs_numba
def test_fused_empty_sequence_and_errors():
    inputs = make_inputs(length=0)
    out, last = fused_cpu.selective_scan_fused(**inputs, return_last_state=True)
    assert out.shape == (2, 4, 0) and last.shape == (2, 4, 3) and not last.any()
    bad = make_inputs()
    bad["A"] = bad["A"][:, :2]
    with pytest.raises(ValueError, match="B must have shape"):
        fused_cpu.selective_scan_fused(**bad)


@needs_numba
def test_selective_scan_dispatches_to_fused(monkeypatch):
    monkeypatch.delenv(fused_cpu.DISABLE_ENV, raising=False)
    calls = []

    def spy(*args, **kwargs):
        calls.append("fused")
        return fused_cpu.selective_scan_fused(*args, **kwargs)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the PyTorch recurrence ran although the fused kernel is available")

    monkeypatch.setattr(mamba, "selective_scan_fused", spy)
    monkeypatch.setattr(mamba, "selective_scan_recurrent", must_not_run)
    inputs = make_inputs(seed=2)
    out = selective_scan(**inputs, delta_softplus=True)
    assert calls == ["fused"]
    torch.testing.assert_close(out, selective_scan_reference(**inputs, delta_softplus=True), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("how", ["env", "no-numba"])
def test_fallback_when_jit_is_off(monkeypatch, how):
    """With the JIT off (environment variable, or numba absent) selective_scan runs the PyTorch
    recurrence, which equals the reference forward and backward."""
    if how == "env":
        monkeypatch.setenv(fused_cpu.DISABLE_ENV, "1")
    else:
        monkeypatch.setattr(fused_cpu, "NUMBA_AVAILABLE", False)
    assert not fused_cpu.jit_enabled()
    calls = []

    def spy(*args, **kwargs):
        calls.append("recurrent")
        return mamba.recurrent.selective_scan_recurrent(*args, **kwargs)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the fused kernel ran although the JIT is off")

    monkeypatch.setattr(mamba, "selective_scan_recurrent", spy)
    monkeypatch.setattr(mamba, "selective_scan_fused", must_not_run)
    inputs = make_inputs("grouped", "fixed", seed=4)
    (out, last, grads), (ref_out, ref_last, ref_grads) = run_both(
        selective_scan, inputs, ("D", "z", "delta_bias"), delta_softplus=True, reverse=True,
        cu_seqlens=torch.tensor(CU["packed"]),
    )
    assert calls == ["recurrent"]
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, ref_last, rtol=1e-10, atol=1e-10)
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-9, msg=f"gradient of {name}")


def test_jit_switch_reads_the_environment(monkeypatch):
    for value, on in (("1", False), ("true", False), ("0", True), ("", True)):
        monkeypatch.setenv(fused_cpu.DISABLE_ENV, value)
        assert fused_cpu.jit_enabled() is (on and fused_cpu.NUMBA_AVAILABLE)


def test_fused_without_numba_says_how_to_install(monkeypatch):
    monkeypatch.setattr(fused_cpu, "NUMBA_AVAILABLE", False)
    with pytest.raises(RuntimeError, match="numba"):
        fused_cpu.selective_scan_fused(**make_inputs())



@needs_numba
def test_kernels_compile_without_a_writable_cache(monkeypatch):
    """numba refuses cache=True (RuntimeError) when no cache directory is writable; the kernels
    are then compiled without the on-disk cache instead of failing at import."""
    real_njit = fused_cpu.njit

    def njit_without_cache_dir(*args, cache=False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function: no locator available")
        return real_njit(*args, **kwargs)

    monkeypatch.setattr(fused_cpu, "njit", njit_without_cache_dir)

    def twice(x):
        return 2 * x

    assert fused_cpu._cached_njit()(twice)(21) == 42
