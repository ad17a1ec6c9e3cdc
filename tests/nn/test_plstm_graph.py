"""PLSTMGraph against a plain loop over nodes in a networkx topological order."""

import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data

from everygraph.graphlib import CycleError, prune_to_multitree
from everygraph.nn import PLSTM1d, PLSTMGraph


def loop_dag(q, k, v, gates, dag, scale):
    """States on DAG edges; nodes visited in a networkx topological order.

    q, k, v [N, heads, d]; source/mark [E, heads]; transition [L, heads] over
    dag.line_graph() pairs; direct [N, heads].
    """
    tail, head = dag.edge_index.tolist()
    pairs = dag.line_graph().edge_index.t().tolist()
    transition = {tuple(p): gates["transition"][j] for j, p in enumerate(pairs)}
    graph = nx.DiGraph()
    graph.add_nodes_from(range(q.shape[0]))
    graph.add_edges_from(zip(tail, head))
    heads, dv = q.shape[1], v.shape[-1]
    out = torch.zeros(q.shape[0], heads, dv, dtype=q.dtype)
    state = {}
    for n in nx.topological_sort(graph):
        ins = [e for e, t in enumerate(head) if t == n]
        outs = [e for e, s in enumerate(tail) if s == n]
        for h in range(heads):
            qn, kn, vn = q[n, h], k[n, h], v[n, h]
            acc = gates["direct"][n, h] * (qn @ kn) * vn
            for e in ins:
                acc = acc + gates["mark"][e, h] * (qn @ state[e, h])
            out[n, h] = scale * acc
            for e_out in outs:
                c = gates["source"][e_out, h] * torch.outer(kn, vn)
                for e_in in ins:
                    c = c + transition[e_in, e_out][h] * state[e_in, h]
                state[e_out, h] = c
    return out


def reference_forward(layer, x, edge_index, batch=None, edge_attr=None):
    dag, edge_id = layer.orient(edge_index, x.shape[0], batch)
    attr = None if edge_attr is None else edge_attr[edge_id]
    q, k, v = layer.qkv(x)
    h = 0
    for direction in range(layer.num_directions):
        structure = dag if direction == 0 else dag.reverse()
        h = h + loop_dag(q, k, v, layer.gates(x, structure, attr, direction), structure, layer.head_dim**-0.5)
    return layer.out_proj(layer.norm(h.reshape(x.shape[0], -1)))


def random_graph(num_nodes, p, seed):
    g = nx.gnp_random_graph(num_nodes, p, seed=seed)
    edges = torch.tensor(list(g.edges), dtype=torch.long).t().reshape(2, -1)
    return torch.cat([edges, edges.flip(0)], dim=1)  # PyG style: both directions


@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_matches_loop(mode, bidirectional):
    layer = PLSTMGraph(6, 4, num_heads=2, mode=mode, bidirectional=bidirectional, edge_dim=3).double()
    edge_index = random_graph(9, 0.4, seed=1)
    x = torch.randn(9, 6, dtype=torch.float64)
    edge_attr = torch.randn(edge_index.shape[1], 3, dtype=torch.float64)
    out = layer(x, edge_index, edge_attr=edge_attr)
    torch.testing.assert_close(out, reference_forward(layer, x, edge_index, edge_attr=edge_attr), rtol=1e-10, atol=1e-10)


@settings(max_examples=15, deadline=None)
@given(
    num_nodes=st.integers(1, 8),
    pairs=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=16),
    mode=st.sampled_from(["P", "D"]),
)
def test_random_dags_match_loop(num_nodes, pairs, mode):
    # edges from lower to higher id form a DAG, parallel edges included
    edges = [(min(a, b), max(a, b)) for a, b in pairs if a != b and max(a, b) < num_nodes]
    edge_index = torch.tensor(edges, dtype=torch.long).t().reshape(2, -1)
    torch.manual_seed(len(edges))
    layer = PLSTMGraph(3, 4, num_heads=2, mode=mode, oriented=True).double()
    x = torch.randn(num_nodes, 3, dtype=torch.float64)
    torch.testing.assert_close(layer(x, edge_index), reference_forward(layer, x, edge_index), rtol=1e-10, atol=1e-10)


def test_oriented_respects_directions_and_gradients():
    layer = PLSTMGraph(3, 4, num_heads=1, mode="D", oriented=True, paper_gates=True).double()
    # a DAG whose edges point against node index order (dagify by index would flip them)
    edge_index = torch.tensor([[4, 4, 3, 2, 3, 1], [3, 2, 2, 1, 1, 0]])
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    out, ref = layer(x, edge_index), reference_forward(layer, x, edge_index)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    (g_fast,) = torch.autograd.grad(out.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-10)
    dag, _ = layer.orient(edge_index, 5)
    assert torch.equal(dag.edge_index, edge_index)
    with pytest.raises(CycleError):
        layer(x, torch.tensor([[0, 1, 2], [1, 2, 0]]))


def test_p_mode_columns_sum_to_one_and_d_mode_pruned():
    edge_index = random_graph(12, 0.35, seed=4)
    x = 5 * torch.randn(12, 6)
    layer = PLSTMGraph(6, 4, num_heads=2, mode="P")
    dag, _ = layer.orient(edge_index, 12)
    t = layer.gates(x, dag)["transition"]
    e_in = dag.line_graph().edge_index[0]
    sums = torch.zeros(dag.num_edges, 2).index_add_(0, e_in, t.abs())
    has_successor = torch.zeros(dag.num_edges, dtype=torch.bool)
    has_successor[e_in] = True
    torch.testing.assert_close(sums[has_successor], torch.ones_like(sums[has_successor]))
    assert bool((sums[~has_successor] == 0).all())
    d_layer = PLSTMGraph(6, 4, num_heads=2, mode="D", paper_gates=True)
    t = d_layer.gates(x, dag)["transition"]
    assert bool((t.abs() <= 1).all())
    assert bool((t[~prune_to_multitree(dag)] == 0).all())


@pytest.mark.parametrize("mode", ["P", "D"])
def test_path_graph_equals_plstm1d(mode):
    length = 11
    seq = PLSTM1d(8, num_heads=2, mode=mode).double()
    graph = PLSTMGraph(8, 8, num_heads=2, mode=mode, oriented=True).double()
    with torch.no_grad():
        graph.qkv.load_state_dict(seq.qkv.state_dict())
        graph.out_proj.load_state_dict(seq.out_proj.state_dict())
        graph.norm.load_state_dict(seq.norm.state_dict())
        # same per-node gates; the neighbour terms switched off
        graph.neighbour_gates.weight.zero_()
        per_head = seq.gates_per_head
        graph.node_gates.weight.view(2, 4, 8)[:, :per_head] = seq.gate_proj.weight.view(2, per_head, 8)
        graph.node_gates.bias.view(2, 4)[:, :per_head] = seq.gate_proj.bias.view(2, per_head)
    x = torch.randn(length, 8, dtype=torch.float64)
    path = torch.stack([torch.arange(length - 1), torch.arange(1, length)])
    torch.testing.assert_close(graph(x, path), seq(x.unsqueeze(0))[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["P", "D"])
def test_batch_equals_each_graph_alone(mode):
    layer = PLSTMGraph(5, 4, num_heads=2, mode=mode, bidirectional=True).double()
    graphs = [
        Data(x=torch.randn(n, 5, dtype=torch.float64), edge_index=random_graph(n, 0.5, seed=n), num_nodes=n)
        for n in (1, 6, 3, 9)
    ]
    graphs.append(Data(x=torch.randn(4, 5, dtype=torch.float64), edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=4))
    batch = Batch.from_data_list(graphs)
    out = layer(batch.x, batch.edge_index, batch.batch)
    alone = torch.cat([layer(g.x, g.edge_index) for g in graphs])
    torch.testing.assert_close(out, alone, rtol=1e-10, atol=1e-10)


def test_no_edges_and_single_node():
    layer = PLSTMGraph(3, 4, num_heads=2, mode="D").double()
    for n in (1, 5):
        x = torch.randn(n, 3, dtype=torch.float64)
        edge_index = torch.empty(2, 0, dtype=torch.long)
        out = layer(x, edge_index)
        assert out.shape == (n, 4) and bool(torch.isfinite(out).all())
        torch.testing.assert_close(out, reference_forward(layer, x, edge_index), rtol=1e-10, atol=1e-10)


def test_empty_graph():
    layer = PLSTMGraph(3, 4, num_heads=2)
    assert layer(torch.randn(0, 3), torch.empty(2, 0, dtype=torch.long)).shape == (0, 4)


def test_dtypes_state_dict_repr():
    layer = PLSTMGraph(5, 8, num_heads=2, mode="P", bidirectional=True)
    x, edge_index = torch.randn(7, 5), random_graph(7, 0.5, seed=2)
    out32 = layer(x, edge_index)
    assert out32.shape == (7, 8) and out32.dtype == torch.float32
    torch.testing.assert_close(layer.double()(x.double(), edge_index).float(), out32, rtol=1e-4, atol=1e-5)
    out16 = layer.to(torch.bfloat16)(x.to(torch.bfloat16), edge_index)
    assert out16.dtype == torch.bfloat16
    # bfloat16 keeps 8 significant bits (unit roundoff u = 2^-8). The layer is a chain of about
    # 16 rounded stages (input, norms, q/k/v and gate projections, scan, output projection),
    # each adding at most u relative to the output's scale, so the relative RMS error against
    # the float32 result stays below 16 u (about 6%; over 15 seeds the largest seen is 11 u).
    rms = lambda t: t.square().mean().sqrt()  # noqa: E731
    assert rms(out16.float() - out32) <= 16 * 2**-8 * rms(out32)
    layer = layer.float()
    other = PLSTMGraph(5, 8, num_heads=2, mode="P", bidirectional=True)
    other.load_state_dict(layer.state_dict())
    torch.testing.assert_close(other(x, edge_index), layer(x, edge_index))
    assert repr(other) == "PLSTMGraph(5, 8, num_heads=2, mode='P', bidirectional=True)"


def test_bad_input():
    with pytest.raises(ValueError, match="'P', 'D'"):
        PLSTMGraph(4, 4, mode="Q")
    with pytest.raises(ValueError, match="order"):
        PLSTMGraph(4, 4, order="random")
    layer = PLSTMGraph(4, 4, edge_dim=2)
    with pytest.raises(ValueError, match="edge_attr"):
        layer(torch.randn(3, 4), torch.tensor([[0, 1], [1, 2]]))
    with pytest.raises(ValueError, match="in_channels=4"):
        layer(torch.randn(3, 5), torch.tensor([[0, 1], [1, 2]]))
