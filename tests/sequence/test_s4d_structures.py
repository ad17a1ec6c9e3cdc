"""S4D off the plain sequence: packed sequences (``cu_seqlens``), ``reverse``, 1D and 2D
lattices (flipped too) and random DAGs, against a plain loop over nodes in topological order
written from the equations, forward and gradients in float64:

    x_n = dA * sum_{m -> n} x_m + dB * u_n   (one term per edge, x of a source = dB u_n)
    y_n = 2 Re(sum_j C_j x_{n,j}) + D u_n

with dA, dB from the discretisation formulas. The loop builds its own edge lists (a lattice's
edges from its definition, packed sequences as separate paths) and its own topological order.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from everygraph.graphlib import DAG, Lattice
from everygraph.sequence import s4d, scan

F64, C128 = torch.float64, torch.complex128
H, MODES_PER_CHANNEL = 2, 3
PARAMETERS = ("log_dt", "A_re", "A_im", "B_re", "B_im", "C_re", "C_im", "D")


def _params(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=F64)  # noqa: E731
    n = MODES_PER_CHANNEL
    p = dict(log_dt=torch.rand(H, generator=gen, dtype=F64) * 2 - 3, A_re=-(0.1 + torch.rand(H, n, generator=gen, dtype=F64)),
             A_im=r(H, n) * 3, B_re=r(H, n), B_im=r(H, n), C_re=r(H, n), C_im=r(H, n), D=r(H))
    return {k: v.requires_grad_() for k, v in p.items()}


def _ssm(p: dict) -> tuple:
    return (p["log_dt"], torch.complex(p["A_re"], p["A_im"]), torch.complex(p["B_re"], p["B_im"]),
            torch.complex(p["C_re"], p["C_im"]), p["D"])


def _op(p: dict, u: torch.Tensor, **kw) -> torch.Tensor:
    return s4d(u, *_ssm(p), **kw)


def _topological_order(num_nodes: int, edges: list[tuple[int, int]]) -> list[int]:
    indegree = [0] * num_nodes
    for _, b in edges:
        indegree[b] += 1
    ready = [v for v in range(num_nodes) if indegree[v] == 0]
    order = []
    while ready:
        v = ready.pop()
        order.append(v)
        for a, b in edges:
            if a == v:
                indegree[b] -= 1
                if indegree[b] == 0:
                    ready.append(b)
    assert len(order) == num_nodes
    return order


def _loop(p: dict, u: torch.Tensor, num_nodes: int, edges: list[tuple[int, int]], discretization: str = "zoh") -> torch.Tensor:
    """``u`` ``[batch, N, H]`` -> ``y`` ``[batch, N, H]``, node by node (autograd through it)."""
    dt = p["log_dt"].exp()[:, None]
    A = torch.complex(p["A_re"], p["A_im"])
    B = torch.complex(p["B_re"], p["B_im"])
    C = torch.complex(p["C_re"], p["C_im"])
    if discretization == "zoh":
        dA = torch.exp(dt * A)
        dB = (dA - 1) / A * B
    else:
        dA = (1 + dt * A / 2) / (1 - dt * A / 2)
        dB = dt / (1 - dt * A / 2) * B
    predecessors: list[list[int]] = [[] for _ in range(num_nodes)]
    for a, b in edges:
        predecessors[b].append(a)
    x: list[torch.Tensor | None] = [None] * num_nodes
    y: list[torch.Tensor | None] = [None] * num_nodes
    for node in _topological_order(num_nodes, edges):
        incoming = torch.zeros(u.shape[0], H, MODES_PER_CHANNEL, dtype=C128)
        for m in predecessors[node]:
            incoming = incoming + x[m]
        x[node] = dA * incoming + dB * u[:, node, :, None]
        y[node] = 2 * (C * x[node]).sum(-1).real + p["D"] * u[:, node]
    return torch.stack(y, dim=1) if num_nodes else u * p["D"]


def _path_edges(bounds: list[int], reverse: bool = False) -> list[tuple[int, int]]:
    edges = [(t, t + 1) for a, b in zip(bounds[:-1], bounds[1:]) for t in range(a, b - 1)]
    return [(b, a) for a, b in edges] if reverse else edges


def _lattice_edges(shape: tuple[int, ...], flip: tuple[bool, ...]) -> list[tuple[int, int]]:
    """From the definition: coordinate c -> c + 1 along every axis (c + 1 -> c where flipped),
    nodes numbered row-major."""
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    edges = []
    for coord in itertools.product(*map(range, shape)):
        node = sum(c * s for c, s in zip(coord, strides))
        for axis, size in enumerate(shape):
            if coord[axis] + 1 < size:
                neighbour = node + strides[axis]
                edges.append((neighbour, node) if flip[axis] else (node, neighbour))
    return edges


def _random_dag(seed: int) -> tuple[int, list[tuple[int, int]]]:
    """9 nodes, labels shuffled (topological order is not the index order), one parallel edge
    (counted twice) and one isolated node."""
    gen = torch.Generator().manual_seed(seed)
    num_nodes = 9
    label = torch.randperm(num_nodes, generator=gen).tolist()
    edges = [(label[i], label[j]) for i in range(num_nodes - 1) for j in range(i + 1, num_nodes - 1)
             if torch.rand((), generator=gen) < 0.35]
    edges.append(edges[0])
    return num_nodes, edges


def _assert_same(p: dict, u: torch.Tensor, got: torch.Tensor, expected: torch.Tensor) -> None:
    """Outputs equal, and so are the gradients of one random projection wrt u and every parameter."""
    torch.testing.assert_close(got, expected)
    weight = torch.randn(got.shape, generator=torch.Generator().manual_seed(99), dtype=F64)
    leaves = [u, *(p[k] for k in PARAMETERS)]
    for name, a, b in zip(["u", *PARAMETERS], torch.autograd.grad((got * weight).sum(), leaves, retain_graph=True),
                          torch.autograd.grad((expected * weight).sum(), leaves, retain_graph=True)):
        assert b.abs().sum() > 0, name
        torch.testing.assert_close(a, b, msg=lambda m: f"gradient wrt {name}: {m}")


def _u(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64, requires_grad=True)


# ------------------------------------------------------------------------------ sequences
BOUNDS = [0, 3, 3, 8, 11]  # an empty sequence in the middle


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("mode", ["conv", "recurrent"])
@pytest.mark.parametrize("reverse", [False, True])
def test_packed_sequences_equal_the_loop(mode, discretization, reverse):
    p, u = _params(), _u(2, H, 11)
    got = _op(p, u, mode=mode, discretization=discretization, cu_seqlens=torch.tensor(BOUNDS), reverse=reverse)
    expected = _loop(p, u.transpose(1, 2), 11, _path_edges(BOUNDS, reverse), discretization).transpose(1, 2)
    _assert_same(p, u, got, expected)


@pytest.mark.parametrize("bounds", [BOUNDS, [0, 0, 5, 11, 11], [0, 11], [0, 1, 2, 11]])
@pytest.mark.parametrize("mode", ["conv", "recurrent"])
def test_packed_result_is_each_sequence_alone_and_reverse_is_flipping(mode, bounds):
    p, u = _params(2), _u(3, H, 11, seed=3)
    for reverse in (False, True):
        packed = _op(p, u, mode=mode, cu_seqlens=torch.tensor(bounds), reverse=reverse)
        alone = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            piece = u[..., a:b]
            alone.append(_op(p, piece.flip(-1), mode=mode).flip(-1) if reverse else _op(p, piece, mode=mode))
        torch.testing.assert_close(packed, torch.cat(alone, dim=-1))


@pytest.mark.parametrize("mode", ["conv", "recurrent"])
def test_reverse_is_flipping_and_its_states_belong_to_the_right_to_left_scan(mode):
    p, u = _params(4), _u(2, H, 9, seed=5)
    flipped = _op(p, u.flip(-1), mode=mode).flip(-1)
    torch.testing.assert_close(_op(p, u, mode=mode, reverse=True), flipped)
    _assert_same(p, u, _op(p, u, mode=mode, reverse=True), _loop(p, u.transpose(1, 2), 9, _path_edges([0, 9], True)).transpose(1, 2))
    # the right part first, its state carried into the left part
    right, state = _op(p, u[..., 4:], mode=mode, reverse=True, return_state=True)
    left, end = _op(p, u[..., :4], mode=mode, reverse=True, initial_state=state, return_state=True)
    torch.testing.assert_close(torch.cat([left, right], dim=-1), flipped)
    torch.testing.assert_close(end, _op(p, u.flip(-1), mode="recurrent", return_state=True)[1])


def test_a_1d_lattice_is_the_sequence_in_the_node_layout():
    """``u`` ``[batch, N, H]`` with a structure (the layout of the other ops); a flipped 1D
    lattice reads right to left, and ``reverse`` flips it back."""
    p, u = _params(6), _u(2, H, 10, seed=7)
    nodes = u.transpose(1, 2)
    for mode in ("conv", "recurrent"):
        plain = _op(p, u, mode=mode).transpose(1, 2)
        torch.testing.assert_close(_op(p, nodes, mode=mode, structure=Lattice((10,))), plain)
        backwards = _op(p, u, mode=mode, reverse=True).transpose(1, 2)
        torch.testing.assert_close(_op(p, nodes, mode=mode, structure=Lattice((10,), (True,))), backwards)
        torch.testing.assert_close(_op(p, nodes, mode=mode, structure=Lattice((10,), (True,)), reverse=True), plain)
        packed = _op(p, u, mode=mode, cu_seqlens=torch.tensor([0, 4, 10])).transpose(1, 2)
        torch.testing.assert_close(_op(p, nodes, mode=mode, structure=Lattice((10,)), cu_seqlens=torch.tensor([0, 4, 10])), packed)
    y, state = _op(p, nodes, structure=Lattice((10,)), return_state=True)
    torch.testing.assert_close(state, _op(p, u, return_state=True)[1])


def test_a_nan_stays_in_its_packed_sequence():
    p = {k: v.detach() for k, v in _params(8).items()}
    u = _u(2, H, 11, seed=9).detach()
    for mode in ("conv", "recurrent"):
        clean = _op(p, u, mode=mode, cu_seqlens=torch.tensor(BOUNDS))
        poisoned = u.clone()
        poisoned[..., 5] = float("nan")  # inside the sequence 3..8
        out = _op(p, poisoned, mode=mode, cu_seqlens=torch.tensor(BOUNDS))
        torch.testing.assert_close(out[..., :5], clean[..., :5], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out[..., 8:], clean[..., 8:], rtol=1e-12, atol=1e-12)
        assert torch.isnan(out[..., 5]).all()


# ------------------------------------------------------------------------------ grids and DAGs
@pytest.mark.parametrize("shape, flip, reverse", [
    ((3, 4), (False, False), False),
    ((3, 4), (True, False), False),
    ((3, 4), (False, True), True),
    ((2, 2, 3), (False, True, False), False),
])
@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_lattice_equals_the_loop(shape, flip, reverse, discretization):
    p = _params(10)
    N = math.prod(shape)
    u = _u(2, N, H, seed=11)
    got = _op(p, u, discretization=discretization, structure=Lattice(shape, flip), reverse=reverse)
    edges = _lattice_edges(shape, tuple(f != reverse for f in flip))
    _assert_same(p, u, got, _loop(p, u, N, edges, discretization))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_dag_equals_the_loop(seed, reverse):
    p = _params(12 + seed)
    N, edges = _random_dag(seed)
    u = _u(2, N, H, seed=13)
    dag = DAG(torch.tensor(edges).t(), N)
    got = _op(p, u, structure=dag, reverse=reverse, discretization="bilinear" if seed else "zoh")
    _assert_same(p, u, got, _loop(p, u, N, [(b, a) for a, b in edges] if reverse else edges, "bilinear" if seed else "zoh"))


def test_grid_mode_is_irrelevant_and_a_batch_of_dags_is_their_union():
    p = {k: v.detach() for k, v in _params(14).items()}
    u = _u(2, 12, H, seed=15).detach()
    lattice = Lattice((3, 4))
    torch.testing.assert_close(_op(p, u, structure=lattice, mode="conv"), _op(p, u, structure=lattice, mode="recurrent"))
    # two copies of the grid as one DAG: each copy's nodes see only their own
    edges = lattice.to_dag().edge_index
    union = DAG(torch.cat([edges, edges + 12], dim=1), 24)
    both = _op(p, torch.cat([u, u.flip(0)], dim=1), structure=union)
    torch.testing.assert_close(both, torch.cat([_op(p, u, structure=lattice), _op(p, u.flip(0), structure=lattice)], dim=1))


def test_empty_inputs_are_the_skip():
    p = {k: v.detach() for k, v in _params(16).items()}
    empty_dag = DAG(torch.zeros(2, 0, dtype=torch.long), 0)
    assert _op(p, torch.zeros(2, 0, H, dtype=F64), structure=empty_dag).shape == (2, 0, H)
    u = torch.randn(0, 12, H, dtype=F64)
    assert _op(p, u, structure=Lattice((3, 4))).shape == (0, 12, H)
    isolated = DAG(torch.zeros(2, 0, dtype=torch.long), 4)  # no edges: every node is its own source
    x = torch.randn(1, 4, H, dtype=F64)
    torch.testing.assert_close(_op(p, x, structure=isolated), _loop(p, x, 4, []))
    for mode in ("conv", "recurrent"):  # every packed sequence empty
        assert _op(p, torch.zeros(1, H, 0, dtype=F64), mode=mode, cu_seqlens=torch.tensor([0, 0, 0])).shape == (1, H, 0)


# ------------------------------------------------------------------------------ the engine on complex states
@pytest.mark.parametrize("kind", ["scalar", "diagonal", "elementwise"])
def test_wavefront_runs_complex_states_like_the_reference(kind):
    """The execution S4D takes on grids and DAGs, with entering and leaving states."""
    gen = torch.Generator().manual_seed(17)
    c = lambda *s: torch.complex(torch.randn(*s, generator=gen, dtype=F64), torch.randn(*s, generator=gen, dtype=F64))  # noqa: E731
    N, edges = _random_dag(2)
    dag = DAG(torch.tensor(edges).t(), N)
    B, heads, dk, dv = 2, 2, 3, 2
    lines = dag.line_graph().node.numel()
    gate = {"scalar": (), "diagonal": (dk,), "elementwise": (dk, dv)}[kind]
    leaves = [t.requires_grad_() for t in (
        c(B, N, heads, dk), c(B, N, heads, dk), c(B, N, heads, dv), c(B, dag.num_edges, heads),
        0.9 * torch.exp(1j * torch.rand(B, lines, heads, *gate, generator=gen, dtype=F64)),
        c(B, dag.num_edges, heads, dk, dv), c(B, N, heads), c(B, N, heads, dk, dv))]
    results = []
    for execution in ("reference", "wavefront"):
        h, final = scan(dag, *leaves[:7], kind=kind, initial_state=leaves[7], return_state=True, scale=1.0, execution=execution)
        loss = (h.abs() ** 2).sum() + (final.abs() ** 2).sum()
        results.append((h, final, torch.autograd.grad(loss, leaves)))
    (h0, f0, g0), (h1, f1, g1) = results
    torch.testing.assert_close(h1, h0)
    torch.testing.assert_close(f1, f0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------ refusals
def test_bad_inputs_get_clear_errors():
    p = {k: v.detach() for k, v in _params(18).items()}
    seq, nodes = torch.randn(1, H, 6, dtype=F64), torch.randn(1, 6, H, dtype=F64)
    grid = Lattice((2, 3))
    with pytest.raises(TypeError, match="structure must be"):
        _op(p, nodes, structure="grid")
    with pytest.raises(ValueError, match=r"u must have shape \[batch, N, H\] with N = 6"):
        _op(p, torch.randn(1, 5, H, dtype=F64), structure=grid)
    with pytest.raises(ValueError, match=r"u must have shape \[batch, N, H\] with H = 2"):
        _op(p, torch.randn(1, 6, 1, dtype=F64), structure=grid)
    with pytest.raises(ValueError, match="cu_seqlens packs sequences"):
        _op(p, nodes, structure=grid, cu_seqlens=torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="cu_seqlens"):
        _op(p, seq, cu_seqlens=torch.tensor([0, 5]))
    with pytest.raises(TypeError, match="cu_seqlens"):
        _op(p, seq, cu_seqlens=torch.tensor([0.0, 6.0]))
    with pytest.raises(ValueError, match="initial_state and return_state take one sequence"):
        _op(p, nodes, structure=grid, return_state=True)
    with pytest.raises(ValueError, match="initial_state and return_state take one sequence"):
        _op(p, seq, cu_seqlens=torch.tensor([0, 2, 6]), initial_state=torch.zeros(1, H, MODES_PER_CHANNEL, dtype=C128))
    with pytest.raises(TypeError, match="reverse"):
        _op(p, seq, reverse="yes")
