"""The brute-force reference of the contraction tests: a pattern's value on one graph by its
definition, the sum over all vertex maps of the product over the pattern's edges; and the
random graph batches the schedule tests compare it with.

Imported by the test files beside it (pytest puts ``tests/contractions`` on ``sys.path``)."""

import functools
import itertools

import torch

from everygraph.contractions import Pattern


def brute_force(p: Pattern, x: torch.Tensor) -> torch.Tensor:
    """``x``: ``[n, n]``, or ``[n, n, c]`` with the pattern's edge channels; undirected patterns
    read the symmetric part. Returns float64 ``[]``, ``[n]`` or ``[n, n]`` by ``p.output``.
    Cached per pattern and input: the same graphs recur across test parameters."""
    x = x.detach().to("cpu", torch.float64).contiguous()
    return _cached(p, x.numpy().tobytes(), tuple(x.shape)).clone()


@functools.lru_cache(maxsize=None)
def _cached(p: Pattern, data: bytes, shape: tuple) -> torch.Tensor:
    x = torch.frombuffer(bytearray(data), dtype=torch.float64).view(shape)
    if x.dim() == 2:
        x = x[:, :, None]
    if not p.directed:
        x = (x + x.transpose(0, 1)) / 2
    a = x.tolist()
    n = x.shape[0]
    out = torch.zeros({"invariant": (), "node": (n,), "edge": (n, n)}[p.output], dtype=torch.float64)
    for assignment in itertools.product(range(n), repeat=p.num_vertices):
        value = 1.0
        for (u, v), c in zip(p.edges, p.channels):
            value *= a[assignment[u]][assignment[v]][c]
            if not value:
                break
        if value:
            out[tuple(assignment[s] for s in p.special)] += value
    return out


def random_batch(B: int, n: int, seed: int, directed: bool, density: float = 0.6, dtype=torch.float64) -> torch.Tensor:
    """``[B, n, n]`` random graphs, each edge present with probability ``density``: weighted
    (uniform in [0, 1)) when ``directed``, else symmetric 0/1 adjacency without loops."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(B, n, n, generator=gen) < density).double()
    if directed:
        return (x * torch.rand(B, n, n, generator=gen, dtype=torch.float64)).to(dtype)
    upper = x.triu(1)
    return (upper + upper.transpose(1, 2)).to(dtype)
