"""DeltaProduct layer: flash-linear-attention's parameter layout, the paper's loop, structures."""

import pytest
import torch
import torch.nn.functional as F

from everygraph.graphlib import DAG, Lattice
from everygraph.nn import DeltaProduct
from everygraph.sequence import delta_product_reference

DT = torch.float64


def fla_state_dict(hidden, heads, head_dim, expand_v, n_h, conv_size=None, gen=None):
    """Tensors named and shaped as flash-linear-attention's GatedDeltaProduct layer."""
    key_dim, value_dim = heads * head_dim, int(heads * head_dim * expand_v)
    shapes = {
        "q_proj.weight": (key_dim, hidden),
        "k_proj.weight": (key_dim * n_h, hidden),
        "v_proj.weight": (value_dim * n_h, hidden),
        "b_proj.weight": (heads * n_h, hidden),
        "a_proj.weight": (heads, hidden),
        "A_log": (heads,),
        "dt_bias": (heads,),
        "g_proj.weight": (value_dim, hidden),
        "o_norm.weight": (int(head_dim * expand_v),),
        "o_proj.weight": (hidden, value_dim),
    }
    if conv_size is not None:
        shapes.update({"q_conv1d.weight": (key_dim, 1, conv_size), "k_conv1d.weight": (key_dim * n_h, 1, conv_size),
                       "v_conv1d.weight": (value_dim * n_h, 1, conv_size)})
    return {name: 0.3 * torch.randn(shape, generator=gen, dtype=DT) for name, shape in shapes.items()}


@pytest.mark.parametrize("short_conv", [False, True])
def test_fla_state_dict_loads_strict(short_conv):
    gen = torch.Generator().manual_seed(0)
    state = fla_state_dict(16, 2, 4, 2, 3, conv_size=4 if short_conv else None, gen=gen)
    layer = DeltaProduct(16, num_heads=2, head_dim=4, expand_v=2, num_householder=3, use_short_conv=short_conv).double()
    layer.load_state_dict(state, strict=True)
    assert set(layer.state_dict()) == set(state)


def by_hand(state, x, heads, head_dim, head_v_dim, n_h, allow_neg_eigval=True):
    """The layer's forward written from flash-linear-attention's layout ('t (n h d)') and the
    paper's loop, on one sequence batch [B, L, C]."""
    B, L, _ = x.shape
    q = F.normalize(F.silu(x @ state["q_proj.weight"].T).view(B, L, heads, head_dim), dim=-1)
    k = F.silu(x @ state["k_proj.weight"].T).view(B, L, n_h, heads, head_dim)
    k = F.normalize(k, dim=-1).permute(0, 1, 3, 2, 4)
    v = F.silu(x @ state["v_proj.weight"].T).view(B, L, n_h, heads, head_v_dim).permute(0, 1, 3, 2, 4)
    beta = torch.sigmoid(x @ state["b_proj.weight"].T).view(B, L, n_h, heads).transpose(2, 3) * (2 if allow_neg_eigval else 1)
    g = -state["A_log"].exp() * F.softplus(x @ state["a_proj.weight"].T + state["dt_bias"])
    o, _ = delta_product_reference(q, k, v, beta, gate=g.exp(), scale=head_dim**-0.5)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * state["o_norm.weight"]
    o = o * F.silu((x @ state["g_proj.weight"].T).view(B, L, heads, head_v_dim))
    return o.reshape(B, L, -1) @ state["o_proj.weight"].T


@pytest.mark.parametrize("n_h", [1, 2, 3])
def test_forward_equals_paper_loop_with_fla_layout(n_h):
    gen = torch.Generator().manual_seed(n_h)
    state = fla_state_dict(12, 2, 4, 1.5, n_h, gen=gen)
    layer = DeltaProduct(12, num_heads=2, head_dim=4, expand_v=1.5, num_householder=n_h).double()
    layer.load_state_dict(state)
    x = torch.randn(2, 7, 12, generator=gen, dtype=DT, requires_grad=True)
    out = layer(x)
    expected = by_hand(state, x, 2, 4, 6, n_h)
    torch.testing.assert_close(out, expected)
    gx, = torch.autograd.grad(out.pow(2).sum(), x)
    ex, = torch.autograd.grad(expected.pow(2).sum(), x)
    torch.testing.assert_close(gx, ex)


def test_packed_sequences_equal_separate_runs():
    torch.manual_seed(1)
    layer = DeltaProduct(8, num_heads=2, num_householder=2, use_short_conv=True).double()
    x = torch.randn(1, 9, 8, dtype=DT)
    out = layer(x, cu_seqlens=torch.tensor([0, 4, 4, 9]))
    torch.testing.assert_close(out[:, :4], layer(x[:, :4]))
    torch.testing.assert_close(out[:, 4:], layer(x[:, 4:]))


def test_lattice_and_dag_inputs():
    torch.manual_seed(2)
    layer = DeltaProduct(8, num_heads=2, num_householder=2).double()
    x = torch.randn(2, 3, 4, 8, dtype=DT, requires_grad=True)
    grid = layer(x, Lattice((3, 4)))
    assert grid.shape == x.shape
    torch.testing.assert_close(layer(x.flatten(1, 2), Lattice((3, 4))), grid.flatten(1, 2))
    grid.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    seq = torch.randn(2, 6, 8, dtype=DT)
    path_dag = DAG(torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]), 6)
    torch.testing.assert_close(layer(seq, path_dag), layer(seq))
    torch.testing.assert_close(layer(seq, Lattice((6,))), layer(seq))
    torch.testing.assert_close(layer(seq, reverse=True), layer(seq.flip(1)).flip(1))
    dag = DAG(torch.tensor([[0, 0, 1, 2], [1, 2, 3, 3]]), 4)
    nodes = torch.randn(4, 8, dtype=DT)
    assert layer(nodes, dag).shape == (4, 8)


def test_reset_parameters_repr_and_errors():
    layer = DeltaProduct(8, num_heads=2, num_householder=3)
    torch.manual_seed(3)
    layer.reset_parameters()
    first = {k: v.clone() for k, v in layer.state_dict().items()}
    torch.manual_seed(3)
    layer.reset_parameters()
    for name, value in layer.state_dict().items():
        torch.testing.assert_close(value, first[name])
    assert ((layer.A_log.exp() > 0) & (layer.A_log.exp() <= 16)).all()
    dt = F.softplus(layer.dt_bias)
    assert ((dt >= 1e-4 - 1e-9) & (dt <= 0.1 + 1e-9)).all()
    assert "num_householder=3" in repr(layer) and "DeltaProduct(8" in repr(layer)
    with pytest.raises(ValueError, match="hidden_size"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="use_short_conv"):
        DeltaProduct(8, use_short_conv=True)(torch.randn(1, 2, 2, 8), Lattice((2, 2)))
    with pytest.raises(ValueError, match="cu_seqlens"):
        layer(torch.randn(1, 5, 8), cu_seqlens=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="num_householder"):
        DeltaProduct(8, num_householder=0)
