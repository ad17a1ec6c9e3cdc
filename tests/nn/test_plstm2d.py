"""PLSTM2d against a plain loop over grid cells in each of the four orientations."""

import pytest
import torch

from everygraph.nn import PLSTM2d


def loop_2d(q, k, v, gates, flip, scale):
    """The recurrence on one orientation, cell by cell, states keyed by (cell, axis).

    gates: source/mark [B, H, W, heads, 2], transition [B, H, W, heads, 2(out), 2(in)],
    direct [B, H, W, heads]. Axis 0 steps rows, axis 1 columns; flip[a] reverses axis a.
    """
    batch, height, width, heads, dk = q.shape
    dv = v.shape[-1]
    out = torch.zeros(batch, height, width, heads, dv, dtype=q.dtype)
    step = [(-1 if flip[0] else 1, 0), (0, -1 if flip[1] else 1)]
    rows = range(height - 1, -1, -1) if flip[0] else range(height)
    cols = range(width - 1, -1, -1) if flip[1] else range(width)
    for b in range(batch):
        for h in range(heads):
            states = {}  # (row, col, axis) of the sending cell -> state on its out-edge
            for i in rows:
                for j in cols:
                    qn, kn, vn = q[b, i, j, h], k[b, i, j, h], v[b, i, j, h]
                    incoming = {}
                    for a, (di, dj) in enumerate(step):
                        key = (i - di, j - dj, a)
                        if key in states:
                            incoming[a] = states.pop(key)
                    acc = gates["direct"][b, i, j, h] * (qn @ kn) * vn
                    for a, c in incoming.items():
                        acc = acc + gates["mark"][b, i, j, h, a] * (qn @ c)
                    out[b, i, j, h] = scale * acc
                    for a_out, (di, dj) in enumerate(step):
                        if 0 <= i + di < height and 0 <= j + dj < width:
                            c = gates["source"][b, i, j, h, a_out] * torch.outer(kn, vn)
                            for a_in, c_in in incoming.items():
                                c = c + gates["transition"][b, i, j, h, a_out, a_in] * c_in
                            states[(i, j, a_out)] = c
    return out


FLIPS = [(False, False), (False, True), (True, False), (True, True)]


def reference_forward(layer, x):
    q, k, v = layer.qkv(x)
    h = sum(loop_2d(q, k, v, g, f, layer.head_dim**-0.5) for g, f in zip(layer.gates(x), FLIPS))
    h = layer.norm(h.reshape(-1, layer.dim)).reshape(x.shape)
    return layer.out_proj(h)


@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (3, 1), (3, 4)])
def test_matches_loop(mode, shape):
    layer = PLSTM2d(4, num_heads=2, mode=mode).double()
    x = torch.randn(2, *shape, 4, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference_forward(layer, x), rtol=1e-10, atol=1e-10)


def test_non_square_grid_matches_loop():
    layer = PLSTM2d(2, num_heads=1, mode="D").double()
    x = torch.randn(1, 7, 13, 2, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference_forward(layer, x), rtol=1e-10, atol=1e-10)


def test_paper_gates_and_gradients_match_loop():
    layer = PLSTM2d(4, num_heads=1, mode="D", paper_gates=True).double()
    x = torch.randn(1, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    out, ref = layer(x), reference_forward(layer, x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    (g_fast,) = torch.autograd.grad(out.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-10)


def test_p_mode_at_criticality_and_d_mode_multitree():
    x = 10 * torch.randn(2, 5, 6, 8)
    for gates in PLSTM2d(8, 2, mode="P").gates(x) + PLSTM2d(8, 2, mode="P", paper_gates=True).gates(x):
        column_sums = gates["transition"].abs().sum(-2)  # sum over out-axis for each in-axis
        torch.testing.assert_close(column_sums, torch.ones_like(column_sums))
    for gates in PLSTM2d(8, 2, mode="D", paper_gates=True).gates(x):
        t = gates["transition"]
        assert bool((t.abs() <= 1).all())
        assert bool((t[..., 1, 0] == 0).all())  # down -> right never: one turning transition zeroed


def test_dtypes_state_dict_repr():
    layer = PLSTM2d(8, num_heads=2, mode="P")
    x = torch.randn(2, 4, 5, 8)
    out32 = layer(x)
    assert out32.shape == (2, 4, 5, 8) and out32.dtype == torch.float32
    torch.testing.assert_close(layer.double()(x.double()).float(), out32, rtol=1e-4, atol=1e-5)
    out16 = layer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out16.dtype == torch.bfloat16
    # bfloat16 keeps 8 significant bits (unit roundoff u = 2^-8). The layer is a chain of about
    # 16 rounded stages (input, norms, q/k/v and gate projections, scan, output projection),
    # each adding at most u relative to the output's scale, so the relative RMS error against
    # the float32 result stays below 16 u (about 6%; over 15 seeds the largest seen is 11 u).
    rms = lambda t: t.square().mean().sqrt()  # noqa: E731
    assert rms(out16.float() - out32) <= 16 * 2**-8 * rms(out32)
    layer = layer.float()
    other = PLSTM2d(8, num_heads=2, mode="P")
    other.load_state_dict(layer.state_dict())
    torch.testing.assert_close(other(x), layer(x))
    assert repr(other) == "PLSTM2d(8, num_heads=2, mode='P', paper_gates=False)"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    layer = PLSTM2d(8, num_heads=2, mode="D")
    x = torch.randn(2, 5, 6, 8)
    torch.testing.assert_close(layer.cuda()(x.cuda()).cpu(), layer.cpu()(x), rtol=1e-4, atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="'P', 'D'"):
        PLSTM2d(8, 2, mode="diagonal")
    with pytest.raises(ValueError, match="channels last"):
        PLSTM2d(8, 2)(torch.randn(2, 8, 5, 5))
