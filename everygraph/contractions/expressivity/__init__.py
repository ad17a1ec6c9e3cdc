"""Which GNN computes which equivariant polynomial: deciders with replayable certificates.

``computable(pattern, model)`` answers with a :class:`Verdict` (yes + the model operations
that compute the basis element, or no + the obstruction); ``analyze`` tabulates a whole basis.
"""

from .analyze import ExpressivityRow, ExpressivityTable, analyze, is_paper_convention
from .graph import PatternGraph, as_pattern_graph
from . import models as _models
from .models import (
    KFWLDecider,
    Local2FGNNDecider,
    Local2GNNDecider,
    Model,
    MPNNDecider,
    PPGNDecider,
    SubgraphGNNDecider,
    computable,
    get_model,
    known_models,
)
from .ned import Ear, NestedEarDecomposition, check_ned, explain_no_ned, find_ned
from .treewidth import elimination_ordering, treewidth, treewidth_upper_bound
from .verdict import Step, Verdict

__all__ = [
    "analyze",
    "ExpressivityTable",
    "ExpressivityRow",
    "is_paper_convention",
    "PatternGraph",
    "as_pattern_graph",
    "Model",
    "MPNNDecider",
    "SubgraphGNNDecider",
    "Local2GNNDecider",
    "Local2FGNNDecider",
    "PPGNDecider",
    "KFWLDecider",
    "computable",
    "get_model",
    "known_models",
    "treewidth",
    "treewidth_upper_bound",
    "elimination_ordering",
    "Step",
    "Verdict",
    "Ear",
    "NestedEarDecomposition",
    "find_ned",
    "check_ned",
    "explain_no_ned",
]


def __getattr__(name: str):
    if name in _models.DEPRECATED_NAMES:  # MPNN, SubgraphGNN, PPGN, KFWL: warn, then the decider
        return getattr(_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
