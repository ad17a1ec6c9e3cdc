"""delta_product: the paper's loop on sequences, a node loop on grids and DAGs, closed forms."""


import networkx as nx
import pytest
import torch

from everygraph.graphlib import DAG, Lattice
from everygraph.sequence import delta_product, delta_product_reference

DT = torch.float64


def random_inputs(gen, B, N, H, n_h, dk=4, dv=3, gated=True):
    q = torch.randn(B, N, H, dk, generator=gen, dtype=DT)
    k = torch.nn.functional.normalize(torch.randn(B, N, H, n_h, dk, generator=gen, dtype=DT), dim=-1)
    v = torch.randn(B, N, H, n_h, dv, generator=gen, dtype=DT)
    beta = 2 * torch.rand(B, N, H, n_h, generator=gen, dtype=DT)  # [0, 2]: negative eigenvalues allowed
    gate = torch.rand(B, N, H, generator=gen, dtype=DT) if gated else None
    return q, k, v, beta, gate


def node_loop(edge_index, num_nodes, q, k, v, beta, gate, scale):
    """The documented DAG semantics, node by node in a networkx topological order:
    H_n = prod_j P_{n,j} (gamma_n sum_{p -> n} H_p) + interleaved writes, o_n = scale q_n^T H_n."""
    graph = nx.MultiDiGraph()
    graph.add_nodes_from(range(num_nodes))
    graph.add_edges_from(edge_index.t().tolist())
    B, N, H, dk = q.shape
    dv = v.shape[-1]
    states, outputs = {}, torch.zeros(B, N, H, dv, dtype=DT)
    for n in nx.topological_sort(graph):
        state = torch.zeros(B, H, dk, dv, dtype=DT)
        for p, _ in graph.in_edges(n):
            state = state + states[p]
        if gate is not None:
            state = gate[:, n, :, None, None] * state
        for j in range(k.shape[3]):
            key, value, b = k[:, n, :, j], v[:, n, :, j], beta[:, n, :, j, None, None]
            state = state - b * key[..., :, None] * (key[..., None, :] @ state) + b * key[..., :, None] * value[..., None, :]
        states[n] = state
        outputs[:, n] = scale * torch.einsum("bhk,bhkv->bhv", q[:, n], state)
    return outputs


def grads(out, inputs, gen):
    weight = torch.randn(out.shape, generator=gen, dtype=DT)
    return torch.autograd.grad((out * weight).sum(), inputs)


@pytest.mark.parametrize("n_h", [1, 2, 3])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_path_equals_paper_loop(n_h, gated, reverse):
    gen = torch.Generator().manual_seed(n_h + 10 * gated + 100 * reverse)
    inputs = [t.requires_grad_() for t in random_inputs(gen, 2, 9, 2, n_h, gated=gated) if t is not None]
    q, k, v, beta = inputs[:4]
    gate = inputs[4] if gated else None
    out = delta_product(Lattice((9,)), q, k, v, beta, gate=gate, reverse=reverse)
    expected, _ = delta_product_reference(q, k, v, beta, gate=gate, reverse=reverse)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    seed = torch.Generator().manual_seed(0)
    for got, want in zip(grads(out, inputs, seed), grads(expected, inputs, torch.Generator().manual_seed(0))):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_deltanet_written_out():
    """n_h = 1 is DeltaNet: S_t = S_{t-1} - beta k (k^T S_{t-1}) + beta k v^T, o_t = S_t^T q_t / sqrt(dk)."""
    gen = torch.Generator().manual_seed(3)
    q, k, v, beta, _ = random_inputs(gen, 1, 6, 1, 1, gated=False)
    state = torch.zeros(4, 3, dtype=DT)
    for t in range(6):
        kt, vt, bt = k[0, t, 0, 0], v[0, t, 0, 0], beta[0, t, 0, 0]
        state = state - bt * torch.outer(kt, kt @ state) + bt * torch.outer(kt, vt)
        torch.testing.assert_close(delta_product(Lattice((6,)), q, k, v, beta)[0, t, 0], state.T @ q[0, t, 0] / 2.0)


def test_two_reflections_cancel():
    """Closed form: two steps with the same unit key and beta = 2 apply (I - 2kk^T)^2 = I, so the
    state is a running sum of the writes 2 (I - 2kk^T) k v1^T + 2 k v2^T = 2 k (v2 - v1)^T."""
    gen = torch.Generator().manual_seed(4)
    q, k, v, _, _ = random_inputs(gen, 1, 5, 1, 2, gated=False)
    k = k[:, :, :, :1].expand(-1, -1, -1, 2, -1)
    beta = torch.full((1, 5, 1, 2), 2.0, dtype=DT)
    out = delta_product(Lattice((5,)), q, k, v, beta, scale=1.0)
    writes = 2 * k[0, :, 0, 0, :, None] * (v[0, :, 0, 1] - v[0, :, 0, 0])[:, None, :]
    expected = torch.einsum("tk,tkv->tv", q[0, :, 0], writes.cumsum(0))
    torch.testing.assert_close(out[0, :, 0], expected)


@pytest.mark.parametrize("n_h", [1, 2, 3])
def test_grid_equals_node_loop_and_engine_reference(n_h):
    lattice = Lattice((3, 4))
    gen = torch.Generator().manual_seed(20 + n_h)
    inputs = [t.requires_grad_() for t in random_inputs(gen, 2, 12, 2, n_h)]
    out = delta_product(lattice, *inputs[:4], gate=inputs[4])
    expected = node_loop(lattice.edge_index, 12, *inputs, 0.5)
    torch.testing.assert_close(out, expected)
    ref = delta_product(lattice, *inputs[:4], gate=inputs[4], execution="reference")
    torch.testing.assert_close(out, ref)
    for got, want in zip(grads(out, inputs, torch.Generator().manual_seed(1)), grads(expected, inputs, torch.Generator().manual_seed(1))):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("n_h", [1, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_dag_equals_node_loop_and_engine_reference(n_h, reverse):
    gen = torch.Generator().manual_seed(30 + n_h)
    # random DAG with a node of three predecessors, a parallel edge and an isolated node
    edge_index = torch.tensor([[0, 0, 1, 2, 2, 3, 1, 5, 5], [1, 2, 3, 3, 4, 4, 4, 6, 6]])
    dag = DAG(edge_index, 8)
    inputs = [t.requires_grad_() for t in random_inputs(gen, 2, 8, 2, n_h)]
    out = delta_product(dag, *inputs[:4], gate=inputs[4], reverse=reverse)
    expected = node_loop(edge_index.flip(0) if reverse else edge_index, 8, *inputs, 0.5)
    torch.testing.assert_close(out, expected)
    ref = delta_product(dag, *inputs[:4], gate=inputs[4], reverse=reverse, execution="reference")
    torch.testing.assert_close(out, ref)
    for got, want in zip(grads(out, inputs, torch.Generator().manual_seed(2)), grads(expected, inputs, torch.Generator().manual_seed(2))):
        torch.testing.assert_close(got, want)


def test_disjoint_paths_are_separate_sequences():
    """Packed sequences as a DAG of disjoint paths equal each sequence run alone."""
    gen = torch.Generator().manual_seed(5)
    q, k, v, beta, gate = random_inputs(gen, 1, 7, 2, 2)
    edges = torch.tensor([[0, 1, 3, 4, 5], [1, 2, 4, 5, 6]])  # sequences [0, 3) and [3, 7)
    out = delta_product(DAG(edges, 7), q, k, v, beta, gate=gate)
    for a, b in ((0, 3), (3, 7)):
        expected, _ = delta_product_reference(q[:, a:b], k[:, a:b], v[:, a:b], beta[:, a:b], gate=gate[:, a:b])
        torch.testing.assert_close(out[:, a:b], expected)


def test_bad_inputs_name_the_argument():
    q, k, v, beta, gate = random_inputs(torch.Generator().manual_seed(6), 1, 4, 1, 2)
    lattice = Lattice((4,))
    with pytest.raises(ValueError, match="k must have shape"):
        delta_product(lattice, q, k[..., 0, :], v, beta)
    with pytest.raises(ValueError, match="beta must have shape"):
        delta_product(lattice, q, k, v, beta[..., :1])
    with pytest.raises(ValueError, match="gate must have shape"):
        delta_product(lattice, q, k, v, beta, gate=gate[..., None])
    with pytest.raises(ValueError, match="one row per node"):
        delta_product(Lattice((5,)), q, k, v, beta)
    with pytest.raises(TypeError, match="structure"):
        delta_product("path", q, k, v, beta)
    with pytest.raises(ValueError, match="dtype"):
        delta_product(lattice, q.float(), k, v, beta)


@pytest.mark.parametrize("execution", [None, "wavefront", "reference"])
def test_sequence_route_equals_dag_route(execution):
    """A 1D lattice runs as one path with inline read-out nodes; the same sequence given as a
    DAG runs the sub-node chains with read-out leaves. Both agree, flipped or reversed."""
    gen = torch.Generator().manual_seed(6)
    inputs = [t.requires_grad_() for t in random_inputs(gen, 2, 7, 2, 2)]
    for flip, reverse in ((False, False), (True, False), (False, True), (True, True)):
        lattice = Lattice((7,), flip=(flip,))
        out = delta_product(lattice, *inputs[:4], gate=inputs[4], reverse=reverse, execution=execution)
        want = delta_product(lattice.to_dag(), *inputs[:4], gate=inputs[4], reverse=reverse, execution="reference")
        torch.testing.assert_close(out, want)
        for got, exp in zip(grads(out, inputs, torch.Generator().manual_seed(3)), grads(want, inputs, torch.Generator().manual_seed(3))):
            torch.testing.assert_close(got, exp)


@pytest.mark.parametrize("reverse", [False, True])
def test_states_in_and_out_on_a_sequence_equal_the_loop(reverse):
    """initial_state enters through the first token's own Householder factors (and gate), the
    returned state is the loop's final state: forward and gradients (the state included)."""
    g = torch.Generator().manual_seed(11)
    B, N, H, n_h, dk, dv = 2, 5, 2, 2, 3, 2
    q = torch.randn(B, N, H, dk, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.nn.functional.normalize(torch.randn(B, N, H, n_h, dk, dtype=torch.float64, generator=g), dim=-1)
    v = torch.randn(B, N, H, n_h, dv, dtype=torch.float64, generator=g)
    beta = 2 * torch.rand(B, N, H, n_h, dtype=torch.float64, generator=g)
    gate = torch.rand(B, N, H, dtype=torch.float64, generator=g)
    state = torch.randn(B, H, dk, dv, dtype=torch.float64, generator=g, requires_grad=True)
    ref, ref_state = delta_product_reference(q, k, v, beta, gate=gate, initial_state=state, reverse=reverse)
    out, out_state = delta_product(Lattice((N,)), q, k, v, beta, gate=gate, initial_state=state, return_state=True,
                                   reverse=reverse)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_state, ref_state, rtol=1e-12, atol=1e-12)
    loss = lambda o, s: o.square().sum() + (s * s.detach().sin()).sum()  # noqa: E731
    grads = torch.autograd.grad(loss(out, out_state), (q, state))
    want = torch.autograd.grad(loss(ref, ref_state), (q, state))
    for got, expected in zip(grads, want):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="take a sequence"):
        delta_product(Lattice((2, 3)), torch.zeros(B, 6, H, dk, dtype=torch.float64),
                      torch.zeros(B, 6, H, n_h, dk, dtype=torch.float64), torch.zeros(B, 6, H, n_h, dv, dtype=torch.float64),
                      torch.zeros(B, 6, H, n_h, dtype=torch.float64), return_state=True)
