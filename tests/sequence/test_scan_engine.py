"""scan: every execution equals the reference loop for every kind it runs (float64, forward
and gradients), with boundary gates; the kinds' maps against explicit matrices; the
parameterisations plstm_scan and selective_scan against scan; bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from everygraph.graphlib import DAG, Lattice
from everygraph.sequence import (
    KINDS,
    SUPPORTED_KINDS,
    Boundary,
    default_execution,
    plstm_scan,
    scan,
    selective_scan,
)
from everygraph.sequence.executions.lattice_elementwise import ElementwiseDiagonalRecurrence
from everygraph.sequence.executions.recurrent import HouseholderRecurrence, LinearRecurrence
from everygraph.sequence.plstm.lattice import _storage
from everygraph.sequence.transitions import apply_transition
from scan_asserts import assert_same

DT = torch.float64


def random_gate(kind, lead, dk, dv, gen, factors=2):
    """Transitions of one kind, contractive-ish, some exactly zero (scalar/diagonal/elementwise)."""
    if kind == "scalar":
        t = torch.rand(*lead, dtype=DT, generator=gen) * 2 - 1
    elif kind == "diagonal":
        t = torch.rand(*lead, dk, dtype=DT, generator=gen) * 2 - 1
    elif kind == "elementwise":
        t = torch.rand(*lead, dk, dv, dtype=DT, generator=gen) * 2 - 1
    else:
        w = torch.randn(*lead, factors, dk, dtype=DT, generator=gen)
        w = w / w.norm(dim=-1, keepdim=True)
        beta = torch.rand(*lead, factors, 1, dtype=DT, generator=gen) * 2
        gamma = torch.rand(*lead, factors, 1, dtype=DT, generator=gen) * 0.5 + 0.5
        return torch.cat([w, beta, gamma], dim=-1)
    t[t.abs() < 0.1] = 0.0
    return t


def random_weight(lead, dk, dv, gen, elementwise):
    shape = (*lead, dk, dv) if elementwise else lead
    return torch.rand(*shape, dtype=DT, generator=gen)


def random_inputs(dag, kind, gen, B=2, H=2, dk=3, dv=2, elementwise_weights=False, boundary=True):
    N, E, L = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()
    inputs = dict(
        q=torch.randn(B, N, H, dk, dtype=DT, generator=gen),
        k=torch.randn(B, N, H, dk, dtype=DT, generator=gen),
        v=torch.randn(B, N, H, dv, dtype=DT, generator=gen),
        source=random_weight((B, E, H), dk, dv, gen, elementwise_weights),
        transition=random_gate(kind, (B, L, H), dk, dv, gen),
        mark=random_weight((B, E, H), dk, dv, gen, elementwise_weights),
        direct=torch.rand(B, N, H, dtype=DT, generator=gen),
        initial_state=torch.randn(B, N, H, dk, dv, dtype=DT, generator=gen),
    )
    if boundary:
        inputs.update(
            b_mark=random_weight((B, N, H), dk, dv, gen, elementwise_weights),
            b_source=random_weight((B, N, H), dk, dv, gen, elementwise_weights),
            b_enter=random_gate(kind, (B, E, H), dk, dv, gen),
            b_leave=random_gate(kind, (B, E, H), dk, dv, gen),
            b_through=random_gate(kind, (B, N, H), dk, dv, gen),
        )
    return inputs


NAMES = ["q", "k", "v", "source", "transition", "mark", "direct"]


def run(structure, inputs, kind, execution, grad=True):
    """Outputs and the gradients of every input for a fixed random loss of h and the states."""
    leaves = {n: t.clone().requires_grad_(grad) for n, t in inputs.items()}
    boundary = None
    if "b_mark" in leaves:
        boundary = Boundary(*(leaves[f"b_{f}"] for f in Boundary._fields))
    h, state = scan(
        structure, *[leaves[n] for n in NAMES], kind=kind, initial_state=leaves["initial_state"],
        return_state=True, boundary=boundary, execution=execution,
    )
    if not grad:
        return [h, state]
    weight_h = torch.linspace(-1, 1, h.numel(), dtype=DT).view_as(h)
    weight_s = torch.linspace(1, -2, state.numel(), dtype=DT).view_as(state)
    ((h * weight_h).sum() + (state * weight_s).sum()).backward()
    return [h, state] + [leaves[n].grad for n in leaves]


def executions_for(structure, kind):
    out = []
    for execution, kinds in SUPPORTED_KINDS.items():
        # the Triton kernels have their own tests (here they would run in the slow interpreter)
        if execution in ("reference", "triton") or kind not in kinds:
            continue
        is_path = isinstance(structure, Lattice) and sum(s > 1 for s in structure.shape) <= 1
        if execution in ("recurrent", "chunked") and not is_path:
            continue
        if execution == "lattice" and not (isinstance(structure, Lattice) and structure.ndim <= 2):
            continue
        out.append(execution)
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape,flip", [((1,), (False,)), ((9,), (False,)), ((66,), (True,)),
                                        ((1, 6), (False, True)), ((3, 4), (False, False)), ((4, 3), (True, True))])
def test_executions_equal_reference(kind, shape, flip):
    """Every execution that runs the kind, with random boundary gates and initial states."""
    lattice = Lattice(shape, flip)
    gen = torch.Generator().manual_seed(sum(shape) + 10 * KINDS.index(kind))
    inputs = random_inputs(lattice.to_dag(), kind, gen, B=1 if shape[0] == 66 else 2)
    want = run(lattice, inputs, kind, "reference")
    for execution in executions_for(lattice, kind):
        assert_same(run(lattice, inputs, kind, execution), want)
        if "b_mark" in inputs:  # and with unit boundary gates
            unit = {n: t for n, t in inputs.items() if not n.startswith("b_")}
            assert_same(run(lattice, unit, kind, execution, grad=False), run(lattice, unit, kind, "reference", grad=False))


@pytest.mark.parametrize("kind", ["scalar", "diagonal", "elementwise"])
def test_elementwise_weights(kind):
    """Source and mark as [dk, dv] weights (Mamba's mark is its own decay)."""
    gen = torch.Generator().manual_seed(7)
    for lattice, executions in ((Lattice((11,)), ("wavefront", "recurrent", "lattice")),
                                (Lattice((3, 4), (True, False)), ("wavefront", "lattice"))):
        inputs = random_inputs(lattice.to_dag(), kind, gen, elementwise_weights=True)
        want = run(lattice, inputs, kind, "reference")
        for execution in executions:
            assert_same(run(lattice, inputs, kind, execution), want)


def test_elementwise_diagonal_recurrence_gradcheck():
    lattice = Lattice((2, 3))
    storage = _storage(lattice.shape, lattice.flip)
    gen = torch.Generator().manual_seed(8)
    N, B, H, K = lattice.num_nodes, 1, 1, 2
    transition = (torch.rand(N, B, H, 2, 2, K, dtype=DT, generator=gen) - 0.5).requires_grad_()
    emitted = torch.randn(N, B, H, 2, K, dtype=DT, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, x: ElementwiseDiagonalRecurrence.apply(t, x, storage.diagonals), (transition, emitted))


@st.composite
def random_dags(draw):
    n = draw(st.integers(1, 8))
    pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] < p[1]) if n > 1 else st.nothing()
    edges = draw(st.lists(pairs, max_size=14)) if n > 1 else []
    perm = draw(st.permutations(range(n)))
    edge_index = torch.tensor([[perm[u] for u, _ in edges], [perm[w] for _, w in edges]], dtype=torch.long).view(2, -1)
    return DAG(edge_index, n)


@settings(max_examples=20, deadline=None)
@given(dag=random_dags(), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16))
def test_wavefront_equals_reference_on_random_dags(dag, kind, seed):
    inputs = random_inputs(dag, kind, torch.Generator().manual_seed(seed), B=1, dk=2, dv=2,
                           elementwise_weights=seed % 2 == 0)
    assert_same(run(dag, inputs, kind, "wavefront"), run(dag, inputs, kind, "reference"))


def test_kinds_are_the_stated_matrices():
    """Each kind's map against its explicit dk x dk (or elementwise) operator."""
    gen = torch.Generator().manual_seed(1)
    dk, dv = 4, 3
    C = torch.randn(dk, dv, dtype=DT, generator=gen)
    t = torch.rand((), dtype=DT, generator=gen)
    torch.testing.assert_close(apply_transition("scalar", t, C), t * C)
    alpha = torch.rand(dk, dtype=DT, generator=gen)
    torch.testing.assert_close(apply_transition("diagonal", alpha, C), torch.diag(alpha) @ C)
    A = torch.rand(dk, dv, dtype=DT, generator=gen)
    torch.testing.assert_close(apply_transition("elementwise", A, C), A * C)
    gate = random_gate("householder", (), dk, dv, gen, factors=3)
    matrix = torch.eye(dk, dtype=DT)
    for w, beta, gamma in zip(gate[:, :dk], gate[:, dk], gate[:, dk + 1]):
        matrix = gamma * (torch.eye(dk, dtype=DT) - beta * torch.outer(w, w)) @ matrix  # factor 0 first
    torch.testing.assert_close(apply_transition("householder", gate, C), matrix @ C)


def test_linear_recurrence_gradcheck():
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(6, 2, 3, 2, dtype=DT, generator=gen, requires_grad=True)
    for a_shape in [(6, 2, 3, 2), (6, 2, 1, 1), (6, 2, 3, 1)]:
        a = (torch.rand(*a_shape, dtype=DT, generator=gen) * 2 - 1).requires_grad_()
        assert torch.autograd.gradcheck(LinearRecurrence.apply, (a, X))


def test_householder_recurrence_gradcheck():
    """The hand-written adjoint of the householder loop, gates and emitted states."""
    gen = torch.Generator().manual_seed(12)
    for factors in (1, 3):
        gate = random_gate("householder", (5, 2), 3, 2, gen, factors=factors).requires_grad_()
        X = torch.randn(5, 2, 3, 2, dtype=DT, generator=gen, requires_grad=True)
        assert torch.autograd.gradcheck(HouseholderRecurrence.apply, (gate, X))


def test_chunked_diagonal_does_not_look_ahead():
    """A NaN or inf at step t leaves the outputs of earlier steps finite and equal to the
    reference's (future entries are selected away, not multiplied by zero)."""
    lattice, t, kind = Lattice((21,)), 13, "diagonal"
    inputs = random_inputs(lattice.to_dag(), kind, torch.Generator().manual_seed(13), boundary=False)
    args = [inputs[n] for n in NAMES]
    want = scan(lattice, *args, kind=kind, execution="reference")
    for name in ("q", "k", "v", "transition", "direct"):
        for bad in (float("nan"), float("inf")):
            corrupt = dict(zip(NAMES, (a.clone() for a in args)))
            corrupt[name][:, t] = bad
            h = scan(lattice, *[corrupt[n] for n in NAMES], kind=kind, execution="chunked")
            torch.testing.assert_close(h[:, :t], want[:, :t], rtol=1e-9, atol=1e-10, msg=f"{name} = {bad}")


def test_plstm_scan_is_the_scalar_kind_with_unit_boundary():
    gen = torch.Generator().manual_seed(3)
    for structure in (Lattice((5, 4), (True, False)), Lattice((30,))):
        inputs = random_inputs(structure.to_dag(), "scalar", gen, boundary=False)
        args = [inputs[n] for n in NAMES]
        got = plstm_scan(structure, *args, initial_state=inputs["initial_state"], return_state=True)
        want = scan(structure, *args, kind="scalar", initial_state=inputs["initial_state"], return_state=True,
                    execution="reference")
        assert_same(got, want)


def test_selective_scan_is_the_elementwise_kind_on_a_path():
    """Mamba-1: q = C_t, k = B_t, v = delta_t u_t, transition and mark exp(delta_t A), source 1,
    direct 1, plus D u and silu(z) outside the recurrence."""
    gen = torch.Generator().manual_seed(4)
    batch, channels, n, length = 2, 3, 4, 9
    u = torch.randn(batch, channels, length, dtype=DT, generator=gen)
    delta = torch.rand(batch, channels, length, dtype=DT, generator=gen)
    A = -torch.rand(channels, n, dtype=DT, generator=gen) * 2
    Bm = torch.randn(batch, n, length, dtype=DT, generator=gen)
    Cm = torch.randn(batch, n, length, dtype=DT, generator=gen)
    D = torch.randn(channels, dtype=DT, generator=gen)
    z = torch.randn(batch, channels, length, dtype=DT, generator=gen)
    out, last = selective_scan(u, delta, A, Bm, Cm, D, z, return_last_state=True)

    decay = torch.exp(delta.transpose(1, 2)[..., None, None, :] * A.t())  # [B, L, 1, N, D]: exp(delta_d A_dn)
    q, k = Cm.transpose(1, 2)[:, :, None], Bm.transpose(1, 2)[:, :, None]
    v = (delta * u).transpose(1, 2)[:, :, None]
    lattice = Lattice((length,))
    for execution in ("reference", "wavefront", "recurrent"):
        h, states = scan(
            lattice, q, k, v, torch.ones(batch, length - 1, 1, dtype=DT), decay[:, 1:-1], decay[:, 1:],
            torch.ones(batch, length, 1, dtype=DT), kind="elementwise", scale=1.0, return_state=True,
            boundary=Boundary(leave=decay[:, 1:]), execution=execution,
        )
        y = h[:, :, 0].transpose(1, 2) + D[:, None] * u
        torch.testing.assert_close(y * torch.nn.functional.silu(z), out)
        # the last state: the last node's virtual out-edge with its own decay as the leave gate
        torch.testing.assert_close(states[:, -1, 0].transpose(1, 2), last)


def test_default_executions():
    assert default_execution(Lattice((5,)), "scalar") == "chunked"
    assert default_execution(Lattice((5,)), "elementwise") == "recurrent"
    assert default_execution(Lattice((5,)), "householder") == "recurrent"  # 2x the wavefront, fwd+bwd
    assert default_execution(Lattice((3, 5)), "scalar") == "lattice"
    assert default_execution(Lattice((3, 5)), "diagonal") == "wavefront"  # lattice: no measured gain
    assert default_execution(Lattice((2, 2, 2)), "scalar") == "wavefront"


def test_bad_input():
    lattice = Lattice((3, 4))
    inputs = random_inputs(lattice.to_dag(), "elementwise", torch.Generator().manual_seed(5), boundary=False)
    args = [inputs[n] for n in NAMES]
    with pytest.raises(ValueError, match="kind must be one of"):
        scan(lattice, *args, kind="complex")
    with pytest.raises(ValueError, match=r"transition must have shape \[B, L, H\].*got \[2, 22, 2, 3, 2\]"):
        scan(lattice, *args, kind="scalar")
    with pytest.raises(ValueError, match="execution='lattice' runs the kinds scalar, diagonal, elementwise, not 'householder'"):
        scan(lattice, *args, kind="householder", execution="lattice")
    with pytest.raises(ValueError, match="needs a path"):
        scan(lattice, *args, kind="elementwise", execution="recurrent")
    with pytest.raises(ValueError, match=r"boundary.enter must have shape"):
        scan(lattice, *args, kind="elementwise", boundary=Boundary(enter=torch.ones(2, 17, 2, dtype=DT)))
    with pytest.raises(ValueError, match="householder transition must have shape"):
        scan(lattice, *args[:4], torch.ones(2, 22, 2, 3, dtype=DT), *args[5:], kind="householder")
