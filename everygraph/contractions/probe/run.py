"""``probe_model(model)``: the model's separation power next to the theory, on generated pairs.

Example:
    >>> from everygraph.contractions import probe_model, regular_pairs
    >>> report = probe_model(my_model, pairs=regular_pairs(), degree=5)      # doctest: +SKIP
    >>> print(report)                                                  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from ...graphlib import check_callable, check_flag, check_size
from .cfi import cfi_pairs
from .pair import GraphPair
from .regular import regular_pairs
from .reliable import reliable_separation
from .report import ProbeReport, ProbeRow
from .single_pattern import single_pattern_pairs
from .strongly_regular import strongly_regular_pairs
from .theory import available_model_classes, pair_theory

__all__ = ["PAIR_FAMILIES", "generate_pairs", "probe_model"]

#: The pair families by name, each a function returning a list of :class:`GraphPair`.
PAIR_FAMILIES: dict[str, Callable[[], list[GraphPair]]] = {
    "regular": regular_pairs,
    "strongly_regular": strongly_regular_pairs,
    "cfi": cfi_pairs,
    "single_pattern": single_pattern_pairs,
}


def generate_pairs(families: Optional[Sequence[str]] = None) -> list[GraphPair]:
    """The pairs of the named families (default: all of :data:`PAIR_FAMILIES`), in that order."""
    if families is None:
        families = list(PAIR_FAMILIES)
    if isinstance(families, str) or not hasattr(families, "__iter__"):
        raise TypeError(f"families must be a sequence of names from {list(PAIR_FAMILIES)}, got {families!r}")
    pairs: list[GraphPair] = []
    for name in families:
        if name not in PAIR_FAMILIES:
            raise ValueError(f"families: unknown family {name!r}; known: {', '.join(PAIR_FAMILIES)}")
        pairs += PAIR_FAMILIES[name]()
    return pairs


def probe_model(
    model: Callable[[Batch], Tensor],
    pairs: Optional[Sequence[GraphPair]] = None,
    model_classes: Optional[Sequence[str]] = None,
    degree: int = 6,
    num_permutations: int = 32,
    alpha: float = 1e-3,
    seed: int = 0,
    featurize: Optional[Callable[[Data], Data]] = None,
    batch_size: Optional[int] = None,
    progress: bool = False,
    model_name: Optional[str] = None,
) -> ProbeReport:
    """Which pairs ``model`` separates, next to each model class's prediction.

    Args:
        model: a callable on a PyG ``Batch`` returning graph embeddings ``[num_graphs, d]``
            (untrained is fine: separation power is what the architecture can express; an
            ``nn.Module`` is put in eval mode for the test and restored after).
        pairs: :class:`GraphPair` objects (default: :func:`generate_pairs`, every family).
        model_classes: the theory's columns (default: the available ones of
            :data:`~everygraph.contractions.probe.DEFAULT_MODEL_CLASSES`).
        degree: the largest pattern size (edges) the theory checks.
        num_permutations, alpha, seed, featurize, batch_size: see
            :func:`~everygraph.contractions.probe.reliable_separation` (``seed + i`` for pair ``i``).
        progress: a tqdm bar over the pairs.
        model_name: the column title (default: the model's class name).

    Returns:
        a :class:`ProbeReport`; ``print(report)`` shows the table.
    """
    check_callable(model, "model")
    degree = check_size(degree, "degree", 1)
    num_permutations = check_size(num_permutations, "num_permutations", 4)
    check_flag(progress, "progress")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    classes = available_model_classes(model_classes)
    pairs = generate_pairs() if pairs is None else list(pairs)
    theories = pair_theory(pairs, degree, classes)
    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    rows = []
    iterator = theories
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(theories, desc="pairs", unit="pair")
    try:
        for i, theory in enumerate(iterator):
            test = reliable_separation(model, theory.pair.first, theory.pair.second, num_permutations, alpha,
                                       seed + i, featurize=featurize, batch_size=batch_size)
            rows.append(ProbeRow(theory, test))
    finally:
        if was_training:
            model.train()
    name = model_name or type(model).__name__
    settings = dict(num_permutations=num_permutations, alpha=alpha, seed=seed)
    return ProbeReport(rows, classes, degree, settings, name)
