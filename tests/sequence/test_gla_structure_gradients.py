"""gated_linear_attention on grids and DAGs: gradients (not only outputs) against a brute-force
sum over paths written from the definition, float64, for both aggregates, flipped lattices and
reversed DAGs:

    o_n = sum over paths m ~> n of scale q_n^T diag(prod_{r on the path, r != m} alpha_r / w_r) k_m v_m^T

with w_r = 1 ("sum") or the in-degree of r ("mean")."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from everygraph.graphlib import DAG, Lattice
from everygraph.sequence import gated_linear_attention

F64 = torch.float64


def _paths(num_nodes: int, edges: list[tuple[int, int]]) -> dict[tuple[int, int], list[list[int]]]:
    """Every directed path (one per sequence of edges, so parallel edges count twice)."""
    out_edges: list[list[int]] = [[] for _ in range(num_nodes)]
    for a, b in edges:
        out_edges[a].append(b)
    paths: dict[tuple[int, int], list[list[int]]] = {}

    def walk(path: list[int]) -> None:
        paths.setdefault((path[0], path[-1]), []).append(list(path))
        for nxt in out_edges[path[-1]]:
            walk(path + [nxt])

    for start in range(num_nodes):
        walk([start])
    return paths


def _path_sum(num_nodes, edges, q, k, v, log_alpha, scale, aggregate):
    alpha = log_alpha.exp()
    if aggregate == "mean":
        indegree = torch.zeros(num_nodes, dtype=F64)
        for _, b in edges:
            indegree[b] += 1
        alpha = alpha / indegree.clamp(min=1)[None, :, None, None]
    rows = []
    paths = _paths(num_nodes, edges)
    for n in range(num_nodes):
        o = torch.zeros(q.shape[0], q.shape[2], v.shape[-1], dtype=F64)
        for m in range(num_nodes):
            for path in paths.get((m, n), []):
                decay = torch.ones_like(alpha[:, 0])
                for r in path[1:]:
                    decay = decay * alpha[:, r]
                o = o + (scale * q[:, n] * decay * k[:, m]).sum(-1, keepdim=True) * v[:, m]
        rows.append(o)
    return torch.stack(rows, dim=1)


def _lattice_edges(shape, flip):
    rows, cols = shape
    edges = []
    for r, c in itertools.product(range(rows), range(cols)):
        if r + 1 < rows:
            edges.append(((r + 1) * cols + c, r * cols + c) if flip[0] else (r * cols + c, (r + 1) * cols + c))
        if c + 1 < cols:
            edges.append((r * cols + c + 1, r * cols + c) if flip[1] else (r * cols + c, r * cols + c + 1))
    return edges


def _inputs(N: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(2, N, 2, 3, generator=gen, dtype=F64) for _ in range(2))
    v = torch.randn(2, N, 2, 2, generator=gen, dtype=F64)
    log_alpha = F.logsigmoid(torch.randn(2, N, 2, 3, generator=gen, dtype=F64))
    return [t.requires_grad_() for t in (q, k, v, log_alpha)]


def _assert_same(leaves, got, expected):
    torch.testing.assert_close(got, expected)
    weight = torch.randn(got.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    for name, a, b in zip(("q", "k", "v", "log_alpha"), torch.autograd.grad((got * weight).sum(), leaves, retain_graph=True),
                          torch.autograd.grad((expected * weight).sum(), leaves)):
        assert b.abs().sum() > 0, name
        torch.testing.assert_close(a, b, msg=lambda m: f"gradient wrt {name}: {m}")


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
@pytest.mark.parametrize("flip, reverse", [((False, False), False), ((True, False), False), ((False, True), True)])
def test_grid_gradients_equal_the_path_sum(aggregate, flip, reverse):
    leaves = _inputs(12, seed=2)
    got = gated_linear_attention(Lattice((3, 4), flip), *leaves, aggregate=aggregate, reverse=reverse, scale=0.7)
    edges = _lattice_edges((3, 4), tuple(f != reverse for f in flip))
    _assert_same(leaves, got, _path_sum(12, edges, *leaves, 0.7, aggregate))


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
@pytest.mark.parametrize("reverse", [False, True])
def test_dag_gradients_equal_the_path_sum(aggregate, reverse):
    # labels not in topological order, a node with three predecessors, a parallel edge, an isolated node
    edges = [(5, 2), (5, 0), (2, 7), (0, 7), (3, 7), (7, 1), (7, 1), (0, 1)]
    leaves = _inputs(8, seed=3)
    got = gated_linear_attention(DAG(torch.tensor(edges).t(), 8), *leaves, aggregate=aggregate, reverse=reverse, scale=0.6)
    _assert_same(leaves, got, _path_sum(8, [(b, a) for a, b in edges] if reverse else edges, *leaves, 0.6, aggregate))
