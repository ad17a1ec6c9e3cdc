"""everygraph.datasets: generators of the synthetic tasks of the tutorials.

The arrow-pointing images of the pLSTM paper, the multiset second minimum of the LCM paper,
the 4x4 rook / Shrikhande pair of strongly regular graphs, and a loader of the BREC
expressiveness benchmark's graph6 files. In the layer of
:mod:`everygraph.nn` and :mod:`everygraph.transforms`, and imports neither.
"""

from .arrow_pointing import ArrowPointing
from .brec import BREC, BREC_CATEGORIES
from .second_minimum import SecondMinimum
from .strongly_regular import rook_graph, shrikhande_graph

__all__: list[str] = ["ArrowPointing", "BREC", "BREC_CATEGORIES", "SecondMinimum", "rook_graph", "shrikhande_graph"]
