"""everygraph.datasets."""

from .arrow_pointing import ArrowPointing
from .second_minimum import SecondMinimum
from .strongly_regular import rook_graph, shrikhande_graph

__all__: list[str] = ["ArrowPointing", "SecondMinimum", "rook_graph", "shrikhande_graph"]
