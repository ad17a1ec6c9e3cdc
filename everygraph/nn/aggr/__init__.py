"""everygraph.nn.aggr: aggregations usable as ``aggr=`` in PyG ``MessagePassing`` layers."""

from .lcm import LCMAggregation
from .monoid import (
    CommutativeMonoid,
    GRUOperator,
    associativity_loss,
    check_associative,
    check_commutative,
)

__all__ = [
    "LCMAggregation",
    "CommutativeMonoid",
    "GRUOperator",
    "associativity_loss",
    "check_associative",
    "check_commutative",
]
