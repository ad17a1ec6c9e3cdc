"""plstm_scan: every execution equals the reference loop (forward and gradients), batches
of graphs, boundary states, bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data

from everygraph.graphlib import DAG, CycleError, Lattice
from everygraph.sequence import plstm_scan
from everygraph.sequence.plstm import EXECUTIONS
from scan_asserts import assert_same

DT = torch.float64


def random_inputs(dag, B=2, H=2, dk=3, dv=2, generator=None):
    """Random gates with transitions in [-1, 1] (some exactly zero) and an initial state."""
    g = generator
    N, E, L = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()
    transition = torch.rand(B, L, H, dtype=DT, generator=g) * 2 - 1
    transition[transition.abs() < 0.1] = 0.0
    return dict(
        q=torch.randn(B, N, H, dk, dtype=DT, generator=g),
        k=torch.randn(B, N, H, dk, dtype=DT, generator=g),
        v=torch.randn(B, N, H, dv, dtype=DT, generator=g),
        source=torch.rand(B, E, H, dtype=DT, generator=g),
        transition=transition,
        mark=torch.rand(B, E, H, dtype=DT, generator=g),
        direct=torch.rand(B, N, H, dtype=DT, generator=g),
        initial_state=torch.randn(B, N, H, dk, dv, dtype=DT, generator=g),
    )


def run(structure, inputs, execution, grad=True, initial=True):
    """Outputs and gradients of all inputs for a fixed random loss of h and the final states."""
    leaves = {name: t.clone().requires_grad_(grad) for name, t in inputs.items() if initial or name != "initial_state"}
    names = ["q", "k", "v", "source", "transition", "mark", "direct"]
    h, state = plstm_scan(
        structure, *[leaves[n] for n in names], initial_state=leaves.get("initial_state"),
        return_state=True, execution=execution,
    )
    if not grad:
        return [h, state]
    weight_h = torch.linspace(-1, 1, h.numel(), dtype=DT).view_as(h)
    weight_s = torch.linspace(1, -2, state.numel(), dtype=DT).view_as(state)
    ((h * weight_h).sum() + (state * weight_s).sum()).backward()
    return [h, state] + [leaves[n].grad for n in leaves]


def lattice_executions(lattice):
    return ["wavefront", "lattice"] if lattice.ndim <= 2 else ["wavefront"]


@pytest.mark.parametrize(
    "shape", [(1,), (2,), (3,), (64,), (65,), (300,), (1, 1), (1, 9), (9, 1), (2, 2), (7, 13), (13, 7), (2, 3, 4)]
)
def test_executions_equal_reference_on_lattices(shape):
    """1D: lengths around and beyond the chunk size (64); 2D: all four orientations."""
    gen = torch.Generator().manual_seed(len(shape) * 1000 + sum(shape))
    flips = Lattice.orientations(len(shape))
    if shape[0] > 64:  # the long references are the slow part: one orientation each
        flips = [(shape[0] % 2 == 1,)]
    for flip in flips:
        lattice = Lattice(shape, flip)
        inputs = random_inputs(lattice.to_dag(), generator=gen)
        want = run(lattice, inputs, "reference")
        for execution in lattice_executions(lattice):
            assert_same(run(lattice, inputs, execution), want)


def test_without_initial_state_and_default_execution():
    gen = torch.Generator().manual_seed(1)
    lattice = Lattice((5, 6), (True, False))
    inputs = random_inputs(lattice.to_dag(), generator=gen)
    want = run(lattice, inputs, "reference", initial=False)
    assert_same(run(lattice, inputs, None, initial=False), want)
    args = [inputs[n] for n in ["q", "k", "v", "source", "transition", "mark", "direct"]]
    torch.testing.assert_close(plstm_scan(lattice, *args), want[0])
    torch.testing.assert_close(plstm_scan(lattice.to_dag(), *args), want[0])


@st.composite
def random_dags(draw):
    """A DAG on shuffled node ids (so ids are not a topological order), parallel edges allowed."""
    n = draw(st.integers(1, 9))
    pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] < p[1]) if n > 1 else st.nothing()
    edges = draw(st.lists(pairs, max_size=16)) if n > 1 else []
    perm = draw(st.permutations(range(n)))
    edge_index = torch.tensor([[perm[u] for u, _ in edges], [perm[w] for _, w in edges]], dtype=torch.long).view(2, -1)
    return DAG(edge_index, n)


@settings(max_examples=25, deadline=None)
@given(dag=random_dags(), seed=st.integers(0, 2**16))
def test_wavefront_equals_reference_on_random_dags(dag, seed):
    inputs = random_inputs(dag, B=1, H=2, dk=2, dv=2, generator=torch.Generator().manual_seed(seed))
    assert_same(run(dag, inputs, "wavefront"), run(dag, inputs, "reference"))


def random_graph(num_nodes, num_edges, gen):
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=gen)
    keep = edge_index[0] != edge_index[1]
    edge_index = edge_index[:, keep]
    low, high = edge_index.min(0).values, edge_index.max(0).values
    return Data(edge_index=torch.stack([low, high]), num_nodes=num_nodes)


def test_batch_of_graphs_equals_each_graph_alone():
    gen = torch.Generator().manual_seed(3)
    graphs = [random_graph(n, m, gen) for n, m in [(5, 7), (1, 0), (9, 15), (3, 0), (12, 20)]]
    batch = Batch.from_data_list(graphs)
    dag = DAG.from_data(batch)
    inputs = random_inputs(dag, generator=gen)
    for execution in ("wavefront", "reference"):
        h, state = run(dag, inputs, execution, grad=False)
        node_start = edge_start = line_start = 0
        for graph in graphs:
            alone = DAG(graph.edge_index, graph.num_nodes)
            n, e, l = alone.num_nodes, alone.num_edges, alone.line_graph().node.numel()
            part = {}
            for name, t in inputs.items():
                if name in ("source", "mark"):
                    part[name] = t[:, edge_start:edge_start + e]
                elif name == "transition":
                    part[name] = t[:, line_start:line_start + l]
                else:
                    part[name] = t[:, node_start:node_start + n]
            h_alone, state_alone = run(alone, part, "reference", grad=False)
            torch.testing.assert_close(h[:, node_start:node_start + n], h_alone)
            torch.testing.assert_close(state[:, node_start:node_start + n], state_alone)
            node_start, edge_start, line_start = node_start + n, edge_start + e, line_start + l


def test_initial_state_and_final_state_semantics_on_a_path():
    """1D: the state before step 0 and the state after the last step, by hand."""
    gen = torch.Generator().manual_seed(4)
    length, dk, dv = 6, 2, 3
    lattice = Lattice((length,))
    inputs = random_inputs(lattice.to_dag(), B=1, H=1, dk=dk, dv=dv, generator=gen)
    c0 = torch.zeros_like(inputs["initial_state"])
    c0[:, 0] = inputs["initial_state"][:, 0]
    q, k, v = (inputs[n][0, :, 0] for n in "qkv")
    S, T, M, D = (inputs[n][0, :, 0] for n in ("source", "transition", "mark", "direct"))
    q = q / dk**0.5
    state, outputs = c0[0, 0, 0], []
    for t in range(length):
        read = state if t == 0 else M[t - 1] * state  # the virtual in-edge has mark 1
        outputs.append(q[t] @ read + D[t] * (q[t] @ k[t]) * v[t])
        kv = torch.outer(k[t], v[t])
        if t < length - 1:
            state = (state if t == 0 else T[t - 1] * state) + S[t] * kv
        else:
            final = state + kv  # the virtual out-edge: transition and source 1
    inputs["initial_state"] = c0
    for execution in EXECUTIONS:
        h, states = run(lattice, inputs, execution, grad=False)
        torch.testing.assert_close(h[0, :, 0], torch.stack(outputs))
        torch.testing.assert_close(states[0, -1, 0], final)


def test_single_node_and_no_edges():
    gen = torch.Generator().manual_seed(5)
    for structure in (Lattice((1,)), Lattice((1, 1)), DAG(torch.empty(2, 0, dtype=torch.long), 4)):
        inputs = random_inputs(structure.to_dag() if isinstance(structure, Lattice) else structure, generator=gen)
        for execution in ("reference", "wavefront") + (("lattice",) if isinstance(structure, Lattice) else ()):
            h, state = run(structure, inputs, execution, grad=False)
            q, k, v, c0 = inputs["q"] / 3**0.5, inputs["k"], inputs["v"], inputs["initial_state"]
            want = inputs["direct"][..., None] * (q * k).sum(-1, keepdim=True) * v + torch.einsum("bnhd,bnhdv->bnhv", q, c0)
            torch.testing.assert_close(h, want)
            torch.testing.assert_close(state, c0 + k[..., :, None] * v[..., None, :])


def test_scale_multiplies_queries():
    gen = torch.Generator().manual_seed(6)
    lattice = Lattice((4, 3))
    inputs = random_inputs(lattice.to_dag(), generator=gen)
    args = [inputs[n] for n in ["q", "k", "v", "source", "transition", "mark", "direct"]]
    unscaled = plstm_scan(lattice, *args, scale=1.0)
    torch.testing.assert_close(plstm_scan(lattice, *args, scale=0.25), 0.25 * unscaled)


def test_bad_input():
    lattice = Lattice((3, 4))
    inputs = random_inputs(lattice.to_dag())
    args = [inputs[n] for n in ["q", "k", "v", "source", "transition", "mark", "direct"]]
    with pytest.raises(ValueError, match=r"transition must have shape .*\[2, 22, 2\].*got \[2, 21, 2\]"):
        plstm_scan(lattice, *args[:4], args[4][:, :-1], *args[5:])
    with pytest.raises(ValueError, match=r"source must have shape .*\[2, 17, 2\].*got \[2, 17, 3\]"):
        plstm_scan(lattice, *args[:3], torch.rand(2, 17, 3, dtype=DT), *args[4:])
    with pytest.raises(ValueError, match=r"initial_state must have shape"):
        plstm_scan(lattice, *args, initial_state=torch.zeros(2, 12, 2, 3, 3, dtype=DT))
    with pytest.raises(ValueError, match="dtype"):
        plstm_scan(lattice, *args[:6], args[6].float())
    with pytest.raises(ValueError, match="reference, wavefront, lattice"):
        plstm_scan(lattice, *args, execution="magic")
    with pytest.raises(ValueError, match="needs a 1D or 2D Lattice"):
        plstm_scan(lattice.to_dag(), *args, execution="lattice")
    with pytest.raises(TypeError, match="Lattice or graphlib.DAG"):
        plstm_scan(lattice.edge_index, *args)
    with pytest.raises(CycleError):
        DAG(torch.tensor([[0, 1, 2], [1, 2, 0]]))


def test_inputs_are_not_modified():
    lattice = Lattice((4, 5))
    inputs = random_inputs(lattice.to_dag())
    copies = {n: t.clone() for n, t in inputs.items()}
    for execution in EXECUTIONS:
        run(lattice, inputs, execution, grad=False)
    for name, t in inputs.items():
        assert torch.equal(t, copies[name]), name


def test_empty_graph():
    dag = DAG(torch.empty(2, 0, dtype=torch.long), 0)
    zeros = [torch.zeros(1, 0, 1, *extra, dtype=DT) for extra in ((2,), (2,), (3,), (), (), (), ())]
    for execution in ("reference", "wavefront"):
        h, state = plstm_scan(dag, *zeros, return_state=True, execution=execution)
        assert h.shape == (1, 0, 1, 3) and state.shape == (1, 0, 1, 2, 3)
