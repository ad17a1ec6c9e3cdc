r"""pLSTM's scan on DAGs: one recurrence with states on edges, three executions.

From `pLSTM: parallelizable Linear Source Transition Mark networks
<https://arxiv.org/abs/2506.11997>`_ (Poeppel, Beck, Hochreiter et al., 2025).

Executions, one signature (fla style), chosen by :func:`plstm_scan` from the structure:

- ``reference`` (``reference.py``): a plain loop over nodes in topological order.
- ``wavefront`` (``wavefront.py``): one batched step per topological level, any DAG or a
  batch of DAGs; depth = longest path.
- ``lattice`` (``lattice.py``): dense paths for 1D (chunkwise parallel; without boundary
  states the matrix-product form of ``chunked1d.py`` with a hand-written backward) and 2D (one
  batched step per anti-diagonal) lattices in any of their :math:`2^d` orientations.
- ``chunked2d`` (``chunked2d.py``): 2D grids cut into blocks; inside a block, masked
  attention with the block's path-sum gating matrix; ``dk x dv`` states only on block
  borders, passed between blocks in anti-diagonal order. No boundary states.
- ``grid_gating.py``: a small grid's whole gating matrix, summed over orientations
  (:func:`plstm_grid_gating`), for the scan as one masked attention.

``layout.py`` maps between the public flat layout (per node / per edge / per line-graph
edge) and dense per-node gates on a lattice (:func:`lattice_gates`).
"""

from .grid_gating import plstm_grid_gating
from .layout import lattice_gates
from .scan import EXECUTIONS, plstm_grid_scan, plstm_scan

__all__ = ["plstm_scan", "plstm_grid_scan", "plstm_grid_gating", "lattice_gates", "EXECUTIONS"]
