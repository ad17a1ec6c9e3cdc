r"""LightNet's additive linear recurrence on paths, grids and DAGs: a ``diagonal``-kind
parameterisation of :func:`~everygraph.sequence.scan`, and its paper-equation reference.

From `You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet
<https://arxiv.org/abs/2405.21022>`_ (Qin et al., 2024). On a sequence, per head and per key
channel, the state is an *additive* (undecayed) sum normalised by the running sum of the
exponentiated keys:

.. math::
    U_t = U_{t-1} + e^{k_t} v_t^\top, \qquad \delta_t = \delta_{t-1} + e^{k_t}, \qquad
    o_t = \tilde q_t^\top \big(U_t / \delta_t\big)

(the division is per key channel). With :math:`S_t = U_t / \delta_t` this is a multiplicative
recurrence with the data-dependent decay :math:`\lambda_t = \delta_{t-1} / \delta_t` and the
key tied to it, :math:`e^{k_t}/\delta_t = 1 - \lambda_t`:
:math:`S_t = \mathrm{diag}(\lambda_t) S_{t-1} + \mathrm{diag}(1 - \lambda_t)\, \mathbf 1 v_t^\top`.
The decays telescope, :math:`\prod_{r=s+1}^t \lambda_r = \delta_s/\delta_t`, so the weight of
position :math:`s` at :math:`t` is :math:`e^{k_s} / \sum_{r \le t} e^{k_r}`: a softmax over the
prefix, independent of the order in which the prefix was scanned. That order independence is
why one scan suffices for multi-dimensional data in the paper.
"""

from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor

from ..graphlib import DAG, Lattice, check_flag, check_number, check_ptr, check_tensor
from .plstm.layout import lattice_dag
from .recurrence import SUPPORTED_KINDS, path_scan, scan

Structure = Union[Lattice, DAG, None]

__all__ = ["lightnet_scan", "lightnet_scan_reference", "lightnet_log_normalizer", "lightnet_step"]


def _dag_of(structure: Structure, num_nodes: int) -> tuple[Lattice | DAG, DAG]:
    if structure is None:
        structure = Lattice((num_nodes,))
    if isinstance(structure, Lattice):
        return structure, lattice_dag(structure)
    return structure, structure


def _check(structure: Structure, q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> None:
    """Floating point ``[B, N, H, d]`` tensors of one dtype (refused, not cast), a known
    structure of ``N`` nodes, a number or None as ``scale``."""
    if structure is not None and not isinstance(structure, (Lattice, DAG)):
        raise TypeError(f"structure must be None, a graphlib.Lattice or a graphlib.DAG, got {type(structure).__name__}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(t, name, "float", shape="[B, N, H, d]")
        if t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor ([B, N, H, d]), got shape {list(t.shape)}")
    B, N, H, dk = q.shape
    if list(k.shape) != [B, N, H, dk]:
        raise ValueError(f"k must have the shape of q [B, N, H, dk] = {[B, N, H, dk]}, got {list(k.shape)}")
    if list(v.shape[:3]) != [B, N, H]:
        raise ValueError(f"v must have shape [B, N, H, dv] = {[B, N, H]} + [dv], got {list(v.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
    if structure is not None and structure.num_nodes != N:
        raise ValueError(f"q has N={N} nodes but the structure has {structure.num_nodes}")
    if scale is not None:
        check_number(scale, "scale")


def lightnet_log_normalizer(dag: DAG, k: Tensor) -> Tensor:
    r""":math:`\log \delta_n` with :math:`\delta_n = e^{k_n} + \sum_{m \to n} \delta_m` (one
    term per edge, so a sum over paths), computed in log space one topological level at a
    time: on a 2D grid :math:`\delta` counts binomially many paths and overflows float32
    beyond about 64 pixels a side, its logarithm does not.

    Args:
        dag: the structure.
        k: ``[B, N, H, dk]`` keys (the exponents).

    Returns:
        ``[B, N, H, dk]``.
    """
    if not isinstance(dag, DAG):
        raise TypeError(f"dag must be a graphlib.DAG, got {type(dag).__name__}")
    check_tensor(k, "k", "float", 4, shape="[B, N, H, dk]")
    if k.shape[1] != dag.num_nodes:
        raise ValueError(f"k must have N = dag.num_nodes = {dag.num_nodes} nodes along axis 1, got shape {list(k.shape)}")
    src, dst = dag.edge_index.to(k.device)
    log_delta = k
    levels = dag.levels.to(k.device)
    edge_level = levels[dst]
    for level in range(1, dag.num_levels):
        edges = (edge_level == level).nonzero().flatten()
        if edges.numel() == 0:
            continue
        nodes, slot = torch.unique(dst[edges], return_inverse=True)
        incoming = log_delta[:, src[edges]]  # [B, e, H, dk], predecessors are final
        own = log_delta[:, nodes]
        # a max shift per node keeps every exponential <= 1; it cancels, so no gradient flows
        index = slot.view(1, -1, 1, 1).expand_as(incoming)
        peak = own.detach().scatter_reduce(1, index, incoming.detach(), "amax", include_self=True)
        total = (own - peak).exp().index_add(1, slot, (incoming - peak[:, slot]).exp())
        log_delta = log_delta.index_copy(1, nodes, peak + total.log())
    return log_delta


def lightnet_scan(
    structure: Structure,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float | None = None,
    execution: str | None = None,
    initial_state: tuple[Tensor, Tensor] | None = None,
    return_state: bool = False,
    cu_seqlens: Tensor | None = None,
    reverse: bool = False,
) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
    r"""LightNet's additive recurrence on a sequence, packed sequences, a grid or any DAG.

    On a DAG, per head and key channel, every edge :math:`m \to n` adds its tail's sums:

    .. math::
        U_n = e^{k_n} v_n^\top + \sum_{m \to n} U_m, \qquad
        \delta_n = e^{k_n} + \sum_{m \to n} \delta_m, \qquad
        o_n = \tilde q_n^\top \big(U_n / \delta_n\big),

    so :math:`o_n = \sum_m \big(\sum_d \tilde q_{nd}\, w_{nmd}\big) v_m` with per-channel
    weights :math:`w_{nmd} = P(m, n)\, e^{k_{md}} / \sum_{m'} P(m', n)\, e^{k_{m'd}}`,
    :math:`P(m, n)` the number of paths from :math:`m` to :math:`n` (1 for :math:`m = n`):
    a normalised path sum, whose weights over the ancestors of every node sum to 1. On a path
    it is the paper's recurrence.

    In the engine's terms (:func:`~everygraph.sequence.scan`, ``kind="diagonal"``): the state
    on edge :math:`m \to n` is :math:`S_m = U_m / \delta_m` (bounded, unlike :math:`U`); the
    transition through node :math:`m` from an in-edge :math:`p \to m` is
    :math:`\delta_p / \delta_m` (the paper's :math:`\lambda`); the key is
    :math:`\tilde k_n = e^{k_n} / \delta_n` (:math:`1 - \lambda` on a path); sources 1; the
    mark of edge :math:`m \to n` is :math:`\delta_m / \delta_n` per key channel (an
    elementwise mark, broadcast over ``dv``); direct 1. :math:`\log\delta` comes from
    :func:`lightnet_log_normalizer`.

    Args:
        structure: None (a sequence along ``N``), a :class:`~everygraph.graphlib.Lattice`
            (nodes row-major) or a :class:`~everygraph.graphlib.DAG`.
        q, k: ``[B, N, H, dk]`` (``k`` is the exponent: the weights are :math:`e^{k}`);
            v: ``[B, N, H, dv]``.
        scale: multiplies ``q`` (default :math:`1/\sqrt{d_k}`).
        execution: any execution of :func:`~everygraph.sequence.scan` that runs the diagonal
            kind (default: the engine's choice).
        initial_state: on one sequence only (``structure`` None or a 1D lattice, no
            ``cu_seqlens``), the state before the first position scanned as
            ``(S [B, H, dk, dv], log_delta [B, H, dk])``: the normalised sum :math:`U/\delta`
            and :math:`\log\delta` of the positions already seen (``log_delta = -inf``:
            none). None: nothing seen.
        return_state: also return that pair after the last position scanned (one sequence
            only); passing it as ``initial_state`` of the next piece continues the scan
            exactly. Right to left (``reverse`` or a flipped 1D lattice) both states belong to
            the right-to-left scan.
        cu_seqlens: ``[num_seqs + 1]`` integer boundaries of sequences packed along ``N``
            (sequences only: ``structure`` None or a 1D lattice); nothing crosses a boundary.
            They run as one DAG of disjoint paths (the wavefront execution by default).
        reverse: scan right to left (sequences: each packed sequence; grids and DAGs: every
            edge reversed).

    Returns:
        ``o`` ``[B, N, H, dv]``, or ``(o, (S, log_delta))``.

    Example:
        >>> from everygraph.graphlib import Lattice
        >>> q, k, v = torch.randn(2, 12, 4, 8), torch.randn(2, 12, 4, 8), torch.randn(2, 12, 4, 8)
        >>> lightnet_scan(Lattice((3, 4)), q, k, v).shape
        torch.Size([2, 12, 4, 8])
    """
    _check(structure, q, k, v, scale)
    check_flag(reverse, "reverse")
    if execution is not None and "diagonal" not in SUPPORTED_KINDS.get(execution, ()):
        valid = [e for e, kinds in SUPPORTED_KINDS.items() if "diagonal" in kinds]
        raise ValueError(f"execution must be one of {valid}, got {execution!r}")
    B, N, H, dk = q.shape
    dv = v.shape[-1]
    scale = 1.0 / math.sqrt(dk) if scale is None else scale
    sequence = structure is None or (isinstance(structure, Lattice) and structure.ndim == 1)
    backwards = sequence and reverse != (structure is not None and structure.flip[0])
    if cu_seqlens is not None:
        if not sequence:
            raise ValueError(f"cu_seqlens packs sequences; it needs structure None or a 1D Lattice, got {structure!r}")
        check_ptr(cu_seqlens, N, name="cu_seqlens", length_name="the sequence length N", count_name="num_seqs", min_segments=1)
    if initial_state is not None or return_state:
        if not sequence or cu_seqlens is not None:
            raise ValueError("initial_state and return_state take a sequence (structure None or a 1D Lattice, no cu_seqlens), "
                             f"got {structure!r}")
        if backwards:
            q, k, v = (t.flip(1) for t in (q, k, v))
        h, state = _sequence_piece(q, k, v, scale, execution, initial_state)
        h = h.flip(1) if backwards else h
        return (h, state) if return_state else h
    if N == 0:
        return v.new_zeros(B, 0, H, dv)
    if cu_seqlens is not None:
        structure = _packed_paths(cu_seqlens, N, backwards)
    elif reverse:
        if isinstance(structure, DAG):
            structure = structure.reverse()
        else:
            shape, flip = ((N,), (False,)) if structure is None else (structure.shape, structure.flip)
            structure = Lattice(shape, tuple(not f for f in flip))
    structure, dag = _dag_of(structure, N)
    log_delta = lightnet_log_normalizer(dag, k)
    src, dst = dag.edge_index.to(q.device)
    lines = dag.line_graph()
    e_in = lines.edge_index[0].to(q.device)
    through = lines.node.to(q.device)
    transition = (log_delta[:, src[e_in]] - log_delta[:, through]).exp()  # [B, L, H, dk]
    mark = (log_delta[:, src] - log_delta[:, dst]).exp()[..., None].expand(B, dag.num_edges, H, dk, dv)
    key = (k - log_delta).exp()
    return scan(
        structure, q, key, v, q.new_ones(B, dag.num_edges, H), transition, mark, q.new_ones(B, N, H),
        kind="diagonal", scale=scale, execution=execution,
    )


def _packed_paths(cu_seqlens: Tensor, length: int, backwards: bool) -> DAG:
    """Packed sequences as one DAG of disjoint paths ``t -> t + 1`` (``t + 1 -> t`` backwards)."""
    bounds = cu_seqlens.to(device="cpu", dtype=torch.long)
    tails = torch.arange(length - 1)
    within = ~torch.isin(tails + 1, bounds)  # no edge into a sequence's first position
    edges = torch.stack([tails[within], tails[within] + 1])
    return DAG(edges.flip(0) if backwards else edges, length)


def _check_state(state: tuple[Tensor, Tensor], B: int, H: int, dk: int, dv: int) -> tuple[Tensor, Tensor]:
    if not (isinstance(state, (tuple, list)) and len(state) == 2 and all(isinstance(t, Tensor) for t in state)):
        raise TypeError(f"the state must be a pair of tensors (S [B, H, dk, dv], log_delta [B, H, dk]), got {type(state).__name__}")
    S, log_delta = state
    if list(S.shape) != [B, H, dk, dv] or list(log_delta.shape) != [B, H, dk]:
        raise ValueError(f"the state must be (S {[B, H, dk, dv]}, log_delta {[B, H, dk]}), "
                         f"got ({list(S.shape)}, {list(log_delta.shape)})")
    return S, log_delta


def _sequence_piece(q: Tensor, k: Tensor, v: Tensor, scale: float, execution: str | None,
                    initial_state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    r"""One sequence with entering and leaving states, on :func:`path_scan` (same gates as on a
    path: transition and mark :math:`\delta_{t-1}/\delta_t`, key :math:`e^{k_t}/\delta_t`)."""
    B, N, H, dk = q.shape
    dv = v.shape[-1]
    if initial_state is None:
        S0, log_delta0 = q.new_zeros(B, H, dk, dv), q.new_full((B, H, dk), float("-inf"))
    else:
        S0, log_delta0 = _check_state(initial_state, B, H, dk, dv)
    if N == 0:
        return v.new_zeros(B, 0, H, dv), (S0, log_delta0)
    log_delta = torch.logaddexp(log_delta0[:, None], k.logcumsumexp(dim=1))  # [B, N, H, dk]
    previous = torch.cat([log_delta0[:, None], log_delta[:, :-1]], dim=1)
    # exp(-inf - finite) = 0: nothing seen before, nothing carried (and no NaN gradient)
    decay = (previous - log_delta).exp()
    key = (k - log_delta).exp()
    ones = q.new_ones(B, N, H)
    mark = decay[..., None].expand(B, N, H, dk, dv)
    h, S = path_scan(q, key, v, ones, decay, mark, ones, kind="diagonal", state=S0, scale=scale, execution=execution)
    return h, (S, log_delta[:, -1])


def lightnet_step(
    q: Tensor, k: Tensor, v: Tensor, state: tuple[Tensor, Tensor], *, scale: float | None = None
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    r"""One position of LightNet's recurrence on a sequence, for decoding:
    :math:`\log\delta' = \log(\delta + e^{k})`, :math:`S' = (\delta/\delta') S + (e^{k}/\delta')\,\mathbf 1 v^\top`
    (per key channel), :math:`o = \tilde q^\top S'`.

    Args:
        q, k: ``[B, H, dk]``; v: ``[B, H, dv]``.
        state: ``(S [B, H, dk, dv], log_delta [B, H, dk])`` as :func:`lightnet_scan` returns it
            (``log_delta = -inf`` before the first position).
        scale: multiplies ``q`` (default :math:`1/\sqrt{d_k}`).

    Returns:
        ``o`` ``[B, H, dv]`` and the new state pair (new tensors).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(t, name, "float", 3, shape="[B, H, d]")
    B, H, dk = q.shape
    if list(k.shape) != [B, H, dk] or list(v.shape[:2]) != [B, H]:
        raise ValueError(f"k must have the shape of q {[B, H, dk]} and v [B, H, dv], got {list(k.shape)} and {list(v.shape)}")
    S, log_delta = _check_state(state, B, H, dk, v.shape[-1])
    scale = 1.0 / math.sqrt(dk) if scale is None else scale
    new_log_delta = torch.logaddexp(log_delta, k)
    S = (log_delta - new_log_delta).exp()[..., None] * S + (k - new_log_delta).exp()[..., None] * v[:, :, None, :]
    return torch.einsum("bhd,bhdv->bhv", scale * q, S), (S, new_log_delta)


def lightnet_scan_reference(structure: Structure, q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None) -> Tensor:
    r"""The paper's additive equations, one node at a time in topological order (the readable
    spec): :math:`U_n = e^{k_n} v_n^\top + \sum_{m \to n} U_m`,
    :math:`\delta_n = e^{k_n} + \sum_{m \to n} \delta_m`, :math:`o_n = \tilde q_n^\top (U_n/\delta_n)`.
    No log-space care: for small float64 tests.

    Args:
        structure: None (a sequence), a :class:`~everygraph.graphlib.Lattice` or a :class:`~everygraph.graphlib.DAG`.
        q, k: ``[B, N, H, dk]``; v: ``[B, N, H, dv]``.

    Returns:
        ``o`` ``[B, N, H, dv]``.
    """
    _check(structure, q, k, v, scale)
    B, N, H, dk = q.shape
    scale = 1.0 / math.sqrt(dk) if scale is None else scale
    if N == 0:
        return v.new_zeros(B, 0, H, v.shape[-1])
    _, dag = _dag_of(structure, N)
    src, dst = dag.edge_index.tolist()
    preds: list[list[int]] = [[] for _ in range(N)]
    for a, b in zip(src, dst):
        preds[b].append(a)
    U: list[Tensor | None] = [None] * N
    delta: list[Tensor | None] = [None] * N
    out: list[Tensor | None] = [None] * N
    for n in dag.order.tolist():
        weight = k[:, n].exp()  # [B, H, dk]
        U[n] = weight[..., None] * v[:, n, :, None, :] + sum((U[m] for m in preds[n]), torch.zeros_like(weight[..., None] * v[:, n, :, None, :]))
        delta[n] = weight + sum((delta[m] for m in preds[n]), torch.zeros_like(weight))
        out[n] = torch.einsum("bhd,bhdv->bhv", scale * q[:, n] / delta[n], U[n])
    return torch.stack(out, dim=1)
