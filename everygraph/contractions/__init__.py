"""everygraph.contractions."""

from .basis import basis, connected_patterns
from .evaluate import ContractionMemoryError, evaluate, evaluate_reference
from .pattern import Pattern
from .plan import ContractionPlan, compile

__all__: list[str] = [
    "Pattern",
    "basis",
    "connected_patterns",
    "compile",
    "ContractionPlan",
    "evaluate",
    "evaluate_reference",
    "ContractionMemoryError",
]
