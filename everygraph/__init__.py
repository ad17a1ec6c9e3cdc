"""everygraph: every structure is a graph.

This module holds only metadata (``__version__``, the one place the version is written).
Subpackages, from the bottom layer up (imports point down only):

- rank 0, :mod:`everygraph.graphlib`: structures (lattices, DAGs, line graphs), kernels
  (scatter/segment dispatch, balanced tree reduction) and the checks every layer shares.
- rank 1, the two engines, which never import each other: :mod:`everygraph.sequence` (the
  linear-recurrence scan on DAGs: pLSTM, Mamba) and :mod:`everygraph.contractions`
  (equivariant graph polynomials as compiled tensor contractions, expressivity analysis).
- rank 2, side by side: :mod:`everygraph.nn` (PyG-style layers), :mod:`everygraph.transforms`
  (PyG transforms) and :mod:`everygraph.datasets` (synthetic task generators).
- rank 3: :mod:`everygraph.cli` (the ``everygraph`` command).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
