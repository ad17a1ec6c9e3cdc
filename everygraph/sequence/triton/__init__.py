r"""Triton kernels for the scan engine's hot loops (the optional extra ``everygraph[gpu]``).

- :func:`~everygraph.sequence.triton.selective_scan.selective_scan_triton`: Mamba-1's
  selective scan, forward and backward each one fused kernel (``selective_scan.py``).
- :func:`~everygraph.sequence.triton.wavefront.plstm_wavefront_triton`: the DAG scan with one
  kernel per topological level (the anti-diagonals of a 2D lattice), CSR-ordered so each
  output edge is owned by one program (``wavefront.py``).

The dispatchers (:func:`~everygraph.sequence.selective_scan`,
:func:`~everygraph.sequence.plstm_scan`) pick these for CUDA tensors when ``triton`` is
installed; ``execution="triton"`` forces them, also on CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1``), which is how they are tested without a GPU. This
package imports ``triton`` only in its kernel modules, so the library works without it.
"""

from ._runtime import triton_installed, triton_runs_on

__all__ = ["triton_installed", "triton_runs_on"]
