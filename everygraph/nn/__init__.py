"""everygraph.nn."""

from .aggr import CommutativeMonoid, LCMAggregation, associativity_loss

__all__: list[str] = [
    "LCMAggregation",
    "CommutativeMonoid",
    "associativity_loss",
]
