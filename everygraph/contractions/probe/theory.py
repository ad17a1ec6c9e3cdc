"""What each model class predicts for a pair: separation by a computable pattern's count.

A model class (a decider of :mod:`~everygraph.contractions.expressivity`: ``mpnn``,
``subgraph``, ``ppgn``, ``3fwl`` ...) computes the homomorphism count of exactly the patterns
its decider accepts (Zhang et al., "Beyond Weisfeiler-Lehman: A Quantitative Framework for GNN
Expressiveness", ICLR 2024). So the class separates a pair iff some pattern it computes has
different counts on the two graphs. Patterns are infinitely many; the theory here checks the
connected invariant patterns with at most ``degree`` edges, so

* **yes** is a proof: the witness pattern is computable and its counts differ;
* **no** means "not separated by any computable pattern with at most ``degree`` edges";
  a larger pattern may still separate (the report says the degree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional, Sequence

from ...graphlib import check_size
from ..expressivity import get_model
from ..pattern import Pattern
from .homcounts import hom_counts, pattern_name, probe_patterns
from .pair import GraphPair

__all__ = ["DEFAULT_MODEL_CLASSES", "available_model_classes", "ClassPrediction", "PairTheory", "pair_theory"]

#: The model classes a probe compares against, weakest first; those that
#: :func:`~everygraph.contractions.get_model` does not know are skipped.
DEFAULT_MODEL_CLASSES = ("mpnn", "subgraph", "local_2gnn", "local_2fgnn", "ppgn", "3fwl")


def available_model_classes(model_classes: Optional[Sequence[str]] = None) -> list[str]:
    """The names among ``model_classes`` (default :data:`DEFAULT_MODEL_CLASSES`) that
    :func:`~everygraph.contractions.get_model` knows, in order. With ``model_classes`` given,
    an unknown name is an error; the defaults skip unknown ones silently."""
    explicit = model_classes is not None
    names = DEFAULT_MODEL_CLASSES if model_classes is None else model_classes
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise TypeError(f"model_classes must be a sequence of names, got {names!r}")
    found = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"model_classes must hold names (strings), got {name!r}")
        try:
            get_model(name)
        except ValueError:
            if explicit:
                raise ValueError(f"model_classes: unknown model class {name!r}") from None
            continue
        found.append(name)
    return found


@lru_cache(maxsize=8192)
def _computable(pattern: Pattern, model: str) -> bool:
    return bool(get_model(model).decide(pattern).computable)


@dataclass(frozen=True)
class ClassPrediction:
    """One model class on one pair: ``separates``, and for a yes the smallest witness."""

    model_class: str
    separates: bool
    degree: int
    witness: Optional[Pattern] = None
    counts: Optional[tuple[int, int]] = None

    def __str__(self) -> str:
        if not self.separates:
            return f"{self.model_class}: no (no computable pattern with <= {self.degree} edges separates)"
        return (f"{self.model_class}: yes, {pattern_name(self.witness)} ({self.witness}) has "
                f"{self.counts[0]} vs {self.counts[1]} homomorphisms")


@dataclass
class PairTheory:
    """The theory's verdict on one pair for every model class, at one degree bound.

    ``differing``: every connected pattern with at most ``degree`` edges whose counts differ
    (the pair's fingerprint), smallest first.
    """

    pair: GraphPair
    degree: int
    predictions: dict[str, ClassPrediction] = field(default_factory=dict)
    differing: list[Pattern] = field(default_factory=list)

    def separates(self, model_class: str) -> bool:
        return self.predictions[model_class].separates


def pair_theory(
    pairs: Sequence[GraphPair], degree: int = 6, model_classes: Optional[Sequence[str]] = None
) -> list[PairTheory]:
    """The prediction of each model class for each pair (see the module).

    Args:
        pairs: :class:`GraphPair` objects.
        degree: the largest number of pattern edges checked (6 reaches K4; 7 takes a few
            seconds more).
        model_classes: names for :func:`~everygraph.contractions.get_model`; default: the
            available ones of :data:`DEFAULT_MODEL_CLASSES`.

    Returns:
        one :class:`PairTheory` per pair.
    """
    degree = check_size(degree, "degree", 1)
    if isinstance(pairs, GraphPair) or not hasattr(pairs, "__iter__"):
        raise TypeError(f"pairs must be a sequence of GraphPair, got {type(pairs).__name__}")
    pairs = list(pairs)
    for i, p in enumerate(pairs):
        if not isinstance(p, GraphPair):
            raise TypeError(f"pairs[{i}] must be a GraphPair, got {type(p).__name__}")
    classes = available_model_classes(model_classes)
    patterns = probe_patterns(degree)
    graphs = [g for p in pairs for g in (p.first, p.second)]
    counts = hom_counts(graphs, degree) if graphs else None
    result = []
    for k, pair in enumerate(pairs):
        a, b = counts[2 * k], counts[2 * k + 1]
        differing = [j for j in range(len(patterns)) if a[j] != b[j]]
        theory = PairTheory(pair, degree, differing=[patterns[j] for j in differing])
        for name in classes:
            witness = next((j for j in differing if _computable(patterns[j], name)), None)
            if witness is None:
                theory.predictions[name] = ClassPrediction(name, False, degree)
            else:
                theory.predictions[name] = ClassPrediction(
                    name, True, degree, patterns[witness], (int(a[witness]), int(b[witness])))
        result.append(theory)
    return result
