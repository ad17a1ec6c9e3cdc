"""PLSTM1d against a plain loop over positions, plus the layer contract."""

import pytest
import torch

from everygraph.nn import PLSTM1d


def loop_1d(q, k, v, gates, scale):
    """h_t = scale (M_t q_t^T C_{t-1} + D_t (q_t . k_t) v_t); C_t = T_t C_{t-1} + S_t k_t v_t^T."""
    batch, length, heads, dk = q.shape
    out = torch.zeros(batch, length, heads, v.shape[-1], dtype=q.dtype)
    for b in range(batch):
        for h in range(heads):
            state = torch.zeros(dk, v.shape[-1], dtype=q.dtype)
            for t in range(length):
                qt, kt, vt = q[b, t, h], k[b, t, h], v[b, t, h]
                out[b, t, h] = scale * (gates["mark"][b, t, h] * qt @ state + gates["direct"][b, t, h] * (qt @ kt) * vt)
                state = gates["transition"][b, t, h] * state + gates["source"][b, t, h] * torch.outer(kt, vt)
    return out


def reference_forward(layer, x):
    q, k, v = layer.qkv(x)
    h = loop_1d(q, k, v, layer.gates(x), layer.head_dim**-0.5)
    h = layer.norm(h.reshape(-1, layer.dim)).reshape(*x.shape[:-1], layer.dim)
    return layer.out_proj(h)


@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("paper_gates", [False, True])
@pytest.mark.parametrize("length", [1, 2, 7])
def test_matches_loop(mode, paper_gates, length):
    layer = PLSTM1d(8, num_heads=2, mode=mode, paper_gates=paper_gates).double()
    x = torch.randn(2, length, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference_forward(layer, x), rtol=1e-10, atol=1e-10)


def test_long_sequence_matches_loop():
    """Long enough for the engine's chunkwise path to use several chunks."""
    layer = PLSTM1d(4, num_heads=1, mode="D", paper_gates=True).double()
    x = torch.randn(1, 300, 4, dtype=torch.float64, requires_grad=True)
    out, ref = layer(x), reference_forward(layer, x)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
    (g_fast,) = torch.autograd.grad(out.sum(), x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-8, atol=1e-10)


def test_gradients_match_loop():
    layer = PLSTM1d(4, num_heads=2, mode="D").double()
    x = torch.randn(1, 9, 4, dtype=torch.float64, requires_grad=True)
    (g_fast,) = torch.autograd.grad(layer(x).square().sum(), x)
    (g_ref,) = torch.autograd.grad(reference_forward(layer, x).square().sum(), x)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-10)


def test_gate_ranges():
    x = torch.randn(3, 20, 8) * 5
    p = PLSTM1d(8, 2, mode="P").gates(x)
    assert torch.equal(p["transition"], torch.ones_like(p["transition"]))  # criticality on a path
    d = PLSTM1d(8, 2, mode="D", paper_gates=True).gates(x)
    assert bool((d["transition"].abs() <= 1).all())
    assert bool(((d["source"] > 0) & (d["source"] < 1)).all())


def test_dtypes_state_dict_repr():
    layer = PLSTM1d(8, num_heads=2, mode="D")
    x = torch.randn(2, 5, 8)
    out32 = layer(x)
    assert out32.dtype == torch.float32 and out32.shape == (2, 5, 8)
    out64 = layer.double()(x.double())
    torch.testing.assert_close(out64.float(), out32, rtol=1e-4, atol=1e-5)
    out16 = layer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out16.dtype == torch.bfloat16
    # bfloat16 keeps 8 significant bits (unit roundoff u = 2^-8). The layer is a chain of about
    # 16 rounded stages (input, norms, q/k/v and gate projections, scan, output projection),
    # each adding at most u relative to the output's scale, so the relative RMS error against
    # the float32 result stays below 16 u (about 6%; over 15 seeds the largest seen is 11 u).
    rms = lambda t: t.square().mean().sqrt()  # noqa: E731
    assert rms(out16.float() - out32) <= 16 * 2**-8 * rms(out32)
    layer = layer.float()
    other = PLSTM1d(8, num_heads=2, mode="D")
    other.load_state_dict(layer.state_dict())
    torch.testing.assert_close(other(x), layer(x))
    assert repr(layer) == "PLSTM1d(8, num_heads=2, mode='D', paper_gates=False)"
    before = [p.clone() for p in layer.parameters()]
    layer.reset_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, layer.parameters()))


def test_empty_sequence_and_batch():
    layer = PLSTM1d(4, num_heads=2)
    assert layer(torch.randn(2, 0, 4)).shape == (2, 0, 4)
    assert layer(torch.randn(0, 3, 4)).shape == (0, 3, 4)


def test_bad_input():
    with pytest.raises(ValueError, match="'P', 'D'"):
        PLSTM1d(8, 2, mode="X")
    with pytest.raises(ValueError, match="multiple of num_heads"):
        PLSTM1d(9, 2)
    with pytest.raises(ValueError, match=r"\[B, L, dim=8\]"):
        PLSTM1d(8, 2)(torch.randn(2, 5, 7))
