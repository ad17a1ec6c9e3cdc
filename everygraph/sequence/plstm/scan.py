"""The public op: :func:`plstm_scan`, the ``scalar`` kind of :func:`~everygraph.sequence.scan`."""

from __future__ import annotations

import math
from typing import Union

from torch import Tensor

from ...graphlib import DAG, Lattice
from ..triton._runtime import triton_runs_on

Structure = Union[Lattice, DAG]

EXECUTIONS = ("reference", "wavefront", "lattice", "triton")


def plstm_scan(
    structure: Structure,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    *,
    initial_state: Tensor | None = None,
    return_state: bool = False,
    scale: float | None = None,
    execution: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""pLSTM's linear recurrence with cell states on the edges of a DAG: the ``scalar`` kind
    of :func:`~everygraph.sequence.scan` with unit boundary gates (a thin parameterisation).

    From `pLSTM: parallelizable Linear Source Transition Mark networks
    <https://arxiv.org/abs/2506.11997>`_ (Poeppel et al., 2025). For every node :math:`n`
    (in topological order), every head, with :math:`C_e \in \mathbb{R}^{d_k \times d_v}`:

    .. math::
        C_e &= \sum_{e' \in \mathrm{in}(n)} T^n_{e e'}\, C_{e'} + S^n_e\, k^n (v^n)^\top
        \qquad (e \in \mathrm{out}(n)) \\
        h^n &= \sum_{e \in \mathrm{in}(n)} M^n_e\, (\tilde q^n)^\top C_e
               + D^n\, (\tilde q^n \cdot k^n)\, v^n, \qquad \tilde q^n = \mathrm{scale}\cdot q^n

    Unrolled, :math:`h^n = \sum_{n'} G^{n' n} (\tilde q^n \cdot k^{n'}) v^{n'}` with
    :math:`G^{n' n}` = sum over line-graph paths of :math:`S \prod T\, M` (and
    :math:`G^{nn} = D^n`): linear attention whose decay mask is a sum over DAG paths.

    **Layout (flat, shared by all executions).** Nodes in the structure's node order
    (row-major for a :class:`~everygraph.graphlib.Lattice`), edges in the column order of
    ``structure.edge_index``, line-graph edges in the order of
    ``structure.line_graph()`` (for a lattice: ``structure.to_dag().line_graph()``):

    * ``q``, ``k``: ``[B, N, H, dk]``; ``v``: ``[B, N, H, dv]``; ``direct``: ``[B, N, H]``.
    * ``source``: ``[B, E, H]``, :math:`S` of edge ``e``'s tail node for that out-edge.
    * ``mark``: ``[B, E, H]``, :math:`M` of edge ``e``'s head node for that in-edge.
    * ``transition``: ``[B, L, H]``, :math:`T^n_{e_{out} e_{in}}` for line-graph edge
      ``(e_in, e_out)`` through node ``n``.

    On lattices, :func:`~everygraph.sequence.plstm.lattice_gates` builds these from dense
    per-node gates ``[B, *shape, H, ndim(, ndim)]``.

    **Boundary states.** Every node also has one *virtual* in-edge and one virtual
    out-edge with unit gates, through which state enters and leaves the structure:

    * ``initial_state`` ``[B, N, H, dk, dv]`` (optional): the state on node ``n``'s virtual
      in-edge. It is read with mark 1 (adds :math:`\tilde q^{n\top} C^0_n` to
      :math:`h^n`) and passed with transition 1 into each (real) out-edge of ``n``. For a
      1D lattice, the state before the first step is ``initial_state[:, first_node]``
      (zeros elsewhere); for 2D, states entering the first row/column.
    * ``return_state=True`` also returns ``[B, N, H, dk, dv]``, the state of every node's
      virtual out-edge with source and transitions 1 (for states that compose across
      pieces, give the boundary gates: :func:`~everygraph.sequence.scan` with ``boundary``,
      or :func:`~everygraph.sequence.path_scan`):
      :math:`\sum_{e \in \mathrm{in}(n)} C_e + C^0_n + k^n (v^n)^\top`. At a sink
      (the last node of a sequence; the last row/column of a grid) this is the final state.

    Args:
        structure: a :class:`~everygraph.graphlib.Lattice` (dense fast path for 1D/2D) or a
            :class:`~everygraph.graphlib.DAG` (possibly a batch of graphs: ``batch``/``ptr``).
        q, k, v, source, transition, mark, direct: see the layout above.
        initial_state: ``[B, N, H, dk, dv]`` or None (zeros).
        return_state: also return the virtual out-edge states ``[B, N, H, dk, dv]``.
        scale: multiplies ``q`` (default :math:`1/\sqrt{d_k}`).
        execution: ``"reference"``, ``"wavefront"``, ``"lattice"`` (only for a lattice of
            1 or 2 dimensions) or ``"triton"`` (Triton kernels: the chunk kernel on paths
            without boundary states, one kernel per level elsewhere; CUDA tensors, or CPU under
            ``TRITON_INTERPRET=1``) or ``"chunked2d"`` (2D lattices without boundary states:
            blocks of the grid as masked attention) or ``"fused_lattice"`` (2D lattices, CPU:
            compiled with numba); default: ``triton`` for CUDA tensors when
            ``triton`` is installed, ``fused_lattice`` for 1D and 2D lattices of float32/float64 CPU
            tensors when numba is installed, else ``chunked2d`` for 2D grids without boundary states
            where it moves less memory (``chunked2d.block_shape``), ``lattice`` for other
            1D/2D lattices and ``wavefront`` otherwise. The result is the same.

    Returns:
        ``h`` ``[B, N, H, dv]``, or ``(h, state)`` with ``state`` ``[B, N, H, dk, dv]``.

    Example:
        >>> lat = Lattice((3, 4))
        >>> B, H, dk, dv, N, E = 2, 1, 4, 4, lat.num_nodes, lat.num_edges
        >>> L = lat.to_dag().line_graph().node.numel()
        >>> q, k, v = torch.randn(B, N, H, dk), torch.randn(B, N, H, dk), torch.randn(B, N, H, dv)
        >>> h = plstm_scan(lat, q, k, v, torch.rand(B, E, H), torch.rand(B, L, H) / 2,
        ...                torch.rand(B, E, H), torch.rand(B, N, H))
        >>> h.shape
        torch.Size([2, 12, 1, 4])
    """
    if not isinstance(structure, (Lattice, DAG)):
        raise TypeError(f"structure must be a graphlib.Lattice or graphlib.DAG, got {type(structure).__name__}")
    if execution is None:
        if isinstance(q, Tensor) and q.is_cuda and triton_runs_on(q.device):
            execution = "triton"
        elif isinstance(structure, Lattice) and structure.ndim <= 2:
            pass  # scan's default: fused_lattice (compiled, CPU), chunked2d or lattice (chunked on paths)
        else:
            execution = "lattice" if isinstance(structure, Lattice) and structure.ndim <= 2 else "wavefront"
    if execution is not None and execution not in EXECUTIONS + ("chunked2d", "fused_lattice"):
        raise ValueError(f"unknown execution {execution!r}; valid: {', '.join(EXECUTIONS + ('chunked2d', 'fused_lattice'))}")
    if execution == "lattice" and not (isinstance(structure, Lattice) and structure.ndim <= 2):
        raise ValueError(f"execution='lattice' needs a 1D or 2D Lattice, got {structure!r}")
    from ..recurrence import scan  # the engine; imported late, it imports this package's executions

    return scan(
        structure, q, k, v, source, transition, mark, direct, kind="scalar", initial_state=initial_state,
        return_state=return_state, scale=scale, execution=execution,
    )


def plstm_grid_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    *,
    scale: float | None = None,
) -> Tensor:
    r""":func:`plstm_scan` on an ``X x Y`` grid in its canonical orientation (every edge from
    ``c`` to ``c + 1``) with dense per-node inputs: no flat layout in between.

    Another orientation is this scan of the inputs with the flipped axes reversed (and the
    output reversed back), which is how :class:`~everygraph.nn.PLSTM2d` runs its four
    orientations as one batch. Gates of edges that would leave the grid are ignored. Runs the
    compiled ``fused_lattice`` execution on float32/float64 CPU tensors when numba is installed,
    else the blocked ``chunked2d`` execution where it moves less memory
    (:func:`~everygraph.sequence.plstm.chunked2d.block_shape`), else the anti-diagonal
    ``lattice`` execution; no boundary states.

    Args:
        q, k: ``[B, X, Y, H, dk]``; v: ``[B, X, Y, H, dv]``.
        source: ``[B, X, Y, H, 2]``, :math:`S` of the out-edge along axis 0 (down) and 1 (right).
        transition: ``[B, X, Y, H, 2, 2]``, ``[..., i, j]`` from the in-edge along axis ``j`` to
            the out-edge along axis ``i``.
        mark: ``[B, X, Y, H, 2]``; direct: ``[B, X, Y, H]``.
        scale: multiplies ``q`` (default :math:`1/\sqrt{d_k}`).

    Returns:
        ``h`` ``[B, X, Y, H, dv]``, equal to ``plstm_scan(Lattice((X, Y)), ...)`` on
        :func:`lattice_gates` of the same gates.

    Example:
        >>> B, X, Y, H, d = 2, 5, 6, 1, 4
        >>> q, k, v = (torch.randn(B, X, Y, H, d) for _ in range(3))
        >>> h = plstm_grid_scan(q, k, v, torch.rand(B, X, Y, H, 2), torch.rand(B, X, Y, H, 2, 2) / 2,
        ...                     torch.rand(B, X, Y, H, 2), torch.rand(B, X, Y, H))
        >>> h.shape
        torch.Size([2, 5, 6, 1, 4])
    """
    from ..executions.fused_lattice import FusedLatticeRecurrence, fused_lattice_usable
    from .chunked2d import block_shape, chunked_scan_2d
    from .layout import lattice_gates

    if not isinstance(q, Tensor) or q.dim() != 5:
        raise ValueError(f"q must be a tensor of shape [B, X, Y, H, dk], got {list(q.shape) if isinstance(q, Tensor) else type(q).__name__}")
    B, X, Y, H, dk = q.shape
    dv = v.shape[-1] if isinstance(v, Tensor) and v.dim() == 5 else -1
    expected = dict(k=(k, [B, X, Y, H, dk]), v=(v, [B, X, Y, H, dv]), source=(source, [B, X, Y, H, 2]),
                    transition=(transition, [B, X, Y, H, 2, 2]), mark=(mark, [B, X, Y, H, 2]), direct=(direct, [B, X, Y, H]))
    for name, (t, shape) in expected.items():
        if not isinstance(t, Tensor) or list(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (q is [B, X, Y, H, dk] = {list(q.shape)}), got {list(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
    if scale is None:
        scale = 1.0 / math.sqrt(dk)
    same_dtype = all(t.dtype == q.dtype for t in (k, v, source, transition, mark, direct))
    if q.numel() and same_dtype and fused_lattice_usable(Lattice((X, Y)), "scalar", q, True):
        # the compiled loop reads the dense canonical layout as it is (gates of edges off the
        # grid meet zero states and zero gradients there, so they are ignored as documented)
        N = X * Y
        dense = [t.reshape(B, N, H, *t.shape[4:]).contiguous() for t in (q * scale, k, v, source, transition, mark, direct)]
        h, _ = FusedLatticeRecurrence.apply(*dense, None, None, X, Y, False)
        return h.reshape(B, X, Y, H, dv)
    if not q.is_cuda and q.numel() and block_shape(X, Y, dk * dv) is not None:
        return chunked_scan_2d(q * scale, k, v, source, transition, mark, direct)
    lattice = Lattice((X, Y))
    flat = lattice_gates(lattice, source, transition, mark, direct)
    h = plstm_scan(lattice, *(t.reshape(B, X * Y, H, -1) for t in (q, k, v)), *flat, scale=scale)
    return h.reshape(B, X, Y, H, dv)
