"""The 4x4 rook's graph and the Shrikhande graph, strongly regular (16, 6, 2, 2).

The constructions live in :mod:`everygraph.graphlib` (the probe's separation tasks in
:mod:`everygraph.contractions` use them too); they are re-exported here, beside the other
synthetic tasks.
"""

from ..graphlib import rook_graph, shrikhande_graph

__all__ = ["rook_graph", "shrikhande_graph"]
