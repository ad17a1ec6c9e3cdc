r"""Does a model separate two graphs? The reliable paired comparison of BREC, written anew.

Wang and Zhang, "Towards Better Evaluation of GNN Expressiveness with BREC Dataset" (2023,
https://arxiv.org/abs/2304.07702), section "Reliable Paired Comparisons": an embedding that
differs between two graphs is not yet a separation, because floating point noise (and a model
that is not exactly permutation invariant) moves embeddings too. So:

1. embed :math:`q` random relabellings of each graph, :math:`f(\pi_i G)` and
   :math:`f(\sigma_i H)`, and take the differences :math:`d_i = f(\pi_i G) - f(\sigma_i H)`;
2. Hotelling's test of "the mean difference is zero":
   :math:`T^2 = q\, \bar d^\top S^{-1} \bar d` with :math:`S` the sample covariance of the
   :math:`d_i`; under the null (and Gaussian noise)
   :math:`\frac{q-p}{p(q-1)} T^2 \sim F_{p,\, q-p}` for :math:`p` dimensions, so the threshold
   is the :math:`1-\alpha` quantile of that law;
3. the reliability check: the same statistic between two sets of relabellings of the *same*
   graph must stay below the threshold, otherwise the model "separates" a graph from itself
   and its verdict on the pair is not trusted.

Our choices where BREC's code differs or is silent: the factor :math:`q` is kept (the textbook
statistic, so the F threshold applies); the reliability check runs on both graphs of the pair;
embeddings of more than :math:`q/2` dimensions are projected on the top :math:`q/2` principal
directions of all embeddings of the test (where a real difference shows up); and
:math:`S` gets a floor :math:`(\epsilon\, s)^2 I` (:math:`s` the RMS embedding, :math:`\epsilon`
= ``noise_floor``, by default 16 machine epsilons of the model's output dtype), so a model
whose outputs are bit-identical under relabelling does not
divide by zero and differences below :math:`\epsilon` relative do not count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import networkx as nx
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from ...graphlib import check_callable, check_size
from .pair import permuted_data

__all__ = ["f_quantile", "hotelling_t2", "hotelling_threshold", "SeparationTest", "reliable_separation", "embed_graphs"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function :math:`I_x(a, b)`."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def f_quantile(probability: float, dfn: int, dfd: int) -> float:
    """The ``probability`` quantile of the F distribution with ``(dfn, dfd)`` degrees of freedom
    (bisection on :math:`P(F \\le f) = I_{d_1 f / (d_1 f + d_2)}(d_1/2, d_2/2)`)."""
    dfn, dfd = check_size(dfn, "dfn", 1), check_size(dfd, "dfd", 1)
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be a number in (0, 1), got {probability!r}")
    lo, hi = 0.0, 1.0  # on x = d1 f / (d1 f + d2), monotone in f
    for _ in range(200):
        mid = (lo + hi) / 2
        if _betainc(dfn / 2, dfd / 2, mid) < probability:
            lo = mid
        else:
            hi = mid
    x = (lo + hi) / 2
    return dfd * x / (dfn * (1.0 - x))


def hotelling_threshold(dim: int, num_samples: int, alpha: float) -> float:
    """The critical value of Hotelling's one-sample :math:`T^2` at level ``alpha``:
    :math:`\\frac{p (q-1)}{q-p} F_{p, q-p}(1-\\alpha)` for ``dim`` :math:`p < q` = ``num_samples``."""
    dim, num_samples = check_size(dim, "dim", 1), check_size(num_samples, "num_samples", 2)
    if dim >= num_samples:
        raise ValueError(f"dim must be below num_samples for Hotelling's T^2, got dim={dim}, num_samples={num_samples}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    return dim * (num_samples - 1) / (num_samples - dim) * f_quantile(1.0 - alpha, dim, num_samples - dim)


def hotelling_t2(differences: Tensor, floor: float = 0.0) -> float:
    """Hotelling's one-sample :math:`T^2 = q\\, \\bar d^\\top (S + \\text{floor}\\, I)^{-1} \\bar d`
    of ``differences`` ``[q, p]`` (``S``: the unbiased sample covariance)."""
    if not isinstance(differences, Tensor) or differences.dim() != 2 or differences.shape[0] < 2:
        raise ValueError(f"differences must be a tensor [q, p] with q >= 2, got "
                         f"{tuple(differences.shape) if isinstance(differences, Tensor) else type(differences).__name__}")
    d = differences.double()
    q, p = d.shape
    mean = d.mean(0)
    centred = d - mean
    cov = centred.t() @ centred / (q - 1) + float(floor) * torch.eye(p, dtype=d.dtype)
    return float(q * mean @ torch.linalg.pinv(cov, hermitian=True) @ mean)


def embed_graphs(
    model: Callable[[Batch], Tensor], data: list[Data], batch_size: Optional[int] = None
) -> Tensor:
    """``model`` on ``data`` in batches of ``batch_size`` graphs (default all), under
    ``torch.no_grad()``; the graph embeddings ``[len(data), d]`` as float64 on the CPU."""
    return _embed(model, data, batch_size)[0]


def _embed(model: Callable[[Batch], Tensor], data: list[Data], batch_size: Optional[int]) -> tuple[Tensor, torch.dtype]:
    """:func:`embed_graphs` and the dtype the model returned."""
    check_callable(model, "model")
    if not isinstance(data, (list, tuple)) or not all(isinstance(d, Data) for d in data):
        raise TypeError("data must be a list of torch_geometric Data objects")
    size = len(data) if batch_size is None else check_size(batch_size, "batch_size", 1)
    device = _device_of(model)
    outs, dtype = [], torch.float64
    with torch.no_grad():
        for start in range(0, len(data), max(size, 1)):
            chunk = Batch.from_data_list(data[start:start + size])
            if device is not None:
                chunk = chunk.to(device)
            out = model(chunk)
            if not isinstance(out, Tensor):
                raise TypeError(f"model must return a tensor [num_graphs, d], got {type(out).__name__}")
            if out.dim() == 1:
                out = out[:, None]
            if out.dim() != 2 or out.shape[0] != chunk.num_graphs:
                raise ValueError(f"model must return graph embeddings [num_graphs, d] = [{chunk.num_graphs}, d], "
                                 f"got {tuple(out.shape)}")
            if not torch.is_floating_point(out):
                raise TypeError(f"model must return floating point embeddings, got {out.dtype}")
            dtype = out.dtype
            outs.append(out.detach().to("cpu", torch.float64))
    return torch.cat(outs), dtype


def _device_of(model: Any) -> Optional[torch.device]:
    if isinstance(model, torch.nn.Module):
        for tensor in list(model.parameters()) + list(model.buffers()):
            return tensor.device
    return None


@dataclass(frozen=True)
class SeparationTest:
    """The outcome of :func:`reliable_separation`.

    ``t2``: the pair's statistic; ``t2_self``: the larger of the two same-graph statistics
    (reliability check); ``threshold``: the critical value at ``alpha``; ``dim``: the
    dimensions tested. ``verdict``: ``"separates"`` (``t2 > threshold`` and the check passed),
    ``"does not separate"``, or ``"unreliable"`` (the model tells a graph from a relabelled copy
    of itself: not invariant, or too noisy).
    """

    t2: float
    t2_self: float
    threshold: float
    dim: int
    num_permutations: int
    alpha: float

    @property
    def reliable(self) -> bool:
        return self.t2_self <= self.threshold

    @property
    def separated(self) -> bool:
        return self.reliable and self.t2 > self.threshold

    @property
    def verdict(self) -> str:
        if not self.reliable:
            return "unreliable"
        return "separates" if self.separated else "does not separate"

    def __str__(self) -> str:
        return (f"{self.verdict}: T^2 = {self.t2:.3g} (same graph: {self.t2_self:.3g}), threshold {self.threshold:.3g} "
                f"(alpha {self.alpha:g}, {self.dim} dims, {self.num_permutations} relabellings)")


def _project(embeddings: Tensor, dim: int) -> Tensor:
    """Coordinates of ``embeddings`` ``[N, d]`` on their top ``dim`` principal directions."""
    if embeddings.shape[1] <= dim:
        return embeddings
    centred = embeddings - embeddings.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return embeddings @ vh[:dim].t()


def reliable_separation(
    model: Callable[[Batch], Tensor],
    first: nx.Graph,
    second: nx.Graph,
    num_permutations: int = 32,
    alpha: float = 1e-3,
    seed: int = 0,
    noise_floor: Optional[float] = None,
    featurize: Optional[Callable[[Data], Data]] = None,
    batch_size: Optional[int] = None,
) -> SeparationTest:
    """Test whether ``model`` separates ``first`` from ``second``, reliably (see the module).

    Args:
        model: a callable on a PyG ``Batch`` (``x``: ``[N, 1]`` ones, ``edge_index``, ``batch``)
            returning graph embeddings ``[num_graphs, d]``; an ``nn.Module`` is evaluated
            as it is (call ``model.eval()`` first), its device taken from its parameters.
        first, second: simple networkx graphs.
        num_permutations: relabellings per graph ``q`` (>= 4); embeddings are projected to at
            most ``q // 2`` dimensions.
        alpha: the test's level; the reliability check uses the same threshold.
        seed: seeds the relabellings.
        noise_floor: relative size below which differences do not count (see the module);
            default 16 machine epsilons of the model's output dtype (about 2e-6 in float32,
            4e-15 in float64).
        featurize: optional map applied to each ``Data`` before batching (e.g. other node
            features).
        batch_size: graphs per model call (default: all ``4 q`` at once).

    Returns:
        a :class:`SeparationTest`.
    """
    check_callable(model, "model")
    for name, g in (("first", first), ("second", second)):
        if not isinstance(g, nx.Graph) or g.is_directed() or g.is_multigraph():
            raise TypeError(f"{name} must be a simple undirected networkx.Graph, got {type(g).__name__}")
    q = check_size(num_permutations, "num_permutations", 4)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    if noise_floor is not None and (isinstance(noise_floor, bool) or not isinstance(noise_floor, (int, float))
                                    or noise_floor < 0):
        raise ValueError(f"noise_floor must be a non-negative number, got {noise_floor!r}")
    if featurize is not None:
        check_callable(featurize, "featurize")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    generator = torch.Generator().manual_seed(seed)
    data = []
    for graph in (first, second, first, second):  # pair: sets 0, 1; reliability: 0 vs 2, 1 vs 3
        data += [permuted_data(graph, generator) for _ in range(q)]
    if featurize is not None:
        data = [featurize(d) for d in data]
    emb, dtype = _embed(model, data, batch_size)
    if noise_floor is None:
        noise_floor = 16 * torch.finfo(dtype).eps
    if not torch.isfinite(emb).all():
        raise ValueError("model returned non-finite embeddings (nan or inf)")
    dim = min(emb.shape[1], q // 2)
    emb = _project(emb, dim)
    scale = float(emb.pow(2).mean().sqrt()) + 1e-30
    floor = (noise_floor * scale) ** 2
    g1, g2, g1b, g2b = emb.split(q)
    t2 = hotelling_t2(g1 - g2, floor)
    t2_self = max(hotelling_t2(g1 - g1b, floor), hotelling_t2(g2 - g2b, floor))
    threshold = hotelling_threshold(dim, q, alpha)
    return SeparationTest(t2, t2_self, threshold, dim, q, float(alpha))
