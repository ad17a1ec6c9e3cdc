"""everygraph.graphlib: the graph core.

Structures (lattices, DAGs, line graphs, orientations, multitree pruning, networkx/PyG
conversion) and kernels (scatter/segment dispatch, balanced tree reduction). Knows nothing of
models; imports only torch, PyG and networkx.
"""

from .convert import from_networkx, to_networkx
from .dag import DAG, LineGraph
from .errors import CycleError
from .lattice import Lattice, path_graph
from .multitree import prune_to_multitree
from .orient import dagify, node_order, undirected_degree
from .scatter import scatter, scatter_backend_info, segment
from .tree_reduce import tree_reduce

__all__ = [
    "CycleError",
    "DAG",
    "LineGraph",
    "Lattice",
    "path_graph",
    "dagify",
    "node_order",
    "undirected_degree",
    "prune_to_multitree",
    "from_networkx",
    "to_networkx",
    "scatter",
    "segment",
    "tree_reduce",
    "scatter_backend_info",
]
