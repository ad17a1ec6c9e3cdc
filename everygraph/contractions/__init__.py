"""everygraph.contractions."""

from .basis import basis, connected_patterns
from .expressivity import Verdict, analyze, computable, get_model, known_models
from .evaluate import ContractionMemoryError, evaluate, evaluate_reference
from .schedule import Workspace
from .pattern import Pattern
from .plan import ContractionPlan, compile

__all__: list[str] = [
    "computable",
    "analyze",
    "Verdict",
    "get_model",
    "known_models",
    "Pattern",
    "basis",
    "connected_patterns",
    "compile",
    "ContractionPlan",
    "evaluate",
    "evaluate_reference",
    "ContractionMemoryError",
    "Workspace",
]
