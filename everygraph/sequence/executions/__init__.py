r"""Executions of :func:`~everygraph.sequence.scan`, one module each, one signature:
``(dag_or_lattice, q, k, v, source, transition, mark, direct, kind, initial_state, boundary,
return_state) -> (h, state)`` with ``q`` already scaled. The public names are the
``*_scan`` functions of :mod:`everygraph.sequence`.

- ``reference.py``: the plain topological loop, every kind (the readable spec).
- ``wavefront.py``: one batched step per topological level, any DAG, every kind.
- ``recurrent.py``: paths, one in-place step per position with a hand-written adjoint
  (scalar, diagonal, elementwise).
- ``lattice_elementwise.py``: the 2D anti-diagonal loop for the diagonal and elementwise
  kinds (and elementwise weights), hand-written adjoint.
- ``fused_lattice.py``, ``fused_householder.py``: the compiled (numba) loop over the nodes of
  a 1D or 2D lattice with its hand-written adjoint, every kind.
- ``selective.py``: Mamba-1's kernels (``sequence/mamba/``) for the operands in Mamba's
  factored form on paths (``execution`` ``"fused"``, ``"recurrent"``, ``"triton"``).
- chunked (paths) and lattice (2D anti-diagonal) for the scalar kind live in
  ``sequence/plstm/lattice.py``; the blocked 2D form in ``sequence/plstm/chunked2d.py``.
"""
