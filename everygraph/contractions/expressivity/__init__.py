"""Which GNN computes which equivariant polynomial: deciders with replayable certificates.

``computable(pattern, model)`` answers with a :class:`Verdict` (yes + the model operations
that compute the basis element, or no + the obstruction); ``analyze`` tabulates a whole basis.
"""

from .analyze import ExpressivityRow, ExpressivityTable, analyze, is_paper_convention
from .graph import PatternGraph, as_pattern_graph
from .models import KFWL, MPNN, PPGN, Model, SubgraphGNN, computable, get_model, known_models
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
    "MPNN",
    "SubgraphGNN",
    "PPGN",
    "KFWL",
    "computable",
    "get_model",
    "known_models",
    "treewidth",
    "treewidth_upper_bound",
    "elimination_ordering",
    "Step",
    "Verdict",
]
