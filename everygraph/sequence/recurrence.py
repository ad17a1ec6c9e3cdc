r"""The one recurrence of the scan engine: states on DAG edges, a transition kind, boundary
states; :func:`scan` validates and dispatches to an execution (``executions/``).

Every model of ``everygraph.sequence`` is a parameterisation of :func:`scan`: pLSTM
(:func:`~everygraph.sequence.plstm_scan`, ``kind="scalar"``), Mamba-1
(:func:`~everygraph.sequence.selective_scan`, ``kind="elementwise"`` on a path), and through
the kinds GLA/HGRN2 (``diagonal``) and delta-rule models (``householder``).
"""

from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor

from ..graphlib import DAG, Lattice, check_tensor
from .executions.chunked_diagonal import chunked_diagonal as _chunked_diagonal
from .executions.fused_lattice import fused_lattice as _fused_lattice
from .executions.fused_lattice import fused_lattice_runs, fused_lattice_usable, jit_enabled
from .executions.recurrent import recurrent as _recurrent
from .executions.lattice_elementwise import lattice_elementwise as _lattice_elementwise
from .executions.reference import reference as _reference
from .executions.selective import SELECTIVE_EXECUTIONS, default_selective_execution, selective_plan
from .executions.selective import selective as _selective
from .executions.wavefront import wavefront as _wavefront
from .plstm.chunked2d import block_shape, plstm_chunked2d
from .plstm.lattice import plstm_lattice
from .plstm.layout import lattice_dag, lattice_gates
from .triton._runtime import require_triton, triton_runs_on
from .transitions import FACTORED, KINDS, Boundary, check_kind, gate_dims, gate_shape, materialise_factored

Structure = Union[Lattice, DAG]

#: execution -> the transition kinds it runs
SUPPORTED_KINDS = {
    "reference": KINDS,
    "wavefront": KINDS,
    "recurrent": KINDS,
    "chunked": ("scalar", "diagonal"),
    "lattice": ("scalar", "diagonal", "elementwise"),
    "triton": ("scalar", "diagonal", "elementwise"),
}
EXECUTIONS = tuple(SUPPORTED_KINDS)
#: executions (-> kinds) that also run complex states (diagonal state space models such as S4D
#: keep complex conjugate pairs of modes); every other one refuses complex inputs
COMPLEX_EXECUTIONS = {
    "reference": ("scalar", "diagonal", "elementwise"),
    "recurrent": ("scalar", "diagonal", "elementwise"),
    "wavefront": ("scalar", "diagonal", "elementwise"),  # grids and DAGs (S4D off paths)
}
#: executions without boundary states (no initial_state, return_state or boundary): run when
#: asked for, picked by default only for calls without them; not in EXECUTIONS, whose members
#: run every call on their structures
STATELESS_EXECUTIONS = {"chunked2d": ("scalar",)}
#: compiled CPU executions (numba, the optional extra ``everygraph[cpu]``): 1D/2D lattices,
#: float32/float64 CPU tensors (scalar weights for the scalar kind); picked by default for such
#: calls when numba is installed and ``EVERYGRAPH_DISABLE_JIT`` is unset
COMPILED_EXECUTIONS = {"fused_lattice": ("scalar", "diagonal", "elementwise", "householder")}
#: on paths the compiled loop is the default up to this state size ``dk * dv``: its work per
#: step grows with the state, while the chunked form's matrix products amortise it over a chunk
#: (measured equal at 32 x 32, one thread)
FUSED_PATH_MAX_STATE = 512


def _is_path(structure: Structure) -> bool:
    return isinstance(structure, Lattice) and sum(size > 1 for size in structure.shape) <= 1


def default_execution(
    structure: Structure, kind: str, device: torch.device | None = None, boundary_states: bool = True, state_size: int | None = None
) -> str:
    """The execution the structure picks: dense paths where the structure and kind allow; on a
    CUDA ``device`` with ``triton`` installed, the Triton kernels for the kinds they run. A
    call without boundary states (``boundary_states=False``) on a 2D grid with ``dk * dv =
    state_size`` gets the blocked ``chunked2d`` execution where it moves less memory than the
    anti-diagonal loop (:func:`~everygraph.sequence.plstm.chunked2d.block_shape`)."""
    check_kind(kind)
    if not isinstance(structure, (DAG, Lattice)):
        raise TypeError(f"structure must be an everygraph.graphlib.DAG or Lattice, got {type(structure).__name__}")
    if device is not None and device.type == "cuda" and kind in SUPPORTED_KINDS["triton"] and triton_runs_on(device):
        return "triton"
    if _is_path(structure):
        return "chunked" if kind == "scalar" else "recurrent" if kind in SUPPORTED_KINDS["recurrent"] else "wavefront"
    if isinstance(structure, Lattice) and structure.ndim == 2 and kind == "scalar":
        if not boundary_states and state_size is not None and block_shape(*structure.shape, state_size) is not None:
            return "chunked2d"
        return "lattice"
    return "wavefront"


def scan(
    structure: Structure,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    *,
    kind: str = "scalar",
    initial_state: Tensor | None = None,
    return_state: bool = False,
    boundary: Boundary | None = None,
    scale: float | None = None,
    execution: str | None = None,
    state_nodes: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""The linear recurrence with matrix states on the edges of a DAG, for any transition kind.

    For every node :math:`n` in topological order, every head, with states
    :math:`C_e \in \mathbb{R}^{d_k \times d_v}` on edges:

    .. math::
        C_e &= \sum_{e' \in \mathrm{in}(n)} T^n_{e e'}\big(C_{e'}\big) + S_e \odot k^n (v^n)^\top
               \qquad (e \in \mathrm{out}(n)) \\
        h^n &= \sum_{e \in \mathrm{in}(n)} (\tilde q^n)^\top \big(M_e \odot C_e\big)
               + D^n\, (\tilde q^n \cdot k^n)\, v^n, \qquad \tilde q^n = \mathrm{scale}\cdot q^n

    :math:`T` is a linear map of the given ``kind`` (see
    :mod:`~everygraph.sequence.transitions`): ``scalar`` :math:`tC`, ``diagonal``
    :math:`\mathrm{diag}(\alpha) C`, ``elementwise`` :math:`A \odot C`, ``householder``
    :math:`\prod_i \gamma_i (I - \beta_i w_i w_i^\top) C`. :math:`S`, :math:`M` are weights: a
    scalar per head, or elementwise ``[dk, dv]``.

    **Layout (flat, shared by all executions).** Nodes in the structure's node order
    (row-major for a :class:`~everygraph.graphlib.Lattice`), edges in the column order of
    ``structure.edge_index``, line-graph edges in the order of ``structure.line_graph()`` (for
    a lattice: ``structure.to_dag().line_graph()``); :func:`lattice_gates` builds these from
    dense per-node gates.

    * ``q``, ``k``: ``[B, N, H, dk]``, or ``[B, N, G, dk]`` with ``G`` dividing ``H`` (head
      ``h`` reads group ``h // (H / G)``, as Mamba's grouped ``B``/``C``); ``v``:
      ``[B, N, H, dv]``; ``direct``: ``[B, N, H]``.
    * ``source``, ``mark``: ``[B, E, H]`` or ``[B, E, H, dk, dv]``.
    * ``transition``: ``[B, L, H, *gate]``, ``gate`` = ``()``, ``(dk,)``, ``(dk, dv)`` or
      ``(r, dk + 2)`` by kind, for line-graph edge ``(e_in, e_out)`` through node ``n``.

    **Factored operands.** With ``kind="elementwise"``, ``transition``, ``mark``, ``source`` and
    the ``boundary`` gates may be given per node as their factors instead:
    :class:`~everygraph.sequence.transitions.ExponentialDecay` (:math:`e^{r_n A}`) and
    :class:`~everygraph.sequence.transitions.NodeWeight`. Mamba-1's operands in that form
    (:mod:`~everygraph.sequence.executions.selective`) on a path or packed paths run on Mamba's
    kernels, ``execution`` ``"fused"`` (numba, CPU), ``"recurrent"`` or ``"triton"``, which form
    the decays where they use them; every other call gets them materialised.

    **Dtypes.** One floating dtype for all tensors; complex too for the ``reference``,
    ``recurrent`` and ``wavefront`` executions with the scalar, diagonal and elementwise kinds
    (``COMPLEX_EXECUTIONS``; :func:`~everygraph.sequence.s4d` runs on them).

    **Boundary states.** Every node has one virtual in-edge, carrying
    ``initial_state[:, n]``, and one virtual out-edge, whose state ``return_state`` returns.
    They are gated like real edges by ``boundary`` (a :class:`Boundary`: ``mark``,
    ``source``, ``enter`` = virtual in -> real out, ``leave`` = real in -> virtual out,
    ``through`` = virtual in -> virtual out; a missing field is the identity):

    .. math::
        h^n &\mathrel{+}= (\tilde q^n)^\top (M^\partial_n \odot C^0_n), \qquad
        C_e \mathrel{+}= T^\partial_{e}(C^0_{\mathrm{tail}(e)}) \\
        C^{out}_n &= \sum_{e \in \mathrm{in}(n)} L^\partial_e(C_e) + S^\partial_n \odot k^n (v^n)^\top
                   + P^\partial_n(C^0_n)

    With the gates of the edges a cut removes (the node's own gates: the convention of the
    official pLSTM code; :func:`lattice_gates` with ``boundary_axis``, :func:`path_scan`),
    scanning a structure equals scanning its pieces in topological order with the boundary
    states passed along. Without ``boundary`` the virtual edges have unit gates.

    Args:
        structure: a :class:`~everygraph.graphlib.Lattice` or a
            :class:`~everygraph.graphlib.DAG` (possibly a batch of graphs).
        q, k, v, source, transition, mark, direct: see the layout above.
        kind: ``"scalar"`` (default), ``"diagonal"``, ``"elementwise"`` or ``"householder"``.
        initial_state: ``[B, N, H, dk, dv]`` or None (zeros).
        return_state: also return the virtual out-edge states ``[B, N, H, dk, dv]``.
        boundary: gates of the virtual edges (:class:`Boundary`), or None (unit).
        scale: multiplies ``q`` (default :math:`1/\sqrt{d_k}`).
        execution: ``"reference"``, ``"wavefront"``, ``"recurrent"`` (paths),
            ``"chunked"`` (paths; scalar, diagonal), ``"lattice"`` (1D/2D lattices; scalar, diagonal,
            elementwise; on a path it runs ``chunked`` or ``recurrent``),
            ``"chunked2d"`` (2D lattices, scalar, no boundary states: blocks of the grid as
            masked attention, states only on block borders), ``"fused_lattice"`` (1D and 2D
            lattices, every kind (the scalar kind with scalar weights), float32/float64 CPU
            tensors: the recurrence compiled with numba); default: picked by the structure and
            kind (:func:`default_execution`), and ``fused_lattice`` instead of ``lattice``,
            ``chunked2d`` or ``chunked`` (scalar kind), of ``wavefront`` (diagonal and
            elementwise kinds, 2D grids), of ``recurrent`` (diagonal and elementwise kinds,
            paths), or of ``recurrent`` and ``wavefront`` (householder kind, paths and 2D
            grids) where it runs and numba is enabled; ``"fused"``
            (Mamba's factored form only, see above). The result is the same.
        state_nodes: with ``return_state``, return only these nodes' states
            (``[B, len(state_nodes), H, dk, dv]``); None: every node's.

    Returns:
        ``h`` ``[B, N, H, dv]``, or ``(h, state)`` with ``state`` ``[B, N, H, dk, dv]``
        (``[B, len(state_nodes), H, dk, dv]``).

    Example:
        >>> lat = Lattice((6,))
        >>> q, k, v = torch.randn(1, 6, 1, 4), torch.randn(1, 6, 1, 4), torch.randn(1, 6, 1, 3)
        >>> decay = torch.rand(1, 4, 1, 4, 3)  # one elementwise transition per line-graph edge
        >>> h = scan(lat, q, k, v, torch.ones(1, 5, 1), decay, torch.ones(1, 5, 1), torch.ones(1, 6, 1),
        ...          kind="elementwise")
    """
    if not isinstance(structure, (Lattice, DAG)):
        raise TypeError(f"structure must be a graphlib.Lattice or graphlib.DAG, got {type(structure).__name__}")
    kind = check_kind(kind)
    if state_nodes is not None:
        check_tensor(state_nodes, "state_nodes", "index", 1)
    gates = tuple(boundary) if isinstance(boundary, Boundary) else ()
    if any(isinstance(t, FACTORED) for t in (source, transition, mark, *gates)):
        plan = None
        if scale == 1.0 and execution in (None, *SELECTIVE_EXECUTIONS):
            plan = selective_plan(structure, q, k, v, source, transition, mark, direct, kind, initial_state, boundary,
                                  return_state, state_nodes)
        if plan is not None:
            execution = execution or default_selective_execution(q, k, v, *transition)
            h, state = _selective(plan, q, k, v, transition, return_state, execution)
            return (h, state) if return_state else h
        flat = lattice_dag(structure) if isinstance(structure, Lattice) else structure
        source, transition, mark, boundary = materialise_factored(
            *flat.edge_index, flat.line_graph().node, source, transition, mark, boundary
        )
    if execution == "fused":
        raise ValueError("execution='fused' runs Mamba's factored operands on paths only "
                         "(sequence.executions.selective); use 'recurrent' or 'reference'")
    if isinstance(v, Tensor) and v.dim() == 4:
        q, k = (_share_groups(x, v.shape[2]) for x in (q, k))
    if execution is None:
        has_states = initial_state is not None or return_state or boundary is not None
        state_size = q.shape[-1] * v.shape[-1] if isinstance(q, Tensor) and isinstance(v, Tensor) and q.dim() and v.dim() else None
        execution = default_execution(structure, kind, q.device if isinstance(q, Tensor) else None, has_states, state_size)
        defaulted = True
    else:
        defaulted = False
    kinds = SUPPORTED_KINDS.get(execution, STATELESS_EXECUTIONS.get(execution, COMPILED_EXECUTIONS.get(execution)))
    if kinds is None:
        valid = EXECUTIONS + tuple(STATELESS_EXECUTIONS) + tuple(COMPILED_EXECUTIONS)
        raise ValueError(f"unknown execution {execution!r}; valid: {', '.join(valid)}")
    if kind not in kinds:
        raise ValueError(
            f"execution={execution!r} runs the kinds {', '.join(kinds)}, not {kind!r}; "
            "use 'reference' or 'wavefront'"
        )
    if execution in STATELESS_EXECUTIONS and (initial_state is not None or return_state or boundary is not None):
        raise ValueError(f"execution={execution!r} takes no initial_state, return_state or boundary; use 'lattice'")
    if execution == "chunked2d" and not (isinstance(structure, Lattice) and structure.ndim == 2):
        raise ValueError(f"execution='chunked2d' needs a 2D Lattice, got {structure!r}")
    if execution in ("recurrent", "chunked") and not _is_path(structure):
        raise ValueError(f"execution={execution!r} needs a path (a Lattice with one axis longer than 1), got {structure!r}")
    if execution == "lattice" and not (isinstance(structure, Lattice) and structure.ndim <= 2):
        raise ValueError(f"execution='lattice' needs a 1D or 2D Lattice, got {structure!r}")
    if execution == "fused_lattice":
        if not (isinstance(structure, Lattice) and structure.ndim <= 2):
            raise ValueError(f"execution='fused_lattice' needs a 1D or 2D Lattice, got {structure!r}")
        if not jit_enabled():
            raise RuntimeError("execution='fused_lattice' needs numba (pip install 'everygraph[cpu]') and "
                               "EVERYGRAPH_DISABLE_JIT unset; use 'lattice'")
    dag = lattice_dag(structure) if isinstance(structure, Lattice) else structure
    num_lines = dag.line_graph().node.numel()
    check_inputs(dag, num_lines, kind, q, k, v, source, transition, mark, direct, initial_state, boundary)
    if q.dtype.is_complex and (execution not in COMPLEX_EXECUTIONS or kind not in COMPLEX_EXECUTIONS[execution]):
        raise ValueError(
            f"complex inputs run on the executions {', '.join(COMPLEX_EXECUTIONS)} with the kinds "
            f"{', '.join(COMPLEX_EXECUTIONS['wavefront'])}, not execution={execution!r} with kind={kind!r}"
        )
    weights = [source, mark] + ([] if boundary is None else [boundary.mark, boundary.source])
    scalar_weights = all(w is None or w.dim() <= 3 for w in weights)
    if execution in ("chunked", "chunked2d") or (execution == "fused_lattice" and kind == "scalar"):
        if not scalar_weights:
            raise ValueError(f"execution={execution!r} takes scalar source and mark weights [B, E, H]; use 'recurrent' or 'wavefront'")
    if execution == "fused_lattice" and not (q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64)):
        raise ValueError(f"execution='fused_lattice' runs float32 or float64 CPU tensors, got {q.dtype} on {q.device}; use 'lattice'")
    if (
        defaulted and execution in ("lattice", "chunked2d", "chunked") and fused_lattice_usable(structure, kind, q, scalar_weights)
        and (not _is_path(structure) or q.shape[-1] * v.shape[-1] <= FUSED_PATH_MAX_STATE)
    ):  # the compiled loop: faster than the PyTorch forms where it runs (docs/plstm-performance.md)
        execution = "fused_lattice"
    if (
        defaulted and execution == "wavefront" and kind in ("diagonal", "elementwise") and not _is_path(structure)
        and fused_lattice_runs(structure, kind, q)
    ):  # decays per state entry on a 2D grid (Mamba on images): faster than wavefront and
        # lattice (benchmarks/fused_lattice_kinds.py)
        execution = "fused_lattice"
    if defaulted and execution in ("recurrent", "wavefront") and kind == "householder" and fused_lattice_runs(structure, kind, q):
        # paths and 2D grids: 18-73x faster than recurrent on paths and 3.8-10x faster than
        # wavefront on grids, forward and forward+backward (benchmarks/fused_householder.py)
        execution = "fused_lattice"
    if defaulted and execution == "recurrent" and kind in ("diagonal", "elementwise") and fused_lattice_runs(structure, kind, q):
        # paths: 1.4-6.4x (diagonal) and 2.4-18x (elementwise) faster than recurrent at
        # dk = dv = 16..64, L = 1024..4096 (benchmarks/fused_householder.py --part paths-kinds)
        execution = "fused_lattice"
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    if scale != 1.0:
        q = q * scale
    if execution == "reference":
        h, state = _reference(dag, q, k, v, source, transition, mark, direct, kind, initial_state, boundary, return_state)
    elif execution == "wavefront":
        h, state = _wavefront(dag, q, k, v, source, transition, mark, direct, kind, initial_state, boundary, return_state)
    elif execution == "triton":
        h, state = _triton(structure, dag, q, k, v, source, transition, mark, direct, kind, initial_state, boundary, return_state)
    elif execution == "fused_lattice":
        h, state = _fused_lattice(structure, q, k, v, source, transition, mark, direct, initial_state, boundary, return_state, kind)
    elif execution == "chunked2d":
        h, state = plstm_chunked2d(structure, q, k, v, source, transition, mark, direct), None
    elif execution == "chunked" and kind == "diagonal":
        h, state = _chunked_diagonal(structure, q, k, v, source, transition, mark, direct, initial_state, boundary, return_state)
    elif execution == "recurrent":
        h, state = _recurrent(structure, q, k, v, source, transition, mark, direct, kind, initial_state, boundary, return_state)
    elif kind == "scalar" and scalar_weights:
        h, state = plstm_lattice(structure, q, k, v, source, transition, mark, direct, initial_state, return_state, boundary=boundary)
    elif _is_path(structure):  # execution="lattice" on a path, decays per state entry
        h, state = _recurrent(structure, q, k, v, source, transition, mark, direct, kind, initial_state, boundary, return_state)
    else:
        h, state = _lattice_elementwise(structure, q, k, v, source, transition, mark, direct, kind, initial_state, boundary, return_state)
    if return_state and state_nodes is not None:
        state = state[:, state_nodes.to(state.device)]
    return (h, state) if return_state else h


def _share_groups(x: object, heads: int) -> object:
    """``q`` or ``k`` with ``G`` groups of heads ``[B, N, G, dk]`` as ``[B, N, H, dk]``."""
    if isinstance(x, Tensor) and x.dim() == 4 and 0 < x.shape[2] != heads and heads % x.shape[2] == 0:  # H = 0 too
        return x.repeat_interleave(heads // x.shape[2], dim=2)
    return x


def _triton(structure, dag, q, k, v, source, transition, mark, direct, kind, initial_state, boundary, return_state):
    """The Triton kernels: a chunk kernel on a path (scalar kind, or diagonal kind with positive
    transitions; scalar weights, no boundary states), one kernel per level elsewhere."""
    require_triton(q.device)
    chunkable = (
        _is_path(structure) and initial_state is None and boundary is None and not return_state
        and source.dim() == 3 and mark.dim() == 3
        and (kind == "scalar" or (kind == "diagonal" and bool((transition > 0).all())))
    )
    if chunkable:
        from .triton.chunk import path_scan_triton

        return path_scan_triton(structure, kind, q, k, v, source, transition, mark, direct), None
    from .triton.wavefront import wavefront_triton

    return wavefront_triton(dag, q, k, v, source, transition, mark, direct, kind, initial_state, boundary, return_state)


def check_inputs(dag, num_lines, kind, q, k, v, source, transition, mark, direct, initial_state, boundary) -> None:
    """Shapes, dtypes and types of :func:`scan`'s tensors, each error naming both shapes."""
    tensors = dict(q=q, k=k, v=v, source=source, transition=transition, mark=mark, direct=direct)
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dim() != 4:
        raise ValueError(f"q must have shape [B, N, H, dk], got {list(q.shape)}")
    B, _, H, dk = q.shape
    dv = v.shape[-1] if v.dim() == 4 else -1
    N, E = dag.num_nodes, dag.num_edges
    if kind == "householder" and (transition.dim() != 5 or transition.shape[-2] < 1):
        raise ValueError(f"a householder transition must have shape [B, L, H, r, dk + 2] with r >= 1, got {list(transition.shape)}")
    gate = gate_shape(kind, dk, dv, transition)
    gate_label = {"scalar": "", "diagonal": ", dk", "elementwise": ", dk, dv", "householder": ", r, dk + 2"}[kind]

    def weight(t: Tensor, rows: int, label: str) -> tuple[list[int], str]:
        if t.dim() == 5:
            return [B, rows, H, dk, dv], f"[B, {label}, H, dk, dv]"
        return [B, rows, H], f"[B, {label}, H] (or [B, {label}, H, dk, dv])"

    expected = dict(
        q=([B, N, H, dk], "[B, N, H, dk]"),
        k=([B, N, H, dk], "[B, N, H, dk]"),
        v=([B, N, H, dv], "[B, N, H, dv]"),
        source=weight(source, E, "E"),
        transition=([B, num_lines, H, *gate], f"[B, L, H{gate_label}] (L = line-graph edges, kind={kind!r})"),
        mark=weight(mark, E, "E"),
        direct=([B, N, H], "[B, N, H]"),
    )
    if initial_state is not None:
        tensors["initial_state"] = initial_state
        expected["initial_state"] = ([B, N, H, dk, dv], "[B, N, H, dk, dv]")
    if boundary is not None:
        if not isinstance(boundary, Boundary):
            raise TypeError(f"boundary must be a sequence.Boundary, got {type(boundary).__name__}")
        for field, rows, label in (("mark", N, "N"), ("source", N, "N")):
            t = getattr(boundary, field)
            if t is not None:
                tensors[f"boundary.{field}"] = t
                expected[f"boundary.{field}"] = weight(t, rows, label)
        for field, rows, label in (("enter", E, "E"), ("leave", E, "E"), ("through", N, "N")):
            t = getattr(boundary, field)
            if t is not None:
                tensors[f"boundary.{field}"] = t
                expected[f"boundary.{field}"] = ([B, rows, H, *gate_shape(kind, dk, dv, t)], f"[B, {label}, H{gate_label}]")
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        shape, label = expected[name]
        if list(t.shape) != shape:
            raise ValueError(f"{name} must have shape {label} = {shape} for this structure (N={N}, E={E}, L={num_lines}), got {list(t.shape)}")
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) != 1:
        raise ValueError(f"all inputs must share one dtype, got { {n: str(t.dtype) for n, t in tensors.items()} }")
    dtype = next(iter(dtypes))
    if not (dtype.is_floating_point or dtype.is_complex):
        raise ValueError(f"inputs must be floating point (or complex), got {dtype}")
    assert gate_dims(kind) == len(gate)


def path_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    *,
    kind: str = "scalar",
    state: Tensor | None = None,
    scale: float | None = None,
    execution: str | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Scan one piece of a sequence given the state entering it; return the outputs and the
    state leaving it. Pieces compose: for any split ``L = L_1 + L_2``,
    ``path_scan(x[:, :L_1], state=s)`` then ``path_scan(x[:, L_1:], state=s_1)`` equals
    ``path_scan(x, state=s)`` (outputs concatenated, same final state), forward and backward.

    Gates are dense, one per step (the convention of the official pLSTM code): ``source[:, t]``
    for the edge leaving step ``t``, ``transition[:, t]`` through step ``t``, ``mark[:, t]`` for
    the edge entering step ``t``. The entering state is read at step 0 with ``mark[:, 0]`` and
    passed on with ``transition[:, 0]``; the leaving state is
    :math:`T_{L-1}(C_{in}) + S_{L-1} k v^\top` of the last step (its own transition and source):

    .. math::
        C_t = T_t(C_{t-1}) + S_t \odot k_t v_t^\top, \quad
        h_t = \tilde q_t^\top (M_t \odot C_{t-1}) + D_t (\tilde q_t \cdot k_t) v_t,
        \quad C_{-1} = \text{state}

    Args:
        q, k: ``[B, L, H, dk]``; v: ``[B, L, H, dv]``; direct: ``[B, L, H]``.
        source, mark: ``[B, L, H]`` or ``[B, L, H, dk, dv]``.
        transition: ``[B, L, H, *gate]`` (see :func:`scan`'s kinds).
        kind: the transition kind.
        state: ``[B, H, dk, dv]`` entering the piece, or None (zeros).
        scale, execution: as in :func:`scan`.

    Returns:
        ``h`` ``[B, L, H, dv]`` and the leaving state ``[B, H, dk, dv]``.
    """
    for name, value in (("q", q), ("k", k), ("v", v), ("source", source), ("transition", transition), ("mark", mark),
                        ("direct", direct)):
        check_tensor(value, name, "inexact")  # complex states: see COMPLEX_EXECUTIONS
    if q.dim() != 4:
        raise ValueError(f"q must have shape [B, L, H, dk], got {list(q.shape)}")
    B, length, H, dk = q.shape
    dv = v.shape[-1]
    if state is not None and list(state.shape) != [B, H, dk, dv]:
        raise ValueError(f"state must have shape [B, H, dk, dv] = {[B, H, dk, dv]}, got {list(state.shape)}")
    if length == 0:
        out_state = state if state is not None else q.new_zeros(B, H, dk, dv)
        return v.new_zeros(B, 0, H, dv), out_state
    lattice = Lattice((length,))
    extra = gate_dims(check_kind(kind))
    if transition.dim() != 3 + extra:
        raise ValueError(f"transition must have shape [B, L, H, *gate] for kind={kind!r}, got {list(transition.shape)}")
    if source.dim() != mark.dim():  # one elementwise, one scalar: both elementwise
        source, mark = (t if t.dim() == 5 else t[..., None, None].expand(B, length, H, dk, dv) for t in (source, mark))
    flat = lattice_gates(
        lattice,
        source.unsqueeze(3),
        transition.reshape(*transition.shape[:3], 1, 1, *transition.shape[3:]),
        mark.unsqueeze(3),
        direct,
        boundary_axis=0,
    )
    S, T, M, D, boundary = flat
    initial = None
    if state is not None:
        initial = torch.cat([state[:, None], state.new_zeros(B, length - 1, H, dk, dv)], dim=1)
    h, states = scan(
        lattice, q, k, v, S, T, M, D, kind=kind, initial_state=initial, return_state=True, boundary=boundary,
        scale=scale, execution=execution,
    )
    return h, states[:, -1]


def _execution(name: str):
    def run(
        structure: Structure,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        source: Tensor,
        transition: Tensor,
        mark: Tensor,
        direct: Tensor,
        *,
        kind: str = "scalar",
        initial_state: Tensor | None = None,
        return_state: bool = False,
        boundary: Boundary | None = None,
        scale: float | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        return scan(
            structure, q, k, v, source, transition, mark, direct, kind=kind, initial_state=initial_state,
            return_state=return_state, boundary=boundary, scale=scale, execution=name,
        )

    run.__name__ = run.__qualname__ = f"{name}_scan"
    kinds = SUPPORTED_KINDS.get(name) or STATELESS_EXECUTIONS.get(name) or COMPILED_EXECUTIONS[name]
    run.__doc__ = (
        f""":func:`scan` with ``execution="{name}"`` (same arguments, same result); runs the kinds
        {', '.join(kinds)}."""
    )
    return run


reference_scan = _execution("reference")
wavefront_scan = _execution("wavefront")
recurrent_scan = _execution("recurrent")
chunked_scan = _execution("chunked")
lattice_scan = _execution("lattice")
chunked2d_scan = _execution("chunked2d")
fused_lattice_scan = _execution("fused_lattice")
