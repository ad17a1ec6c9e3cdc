"""everygraph.datasets."""

from .arrow_pointing import ArrowPointing
from .second_minimum import SecondMinimum

__all__: list[str] = ["ArrowPointing", "SecondMinimum"]
