"""everygraph.graphlib: the graph core, the bottom layer.

Structures (lattices, DAGs, line graphs, orientations, multitree pruning, networkx/PyG
conversion, dense padded pairs, seeded random walks and their tokens, random-walk encodings) and kernels (scatter/segment dispatch, balanced tree
reduction), plus the checks and the precision rule every layer above shares. Knows nothing of
models; imports only torch, PyG, networkx and numpy, never another everygraph subpackage.
"""

from .convert import from_networkx, to_networkx
from .dag import DAG, LineGraph
from .dense import to_dense_pairs, to_simple_graph
from .errors import CycleError, IndexDtypeError
from .lattice import Lattice, packed_paths, path_graph
from .multitree import prune_to_multitree
from .orient import NODE_ORDERS, dagify, node_order, undirected_degree
from .precision import compute_dtype, upcast
from .random_walk import WalkTokens, random_walk_tokens, random_walks
from .strongly_regular import rook_graph, shrikhande_graph
from .scatter import check_index, scatter, scatter_backend_info, segment
from .tree_reduce import tree_reduce
from .walk_encoding import random_walk_encoding
from .validation import (
    check_batch,
    check_callable,
    check_choice,
    check_edge_index,
    check_flag,
    check_number,
    check_ptr,
    check_size,
    check_tensor,
    ptr_from_batch,
)

__all__ = [
    "CycleError",
    "IndexDtypeError",
    "DAG",
    "LineGraph",
    "Lattice",
    "path_graph",
    "packed_paths",
    "rook_graph",
    "shrikhande_graph",
    "NODE_ORDERS",
    "dagify",
    "node_order",
    "undirected_degree",
    "prune_to_multitree",
    "from_networkx",
    "to_networkx",
    "to_dense_pairs",
    "random_walks",
    "random_walk_tokens",
    "WalkTokens",
    "random_walk_encoding",
    "to_simple_graph",
    "scatter",
    "segment",
    "tree_reduce",
    "scatter_backend_info",
    "check_index",
    "check_ptr",
    "check_edge_index",
    "check_batch",
    "ptr_from_batch",
    "compute_dtype",
    "upcast",
    "check_callable",
    "check_choice",
    "check_flag",
    "check_number",
    "check_size",
    "check_tensor",
]
