"""dag_selective_scan: against a loop over the DAG in topological order (forward and
backward), Mamba-1 on a path, bounded depth growth at A = 0 on stacked diamonds."""

import torch

from everygraph.graphlib import DAG, Lattice
from everygraph.sequence import dag_selective_scan, selective_scan

DT = torch.float64


def loop(dag, u, dt, A, B, C):
    """h_n = exp(dt_n A) * mean of the predecessors' h + dt_n u_n B_n; y_n = <C_n, h_n>."""
    parents = [[] for _ in range(dag.num_nodes)]
    for m, n in dag.edge_index.t().tolist():
        parents[n].append(m)
    h, y = {}, [None] * dag.num_nodes
    for n in dag.order.tolist():
        state = (dt[n] * u[n])[:, None] * B[n]  # [D, N]
        if parents[n]:
            state = state + torch.exp(dt[n][:, None] * A) * sum(h[m] for m in parents[n]) / len(parents[n])
        h[n] = state
        y[n] = (state * C[n]).sum(-1)
    return torch.stack(y)


def test_equals_the_loop_forward_and_backward():
    gen = torch.Generator().manual_seed(0)
    edge_index = torch.tensor([[0, 0, 1, 2, 3, 3, 5, 1], [1, 2, 3, 3, 4, 5, 6, 6]])
    perm = torch.tensor([3, 6, 0, 5, 1, 4, 2])  # node ids that are not a topological order
    dag = DAG(perm[edge_index], 7)
    n, D, N = 7, 3, 2
    x = dict(u=torch.randn(n, D, dtype=DT, generator=gen), dt=torch.rand(n, D, dtype=DT, generator=gen),
             A=-torch.rand(D, N, dtype=DT, generator=gen), B=torch.randn(n, N, dtype=DT, generator=gen),
             C=torch.randn(n, N, dtype=DT, generator=gen))
    results = []
    for fn in (dag_selective_scan, loop):
        leaves = {k: t.clone().requires_grad_() for k, t in x.items()}
        y = fn(dag, **leaves)
        (y * torch.linspace(-1, 1, y.numel(), dtype=DT).view_as(y)).sum().backward()
        results.append([y] + [t.grad for t in leaves.values()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_on_a_path_it_is_mamba():
    gen = torch.Generator().manual_seed(1)
    L, D, N = 9, 3, 4
    u, dt = torch.randn(L, D, dtype=DT, generator=gen), torch.rand(L, D, dtype=DT, generator=gen)
    A, B, C = -torch.rand(D, N, dtype=DT, generator=gen), torch.randn(L, N, dtype=DT, generator=gen), torch.randn(L, N, dtype=DT, generator=gen)
    y = dag_selective_scan(Lattice((L,)).to_dag(), u, dt, A, B, C)
    want = selective_scan(u.t()[None], dt.t()[None], A, B.t()[None], C.t()[None])[0].t()
    torch.testing.assert_close(y, want)


def test_mean_over_parents_keeps_stacked_diamonds_bounded():
    """60 diamonds in a row (2^60 paths end to end): at A = 0 the output grows linearly."""
    edges = []
    for i in range(60):
        a, b, c, d = 3 * i, 3 * i + 1, 3 * i + 2, 3 * i + 3
        edges += [(a, b), (a, c), (b, d), (c, d)]
    dag = DAG(torch.tensor(edges).t(), 181)
    ones = torch.ones(181, 1, dtype=DT)
    y = dag_selective_scan(dag, ones, ones, torch.zeros(1, 1, dtype=DT), ones, ones)
    assert y.max() <= 181
