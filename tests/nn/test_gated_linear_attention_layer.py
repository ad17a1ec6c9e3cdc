"""GatedLinearAttention: flash-linear-attention's parameter names load strictly, the forward
equals the paper's equations written out, packed sequences equal separate runs, grids and
DAGs run and are batch-independent."""

import pytest
import torch

from everygraph.graphlib import DAG, Lattice
from everygraph.nn import GatedLinearAttention

DT = torch.float64


def fla_state_dict(hidden, key_dim, value_dim, rank, head_v_dim, norm_name="g_norm_swish_gate", seed=0):
    """Names and shapes of fla.layers.gla.GatedLinearAttention (num_kv_heads = num_heads)."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=gen, dtype=DT) * 0.3  # noqa: E731
    return {
        "q_proj.weight": r(key_dim, hidden),
        "k_proj.weight": r(key_dim, hidden),
        "v_proj.weight": r(value_dim, hidden),
        "g_proj.weight": r(value_dim, hidden),
        "gk_proj.0.weight": r(rank, hidden),
        "gk_proj.1.weight": r(key_dim, rank),
        "gk_proj.1.bias": r(key_dim),
        "o_proj.weight": r(hidden, value_dim),
        f"{norm_name}.weight": 1 + r(head_v_dim),
    }


def paper_forward(sd, x, heads, tau=16.0, eps=1e-5):
    """The GLA layer from the paper's equations, one position at a time (x: [L, hidden])."""
    L = x.shape[0]
    q, k, v, g = (x @ sd[f"{n}_proj.weight"].t() for n in "qkvg")
    alpha = torch.sigmoid(x @ sd["gk_proj.0.weight"].t() @ sd["gk_proj.1.weight"].t() + sd["gk_proj.1.bias"]) ** (1 / tau)
    dk, dv = q.shape[1] // heads, v.shape[1] // heads
    outs = []
    for h in range(heads):
        ks, vs = slice(h * dk, (h + 1) * dk), slice(h * dv, (h + 1) * dv)
        S = torch.zeros(dk, dv, dtype=DT)
        rows = []
        for t in range(L):
            S = torch.diag(alpha[t, ks]) @ S + torch.outer(k[t, ks], v[t, vs])
            o = q[t, ks] @ S / dk**0.5
            o = o / torch.sqrt((o**2).mean() + eps) * sd["g_norm_swish_gate.weight"]
            rows.append(o * g[t, vs] * torch.sigmoid(g[t, vs]))
        outs.append(torch.stack(rows))
    return torch.cat(outs, dim=1) @ sd["o_proj.weight"].t()


def test_fla_state_dict_loads_strictly_and_gives_the_papers_layer():
    layer = GatedLinearAttention(8, expand_k=0.5, expand_v=1.0, num_heads=2, gate_low_rank_dim=3).double()
    sd = fla_state_dict(8, 4, 8, 3, 4)
    layer.load_state_dict(sd, strict=True)
    x = torch.randn(2, 11, 8, dtype=DT, generator=torch.Generator().manual_seed(1))
    out = layer(x)
    for b in range(2):
        torch.testing.assert_close(out[b], paper_forward(sd, x[b], heads=2))
    torch.testing.assert_close(layer(x[0]), out[0])  # unbatched input


def test_unfused_norm_name():
    layer = GatedLinearAttention(8, num_heads=2, fuse_norm=False).double()
    layer.load_state_dict(fla_state_dict(8, 4, 8, 16, 4, norm_name="g_norm"), strict=True)
    no_gate = GatedLinearAttention(8, num_heads=2, use_output_gate=False)
    assert "g_norm.weight" in no_gate.state_dict() and not any(n.startswith("g_proj") for n in no_gate.state_dict())


def test_gate_is_low_rank_with_temperature():
    layer = GatedLinearAttention(16, num_heads=2, gate_low_rank_dim=4)
    x = torch.randn(3, 5, 16)
    alpha = layer.log_alpha(x).exp()
    assert alpha.shape == (3, 5, 2, 4)
    expected = torch.sigmoid(layer.gk_proj[1](layer.gk_proj[0](x))) ** (1 / 16)
    torch.testing.assert_close(alpha.flatten(-2), expected)
    assert layer.gk_proj[0].weight.shape == (4, 16)


def test_packed_sequences_equal_separate_runs_and_reverse():
    torch.manual_seed(0)
    layer = GatedLinearAttention(8, num_heads=2).double()
    seqs = [torch.randn(n, 8, dtype=DT) for n in (5, 17, 1)]
    packed = torch.cat(seqs)[None]
    cu = torch.tensor([0, 5, 22, 23])
    for reverse in (False, True):
        out = layer(packed, cu_seqlens=cu, reverse=reverse)[0]
        for s, (a, b) in zip(seqs, zip(cu[:-1].tolist(), cu[1:].tolist())):
            expected = layer(s.flip(0)).flip(0) if reverse else layer(s)
            torch.testing.assert_close(out[a:b], expected)


def test_grid_and_dag_run_with_gradients_and_batch_independence():
    torch.manual_seed(1)
    layer = GatedLinearAttention(8, num_heads=2, aggregate="mean").double()
    grid = torch.randn(2, 12, 8, dtype=DT, requires_grad=True)
    out = layer(grid, Lattice((3, 4)))
    out.square().sum().backward()
    assert out.shape == grid.shape and torch.isfinite(grid.grad).all()
    # the first pixel has no predecessor: it equals the one-token sequence
    torch.testing.assert_close(out[:, 0], layer(grid[:, :1])[:, 0])
    # a grid of one row is the sequence (engine on a 2D lattice vs the chunkwise form)
    row = grid[:, :4].detach()
    torch.testing.assert_close(layer(row, Lattice((1, 4))), layer(row))
    torch.testing.assert_close(layer(row, Lattice((4, 1)), reverse=True), layer(row, reverse=True))
    a = DAG(torch.tensor([[0, 0, 1, 2], [1, 2, 3, 3]]), 4)
    b = DAG(torch.tensor([[0, 1], [2, 2]]), 3)
    both = DAG(torch.tensor([[0, 0, 1, 2, 4, 5], [1, 2, 3, 3, 6, 6]]), 7)
    x = torch.randn(7, 8, dtype=DT)
    joint = layer(x, both)
    torch.testing.assert_close(joint[:4], layer(x[:4], a))
    torch.testing.assert_close(joint[4:], layer(x[4:], b))


def test_reset_parameters_repr_and_errors():
    layer = GatedLinearAttention(8, num_heads=2, gate_low_rank_dim=3)
    with torch.no_grad():
        layer.g_norm_swish_gate.weight.fill_(5.0)
        before = layer.q_proj.weight.clone()
    layer.reset_parameters()
    assert torch.equal(layer.g_norm_swish_gate.weight, torch.ones(4))
    assert not torch.equal(layer.q_proj.weight, before)
    assert repr(layer).startswith("GatedLinearAttention(8, num_heads=2, key_dim=4, value_dim=8, gate_low_rank_dim=3")
    with pytest.raises(ValueError, match="num_heads=3 must divide"):
        GatedLinearAttention(8, num_heads=3)
    with pytest.raises(ValueError, match=r"expects x of shape \[B, N, 8\]"):
        layer(torch.randn(2, 3, 5))
