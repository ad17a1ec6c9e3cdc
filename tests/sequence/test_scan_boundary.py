"""Boundary states compose: scanning a structure equals scanning its pieces in topological
order with the boundary states passed along (paths at any split, grids cut between rows or
columns), for every kind and every execution, forward and backward; the unit convention
does not."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from everygraph.graphlib import Lattice
from everygraph.sequence import KINDS, SUPPORTED_KINDS, lattice_gates, path_scan, scan
from scan_asserts import assert_same

DT = torch.float64
B, H, DK, DV = 2, 1, 3, 2


def gate(kind, lead, gen):
    if kind == "scalar":
        return torch.rand(*lead, dtype=DT, generator=gen) * 2 - 1
    if kind == "diagonal":
        return torch.rand(*lead, DK, dtype=DT, generator=gen) * 2 - 1
    if kind == "elementwise":
        return torch.rand(*lead, DK, DV, dtype=DT, generator=gen) * 2 - 1
    w = torch.randn(*lead, 2, DK, dtype=DT, generator=gen)
    w = w / w.norm(dim=-1, keepdim=True)
    rest = torch.rand(*lead, 2, 2, dtype=DT, generator=gen) * torch.tensor([2.0, 0.5], dtype=DT) + torch.tensor([0.0, 0.5], dtype=DT)
    return torch.cat([w, rest], dim=-1)


def path_inputs(kind, length, gen):
    return dict(
        q=torch.randn(B, length, H, DK, dtype=DT, generator=gen),
        k=torch.randn(B, length, H, DK, dtype=DT, generator=gen),
        v=torch.randn(B, length, H, DV, dtype=DT, generator=gen),
        source=torch.rand(B, length, H, dtype=DT, generator=gen),
        transition=gate(kind, (B, length, H), gen),
        mark=torch.rand(B, length, H, dtype=DT, generator=gen),
        direct=torch.rand(B, length, H, dtype=DT, generator=gen),
        state=torch.randn(B, H, DK, DV, dtype=DT, generator=gen),
    )


def path_executions(kind):
    return [e for e in ("reference", "wavefront", "recurrent", "chunked") if kind in SUPPORTED_KINDS[e]]


def outputs_and_grads(leaves, compute):
    h, state = compute(leaves)
    loss = (h * torch.linspace(-1, 1, h.numel(), dtype=DT).view_as(h)).sum()
    loss = loss + (state * torch.linspace(1, -2, state.numel(), dtype=DT).view_as(state)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return [h, state, *grads]


def split_path(inputs, cuts, kind, execution):
    def compute(leaves):
        state, hs = leaves["state"], []
        for lo, hi in zip([0, *cuts], [*cuts, leaves["q"].shape[1]]):
            piece = {n: t[:, lo:hi] for n, t in leaves.items() if n != "state"}
            h, state = path_scan(**piece, kind=kind, state=state, execution=execution if hi > lo else None)
            hs.append(h)
        return torch.cat(hs, dim=1), state

    leaves = {n: t.clone().requires_grad_() for n, t in inputs.items()}
    return outputs_and_grads(leaves, compute)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_paths_compose_at_any_split(kind, data):
    length = data.draw(st.integers(1, 12), label="length")
    cuts = sorted(data.draw(st.lists(st.integers(0, length), min_size=1, max_size=2), label="cuts"))
    inputs = path_inputs(kind, length, torch.Generator().manual_seed(length + 100 * len(cuts)))
    want = split_path(inputs, [], kind, "reference")
    for execution in path_executions(kind):
        assert_same(split_path(inputs, [], kind, execution), want)
        assert_same(split_path(inputs, cuts, kind, execution), want)


def test_path_scan_is_the_official_recurrence():
    """C_t = T_t C_{t-1} + S_t k_t v_t^T, h_t = q_t^T M_t C_{t-1} + D_t (q_t.k_t) v_t, C_{-1} = state."""
    inputs = path_inputs("scalar", 7, torch.Generator().manual_seed(1))
    q, k, v, S, T, M, D = (inputs[n][0, :, 0] for n in ("q", "k", "v", "source", "transition", "mark", "direct"))
    C, hs = inputs["state"][0, 0], []
    for t in range(7):
        hs.append(M[t] * (q[t] @ C) + D[t] * (q[t] @ k[t]) * v[t])
        C = T[t] * C + S[t] * torch.outer(k[t], v[t])
    h, state = path_scan(**inputs, scale=1.0)
    torch.testing.assert_close(h[0, :, 0], torch.stack(hs))
    torch.testing.assert_close(state[0, 0], C)


def test_unit_boundary_gates_do_not_compose():
    """The old convention (unit gates on the virtual edges) breaks a split sequence."""
    length, cut = 12, 5
    inputs = path_inputs("scalar", length, torch.Generator().manual_seed(2))
    lattice = Lattice((length,))
    dense = [inputs["source"][:, :, :, None], inputs["transition"][:, :, :, None, None], inputs["mark"][:, :, :, None]]
    S, T, M = lattice_gates(lattice, *dense)
    whole = scan(lattice, inputs["q"], inputs["k"], inputs["v"], S, T, M, inputs["direct"])
    first, second = Lattice((cut,)), Lattice((length - cut,))
    parts = lambda lo, hi, lat: [inputs[n][:, lo:hi] for n in "qkv"] + list(lattice_gates(lat, *[d[:, lo:hi] for d in dense])) + [inputs["direct"][:, lo:hi]]
    a = parts(0, cut, first)
    h1, states = scan(first, *a, return_state=True)
    b = parts(cut, length, second)
    initial = torch.zeros(B, length - cut, H, DK, DV, dtype=DT)
    initial[:, 0] = states[:, -1]
    h2 = scan(second, *b, initial_state=initial)
    assert (torch.cat([h1, h2], 1) - whole).abs().max() > 1e-3


def grid_inputs(kind, shape, gen):
    X, Y = shape
    return dict(
        q=torch.randn(B, X, Y, H, DK, dtype=DT, generator=gen),
        k=torch.randn(B, X, Y, H, DK, dtype=DT, generator=gen),
        v=torch.randn(B, X, Y, H, DV, dtype=DT, generator=gen),
        source=torch.rand(B, X, Y, H, 2, dtype=DT, generator=gen),
        transition=gate(kind, (B, X, Y, H, 2, 2), gen) * 0.5,
        mark=torch.rand(B, X, Y, H, 2, dtype=DT, generator=gen),
        direct=torch.rand(B, X, Y, H, dtype=DT, generator=gen),
        entering=torch.randn(B, X, Y, H, DK, DV, dtype=DT, generator=gen),  # only the first layer is used
    )


def scan_grid_in_pieces(leaves, cut, axis, flip, kind, execution):
    """Scan a grid cut across ``axis`` at ``cut``, pieces in topological order; returns the
    outputs ``[B, X, Y, H, DV]`` and the states leaving the last layer along ``axis``."""
    size = leaves["q"].shape[1 + axis]
    bounds = [(lo, hi) for lo, hi in ((0, cut), (cut, size)) if hi > lo]
    if flip[axis]:
        bounds = bounds[::-1]
    state, outputs = None, {}
    for lo, hi in bounds:
        piece = {n: t.narrow(1 + axis, lo, hi - lo) for n, t in leaves.items()}
        shape = tuple(piece["q"].shape[1:3])
        lattice = Lattice(shape, flip)
        S, T, M, D, boundary = lattice_gates(lattice, piece["source"], piece["transition"], piece["mark"], piece["direct"], boundary_axis=axis)
        first = 0 if not flip[axis] else shape[axis] - 1
        last = shape[axis] - 1 - first
        initial = torch.zeros_like(piece["entering"])
        entering = piece["entering"].narrow(1 + axis, first, 1) if state is None else state
        index = [slice(None)] * initial.dim()
        index[1 + axis] = slice(first, first + 1)
        initial[tuple(index)] = entering
        flat = lambda t: t.reshape(B, -1, *t.shape[3:])
        h, states = scan(lattice, flat(piece["q"]), flat(piece["k"]), flat(piece["v"]), S, T, M, D, kind=kind,
                         initial_state=flat(initial), boundary=boundary, return_state=True, execution=execution)
        states = states.view(B, *shape, H, DK, DV)
        state = states.narrow(1 + axis, last, 1)
        outputs[lo] = h.view(B, *shape, H, DV)
    h = torch.cat([outputs[lo] for lo, _ in sorted(bounds)], dim=1 + axis)
    return h, state


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("axis,flip", [(0, (True, False)), (1, (False, True))])
def test_grids_compose_across_a_cut(kind, axis, flip):
    shape = (4, 3)
    inputs = grid_inputs(kind, shape, torch.Generator().manual_seed(3 + axis))
    executions = [e for e in ("reference", "wavefront", "lattice") if kind in SUPPORTED_KINDS[e]]

    def result(cut, execution):
        leaves = {n: t.clone().requires_grad_() for n, t in inputs.items()}
        return outputs_and_grads(leaves, lambda l: scan_grid_in_pieces(l, cut, axis, flip, kind, execution))

    want = result(shape[axis], "reference")  # one piece: the whole grid
    for execution in executions:
        for cut in range(1, shape[axis]):
            assert_same(result(cut, execution), want)
