r"""Gated linear attention (GLA) on paths, grids and DAGs: the ``diagonal`` kind of
:func:`~everygraph.sequence.scan`, its paper-equation reference loop, and its chunkwise form.

From `Gated Linear Attention Transformers with Hardware-Efficient Training
<https://arxiv.org/abs/2312.06635>`_ (Yang et al., 2023). Per head, on a sequence:

.. math::
    S_t = \mathrm{diag}(\alpha_t)\, S_{t-1} + k_t v_t^\top, \qquad o_t = \tilde q_t^\top S_t,
    \qquad S_{-1} = 0,\ \tilde q = \mathrm{scale}\cdot q .
"""

from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor

from ..graphlib import DAG, Lattice, check_tensor
from .executions.recurrent import LinearRecurrence
from .plstm.layout import lattice_dag
from .recurrence import SUPPORTED_KINDS, path_scan, scan

Structure = Union[Lattice, DAG, None]

#: positions per chunk and per sub-chunk of the chunkwise form: pairwise decays only inside a sub-chunk
#: (``[c, c, dk]`` per head), matrix products between sub-chunks (``benchmarks/gla.py --chunks``)
CHUNK_SIZE = 16
SUB_CHUNK_SIZE = 4
AGGREGATES = ("sum", "mean")

__all__ = [
    "gated_linear_attention",
    "gated_linear_attention_reference",
    "gated_linear_attention_chunked",
]


def _is_sequence(structure: Structure) -> bool:
    return structure is None or (isinstance(structure, Lattice) and structure.ndim == 1 and not structure.flip[0])


def _starts(cu_seqlens: Tensor | None, length: int, device: torch.device) -> Tensor:
    """``[L]`` bool: where a sequence starts (position 0 always)."""
    starts = torch.zeros(length, dtype=torch.bool, device=device)
    if length:
        starts[0] = True
    if cu_seqlens is not None:
        inner = cu_seqlens[:-1].to(device)
        starts[inner[inner < length]] = True
    return starts


def _reverse_within(cu_seqlens: Tensor | None, length: int, device: torch.device) -> Tensor:
    """The permutation (an involution) reversing every packed sequence in place."""
    bounds = [0, length] if cu_seqlens is None else cu_seqlens.tolist()
    index = torch.arange(length, device=device)
    for start, end in zip(bounds[:-1], bounds[1:]):
        index[start:end] = torch.arange(end - 1, start - 1, -1, device=device)
    return index


def _check_cu_seqlens(cu_seqlens: Tensor, length: int) -> None:
    if not isinstance(cu_seqlens, Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.is_floating_point() or cu_seqlens.dtype == torch.bool:
        raise TypeError(f"cu_seqlens must be a 1-D integer tensor [num_seqs + 1], got {cu_seqlens!r}")
    values = cu_seqlens.tolist()
    if not values or values[0] != 0 or values[-1] != length or any(b < a for a, b in zip(values, values[1:])):
        raise ValueError(f"cu_seqlens must rise from 0 to the sequence length {length}, got {values}")



def _check_gla_inputs(q: Tensor, k: Tensor, v: Tensor, log_alpha: Tensor | None, alpha: Tensor | None = None) -> None:
    """Floating point ``[B, L, H, d]`` tensors, one dtype (refused, not cast)."""
    for name, value in (("q", q), ("k", k), ("v", v), ("log_alpha", log_alpha), ("alpha", alpha)):
        if value is not None or name in ("q", "k", "v"):
            check_tensor(value, name, "float", 4, shape="[B, L, H, d]")
    dtypes = {name: t.dtype for name, t in (("q", q), ("k", k), ("v", v), ("log_alpha", log_alpha), ("alpha", alpha)) if t is not None}
    if len(set(dtypes.values())) > 1:
        raise TypeError(f"q, k, v and log_alpha/alpha must share one dtype, got {dtypes}")

def gated_linear_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, log_alpha: Tensor, *, scale: float | None = None, cu_seqlens: Tensor | None = None
) -> Tensor:
    r"""The paper's recurrence, one position at a time (the readable spec on sequences):
    :math:`S_t = \mathrm{diag}(\alpha_t) S_{t-1} + k_t v_t^\top`, :math:`o_t = \tilde q_t^\top S_t`,
    with :math:`S` reset to 0 where a packed sequence starts.

    Args:
        q, k: ``[B, L, H, dk]``; v: ``[B, L, H, dv]``; log_alpha: ``[B, L, H, dk]``.
        scale: multiplies ``q`` (default :math:`1/\sqrt{d_k}`).
        cu_seqlens: ``[num_seqs + 1]`` boundaries of sequences packed along ``L``, or None.

    Returns:
        ``o`` ``[B, L, H, dv]``.
    """
    _check_gla_inputs(q, k, v, log_alpha)
    B, L, H, dk = q.shape
    scale = 1.0 / math.sqrt(dk) if scale is None else scale
    starts = _starts(cu_seqlens, L, q.device).tolist()
    state = q.new_zeros(B, H, dk, v.shape[-1])
    out = []
    for t in range(L):
        if starts[t]:
            state = torch.zeros_like(state)
        state = log_alpha[:, t].exp()[..., None] * state + k[:, t, :, :, None] * v[:, t, :, None, :]
        out.append(torch.einsum("bhd,bhdv->bhv", scale * q[:, t], state))
    return torch.stack(out, dim=1) if out else v.new_zeros(B, 0, H, v.shape[-1])


def gated_linear_attention_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_alpha: Tensor,
    *,
    scale: float | None = None,
    cu_seqlens: Tensor | None = None,
    chunk_size: int = CHUNK_SIZE,
    sub_chunk_size: int | None = SUB_CHUNK_SIZE,
    initial_state: Tensor | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""The chunkwise form on sequences, with the paper's secondary chunking: exact, in log
    space, with every exponent a decay between two positions (no rescaling of ``q`` and ``k``
    by growing factors).

    With :math:`b_t = \sum_{r \le t} \log \alpha_r` summed inside a chunk of ``C`` positions and
    :math:`S_{\mathrm{in}}` the state entering it, for ``t`` in the chunk:

    .. math::
        o_t = (\tilde q_t \odot e^{b_t})^\top S_{\mathrm{in}}
              + \sum_{s \le t} \Big(\sum_d \tilde q_{td}\, k_{sd}\, e^{b_{td} - b_{sd}}\Big) v_s, \qquad
        S_{\mathrm{out}} = \mathrm{diag}(e^{b_C}) S_{\mathrm{in}} + \sum_s \mathrm{diag}(e^{b_C - b_s}) k_s v_s^\top .

    Inside a chunk, the scores :math:`\sum_d \tilde q_{td} k_{sd} e^{b_{td} - b_{sd}}` are
    formed by the paper's secondary chunking: the chunk is cut into sub-chunks of ``c``
    positions; pairs inside one sub-chunk take the pairwise decays :math:`e^{b_t - b_s}`
    (``[c, c, dk]``, masked before the exponential), pairs across sub-chunks ``i > j`` a
    matrix product of :math:`\tilde q_t e^{b_t - e_{i-1}}`, the decay
    :math:`e^{e_{i-1} - e_j}` between the sub-chunks and :math:`k_s e^{e_j - b_s}`, with
    :math:`e_j` the cumulative decay at the end of sub-chunk ``j``. Every exponent is a decay
    between two positions, so nothing overflows when :math:`\alpha \le 1` (with some
    :math:`\alpha > 1` the chunk takes the pairwise decays for all its pairs). The states
    between chunks run through the engine's linear recurrence with its hand-written adjoint. With
    ``cu_seqlens`` the pairs, reads and carries across a sequence start are masked out, so
    ``log_alpha`` at a start is ignored. Gradients are autograd's.

    Args:
        q, k: ``[B, L, H, dk]``; v: ``[B, L, H, dv]``; log_alpha: ``[B, L, H, dk]`` (finite).
        scale: multiplies ``q`` (default :math:`1/\sqrt{d_k}`).
        cu_seqlens: ``[num_seqs + 1]`` or None.
        chunk_size: positions per chunk.
        sub_chunk_size: positions per sub-chunk (a divisor of ``chunk_size``; None or
            ``chunk_size``: pairwise decays for every pair of the chunk).
        initial_state: ``[B, H, dk, dv]`` the state before position 0 (None: zeros); not with
            ``cu_seqlens``.
        return_state: also return the state after the last position, ``[B, H, dk, dv]``.

    Returns:
        ``o`` ``[B, L, H, dv]``, or ``(o, state)``.
    """
    _check_gla_inputs(q, k, v, log_alpha)
    B, L, H, dk = q.shape
    dv = v.shape[-1]
    scale = 1.0 / math.sqrt(dk) if scale is None else scale
    if (initial_state is not None or return_state) and cu_seqlens is not None:
        raise ValueError("initial_state and return_state take one sequence; they do not combine with cu_seqlens")
    if initial_state is not None and list(initial_state.shape) != [B, H, dk, dv]:
        raise ValueError(f"initial_state must have shape [B, H, dk, dv] = {[B, H, dk, dv]}, got {list(initial_state.shape)}")
    if L == 0:
        final = initial_state if initial_state is not None else q.new_zeros(B, H, dk, dv)
        return (v.new_zeros(B, 0, H, dv), final) if return_state else v.new_zeros(B, 0, H, dv)
    C = chunk_size
    pad = (-L) % C
    starts = _starts(cu_seqlens, L, q.device)
    if initial_state is not None:  # position 0 continues the given state
        starts[0] = False
    if pad:  # padded positions: k = 0, alpha = 1, outputs dropped
        q, k, v, log_alpha = (torch.nn.functional.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v, log_alpha))
        starts = torch.nn.functional.pad(starts, (0, pad))
    n = (L + pad) // C

    def chunks(x: Tensor) -> Tensor:  # [B, L, H, d] -> [B, H, n, C, d]
        return x.view(B, n, C, H, x.shape[-1]).permute(0, 3, 1, 2, 4)

    q, k, v, log_alpha = chunks(q * scale), chunks(k), chunks(v), chunks(log_alpha)
    # starts seen so far inside the chunk: equal counts = same sequence, 0 = still reading S_in
    seen = starts.view(n, C).long().cumsum(-1)  # [n, C]
    starts_chunk = starts.view(n, C)
    log_alpha = log_alpha.masked_fill(starts_chunk[:, :, None], 0.0)  # a start ignores its decay
    b = log_alpha.cumsum(-2)  # [B, H, n, C, dk]
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    pairs = causal & (seen[:, :, None] == seen[:, None, :])  # [n, C(t), C(s)]
    sub = sub_chunk_size if sub_chunk_size is not None and C % sub_chunk_size == 0 and bool((log_alpha <= 0).all()) else C
    # Future pairs (and pairs across a sequence start) are removed by selection, not by their
    # zero decay: a NaN or inf k_s or v_s (0 * nan = nan) must not reach earlier outputs.
    scores = torch.where(pairs, _chunk_scores(q, k, b, pairs, sub), 0.0)
    finite_v = bool(torch.isfinite(v).all())
    if finite_v:
        out = scores @ v  # [B, H, n, C, dv]
    else:  # the exact zeros of the removed pairs would still meet a non-finite v in a matmul
        out = torch.where(pairs[..., None], scores[..., None] * v[..., None, :, :], 0.0).sum(-2)
    final = None
    if n > 1 or initial_state is not None or return_state:
        b_last = b[..., -1:, :]  # [B, H, n, 1, dk]
        keeps = (seen == seen[:, -1:])[..., None]  # s in the chunk's last sequence
        weighted = torch.where(keeps, k * (b_last - b).exp(), 0.0)  # selection: packed sequences stay apart
        if finite_v:
            emitted = weighted.transpose(-1, -2) @ v  # [B, H, n, dk, dv]
        else:
            emitted = torch.where(keeps[..., None], weighted[..., :, None] * v[..., None, :], 0.0).sum(-3)
        carry = b_last.squeeze(-2).exp() * (seen[:, -1] == 0).to(k.dtype)[:, None]  # [B, H, n, dk]
        first = torch.zeros_like(emitted[:, :, :1]) if initial_state is None else initial_state[:, :, None]
        if initial_state is not None:  # the state before position 0 enters chunk 0's carry
            emitted = torch.cat([emitted[:, :, :1] + carry[:, :, :1, :, None] * first, emitted[:, :, 1:]], dim=2)
        leaving = LinearRecurrence.apply(
            carry.permute(2, 0, 1, 3)[..., None].contiguous(), emitted.permute(2, 0, 1, 3, 4).contiguous()
        ).permute(1, 2, 0, 3, 4)  # state leaving each chunk
        entering = torch.cat([first, leaving[:, :, :-1]], dim=2)
        final = leaving[:, :, -1]
        reads = (seen == 0).to(q.dtype)[..., None]  # [n, C, 1]
        out = out + (q * b.exp() * reads) @ entering
    out = out.permute(0, 2, 3, 1, 4).reshape(B, n * C, H, dv)[:, :L]
    return (out, final) if return_state else out


def _chunk_scores(q: Tensor, k: Tensor, b: Tensor, pairs: Tensor, sub: int) -> Tensor:
    """``[B, H, n, C, C]`` scores of every pair inside each chunk (``q``, ``k``, cumulative
    log-decays ``b``: ``[B, H, n, C, dk]``); pairs outside ``pairs`` are not meaningful."""
    C = q.shape[-2]
    if sub >= C:
        diff = (b[..., :, None, :] - b[..., None, :, :]).masked_fill(~pairs[..., None], -math.inf)
        return torch.einsum("bhntd,bhnsd,bhntsd->bhnts", q, k, diff.exp())
    S = C // sub

    def blocks(x: Tensor) -> Tensor:  # [B, H, n, C, dk] -> [B, H, n, S, c, dk]
        return x.unflatten(-2, (S, sub))

    qb, kb, bb = blocks(q), blocks(k), blocks(b)
    inside = pairs.unflatten(-1, (S, sub)).unflatten(-3, (S, sub)).diagonal(dim1=-4, dim2=-2).movedim(-1, -3)  # [n, S, c, c]
    diff = (bb[..., :, None, :] - bb[..., None, :, :]).masked_fill(~inside[..., None], -math.inf)
    intra = torch.einsum("bhnitd,bhnisd,bhnitsd->bhnits", qb, kb, diff.exp())  # [B, H, n, S, c, c]
    end = bb[..., -1, :]  # [B, H, n, S, dk] cumulative decay at the end of each sub-chunk
    before = torch.cat([torch.zeros_like(end[..., :1, :]), end[..., :-1, :]], dim=-2)  # at the end of sub-chunk i - 1
    q_rel = qb * (bb - before[..., None, :]).exp()
    k_rel = kb * (end[..., None, :] - bb).exp()
    later = torch.ones(S, S, dtype=torch.bool, device=q.device).tril(-1)  # i > j
    between = (before[..., :, None, :] - end[..., None, :, :]).masked_fill(~later[..., None], -math.inf).exp()
    inter = torch.einsum("bhnitd,bhnijd,bhnjsd->bhnijts", q_rel, between, k_rel)  # [B, H, n, S, S, c, c]
    eye = torch.eye(S, dtype=torch.bool, device=q.device)[..., None, None]
    scores = torch.where(eye, intra.unsqueeze(-3), inter)
    return scores.permute(0, 1, 2, 3, 5, 4, 6).reshape(*q.shape[:3], C, C)


def gated_linear_attention(
    structure: Structure,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_alpha: Tensor | None = None,
    *,
    alpha: Tensor | None = None,
    cu_seqlens: Tensor | None = None,
    reverse: bool = False,
    aggregate: str = "sum",
    scale: float | None = None,
    execution: str | None = None,
    initial_state: Tensor | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Gated linear attention on a sequence, a grid or any DAG.

    **Sequences** (``structure`` None or a 1D :class:`~everygraph.graphlib.Lattice`), per head:

    .. math::
        S_t = \mathrm{diag}(\alpha_t)\, S_{t-1} + k_t v_t^\top, \qquad o_t = \tilde q_t^\top S_t

    (Yang et al., 2023), :math:`\tilde q = \mathrm{scale}\cdot q`. ``cu_seqlens`` packs
    sequences along ``L`` (the state restarts at 0 at each start; :math:`\alpha` at a start is
    unused); ``reverse`` runs every sequence right to left.

    **Grids and DAGs.** A node state is the decayed sum (or mean) of its predecessors' states:

    .. math::
        S_n = \mathrm{diag}(\alpha_n) \mathop{\square}_{m \to n} S_m + k_n v_n^\top, \qquad
        o_n = \tilde q_n^\top S_n, \qquad \square = \textstyle\sum \text{ or } \frac{1}{|\mathrm{in}(n)|}\sum

    so :math:`o_n = \sum_{\text{paths } m \rightsquigarrow n} \tilde q_n^\top
    \mathrm{diag}(\prod_{r \in \text{path}, r \ne m} \alpha_r / w_r)\, k_m v_m^\top`, with
    :math:`w_r = 1` (``aggregate="sum"``) or :math:`|\mathrm{in}(r)|` (``"mean"``). A 2D grid
    has binomially many paths between two pixels, so with ``"sum"`` and :math:`\alpha` near 1
    the state grows; ``"mean"`` keeps a node's decay budget at most that of a path. On a path
    both are the paper's recurrence. ``reverse`` reverses every edge.

    In the engine's terms (:func:`~everygraph.sequence.scan`, ``kind="diagonal"``, states on
    edges): the state on edge :math:`m \to n` is :math:`S_m`; the transition through node
    :math:`m` is :math:`\alpha_m / w_m`; sources and marks are 1; the query is
    :math:`q_n \odot \alpha_n / w_n` (the decay of :math:`S_n` applied at the read); the current
    token's :math:`(\tilde q_n \cdot k_n) v_n` is added outside the scan (``direct`` 0) because
    it is not decayed.

    Args:
        structure: None (a sequence along ``N``), a :class:`~everygraph.graphlib.Lattice`
            (nodes row-major) or a :class:`~everygraph.graphlib.DAG` (a batch of graphs: their
            disjoint union).
        q, k: ``[B, N, H, dk]``; v: ``[B, N, H, dv]``.
        log_alpha: ``[B, N, H, dk]``, :math:`\log \alpha` (the GLA layer's
            :math:`\log\sigma(\cdot)/\tau`); or give ``alpha`` instead (not both).
        alpha: ``[B, N, H, dk]``, the decays themselves (0 allowed; the chunked execution needs
            them positive and then falls back to ``recurrent``).
        cu_seqlens: ``[num_seqs + 1]`` integer boundaries of packed sequences (sequences only).
        reverse: scan right to left (sequences: each packed sequence; DAGs: reversed edges).
        aggregate: ``"sum"`` or ``"mean"`` over a node's predecessors.
        scale: multiplies ``q`` (default :math:`1/\sqrt{d_k}`).
        execution: ``"chunked"`` (sequences: :func:`gated_linear_attention_chunked`, the
            default on CPU) or any execution of :func:`~everygraph.sequence.scan` that runs the
            diagonal kind (``"reference"``, ``"wavefront"``, ``"recurrent"``, ``"lattice"``,
            ``"triton"``); default: chunked on sequences on CPU, else the engine's choice.
        initial_state: ``[B, H, dk, dv]``, :math:`S_{-1}` of a single sequence (None: zeros;
            sequences without ``cu_seqlens`` only).
        return_state: also return :math:`S_{L-1}` ``[B, H, dk, dv]`` (same restriction); with
            ``reverse`` both states belong to the right-to-left scan.

    Returns:
        ``o`` ``[B, N, H, dv]``, or ``(o, state)``.

    Example:
        >>> q, k = torch.randn(2, 50, 4, 16), torch.randn(2, 50, 4, 16)
        >>> v, log_alpha = torch.randn(2, 50, 4, 32), torch.nn.functional.logsigmoid(torch.randn(2, 50, 4, 16)) / 16
        >>> gated_linear_attention(None, q, k, v, log_alpha).shape
        torch.Size([2, 50, 4, 32])
    """
    if structure is not None and not isinstance(structure, (DAG, Lattice)):
        raise TypeError(f"structure must be None, an everygraph.graphlib.DAG or Lattice, got {type(structure).__name__}")
    _check_gla_inputs(q, k, v, log_alpha, alpha)
    if structure is not None and not isinstance(structure, (Lattice, DAG)):
        raise TypeError(f"structure must be None, a graphlib.Lattice or a graphlib.DAG, got {type(structure).__name__}")
    if (log_alpha is None) == (alpha is None):
        raise ValueError("give exactly one of log_alpha and alpha")
    gate = log_alpha if log_alpha is not None else alpha
    for name, t in (("q", q), ("k", k), ("v", v), ("log_alpha" if log_alpha is not None else "alpha", gate)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor ([B, N, H, d]), got {getattr(t, 'shape', type(t).__name__)}")
    B, N, H, dk = q.shape
    if list(k.shape) != [B, N, H, dk] or list(gate.shape) != [B, N, H, dk]:
        raise ValueError(f"k and log_alpha/alpha must have the shape of q [B, N, H, dk] = {[B, N, H, dk]}, got {list(k.shape)} and {list(gate.shape)}")
    if list(v.shape[:3]) != [B, N, H]:
        raise ValueError(f"v must have shape [B, N, H, dv] = {[B, N, H]} + [dv], got {list(v.shape)}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    sequence = _is_sequence(structure)
    if structure is not None and structure.num_nodes != N:
        raise ValueError(f"q has N={N} nodes but the structure has {structure.num_nodes}")
    if cu_seqlens is not None:
        if not sequence:
            raise ValueError(f"cu_seqlens packs sequences; it needs structure None or a 1D Lattice, got {structure!r}")
        _check_cu_seqlens(cu_seqlens, N)
    if execution is not None and execution != "chunked" and "diagonal" not in SUPPORTED_KINDS.get(execution, ()):
        valid = ["chunked"] + [e for e, kinds in SUPPORTED_KINDS.items() if "diagonal" in kinds]
        raise ValueError(f"execution must be one of {valid}, got {execution!r}")
    if execution == "chunked" and not sequence:
        raise ValueError(f"execution='chunked' runs on sequences (structure None or a 1D Lattice), got {structure!r}")
    has_state = initial_state is not None or return_state
    if has_state and (not sequence or cu_seqlens is not None):
        raise ValueError("initial_state and return_state take one sequence (structure None or a 1D Lattice, no cu_seqlens)")
    if initial_state is not None and list(initial_state.shape) != [B, H, dk, v.shape[-1]]:
        raise ValueError(f"initial_state must have shape [B, H, dk, dv] = {[B, H, dk, v.shape[-1]]}, got {list(initial_state.shape)}")
    scale = 1.0 / math.sqrt(dk) if scale is None else scale

    if sequence:
        if reverse:
            index = _reverse_within(cu_seqlens, N, q.device)
            q, k, v, gate = (t[:, index] for t in (q, k, v, gate))
        log_gate = gate if log_alpha is not None else gate.log()
        if execution is None:
            execution = "chunked" if q.device.type == "cpu" else None
        if execution == "chunked" and not bool(torch.isfinite(log_gate).all()):
            execution = "recurrent"
        state = None
        if execution == "chunked":
            out = gated_linear_attention_chunked(
                q, k, v, log_gate, scale=scale, cu_seqlens=cu_seqlens, initial_state=initial_state, return_state=return_state,
            )
            if return_state:
                out, state = out
        elif has_state:
            out, state = _engine_piece(q, k, v, gate.exp() if log_alpha is not None else gate, scale, execution, initial_state)
        else:
            decay = gate.exp() if log_alpha is not None else gate
            starts = _starts(cu_seqlens, N, q.device)
            decay = decay.masked_fill(starts[None, :, None, None], 0.0)  # no state crosses a start
            out = _engine(Lattice((N,)) if N else None, q, k, v, decay, scale, execution)
        out = out[:, index] if reverse else out
        return (out, state) if return_state else out

    if isinstance(structure, Lattice):
        dag = lattice_dag(structure)
        if reverse:
            structure = Lattice(structure.shape, tuple(not f for f in structure.flip))
            dag = lattice_dag(structure)
    else:
        dag = structure.reverse() if reverse else structure
        structure = dag
    decay = gate.exp() if log_alpha is not None else gate
    if aggregate == "mean":
        decay = decay / dag.in_degree.to(decay.device).clamp(min=1).to(decay.dtype)[None, :, None, None]
    return _engine(structure, q, k, v, decay, scale, execution, dag)


def _engine(structure, q: Tensor, k: Tensor, v: Tensor, decay: Tensor, scale: float, execution: str | None, dag: DAG | None = None) -> Tensor:
    """GLA as ``scan(kind="diagonal")``: ``decay`` ``[B, N, H, dk]`` per node (already divided
    by the in-degree for ``"mean"``)."""
    B, N, H, dk = q.shape
    current = scale * (q * k).sum(-1, keepdim=True) * v  # the undecayed k_n v_n^T read by q_n
    if structure is None or N == 0:
        return current
    dag = dag if dag is not None else lattice_dag(structure) if isinstance(structure, Lattice) else structure
    line_node = dag.line_graph().node.to(q.device)
    transition = decay[:, line_node]  # [B, L, H, dk]
    ones = q.new_ones(B, dag.num_edges, H)
    h = scan(
        structure, q * decay, k, v, ones, transition, ones, q.new_zeros(B, N, H),
        kind="diagonal", scale=scale, execution=execution,
    )
    return h + current


def _engine_piece(q: Tensor, k: Tensor, v: Tensor, decay: Tensor, scale: float, execution: str | None, initial_state: Tensor | None) -> tuple[Tensor, Tensor]:
    """One sequence with entering and leaving states, by :func:`path_scan` (the same gates as
    :func:`_engine`: the entering state is read with the query of position 0, which already
    carries its decay, and passed on with position 0's transition)."""
    B, L, H, _ = q.shape
    ones = q.new_ones(B, L, H)
    h, state = path_scan(
        q * decay, k, v, ones, decay, ones, q.new_zeros(B, L, H), kind="diagonal", state=initial_state, scale=scale,
        execution=execution,
    )
    return h + scale * (q * k).sum(-1, keepdim=True) * v, state
