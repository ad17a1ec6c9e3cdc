"""A causal form never looks ahead, not even at a NaN: a NaN or inf at position t of a sequence
input leaves every output before t exactly as without it, in every execution (fused,
chunked, recurrent, FFT or path mappings), and for packed sequences it stays in its own
sequence.

Reference: the same call on the clean input (the outputs before t cannot depend on position
t). Gradients are not part of the promise: autograd multiplies the zero cotangent of an
output at or after t by the NaN (0 * nan = nan), even in the per-step reference loops, so a
loss on the outputs before t still gets NaN gradients (see docs/input-validation.md).
"""

from __future__ import annotations

import pytest
import torch

from everygraph import graphlib, nn, sequence

F64 = torch.float64
L = 12
POSITIONS = (0, 5)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_causal(call, inputs: dict, axes: dict, out_axis: int, reverse: bool = False) -> None:
    clean = call(**inputs)
    first = next(iter(axes))
    for name, axis in axes.items():
        for value in (float("nan"), float("inf")) if name == first else (float("nan"),):
            for t in POSITIONS:
                poisoned = dict(inputs)
                poisoned[name] = inputs[name].clone()
                poisoned[name].select(axis, t).fill_(value)
                out = call(**poisoned)
                before = slice(t + 1, None) if reverse else slice(0, t)
                index = (slice(None),) * out_axis + (before,)
                torch.testing.assert_close(out[index], clean[index], rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}[{t}] = {value}: {m}")
                if name == first and value != value:  # the poison is really there: it reaches position t itself
                    assert torch.isnan(out.select(out_axis, t)).any(), f"{name}[{t}] = nan vanished"


def _mamba_inputs() -> dict:
    g = _gen(1)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    return dict(u=r(2, 3, L), delta=r(2, 3, L), A=-torch.rand(3, 4, generator=g, dtype=F64), B=r(2, 4, L), C=r(2, 4, L),
                D=r(3), z=r(2, 3, L))


@pytest.mark.parametrize("execution", ["fused", "recurrent", "reference"])
def test_selective_scan(execution):
    if execution == "fused":
        pytest.importorskip("numba")
    axes = dict(u=2, delta=2, B=2, C=2)
    _assert_causal(lambda **kw: sequence.selective_scan(**kw, delta_softplus=True, execution=execution), _mamba_inputs(), axes, 2)
    _assert_causal(lambda **kw: sequence.selective_scan(**kw, delta_softplus=True, reverse=True, execution=execution),
                   _mamba_inputs(), axes, 2, reverse=True)


def _scan_inputs(kind: str) -> dict:
    g = _gen(2)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    u = lambda *s: torch.rand(*s, generator=g, dtype=F64)  # noqa: E731
    gate = {"scalar": (), "diagonal": (3,), "elementwise": (3, 2)}[kind]
    return dict(q=r(2, L, 2, 3), k=r(2, L, 2, 3), v=r(2, L, 2, 2), source=u(2, L - 1, 2), transition=u(2, L - 2, 2, *gate),
                mark=u(2, L - 1, 2), direct=r(2, L, 2))


@pytest.mark.parametrize("kind, execution", [
    (kind, execution) for kind in ("scalar", "diagonal", "elementwise")
    for execution, kinds in sequence.SUPPORTED_KINDS.items() if kind in kinds and execution != "triton"
])
def test_scan_on_a_path(kind, execution):
    _assert_causal(lambda **kw: sequence.scan(graphlib.Lattice((L,)), **kw, kind=kind, execution=execution),
                   _scan_inputs(kind), dict(q=1, k=1, v=1, direct=1), 1)


def _gla_inputs() -> dict:
    g = _gen(3)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    return dict(q=r(2, L, 2, 3), k=r(2, L, 2, 3), v=r(2, L, 2, 2), log_alpha=-torch.rand(2, L, 2, 3, generator=g, dtype=F64))


@pytest.mark.parametrize("form", ["chunked", "default", "reference"])
def test_gated_linear_attention(form):
    call = {"chunked": lambda **kw: sequence.gated_linear_attention_chunked(**kw, chunk_size=4),
            "default": lambda **kw: sequence.gated_linear_attention(None, **kw),
            "reference": sequence.gated_linear_attention_reference}[form]
    _assert_causal(call, _gla_inputs(), dict(q=1, k=1, v=1, log_alpha=1), 1)


def test_gated_linear_attention_keeps_a_nan_in_its_packed_sequence():
    x = _gla_inputs()
    offsets = torch.tensor([0, 5, L])
    clean = sequence.gated_linear_attention_chunked(**x, cu_seqlens=offsets, chunk_size=8)
    for name in ("k", "v", "q"):
        poisoned = dict(x, **{name: x[name].clone()})
        poisoned[name][:, 2] = float("nan")  # inside the first sequence, in the chunk shared with the second
        out = sequence.gated_linear_attention_chunked(**poisoned, cu_seqlens=offsets, chunk_size=8)
        torch.testing.assert_close(out[:, :2], clean[:, :2], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out[:, 5:], clean[:, 5:], rtol=1e-12, atol=1e-12)


def _delta_inputs() -> dict:
    g = _gen(4)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    k = torch.nn.functional.normalize(r(2, L, 2, 2, 3), dim=-1)
    return dict(q=r(2, L, 2, 3), k=k, v=r(2, L, 2, 2, 2), beta=torch.rand(2, L, 2, 2, generator=g, dtype=F64),
                gate=torch.rand(2, L, 2, generator=g, dtype=F64))


@pytest.mark.parametrize("execution", [None, "reference"])
@pytest.mark.parametrize("reverse", [False, True])
def test_delta_product(execution, reverse):
    _assert_causal(lambda **kw: sequence.delta_product(graphlib.Lattice((L,)), **kw, execution=execution, reverse=reverse),
                   _delta_inputs(), dict(q=1, k=1, v=1, beta=1, gate=1), 1, reverse=reverse)


def test_lightnet():
    g = _gen(5)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    _assert_causal(lambda **kw: sequence.lightnet_scan(None, **kw), dict(q=r(2, L, 2, 3), k=r(2, L, 2, 3), v=r(2, L, 2, 2)),
                   dict(q=1, k=1, v=1), 1)


@pytest.mark.parametrize("mode", ["conv", "recurrent"])
def test_s4d(mode):
    g = _gen(6)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    c = lambda: torch.complex(r(2, 3), r(2, 3))  # noqa: E731
    x = dict(u=r(2, 2, L), log_dt=r(2) - 2, A=torch.complex(-0.5 - torch.rand(2, 3, generator=g, dtype=F64), r(2, 3)),
             B=c(), C=c(), D=r(2))
    _assert_causal(lambda **kw: sequence.s4d(**kw, mode=mode), x, dict(u=2), 2)
    # the direct convolution taken for non-finite inputs is the FFT's result on finite ones
    poisoned = x["u"].clone()
    poisoned[:, :, -1] = float("nan")
    torch.testing.assert_close(sequence.s4d(**dict(x, u=poisoned), mode=mode)[..., :-1], sequence.s4d(**x, mode=mode)[..., :-1])


@pytest.mark.parametrize("make", [
    lambda: nn.PLSTM1d(8, num_heads=2, mode="D"), lambda: nn.PLSTM1d(8, num_heads=2, mode="P"),
    lambda: nn.Mamba(8, d_state=4, d_conv=3, expand=1), lambda: nn.GatedLinearAttention(8, num_heads=2, gate_low_rank_dim=2),
    lambda: nn.DeltaProduct(8, num_heads=2), lambda: nn.DeltaProduct(8, num_heads=2, use_short_conv=True),
    lambda: nn.LightNet(8, num_heads=2), lambda: nn.S4D(8, d_state=4, transposed=False),
], ids=["PLSTM1d-D", "PLSTM1d-P", "Mamba", "GatedLinearAttention", "DeltaProduct", "DeltaProduct-conv", "LightNet", "S4D"])
def test_causal_layers(make):
    torch.manual_seed(0)
    layer = make().double().eval()
    _assert_causal(lambda x: layer(x), dict(x=torch.randn(2, L, 8, generator=_gen(7), dtype=F64)), dict(x=1), 1)
