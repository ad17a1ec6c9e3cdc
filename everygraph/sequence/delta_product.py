r"""DeltaProduct (and DeltaNet, its ``n_h = 1`` case) as a parameterisation of :func:`scan`.

Siems et al., 2025, "DeltaProduct: Improving State-Tracking in Linear RNNs via Householder
Products" (https://arxiv.org/abs/2502.10297). Every token takes ``n_h`` delta-rule steps, each
a generalised Householder transition followed by a rank-1 write:

.. math::
    H_{t,0} = \gamma_t H_{t-1}, \quad
    H_{t,j} = (I - \beta_{t,j} k_{t,j} k_{t,j}^\top) H_{t,j-1} + \beta_{t,j} k_{t,j} v_{t,j}^\top
    \;(j = 1..n_h), \quad H_t = H_{t,n_h}, \quad o_t = (\tilde q_t)^\top H_t

**Mapping onto the engine.** :func:`scan` writes one rank-1 term *after* a node's whole
transition, while the delta rule interleaves ``n_h`` writes with the ``n_h`` Householder
factors; the combined write :math:`\sum_j (\prod_{i>j} P_i)\,\beta_j k_j v_j^\top` has rank
``n_h``. So every node ``n`` of the structure becomes a chain of ``n_h`` *sub-nodes*
``(n, 0) -> ... -> (n, n_h - 1)`` plus a *read-out* node ``(n, r)``:

* sub-node ``j`` carries ``k = k_j``, ``v = v_j``, the transition
  :math:`\gamma^{[j = 0]} (I - \beta_j k_j k_j^\top)` (``householder`` kind, one factor) on
  every line-graph edge through it and the source weight :math:`\beta_j` on its out-edges;
* an edge ``u -> w`` of the structure becomes ``(u, n_h - 1) -> (w, 0)``;
* the read-out node hangs off ``(n, n_h - 1)`` (an edge with mark 1; all other marks and all
  direct terms are 0) and reads :math:`\tilde q_n^\top H_n`; it has no out-edges.

On a node with several predecessors (a grid, a DAG) the engine sums the in-edge states
before the node's transition, so :math:`H_n = \prod_j P_{n,j} \sum_{p \to n} H_p + \text{writes}`
(the gate :math:`\gamma_n` and the factors are linear, so transforming each in-edge state and
summing is the same). The chain multiplies the depth of the structure by ``n_h``; the
``wavefront`` execution runs one level of the chain per step.

On a sequence (a 1D :class:`~everygraph.graphlib.Lattice`) no read-out node is needed: the
state of token ``t`` enters sub-node ``(t + 1, 0)`` on its in-edge, which that sub-node reads
with ``q_t`` (one final identity node reads the last token's). The expanded structure is a
path of ``L * n_h + 1`` sub-nodes and runs on the compiled ``fused_lattice`` loop on CPU
where numba is installed, else on the ``recurrent`` execution (both with hand-written
adjoints).
"""

from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor

from ..graphlib import DAG, Lattice, check_tensor
from .plstm.layout import lattice_dag
from .recurrence import path_scan, scan

Structure = Union[Lattice, DAG]


def _expanded_dag(dag: DAG, num_householder: int, reverse: bool) -> DAG:
    """The DAG of sub-nodes and read-out nodes (module docstring), cached on ``dag``."""
    cache = dag.__dict__.setdefault("_delta_product_dags", {})
    key = (num_householder, reverse)
    if key not in cache:
        src, dst = dag.edge_index.flip(0) if reverse else dag.edge_index
        slots = num_householder + 1
        nodes = torch.arange(dag.num_nodes, device=src.device) * slots
        last = num_householder - 1
        chains = [torch.stack([nodes + j, nodes + j + 1]) for j in range(num_householder)]  # j = last: the read-out edge
        edges = torch.cat([torch.stack([src * slots + last, dst * slots])] + chains, dim=1)
        cache[key] = DAG(edges, dag.num_nodes * slots)
    return cache[key]


def _check(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, gate: Tensor | None, num_nodes: int) -> int:
    for name, t in dict(q=q, k=k, v=v, beta=beta).items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dim() != 4:
        raise ValueError(f"q must have shape [B, N, H, dk], got {list(q.shape)}")
    B, N, H, dk = q.shape
    if N != num_nodes:
        raise ValueError(f"q must have one row per node of the structure (N={num_nodes}), got {list(q.shape)}")
    if k.dim() != 5 or list(k.shape[:3]) != [B, N, H] or k.shape[-1] != dk or k.shape[3] < 1:
        raise ValueError(f"k must have shape [B, N, H, n_h, dk] = [{B}, {N}, {H}, n_h, {dk}] with n_h >= 1, got {list(k.shape)}")
    n_h = k.shape[3]
    if v.dim() != 5 or list(v.shape[:4]) != [B, N, H, n_h]:
        raise ValueError(f"v must have shape [B, N, H, n_h, dv] = [{B}, {N}, {H}, {n_h}, dv], got {list(v.shape)}")
    if list(beta.shape) != [B, N, H, n_h]:
        raise ValueError(f"beta must have shape [B, N, H, n_h] = {[B, N, H, n_h]}, got {list(beta.shape)}")
    if gate is not None and list(gate.shape) != [B, N, H]:
        raise ValueError(f"gate must have shape [B, N, H] = {[B, N, H]} or be None, got {list(gate.shape)}")
    dtypes = {t.dtype for t in (q, k, v, beta) + (() if gate is None else (gate,))}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise ValueError(f"q, k, v, beta and gate must share one floating dtype, got {sorted(map(str, dtypes))}")
    return n_h


def delta_product(
    structure: Structure,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    *,
    gate: Tensor | None = None,
    scale: float | None = None,
    reverse: bool = False,
    execution: str | None = None,
    initial_state: Tensor | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""DeltaProduct (gated if ``gate`` is given) on a path, a lattice or any DAG.

    Per node :math:`n` (topological order), with :math:`P_{n,j} = I - \beta_{n,j} k_{n,j}
    k_{n,j}^\top` and the predecessors' states summed:

    .. math::
        H_{n,0} = \gamma_n \sum_{p \to n} H_p, \quad
        H_{n,j} = P_{n,j} H_{n,j-1} + \beta_{n,j} k_{n,j} v_{n,j}^\top, \quad
        H_n = H_{n,n_h}, \quad o_n = \mathrm{scale}\cdot q_n^\top H_n

    On a path this is the paper's recurrence (``n_h = 1``: DeltaNet). With unit-norm keys,
    :math:`\beta \in [0, 2]` gives each factor an eigenvalue :math:`1 - \beta \in [-1, 1]`
    (negative eigenvalues: the paper's state-tracking regime); the op does not normalise keys.
    See the module docstring for how the interleaved writes map onto :func:`scan`.

    Args:
        structure: a :class:`~everygraph.graphlib.Lattice` (``Lattice((L,))`` is a causal
            sequence) or a :class:`~everygraph.graphlib.DAG` (a batch of graphs, or several
            packed sequences as disjoint paths).
        q: ``[B, N, H, dk]``.
        k: ``[B, N, H, n_h, dk]``, the ``n_h`` keys of each node, applied in order.
        v: ``[B, N, H, n_h, dv]``.
        beta: ``[B, N, H, n_h]``.
        gate: ``[B, N, H]`` multiplicative decay :math:`\gamma` (e.g. ``exp(g)``), or None.
        scale: multiplies ``q`` (default :math:`1/\sqrt{d_k}`).
        reverse: run against the edges (a sequence from its end).
        execution: the :func:`scan` execution (default: ``"fused_lattice"`` on a sequence on
            CPU with numba, else ``"recurrent"``; ``"wavefront"`` on other structures; or
            ``"reference"``).
        initial_state: on a sequence (a 1D :class:`~everygraph.graphlib.Lattice`), the state
            :math:`H_{-1}` ``[B, H, dk, dv]`` before its first token (the last one with
            ``reverse``), or None (zeros): it enters the path of sub-nodes before the first
            token's first factor (:func:`~everygraph.sequence.path_scan`'s ``state``).
        return_state: also return the state after the sequence's last token ``[B, H, dk, dv]``
            (sequences only); passing it as ``initial_state`` of the next piece continues
            the scan exactly.

    Returns:
        ``o`` ``[B, N, H, dv]``, or ``(o, state)``.

    Example:
        >>> q, k, v = torch.randn(2, 8, 1, 4), torch.randn(2, 8, 1, 2, 4), torch.randn(2, 8, 1, 2, 3)
        >>> k = torch.nn.functional.normalize(k, dim=-1)
        >>> delta_product(Lattice((8,)), q, k, v, 2 * torch.rand(2, 8, 1, 2)).shape
        torch.Size([2, 8, 1, 3])
    """
    if not isinstance(structure, (Lattice, DAG)):
        raise TypeError(f"structure must be a graphlib.Lattice or graphlib.DAG, got {type(structure).__name__}")
    dag = lattice_dag(structure) if isinstance(structure, Lattice) else structure
    n_h = _check(q, k, v, beta, gate, dag.num_nodes)
    B, N, H, dk = q.shape
    dv = v.shape[-1]
    if not isinstance(return_state, bool):
        raise TypeError(f"return_state must be a bool, got {type(return_state).__name__}")
    on_path = isinstance(structure, Lattice) and structure.ndim == 1
    if initial_state is not None or return_state:
        if not on_path:
            raise ValueError(f"initial_state and return_state take a sequence (a 1D Lattice), got {structure!r}")
        if initial_state is not None:
            check_tensor(initial_state, "initial_state", "float", 4, shape="[B, H, dk, dv]")
            if list(initial_state.shape) != [B, H, dk, dv] or initial_state.dtype != q.dtype:
                raise ValueError(f"initial_state must have shape [B, H, dk, dv] = {[B, H, dk, dv]} and dtype {q.dtype}, "
                                 f"got {list(initial_state.shape)} {initial_state.dtype}")
    slots = n_h + 1
    if scale is None:
        scale = 1.0 / math.sqrt(dk)

    def per_slot(sub_nodes: Tensor, readout: Tensor) -> Tensor:
        """``[B, N, n_h, H, ...]`` and ``[B, N, 1, H, ...]`` -> ``[B, N * slots, H, ...]``."""
        return torch.cat([sub_nodes, readout], dim=2).flatten(1, 2)

    k_steps = k.transpose(2, 3)  # [B, N, n_h, H, dk]
    beta_steps = beta.transpose(2, 3)  # [B, N, n_h, H]
    q_x = per_slot(q.new_zeros(B, N, n_h, H, dk), q[:, :, None])
    k_x = per_slot(k_steps, q.new_zeros(B, N, 1, H, dk))
    v_x = per_slot(v.transpose(2, 3), v.new_zeros(B, N, 1, H, dv))
    gamma = q.new_ones(B, N, n_h, H)
    if gate is not None:
        gamma = torch.cat([gate[:, :, None], gamma[:, :, 1:]], dim=2)
    factor = torch.cat([k_steps, beta_steps[..., None], gamma[..., None]], dim=-1)  # [B, N, n_h, H, dk + 2]
    readout_factor = torch.cat([q.new_zeros(B, N, 1, H, dk + 1), q.new_ones(B, N, 1, H, 1)], dim=-1)
    # The path mapping reads token t's state on the sub-node that holds token t + 1's first key,
    # whose (zero-weighted) direct term q_t . k_{t+1} would carry a NaN or inf of token t + 1
    # back to o_t (0 * nan = nan); with non-finite inputs (and no states asked for) the
    # read-out-node mapping of DAGs runs instead, so a causal sequence never looks ahead.
    stateless = initial_state is None and not return_state
    if on_path and stateless and not all(bool(torch.isfinite(t).all()) for t in (q, k, v, beta) + (() if gate is None else (gate,))):
        on_path = False
        if execution == "recurrent":
            execution = "wavefront"  # the path's loop, on the expanded chain
    if on_path:
        h, state = _on_path(q, k_steps, v.transpose(2, 3), factor, beta_steps, scale, structure.flip[0] != reverse,
                            execution, initial_state)
        return (h, state) if return_state else h
    node_factor = per_slot(factor, readout_factor)  # [B, N * slots, H, dk + 2]
    node_beta = per_slot(beta_steps, q.new_zeros(B, N, 1, H))

    expanded = _expanded_dag(dag, n_h, reverse)
    src, dst = expanded.edge_index.to(q.device)
    source = node_beta[:, src]
    mark = (dst % slots == n_h).to(q.dtype)[None, :, None].expand(B, -1, H)
    transition = node_factor[:, expanded.line_graph().node.to(q.device), :, None, :]  # [B, L, H, 1, dk + 2]
    direct = q.new_zeros(B, N * slots, H)
    h = scan(expanded, q_x, k_x, v_x, source, transition, mark, direct, kind="householder", scale=scale,
             execution=execution or "wavefront")
    return h.unflatten(1, (N, slots))[:, :, n_h]


def _on_path(q: Tensor, k: Tensor, v: Tensor, factor: Tensor, beta: Tensor, scale: float, backwards: bool,
             execution: str | None, initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The expanded sequence as one path of ``N * n_h + 1`` sub-nodes: ``q`` ``[B, N, H, dk]``,
    the steps ``k``, ``v``, ``factor``, ``beta`` ``[B, N, n_h, H, ...]`` in token order;
    ``backwards`` runs it from the last token. Token ``t``'s state leaves its last sub-node on
    the in-edge of the next sub-node, which reads it with ``q_t`` (one final node, the
    identity, reads the last token's and passes it on as the leaving state). ``initial_state``
    enters before sub-node 0 (read with mark 0, then through the first token's first factor)."""
    if backwards:  # token order reversed, each token's own steps kept in order
        q, k, v, factor, beta = (x.flip(1) for x in (q, k, v, factor, beta))
    B, N, n_h, H, dk = k.shape
    length = N * n_h + 1

    def steps(x: Tensor, last: Tensor) -> Tensor:  # [B, N, n_h, H, ...] + the final node [B, 1, H, ...]
        return torch.cat([x.flatten(1, 2), last], dim=1)

    k_x, v_x = steps(k, k.new_zeros(B, 1, H, dk)), steps(v, v.new_zeros(B, 1, H, v.shape[-1]))
    identity = torch.cat([q.new_zeros(B, 1, H, dk + 1), q.new_ones(B, 1, H, 1)], dim=-1)
    factor_x, beta_x = steps(factor, identity), steps(beta, beta.new_zeros(B, 1, H))
    # token t's query on sub-node (t + 1) * n_h
    q_x = torch.cat([q.new_zeros(B, 1, H, dk), torch.stack([torch.zeros_like(q)] * (n_h - 1) + [q], dim=2).flatten(1, 2)], dim=1)
    reads = torch.arange(length, device=q.device) % n_h == 0
    reads[0] = False
    mark = reads.to(q.dtype)[None, :, None].expand(B, length, H)
    # dense per-step gates (path_scan's convention: the source and transition of step t, the
    # mark of the edge entering it), so that a state can enter and leave the path
    h, state = path_scan(q_x, k_x, v_x, beta_x, factor_x[:, :, :, None, :], mark, q.new_zeros(B, length, H),
                         kind="householder", state=initial_state, scale=scale, execution=execution)
    h = h[:, n_h::n_h]
    return (h.flip(1) if backwards else h), state


def delta_product_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    *,
    gate: Tensor | None = None,
    scale: float | None = None,
    reverse: bool = False,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The paper's recurrence on a sequence, a plain loop over tokens and their ``n_h`` steps.

    Args:
        q: ``[B, L, H, dk]``.
        k: ``[B, L, H, n_h, dk]``.
        v: ``[B, L, H, n_h, dv]``.
        beta: ``[B, L, H, n_h]``.
        gate: ``[B, L, H]`` or None.
        initial_state: ``[B, H, dk, dv]`` or None (zeros).

    Returns:
        ``o`` ``[B, L, H, dv]`` and the final state ``[B, H, dk, dv]``.
    """
    for name, value, ndim in (("q", q, 4), ("k", k, 5), ("v", v, 5), ("beta", beta, 4)):
        check_tensor(value, name, "float", ndim)
    if len({q.dtype, k.dtype, v.dtype, beta.dtype}) > 1:
        raise TypeError(f"q, k, v and beta must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}, {beta.dtype}")
    B, length, H, dk = q.shape
    n_h, dv = k.shape[3], v.shape[-1]
    scale = 1.0 / math.sqrt(dk) if scale is None else scale
    state = q.new_zeros(B, H, dk, dv) if initial_state is None else initial_state
    outputs = [None] * length
    for t in (reversed(range(length)) if reverse else range(length)):
        if gate is not None:
            state = gate[:, t, :, None, None] * state
        for j in range(n_h):
            key, value, b = k[:, t, :, j], v[:, t, :, j], beta[:, t, :, j, None, None]
            householder = torch.eye(dk, dtype=q.dtype, device=q.device) - b * key[..., :, None] * key[..., None, :]
            state = householder @ state + b * key[..., :, None] * value[..., None, :]
        outputs[t] = torch.einsum("bhk,bhkv->bhv", scale * q[:, t], state)
    return torch.stack(outputs, dim=1), state
