"""gated_linear_attention: every execution against a loop of the paper's equations on
sequences (packed, reversed), float64 forward and backward; on grids and DAGs against the
engine's reference execution and a brute-force sum over paths."""

import math

import networkx as nx
import pytest
import torch
import torch.nn.functional as F

from everygraph.graphlib import DAG, Lattice
from everygraph.sequence import (
    gated_linear_attention,
    gated_linear_attention_chunked,
    gated_linear_attention_reference,
)

DT = torch.float64


def inputs(B, N, H, dk, dv, seed=0, strong_decay=False):
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, N, H, dk, dtype=DT, generator=gen) for _ in range(2))
    v = torch.randn(B, N, H, dv, dtype=DT, generator=gen)
    logits = torch.randn(B, N, H, dk, dtype=DT, generator=gen) * (8 if strong_decay else 1)
    return dict(q=q, k=k, v=v, log_alpha=F.logsigmoid(logits))


def paper_loop(q, k, v, log_alpha, scale):
    """S_t = diag(alpha_t) S_{t-1} + k_t v_t^T, o_t = scale q_t^T S_t, written independently."""
    B, L, H, dk = q.shape
    out = torch.zeros(B, L, H, v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            S = torch.zeros(dk, v.shape[-1], dtype=q.dtype)
            rows = []
            for t in range(L):
                S = torch.diag(log_alpha[b, t, h].exp()) @ S + torch.outer(k[b, t, h], v[b, t, h])
                rows.append(scale * q[b, t, h] @ S)
            out[b, :, h] = torch.stack(rows)
    return out


def grads(fn, x):
    leaves = {name: t.clone().requires_grad_() for name, t in x.items()}
    out = fn(**leaves)
    (out * torch.linspace(-1, 1, out.numel(), dtype=DT).view_as(out)).sum().backward()
    return out.detach(), [leaves[name].grad for name in x]


def assert_same(a, b):
    out_a, grads_a = a
    out_b, grads_b = b
    torch.testing.assert_close(out_a, out_b)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb)


def test_reference_is_the_papers_recurrence():
    x = inputs(2, 7, 2, 3, 4)
    torch.testing.assert_close(gated_linear_attention_reference(**x, scale=0.7), paper_loop(**x, scale=0.7))


@pytest.mark.parametrize("execution", ["chunked", "recurrent", "wavefront", "reference", "lattice"])
@pytest.mark.parametrize("length", [1, 16, 37])
def test_sequence_executions_equal_the_loop(execution, length):
    x = inputs(2, length, 2, 3, 4, seed=length)
    expected = grads(lambda **t: gated_linear_attention_reference(**t), x)
    assert_same(grads(lambda **t: gated_linear_attention(None, **t, execution=execution), x), expected)


def test_default_and_alpha_input():
    x = inputs(1, 20, 2, 3, 2)
    expected = gated_linear_attention_reference(**x)
    torch.testing.assert_close(gated_linear_attention(None, **x), expected)
    torch.testing.assert_close(gated_linear_attention(Lattice((20,)), **x), expected)
    alpha = x.pop("log_alpha").exp()
    torch.testing.assert_close(gated_linear_attention(None, **x, alpha=alpha), expected)


def test_chunked_is_stable_under_strong_decay():
    # log alpha down to about -30 per step: a bounded-exponent form must not overflow
    x = inputs(1, 64, 1, 4, 3, strong_decay=True)
    assert x["log_alpha"].min() < -20
    expected = paper_loop(**x, scale=0.5)
    for chunk_size in (4, 16, 64):
        out = gated_linear_attention_chunked(**x, scale=0.5, chunk_size=chunk_size)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("execution", ["chunked", "recurrent", "wavefront"])
@pytest.mark.parametrize("cu", [[0, 5, 6, 20, 37], [0, 16, 32, 37], [0, 37]])
def test_packed_sequences_equal_separate_runs(execution, cu):
    x = inputs(1, 37, 2, 3, 4, seed=3)
    cu_seqlens = torch.tensor(cu)
    pieces = [paper_loop(*(t[:, a:b] for t in x.values()), scale=1 / math.sqrt(3)) for a, b in zip(cu[:-1], cu[1:])]
    expected = torch.cat(pieces, dim=1)
    out = gated_linear_attention(None, **x, cu_seqlens=cu_seqlens, execution=execution)
    torch.testing.assert_close(out, expected)
    packed = grads(lambda **t: gated_linear_attention(None, **t, cu_seqlens=cu_seqlens, execution=execution), x)
    loop = grads(lambda **t: gated_linear_attention_reference(**t, cu_seqlens=cu_seqlens), x)
    assert_same(packed, loop)


@pytest.mark.parametrize("execution", ["chunked", "recurrent"])
def test_reverse_runs_each_sequence_right_to_left(execution):
    x = inputs(1, 23, 1, 2, 3, seed=4)
    cu = [0, 9, 23]
    out = gated_linear_attention(None, **x, cu_seqlens=torch.tensor(cu), reverse=True, execution=execution)
    for a, b in zip(cu[:-1], cu[1:]):
        flipped = {name: t[:, a:b].flip(1) for name, t in x.items()}
        torch.testing.assert_close(out[:, a:b], paper_loop(**flipped, scale=1 / math.sqrt(2)).flip(1))


def path_sum(dag: DAG, q, k, v, log_alpha, scale, aggregate):
    """o_n = sum over paths m ~> n of scale q_n^T diag(prod_{r != m on the path} alpha_r / w_r) k_m v_m^T."""
    graph = nx.DiGraph(dag.edge_index.t().tolist())
    graph.add_nodes_from(range(dag.num_nodes))
    alpha = log_alpha.exp()
    if aggregate == "mean":
        alpha = alpha / dag.in_degree.clamp(min=1).to(DT)[None, :, None, None]
    out = torch.zeros(q.shape[0], dag.num_nodes, q.shape[2], v.shape[-1], dtype=DT)
    for n in range(dag.num_nodes):
        for m in range(dag.num_nodes):
            paths = [[n]] if m == n else list(nx.all_simple_paths(graph, m, n))
            for path in paths:
                decay = torch.ones_like(alpha[:, 0])
                for r in path[1:]:
                    decay = decay * alpha[:, r]
                weight = (scale * q[:, n] * decay * k[:, m]).sum(-1, keepdim=True)  # [B, H, 1]
                out[:, n] += weight * v[:, m]
    return out


def diamonds():
    edge_index = torch.tensor([[0, 0, 1, 2, 3, 3, 5, 1], [1, 2, 3, 3, 4, 5, 6, 6]])
    perm = torch.tensor([3, 6, 0, 5, 1, 4, 2])  # node ids that are not a topological order
    return DAG(perm[edge_index], 7)


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
@pytest.mark.parametrize("reverse", [False, True])
def test_dag_equals_the_path_sum(aggregate, reverse):
    dag = diamonds()
    x = inputs(2, 7, 2, 3, 2, seed=5)
    expected = path_sum(dag.reverse() if reverse else dag, **x, scale=0.6, aggregate=aggregate)
    for execution in ("reference", "wavefront"):
        out = gated_linear_attention(dag, **x, aggregate=aggregate, reverse=reverse, scale=0.6, execution=execution)
        torch.testing.assert_close(out, expected)
    assert_same(
        grads(lambda **t: gated_linear_attention(dag, **t, aggregate=aggregate, reverse=reverse, execution="wavefront"), x),
        grads(lambda **t: gated_linear_attention(dag, **t, aggregate=aggregate, reverse=reverse, execution="reference"), x),
    )


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
def test_grid_equals_path_sum_and_reference(aggregate):
    lattice = Lattice((3, 4))
    x = inputs(1, 12, 2, 2, 3, seed=6)
    expected = path_sum(lattice.to_dag(), **x, scale=0.5, aggregate=aggregate)
    torch.testing.assert_close(gated_linear_attention(lattice, **x, aggregate=aggregate, scale=0.5), expected)
    reference = grads(lambda **t: gated_linear_attention(lattice, **t, aggregate=aggregate, execution="reference"), x)
    for execution in ("lattice", "wavefront"):
        assert_same(grads(lambda **t: gated_linear_attention(lattice, **t, aggregate=aggregate, execution=execution), x), reference)
    # reverse: every edge reversed, the same as the flipped lattice
    flipped = Lattice((3, 4), (True, True))
    torch.testing.assert_close(
        gated_linear_attention(lattice, **x, aggregate=aggregate, reverse=True),
        path_sum(flipped.to_dag(), **x, scale=1 / math.sqrt(2), aggregate=aggregate),
    )


def test_path_structure_equals_the_sequence():
    x = inputs(1, 9, 1, 2, 2, seed=7)
    dag = Lattice((9,)).to_dag()
    torch.testing.assert_close(gated_linear_attention(dag, **x), gated_linear_attention_reference(**x))
    torch.testing.assert_close(gated_linear_attention(dag, **x, aggregate="mean"), gated_linear_attention_reference(**x))


def test_bad_inputs_raise_clear_errors():
    x = inputs(1, 5, 1, 2, 2)
    with pytest.raises(ValueError, match="exactly one of log_alpha and alpha"):
        gated_linear_attention(None, x["q"], x["k"], x["v"])
    with pytest.raises(ValueError, match="k and log_alpha/alpha must have the shape"):
        gated_linear_attention(None, x["q"], x["k"], x["v"], x["log_alpha"][..., :1])
    with pytest.raises(ValueError, match="cu_seqlens must rise from 0"):
        gated_linear_attention(None, **x, cu_seqlens=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="cu_seqlens packs sequences"):
        gated_linear_attention(Lattice((1, 5)).to_dag(), **x, cu_seqlens=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="execution must be one of"):
        gated_linear_attention(None, **x, execution="chunked2d")
    with pytest.raises(ValueError, match="structure has 6"):
        gated_linear_attention(Lattice((6,)), **x)
    with pytest.raises(ValueError, match="aggregate must be one of"):
        gated_linear_attention(None, **x, aggregate="max")


def test_zero_alpha_falls_back_from_chunked():
    x = inputs(1, 10, 1, 2, 2, seed=8)
    alpha = x.pop("log_alpha").exp()
    alpha[:, 4] = 0.0  # an exact reset
    expected = gated_linear_attention_reference(**x, log_alpha=alpha.log())
    torch.testing.assert_close(gated_linear_attention(None, **x, alpha=alpha, execution="chunked"), expected)


def loop_with_state(q, k, v, log_alpha, S, scale):
    outs = []
    for t in range(q.shape[1]):
        S = log_alpha[:, t].exp()[..., None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhd,bhdv->bhv", scale * q[:, t], S))
    return torch.stack(outs, 1), S


@pytest.mark.parametrize("execution", ["chunked", "recurrent", "wavefront"])
@pytest.mark.parametrize("length", [1, 21])
def test_states_in_and_out_equal_the_loop_and_compose(execution, length):
    x = inputs(2, length, 2, 3, 4, seed=9)
    x["initial_state"] = torch.randn(2, 2, 3, 4, dtype=DT, generator=torch.Generator().manual_seed(1))
    scale = 1 / math.sqrt(3)
    expected = loop_with_state(*(x[n] for n in ("q", "k", "v", "log_alpha", "initial_state")), scale)
    run = lambda **t: torch.cat([o.flatten() for o in gated_linear_attention(None, **t, return_state=True, execution=execution)])  # noqa: E731
    torch.testing.assert_close(run(**x), torch.cat([o.flatten() for o in expected]))
    reference = lambda **t: torch.cat([o.flatten() for o in loop_with_state(*(t[n] for n in ("q", "k", "v", "log_alpha", "initial_state")), scale)])  # noqa: E731
    assert_same(grads(run, x), grads(reference, x))
    # two pieces with the state carried over equal one scan
    if length > 1:
        first = {n: t[:, :8] if n != "initial_state" else t for n, t in x.items()}
        o1, s1 = gated_linear_attention(None, **first, return_state=True, execution=execution)
        second = {n: t[:, 8:] for n, t in x.items() if n != "initial_state"}
        o2, s2 = gated_linear_attention(None, **second, initial_state=s1, return_state=True, execution=execution)
        torch.testing.assert_close(torch.cat([o1, o2], 1), expected[0])
        torch.testing.assert_close(s2, expected[1])


def test_states_are_refused_where_undefined():
    x = inputs(1, 6, 1, 2, 2)
    with pytest.raises(ValueError, match="take one sequence"):
        gated_linear_attention(None, **x, cu_seqlens=torch.tensor([0, 3, 6]), return_state=True)
    with pytest.raises(ValueError, match="take one sequence"):
        gated_linear_attention(Lattice((2, 3)), **x, return_state=True)
    with pytest.raises(ValueError, match="initial_state must have shape"):
        gated_linear_attention(None, **x, initial_state=torch.zeros(1, 1, 2, 3, dtype=DT))


@pytest.mark.parametrize("chunk_size,sub_chunk_size", [(8, 4), (12, 4), (64, 16), (32, 1)])
def test_secondary_chunking_equals_the_loop(chunk_size, sub_chunk_size):
    """Pairs inside a sub-chunk by pairwise decays, across sub-chunks by matrix products:
    several chunks, packed sequences starting inside sub-chunks and on chunk borders."""
    x = inputs(2, 150, 2, 3, 4, seed=11)
    for cu in (None, torch.tensor([0, 5, 64, 71, 150])):
        run = lambda **t: gated_linear_attention_chunked(**t, cu_seqlens=cu, chunk_size=chunk_size, sub_chunk_size=sub_chunk_size)  # noqa: E731, B023
        loop = lambda **t: gated_linear_attention_reference(**t, cu_seqlens=cu)  # noqa: E731, B023
        assert_same(grads(run, x), grads(loop, x))
    x["initial_state"] = torch.randn(2, 2, 3, 4, dtype=DT, generator=torch.Generator().manual_seed(2))
    out, state = gated_linear_attention_chunked(**x, return_state=True, chunk_size=chunk_size, sub_chunk_size=sub_chunk_size)
    expected = loop_with_state(*(x[n] for n in ("q", "k", "v", "log_alpha", "initial_state")), 1 / math.sqrt(3))
    torch.testing.assert_close(out, expected[0])
    torch.testing.assert_close(state, expected[1])
