"""LightNet on packed sequences (``cu_seqlens``) and right to left (``reverse``), op and layer:
against the paper's equations node by node (``lightnet_scan_reference``) on edge lists built
here by hand, forward and gradients in float64; packed equals each sequence alone; reverse
equals flipping; states carried right to left; refusals."""

from __future__ import annotations

import pytest
import torch

from everygraph.graphlib import DAG, Lattice
from everygraph.nn import InferenceParams, LightNet
from everygraph.sequence import lightnet_scan, lightnet_scan_reference

F64 = torch.float64
BOUNDS = [0, 3, 3, 7, 10]  # an empty sequence in the middle


def _inputs(N: int, seed: int = 0, B: int = 2, H: int = 2, dk: int = 3, dv: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, N, H, d, generator=gen, dtype=F64, requires_grad=True) for d in (dk, dk, dv)]


def _paths(bounds: list[int], backwards: bool) -> DAG:
    edges = [(t, t + 1) for a, b in zip(bounds[:-1], bounds[1:]) for t in range(a, b - 1)]
    edges = [(b, a) for a, b in edges] if backwards else edges
    return DAG(torch.tensor(edges, dtype=torch.long).reshape(-1, 2).t(), bounds[-1])


def _assert_same(leaves: list[torch.Tensor], got: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(got, expected)
    weight = torch.randn(got.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    for name, a, b in zip("qkv", torch.autograd.grad((got * weight).sum(), leaves, retain_graph=True),
                          torch.autograd.grad((expected * weight).sum(), leaves, retain_graph=True)):
        assert b.abs().sum() > 0, name
        torch.testing.assert_close(a, b, msg=lambda m: f"gradient wrt {name}: {m}")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("structure", [None, Lattice((10,)), Lattice((10,), (True,))], ids=["none", "path", "flipped"])
def test_packed_sequences_equal_the_equations_per_sequence(structure, reverse):
    q, k, v = _inputs(10)
    got = lightnet_scan(structure, q, k, v, cu_seqlens=torch.tensor(BOUNDS), reverse=reverse)
    backwards = reverse != (structure is not None and structure.flip[0])
    _assert_same([q, k, v], got, lightnet_scan_reference(_paths(BOUNDS, backwards), q, k, v))
    alone = []
    for a, b in zip(BOUNDS[:-1], BOUNDS[1:]):
        piece = [t[:, a:b].flip(1) if backwards else t[:, a:b] for t in (q, k, v)]
        out = lightnet_scan_reference(None, *piece) if b > a else v.new_zeros(2, 0, 2, 2)
        alone.append(out.flip(1) if backwards else out)
    torch.testing.assert_close(got, torch.cat(alone, dim=1))


@pytest.mark.parametrize("name", ["sequence", "grid", "dag"])
def test_reverse_reverses_every_edge(name):
    gen = torch.Generator().manual_seed(3)
    pairs = [(a, b) for b in range(9) for a in range(b) if torch.rand((), generator=gen) < 0.35]
    cases = {
        "sequence": (None, 9, Lattice((9,), (True,))),
        "grid": (Lattice((3, 4), (False, True)), 12, Lattice((3, 4), (True, False))),
        "dag": (DAG(torch.tensor(pairs).t(), 9), 9, DAG(torch.tensor([(b, a) for a, b in pairs]).t(), 9)),
    }
    structure, N, reversed_structure = cases[name]
    q, k, v = _inputs(N, seed=4)
    _assert_same([q, k, v], lightnet_scan(structure, q, k, v, reverse=True), lightnet_scan_reference(reversed_structure, q, k, v))
    if structure is None:  # and a reversed sequence is the flipped sequence, flipped back
        flipped = lightnet_scan_reference(None, q.flip(1), k.flip(1), v.flip(1)).flip(1)
        torch.testing.assert_close(lightnet_scan(None, q, k, v, reverse=True), flipped)


def test_states_carry_right_to_left():
    q, k, v = (t.detach() for t in _inputs(8, seed=5))
    full = lightnet_scan(None, q, k, v, reverse=True)
    right, state = lightnet_scan(None, q[:, 5:], k[:, 5:], v[:, 5:], reverse=True, return_state=True)
    left = lightnet_scan(None, q[:, :5], k[:, :5], v[:, :5], reverse=True, initial_state=state)
    torch.testing.assert_close(torch.cat([left, right], dim=1), full)
    same = lightnet_scan(Lattice((8,), (True,)), q, k, v, return_state=True)[0]
    torch.testing.assert_close(same, full)


def test_layer_on_packed_and_reversed_sequences():
    torch.manual_seed(0)
    layer = LightNet(8, num_heads=2, gate_low_rank_dim=4).double()
    x = torch.randn(1, 10, 8, dtype=F64)
    packed = layer(x, cu_seqlens=torch.tensor(BOUNDS))
    alone = torch.cat([layer(x[:, a:b]) for a, b in zip(BOUNDS[:-1], BOUNDS[1:]) if b > a], dim=1)
    torch.testing.assert_close(packed, alone)
    torch.testing.assert_close(layer(x, reverse=True), layer(x.flip(1)).flip(1))
    backwards = layer(x, cu_seqlens=torch.tensor(BOUNDS), reverse=True)
    alone = torch.cat([layer(x[:, a:b].flip(1)).flip(1) for a, b in zip(BOUNDS[:-1], BOUNDS[1:]) if b > a], dim=1)
    torch.testing.assert_close(backwards, alone)
    grid = torch.randn(2, 12, 8, dtype=F64)
    torch.testing.assert_close(layer(grid, Lattice((3, 4)), reverse=True), layer(grid, Lattice((3, 4), (True, True))))


def test_bad_inputs_get_clear_errors():
    q, k, v = (t.detach() for t in _inputs(6, seed=6))
    with pytest.raises(ValueError, match="cu_seqlens packs sequences"):
        lightnet_scan(Lattice((2, 3)), q, k, v, cu_seqlens=torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="cu_seqlens"):
        lightnet_scan(None, q, k, v, cu_seqlens=torch.tensor([0, 4]))
    with pytest.raises(TypeError, match="cu_seqlens"):
        lightnet_scan(None, q, k, v, cu_seqlens=torch.tensor([0.0, 6.0]))
    with pytest.raises(ValueError, match="take a sequence"):
        lightnet_scan(None, q, k, v, cu_seqlens=torch.tensor([0, 2, 6]), return_state=True)
    with pytest.raises(TypeError, match="reverse"):
        lightnet_scan(None, q, k, v, reverse="yes")
    layer = LightNet(8, num_heads=2, gate_low_rank_dim=4, layer_idx=0)
    with pytest.raises(ValueError, match="decoding"):
        layer(torch.randn(1, 6, 8), reverse=True, inference_params=InferenceParams(6, 1))
