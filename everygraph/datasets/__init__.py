"""everygraph.datasets."""

from .arrow_pointing import ArrowPointing

__all__: list[str] = ["ArrowPointing"]
