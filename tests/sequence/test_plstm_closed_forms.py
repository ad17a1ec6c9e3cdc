"""The exact checks of the pLSTM note: the 1D attention form, the 2D P-mode binomial, D-mode
magnitude 1, a path through the general-DAG execution, and stability at criticality."""

import math

import pytest
import torch

from everygraph.graphlib import DAG, Lattice
from everygraph.sequence import lattice_gates, plstm_scan
from everygraph.sequence.plstm import EXECUTIONS

DT = torch.float64


@pytest.mark.parametrize("length", [1, 7, 150])
def test_1d_equals_attention_with_path_decay(length):
    """h_t = sum_s G_ts (q_t . k_s) v_s, G_ts = M_t (prod_{r=s+1}^{t-1} T_r) S_s, G_tt = D_t."""
    gen = torch.Generator().manual_seed(length)
    dk, dv = 3, 2
    q, k = torch.randn(1, length, 1, dk, dtype=DT, generator=gen), torch.randn(1, length, 1, dk, dtype=DT, generator=gen)
    v = torch.randn(1, length, 1, dv, dtype=DT, generator=gen)
    S, M, D = (torch.rand(length, dtype=DT, generator=gen) for _ in range(3))
    T = torch.rand(length, dtype=DT, generator=gen) * 2 - 1
    T[::5] = 0.0
    G = torch.zeros(length, length, dtype=DT)
    for t in range(length):
        G[t, t] = D[t]
        for s in range(t):
            G[t, s] = M[t] * math.prod(T[s + 1:t].tolist()) * S[s]
    scores = q[0, :, 0] @ k[0, :, 0].T / math.sqrt(dk)
    want = (G * scores) @ v[0, :, 0]
    # flat layout of the path: edge t is t -> t+1, line-graph edge t-1 passes node t
    args = (q, k, v, S[None, :-1, None], T[None, 1:-1, None], M[None, 1:, None], D[None, :, None])
    for execution in EXECUTIONS:
        torch.testing.assert_close(plstm_scan(Lattice((length,)), *args, execution=execution)[0, :, 0], want)


def unit_source_2d(shape, flip, source, transition, mark, direct):
    """Scan a single unit k v^T at the lattice's source corner with q = 1: h = G[corner -> node]."""
    lattice = Lattice(shape, flip)
    n = lattice.num_nodes
    corner = lattice.node([s - 1 if f else 0 for s, f in zip(shape, flip)])
    q = torch.ones(1, n, 1, 1, dtype=DT)
    v = torch.zeros(1, n, 1, 1, dtype=DT)
    v[0, corner] = 1.0
    flat = lattice_gates(lattice, source, transition, mark, direct)
    return lattice, [plstm_scan(lattice, q, q, v, *flat, scale=1.0, execution=e)[0, :, 0, 0] for e in EXECUTIONS]


def canonical_steps(lattice):
    """Per node, the number of steps from the source corner along each axis."""
    coords = lattice.all_coords()
    return [(size - 1 - coords[:, a]) if f else coords[:, a] for a, (size, f) in enumerate(zip(lattice.shape, lattice.flip))]


@pytest.mark.parametrize("flip", Lattice.orientations(2))
def test_2d_p_mode_binomial(flip):
    """T = [[1-a, 1-a], [a, a]] (rows: out along axis 0 / axis 1), S = (1-a, a), M = 1, D = 0:
    out = C(x+y, x) a^x (1-a)^y with x steps along axis 1, y along axis 0; anti-diagonals sum to 1."""
    shape, a = (9, 11), 0.3
    grid = (1, *shape, 1)
    source = torch.tensor([1 - a, a], dtype=DT).expand(*grid, 2)
    transition = torch.tensor([[1 - a, 1 - a], [a, a]], dtype=DT).expand(*grid, 2, 2)
    lattice, outs = unit_source_2d(shape, flip, source, transition, torch.ones(*grid, 2, dtype=DT), torch.zeros(grid, dtype=DT))
    down, right = canonical_steps(lattice)
    want = torch.tensor([math.comb(x + y, x) * a**x * (1 - a) ** y for y, x in zip(down.tolist(), right.tolist())], dtype=DT)
    want[(down + right) == 0] = 0.0  # D = 0 at the source itself
    for out in outs:
        torch.testing.assert_close(out, want, rtol=1e-13, atol=1e-14)
        for d in range(1, min(shape)):  # complete anti-diagonals
            assert abs(out[(down + right) == d].sum().item() - 1.0) < 1e-13


@pytest.mark.parametrize("flip", Lattice.orientations(2))
def test_2d_d_mode_magnitude_one(flip):
    """All T = 1 except one turning transition (axis 1 -> axis 0) = 0: one path to every node."""
    shape = (8, 10)
    grid = (1, *shape, 1)
    transition = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=DT).expand(*grid, 2, 2)
    ones = torch.ones(*grid, 2, dtype=DT)
    lattice, outs = unit_source_2d(shape, flip, ones, transition, ones, torch.zeros(grid, dtype=DT))
    down, right = canonical_steps(lattice)
    want = ((down + right) > 0).to(DT)
    for out in outs:
        torch.testing.assert_close(out, want, rtol=0, atol=1e-14)
    # both turns allowed: the number of monotone paths, binomial
    full = torch.ones(*grid, 2, 2, dtype=DT)
    _, outs = unit_source_2d(shape, flip, ones, full, ones, torch.zeros(grid, dtype=DT))
    paths = torch.tensor([math.comb(x + y, x) for x, y in zip(down.tolist(), right.tolist())], dtype=DT) * want
    torch.testing.assert_close(outs[-1], paths)


def test_path_graph_through_the_dag_execution_equals_the_1d_execution():
    """The path as a general DAG with shuffled edge columns: same outputs as the 1D fast path."""
    gen = torch.Generator().manual_seed(7)
    length, B, H, dk, dv = 90, 2, 2, 3, 4
    lattice = Lattice((length,))
    perm = torch.randperm(length - 1, generator=gen)
    dag = DAG(lattice.edge_index[:, perm], length)
    q, k = torch.randn(B, length, H, dk, dtype=DT, generator=gen), torch.randn(B, length, H, dk, dtype=DT, generator=gen)
    v = torch.randn(B, length, H, dv, dtype=DT, generator=gen)
    S, M = torch.rand(B, length - 1, H, dtype=DT, generator=gen), torch.rand(B, length - 1, H, dtype=DT, generator=gen)
    T = torch.rand(B, length - 2, H, dtype=DT, generator=gen) * 2 - 1
    D = torch.rand(B, length, H, dtype=DT, generator=gen)
    want = plstm_scan(lattice, q, k, v, S, T, M, D, execution="lattice")
    # the DAG's line-graph edge (e_in, e_out) passes node dst[e_in]; on the path that is line edge dst - 1
    line = dag.line_graph()
    T_dag = T[:, line.node - 1]
    got = plstm_scan(dag, q, k, v, S[:, perm], T_dag, M[:, perm], D, execution="wavefront")
    torch.testing.assert_close(got, want)


def impulse_inputs(lattice, source, transition, mark):
    n = lattice.num_nodes
    q = torch.ones(1, n, 1, 1, dtype=DT)
    v = torch.zeros(1, n, 1, 1, dtype=DT)
    v[0, 0] = 1.0
    return q, q, v, source, transition, mark, torch.zeros(1, n, 1, dtype=DT)


def test_stability_1d_p_mode_at_criticality():
    """|T| = 1 (signs alternating at random) over 100,000 steps: the state of an impulse keeps
    norm 1; random inputs give states bounded by the sum of their norms."""
    length = 100_000
    lattice = Lattice((length,))
    gen = torch.Generator().manual_seed(8)
    sign = torch.where(torch.rand(1, length - 2, 1, generator=gen) < 0.5, -1.0, 1.0).to(DT)
    ones = torch.ones(1, length - 1, 1, dtype=DT)
    h, state = plstm_scan(lattice, *impulse_inputs(lattice, ones, sign, ones), scale=1.0, return_state=True)
    assert torch.isfinite(h).all() and torch.isfinite(state).all()
    torch.testing.assert_close(h[0, 1:].abs(), torch.ones(length - 1, 1, 1, dtype=DT))
    k = torch.randn(1, length, 1, 2, dtype=DT, generator=gen)
    v = torch.randn(1, length, 1, 2, dtype=DT, generator=gen)
    _, state = plstm_scan(lattice, k, k, v, ones, sign, ones, torch.zeros(1, length, 1, dtype=DT), return_state=True)
    bound = torch.cumsum((k[..., :, None] * v[..., None, :]).abs().sum((-1, -2)), dim=1)
    assert (state.abs().sum((-1, -2)) <= bound + 1e-9).all()


def test_unconstrained_transition_blows_up_in_1d():
    length = 100_000
    lattice = Lattice((length,))
    ones = torch.ones(1, length - 1, 1, dtype=DT)
    T = torch.full((1, length - 2, 1), 1.01, dtype=DT)
    h = plstm_scan(lattice, *impulse_inputs(lattice, ones, T, ones), scale=1.0)
    assert not torch.isfinite(h).all() or h.abs().max() > 1e100


def p_mode_grid(shape, a, column_sum=1.0):
    grid = (1, *shape, 1)
    source = torch.tensor([1 - a, a], dtype=DT).expand(*grid, 2)
    transition = column_sum * torch.tensor([[1 - a, 1 - a], [a, a]], dtype=DT).expand(*grid, 2, 2)
    ones = torch.ones(*grid, 2, dtype=DT)
    return lattice_gates(Lattice(shape), source, transition, ones)


def test_stability_2d_p_mode_at_criticality_256x256():
    """An impulse on a 256x256 grid at criticality: finite, every anti-diagonal sums to 1, no
    node above 1; with column sums 2 (both turns at full strength) it explodes."""
    shape = (256, 256)
    lattice = Lattice(shape)
    h = plstm_scan(lattice, *impulse_inputs(lattice, *p_mode_grid(shape, 0.5)), scale=1.0)[0, :, 0, 0]
    assert torch.isfinite(h).all()
    assert h.max() <= 1.0 + 1e-12
    levels = lattice.levels
    for d in (1, 17, 255):
        assert abs(h[levels == d].sum().item() - 1.0) < 1e-10
    h = plstm_scan(lattice, *impulse_inputs(lattice, *p_mode_grid(shape, 0.5, column_sum=2.0)), scale=1.0)[0, :, 0, 0]
    assert not torch.isfinite(h).all() or h.abs().max() > 1e100
