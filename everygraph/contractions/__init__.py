"""everygraph.contractions."""

from .basis import basis, connected_patterns
from .pattern import Pattern

__all__: list[str] = [
    "Pattern",
    "basis",
    "connected_patterns",
]
