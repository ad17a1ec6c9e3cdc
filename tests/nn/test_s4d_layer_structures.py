"""The S4D layer on packed sequences, reversed sequences, grids (flipped too) and DAGs: the
block written out independently (a node loop of the state space equations on the layer's
parameters, GELU, the 1x1 convolution, GLU), forward and gradients wrt the input and every
parameter, float64; layouts and refusals."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from everygraph.graphlib import DAG, Lattice
from everygraph.nn import S4D, InferenceParams

F64 = torch.float64
H, STATE = 3, 4


def _layer(seed: int = 0, **kw) -> S4D:
    torch.manual_seed(seed)
    layer = S4D(H, d_state=STATE, dt_min=0.05, dt_max=0.5, **kw).double()
    with torch.no_grad():  # away from the initialisation's symmetric values
        layer.kernel.log_A_real.add_(torch.randn_like(layer.kernel.log_A_real) * 0.3)
    return layer


def _block(layer: S4D, u: torch.Tensor, num_nodes: int, edges: list[tuple[int, int]]) -> torch.Tensor:
    """``u`` ``[B, N, H]`` -> ``[B, N, H]``: x_n = dA sum_{m->n} x_m + dB u_n (ZOH, B = 1),
    y = 2 Re(C x) + D u, then GELU, 1x1 convolution, GLU over channels."""
    kernel = layer.kernel
    dt = kernel.log_dt.exp()[:, None]
    A = torch.complex(-kernel.log_A_real.exp(), kernel.A_imag)
    C = torch.complex(kernel.C[..., 0], kernel.C[..., 1])
    dA = torch.exp(dt * A)
    dB = (dA - 1) / A
    predecessors: list[list[int]] = [[] for _ in range(num_nodes)]
    indegree = [0] * num_nodes
    for a, b in edges:
        predecessors[b].append(a)
        indegree[b] += 1
    ready, x, y = [v for v in range(num_nodes) if not indegree[v]], [None] * num_nodes, [None] * num_nodes
    while ready:
        node = ready.pop()
        incoming = sum((x[m] for m in predecessors[node]), torch.zeros(u.shape[0], H, STATE // 2, dtype=torch.complex128))
        x[node] = dA * incoming + dB * u[:, node, :, None]
        y[node] = 2 * (C * x[node]).sum(-1).real + layer.D * u[:, node]
        for a, b in edges:
            if a == node:
                indegree[b] -= 1
                if not indegree[b]:
                    ready.append(b)
    y = F.gelu(torch.stack(y, dim=1))
    weight, bias = layer.output_linear[0].weight[..., 0], layer.output_linear[0].bias
    z = y @ weight.T + bias
    return z[..., :H] * torch.sigmoid(z[..., H:])


def _check(layer: S4D, u: torch.Tensor, got: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(got, expected)
    weight = torch.randn(got.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    leaves = [u, *layer.parameters()]
    names = ["u", *(name for name, _ in layer.named_parameters())]
    for name, a, b in zip(names, torch.autograd.grad((got * weight).sum(), leaves, retain_graph=True),
                          torch.autograd.grad((expected * weight).sum(), leaves)):
        torch.testing.assert_close(a, b, msg=lambda m: f"gradient wrt {name}: {m}")


def _u(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64, requires_grad=True)


def _lattice_edges(shape, flip):
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    edges = []
    for coord in itertools.product(*map(range, shape)):
        node = sum(c * s for c, s in zip(coord, strides))
        for axis, size in enumerate(shape):
            if coord[axis] + 1 < size:
                edges.append((node + strides[axis], node) if flip[axis] else (node, node + strides[axis]))
    return edges


@pytest.mark.parametrize("mode", ["conv", "recurrent"])
@pytest.mark.parametrize("reverse", [False, True])
def test_packed_and_reversed_sequences(mode, reverse):
    layer = _layer(mode=mode)
    bounds = [0, 4, 4, 9]
    u = _u(2, H, 9)  # transposed: [B, H, L]
    got = layer(u, cu_seqlens=torch.tensor(bounds), reverse=reverse)
    edges = [(t, t + 1) for a, b in zip(bounds[:-1], bounds[1:]) for t in range(a, b - 1)]
    edges = [(b, a) for a, b in edges] if reverse else edges
    _check(layer, u, got, _block(layer, u.transpose(1, 2), 9, edges).transpose(1, 2))


@pytest.mark.parametrize("flip, reverse", [((False, False), False), ((True, False), False), ((False, False), True)])
@pytest.mark.parametrize("transposed", [True, False])
def test_grid(flip, reverse, transposed):
    layer = _layer(1, transposed=transposed)
    lattice = Lattice((3, 4), flip)
    nodes = _u(2, 12, H, seed=2)
    expected = _block(layer, nodes, 12, _lattice_edges((3, 4), tuple(f != reverse for f in flip)))
    u = nodes.transpose(1, 2) if transposed else nodes  # [B, H, N] or [B, N, H]
    got = layer(u, lattice, reverse=reverse)
    _check(layer, nodes, got.transpose(1, 2) if transposed else got, expected)
    # the grid unflattened: [B, H, 3, 4] or [B, 3, 4, H], row-major
    grid = nodes.detach().transpose(1, 2).unflatten(2, (3, 4)) if transposed else nodes.detach().unflatten(1, (3, 4))
    out = layer(grid, lattice, reverse=reverse)
    assert out.shape == grid.shape
    torch.testing.assert_close(out.flatten(2).transpose(1, 2) if transposed else out.flatten(1, 2), expected.detach())


@pytest.mark.parametrize("reverse", [False, True])
def test_dag(reverse):
    layer = _layer(2, transposed=False)
    gen = torch.Generator().manual_seed(3)
    label = torch.randperm(8, generator=gen).tolist()
    edges = [(label[i], label[j]) for i in range(8) for j in range(i + 1, 8) if torch.rand((), generator=gen) < 0.4]
    u = _u(2, 8, H, seed=4)
    got = layer(u, DAG(torch.tensor(edges).t(), 8), reverse=reverse)
    _check(layer, u, got, _block(layer, u, 8, [(b, a) for a, b in edges] if reverse else edges))


def test_a_1d_lattice_is_the_sequence_and_the_state_dict_is_shared():
    layer = _layer(3)
    u = _u(2, H, 7, seed=6).detach()
    torch.testing.assert_close(layer(u, Lattice((7,))), layer(u))
    torch.testing.assert_close(layer(u, Lattice((7,), (True,))), layer(u, reverse=True))
    other = S4D(H, d_state=STATE).double()
    other.load_state_dict(layer.state_dict(), strict=True)
    torch.testing.assert_close(other(u, Lattice((7,))), layer(u))


def test_bad_inputs_get_clear_errors():
    layer = _layer(4, layer_idx=0)
    with pytest.raises(TypeError, match="structure must be"):
        layer(torch.randn(1, H, 6, dtype=F64), "grid")
    with pytest.raises(ValueError, match=r"u must have shape \[B, H, N\] or \[B, H, 2, 3\]"):
        layer(torch.randn(1, H, 5, dtype=F64), Lattice((2, 3)))
    with pytest.raises(ValueError, match="u must have shape"):
        layer(torch.randn(1, H + 1, 6, dtype=F64), DAG(torch.tensor([[0], [1]]), 6))
    with pytest.raises(ValueError, match="decoding"):
        layer(torch.randn(1, H, 6, dtype=F64), Lattice((2, 3)), inference_params=InferenceParams(max_seqlen=6, max_batch_size=1))
    with pytest.raises(ValueError, match="cu_seqlens packs sequences"):
        layer(torch.randn(1, H, 6, dtype=F64), Lattice((2, 3)), cu_seqlens=torch.tensor([0, 6]))
    with pytest.raises(TypeError, match="reverse"):
        layer(torch.randn(1, H, 6, dtype=F64), reverse=1)
