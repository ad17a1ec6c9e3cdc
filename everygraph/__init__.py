"""everygraph: every structure is a graph.

Subpackages (imports point down only):

- :mod:`everygraph.graphlib` -- structures (lattices, DAGs, line graphs) and kernels
  (scatter/segment dispatch, balanced tree reduction).
- :mod:`everygraph.sequence` -- the linear-recurrence (scan) engine on DAGs: pLSTM, Mamba.
- :mod:`everygraph.contractions` -- equivariant graph polynomials as compiled tensor
  contractions, and the expressivity analysis.
- :mod:`everygraph.nn` -- PyG-style layers.
- :mod:`everygraph.datasets` -- synthetic task generators and dataset loaders.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
