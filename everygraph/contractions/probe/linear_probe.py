r"""Linear probe: which homomorphism counts can be read off a model's graph embeddings?

For random graphs :math:`G_1, \dots, G_N`, the model's embeddings :math:`E \in
\mathbb{R}^{N \times d}` and, for each connected pattern :math:`H` with at most ``degree``
edges, the counts :math:`h_H = (\hom(H, G_i))_i`: fit a ridge regression :math:`h_H \approx E w
+ b` on a training split and report :math:`R^2` on the held-out split. :math:`R^2 \approx 1`:
the count is a linear function of the embedding (the model represents it); :math:`\approx 0`
or below: it does not (beyond what correlates with what it does represent).

Counts of different patterns correlate (more nodes and edges, more of everything), so a count
a model cannot compute can still be read off approximately. Two things help to read the
result: by default the graphs are mostly random *regular* graphs of a few sizes and degrees
(every tree count is fixed by ``(n, k)``, cycle counts vary on their own), and every pattern's
:math:`R^2` comes with a **baseline**: the same regression on the degree histogram (and ``n``,
``m``), features every MPNN computes. A model that represents a pattern beats the baseline;
a score at the baseline is what the degrees alone explain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import networkx as nx
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from ...graphlib import check_callable, check_size
from ..pattern import Pattern
from .homcounts import hom_counts, pattern_name, probe_patterns
from .pair import graph_to_data
from .reliable import embed_graphs

__all__ = ["probe_graphs", "LinearProbeResult", "linear_probe"]


def probe_graphs(num_graphs: int = 300, seed: int = 0) -> list[nx.Graph]:
    """Random graphs for :func:`linear_probe`: three quarters random regular graphs
    (``n`` in 8..16, degree 3..5), one quarter Erdős–Rényi (``n`` in 6..14, ``p`` in 0.2..0.5)."""
    num_graphs = check_size(num_graphs, "num_graphs", 1)
    generator = torch.Generator().manual_seed(int(seed))
    graphs = []
    for i in range(num_graphs):
        r = torch.randint(0, 2**31 - 1, (1,), generator=generator).item()
        if i % 4 != 3:
            n = int(torch.randint(4, 9, (1,), generator=generator)) * 2
            k = int(torch.randint(3, 6, (1,), generator=generator))
            graphs.append(nx.random_regular_graph(k, n, seed=r))
        else:
            n = int(torch.randint(6, 15, (1,), generator=generator))
            p = 0.2 + 0.3 * float(torch.rand(1, generator=generator))
            graphs.append(nx.gnp_random_graph(n, p, seed=r))
    return graphs


@dataclass
class LinearProbeResult:
    """``r2[j]``: held-out :math:`R^2` of pattern ``patterns[j]`` (NaN when its count is constant
    on the training graphs); ``baseline_r2[j]``: the same from the degree histogram;
    ``num_train``/``num_test``: split sizes."""

    patterns: list[Pattern]
    r2: Tensor
    baseline_r2: Tensor
    num_train: int
    num_test: int
    ridge: float

    def as_dict(self, baseline: bool = False) -> dict[str, float]:
        """``{pattern string: R^2}`` (``baseline=True``: the degree-histogram baseline's)."""
        values = self.baseline_r2 if baseline else self.r2
        return {str(p): float(v) for p, v in zip(self.patterns, values)}

    def __str__(self) -> str:
        lines = [f"linear probe: held-out R^2 of each homomorphism count from the embeddings "
                 f"({self.num_train} train / {self.num_test} test graphs); baseline: from the degree histogram"]
        lines.append(f"  {'pattern':<18} {'':<28} {'R^2':>8} {'baseline':>9}")
        for p, v, b in zip(self.patterns, self.r2.tolist(), self.baseline_r2.tolist()):
            value = "constant" if v != v else f"{v:8.3f}"
            base = "" if b != b else f"{b:9.3f}"
            lines.append(f"  {pattern_name(p):<18} {str(p):<28} {value:>8} {base:>9}")
        return "\n".join(lines)

    def plot(self, path: Optional[str] = None, ax: Any = None, title: Optional[str] = None,
             model_classes: Sequence[str] = ("mpnn", "ppgn")) -> Any:
        """Horizontal bars of :math:`R^2` per pattern, coloured by the weakest of
        ``model_classes`` that computes it (grey: none); saved to ``path`` when given.
        Returns the matplotlib axes."""
        import matplotlib

        if ax is None and path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .theory import _computable, available_model_classes

        classes = available_model_classes(list(model_classes))
        colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 0.28 * len(self.patterns) + 1.2))
        labels, values, bar_colours = [], [], []
        for p, v in zip(self.patterns, self.r2.tolist()):
            labels.append(pattern_name(p) if len(pattern_name(p)) < 20 else str(p))
            values.append(0.0 if v != v else max(v, -0.2))
            weakest = next((i for i, c in enumerate(classes) if _computable(p, c)), None)
            bar_colours.append("lightgrey" if weakest is None else colours[weakest % len(colours)])
        y = list(range(len(labels)))
        ax.barh(y, values, color=bar_colours)
        base = [0.0 if b != b else max(b, -0.2) for b in self.baseline_r2.tolist()]
        ax.scatter(base, y, marker="|", s=120, color="k", zorder=3, label="baseline (degree histogram)")
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(-0.2, 1.05)
        ax.axvline(1.0, color="k", lw=0.5, ls=":")
        ax.set_xlabel("held-out $R^2$ (linear read-out of hom(H, G) from the embedding)")
        from matplotlib.patches import Patch

        handles = [Patch(color=colours[i % len(colours)], label=f"computable by {c}") for i, c in enumerate(classes)]
        handles.append(Patch(color="lightgrey", label="by none of these"))
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], marker="|", ls="", color="k", markersize=10, label="baseline: degree histogram"))
        ax.legend(handles=handles, fontsize=7, loc="lower right")
        if title:
            ax.set_title(title)
        if fig is not None:
            fig.tight_layout()
            if path is not None:
                fig.savefig(path, dpi=110)
                plt.close(fig)
        return ax


def linear_probe(
    model: Callable[[Batch], Tensor],
    degree: int = 5,
    graphs: Optional[Sequence[nx.Graph]] = None,
    num_graphs: int = 300,
    seed: int = 0,
    test_fraction: float = 0.3,
    ridge: float = 1e-3,
    featurize: Optional[Callable[[Data], Data]] = None,
    batch_size: Optional[int] = 64,
) -> LinearProbeResult:
    """Held-out :math:`R^2` of each connected pattern's homomorphism count, linearly read off
    ``model``'s graph embeddings (see the module).

    Args:
        model: a callable on a PyG ``Batch`` returning ``[num_graphs, d]`` (eval mode is the
            caller's choice; gradients are off).
        degree: the largest pattern size (edges).
        graphs: the graphs (default :func:`probe_graphs` ``(num_graphs, seed)``).
        num_graphs, seed: for the default graphs; ``seed`` also draws the split.
        test_fraction: share of held-out graphs.
        ridge: the ridge penalty on standardised embeddings (relative to the number of
            training graphs).
        featurize: optional map applied to each ``Data`` before batching.
        batch_size: graphs per model call.

    Returns:
        a :class:`LinearProbeResult` (``print`` it, or ``.plot(path)``).
    """
    check_callable(model, "model")
    degree = check_size(degree, "degree", 1)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or ridge < 0:
        raise ValueError(f"ridge must be a non-negative number, got {ridge!r}")
    if featurize is not None:
        check_callable(featurize, "featurize")
    graphs = probe_graphs(num_graphs, seed) if graphs is None else list(graphs)
    if len(graphs) < 8:
        raise ValueError(f"graphs must hold at least 8 graphs for a train/test split, got {len(graphs)}")
    data = [graph_to_data(g) for g in graphs]
    if featurize is not None:
        data = [featurize(d) for d in data]
    emb = embed_graphs(model, data, batch_size)
    targets = hom_counts(graphs, degree)
    patterns = probe_patterns(degree)
    generator = torch.Generator().manual_seed(int(seed) + 1)
    order = torch.randperm(len(graphs), generator=generator)
    num_test = max(2, int(round(test_fraction * len(graphs))))
    test, train = order[:num_test], order[num_test:]
    r2 = _ridge_r2(emb, targets, train, test, ridge)
    baseline = _ridge_r2(_degree_features(graphs), targets, train, test, ridge)
    return LinearProbeResult(patterns, r2, baseline, len(train), num_test, float(ridge))


def _degree_features(graphs: Sequence[nx.Graph]) -> Tensor:
    """``[N, 2 + D]``: ``n``, ``m`` and the number of nodes of each degree ``0..D-1``."""
    top = max((d for g in graphs for _, d in g.degree()), default=0) + 1
    out = torch.zeros(len(graphs), 2 + top, dtype=torch.float64)
    for i, g in enumerate(graphs):
        out[i, 0], out[i, 1] = g.number_of_nodes(), g.number_of_edges()
        for _, d in g.degree():
            out[i, 2 + d] += 1
    return out


def _ridge_r2(features: Tensor, targets: Tensor, train: Tensor, test: Tensor, ridge: float) -> Tensor:
    """Held-out R^2 per target column of a ridge regression on standardised ``features``."""
    mean, std = features[train].mean(0), features[train].std(0)
    keep = std > 1e-12 * (features[train].abs().max() + 1e-300)
    x = (features[:, keep] - mean[keep]) / std[keep]
    x = torch.cat([x, torch.ones(len(features), 1, dtype=x.dtype)], 1)
    xt, xs = x[train], x[test]
    penalty = ridge * len(train) * torch.eye(x.shape[1], dtype=x.dtype)
    penalty[-1, -1] = 0.0  # the intercept is not penalised
    y_scale = targets[train].std(0).clamp_min(1e-300)
    y = (targets - targets[train].mean(0)) / y_scale
    w = torch.linalg.solve(xt.t() @ xt + penalty, xt.t() @ y[train])
    pred = xs @ w
    r2 = torch.full((targets.shape[1],), float("nan"), dtype=torch.float64)
    for j in range(targets.shape[1]):
        truth = y[test, j]
        total = ((truth - truth.mean()) ** 2).sum()
        if total > 1e-18 and targets[train, j].std() > 0:
            r2[j] = 1.0 - ((truth - pred[:, j]) ** 2).sum() / total
    return r2
