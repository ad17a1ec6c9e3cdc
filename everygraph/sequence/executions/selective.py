r"""The selective execution: Mamba-1's kernels as an execution of
:func:`~everygraph.sequence.scan`, for the engine's operands in Mamba's factored form on paths.

Mamba-1 in the engine's terms (:func:`~everygraph.sequence.selective_scan` builds exactly
this): heads are the channels ``d`` (``H = D``), ``dk = N``, ``dv = 1``, and for node
(position) :math:`t`

* ``q`` :math:`= C_t`, ``k`` :math:`= B_t`: ``[B, L, G, N]``, shared by the ``D / G`` heads of
  a group (``G = 1``: one vector for all channels), or fixed ``[D, N]`` expanded to
  ``[B, L, D, N]`` with stride 0 over batch and positions;
* ``v`` :math:`= u_t` ``[B, L, D, 1]``; ``source = NodeWeight(delta)`` and ``direct = delta``
  (``[B, L, D]``): the input enters as :math:`\Delta_t u_t B_t` (Euler);
* ``transition = mark = ExponentialDecay(delta, A[..., None])``: :math:`e^{\Delta_t A_{d,:}}`
  (zero-order hold) through node :math:`t` and on the edge entering it, so node :math:`t`
  reads :math:`\langle C_t, e^{\Delta_t A} h_{t-1}\rangle + \Delta_t u_t \langle C_t, B_t\rangle
  = \langle C_t, h_t\rangle`;
* the final state of a sequence is the virtual out-edge of its last node with
  ``Boundary(source=delta, leave=the same decay)``: :math:`h_{\mathrm{last}}`.

:func:`selective_plan` recognises that form by identity (``source.weight``, ``direct`` and
``boundary.source`` *are* the decay's ``rate`` tensor, ``mark`` and ``boundary.leave`` *are*
the decay), so the check costs nothing and a look-alike with other numbers never reaches the
kernels. The structure must be a path, or paths packed one after another
(:func:`~everygraph.graphlib.packed_paths`, all edges pointing the same way). Then
:func:`selective` hands the operands, as views in Mamba's layout, to
:func:`~everygraph.sequence.mamba.fused_cpu.selective_scan_fused` (numba),
:func:`~everygraph.sequence.mamba.recurrent.selective_scan_recurrent` (PyTorch) or the Triton
kernels: the same functions with the same arguments as a direct call, so the same numbers.
Every other execution gets the decays materialised (:meth:`ExponentialDecay.materialise`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor

from ...graphlib import DAG, Lattice
from ..transitions import ExponentialDecay, NodeWeight

#: the executions of :func:`~everygraph.sequence.scan` that run Mamba's kernels on the factored form
SELECTIVE_EXECUTIONS = ("fused", "recurrent", "triton")


class SelectivePlan(NamedTuple):
    """What the kernels need besides the operands: the scan direction, the packed sequences
    (``cu_seqlens`` of the non-empty ones, None for one sequence) and, for ``return_state``,
    the row of each requested node among the sequences' last nodes."""

    reverse: bool
    cu_seqlens: Tensor | None
    rows: Tensor | None


def _chains(structure: Lattice | DAG) -> tuple[bool, Tensor | None, Tensor] | None:
    """``(reverse, cu_seqlens, ends)`` when the structure is paths along the node order, one
    after another, all pointing the same way (``ends``: each path's last node in scan order);
    else None. Cached on a DAG."""
    if isinstance(structure, Lattice):
        long_axes = [a for a, size in enumerate(structure.shape) if size > 1]
        if len(long_axes) > 1:
            return None
        return _path_chain(structure.num_nodes, bool(long_axes) and structure.flip[long_axes[0]])
    cache = structure.__dict__.setdefault("_selective_chains", {})
    if "chains" not in cache:
        cache["chains"] = _dag_chains(structure)
    return cache["chains"]


@lru_cache(maxsize=64)
def _path_chain(length: int, reverse: bool) -> tuple[bool, None, Tensor]:
    return reverse, None, torch.tensor([0 if reverse else length - 1])


def _dag_chains(dag: DAG) -> tuple[bool, Tensor | None, Tensor] | None:
    length = dag.num_nodes
    src, dst = dag.edge_index.cpu()
    step = dst - src
    reverse = bool(step.numel()) and bool((step == -1).all())
    if step.numel() and not reverse and not bool((step == 1).all()):
        return None
    lower = torch.minimum(src, dst)
    if torch.unique(lower).numel() != lower.numel():  # parallel edges
        return None
    linked = torch.zeros(length, dtype=torch.bool)
    linked[lower + 1] = True  # position t is joined to t - 1
    starts = torch.nonzero(~linked[1:]).view(-1) + 1
    if length == 0:
        return False, None, torch.zeros(0, dtype=torch.long)
    if not starts.numel():
        return reverse, None, torch.tensor([0 if reverse else length - 1])
    cu = torch.cat([torch.zeros(1, dtype=torch.long), starts, torch.tensor([length])])
    return reverse, cu, (cu[:-1] if reverse else cu[1:] - 1)


def _operand(x: object, batch: int, nodes: int, heads: int, dk: int) -> Tensor | None:
    """``q`` or ``k`` back in Mamba's layout (a view): fixed ``[D, N]`` (stride 0 over batch
    and positions), ``[B, N, L]`` (one group) or ``[B, G, N, L]``; None when it is neither."""
    if not isinstance(x, Tensor) or x.dim() != 4 or (x.shape[0], x.shape[1], x.shape[3]) != (batch, nodes, dk):
        return None
    # views whose backward is a view too (squeeze, transpose, permute): indexing (x[:, :, 0])
    # would make autograd write the gradient into a zero tensor of the input's shape
    groups = x.shape[2]
    if groups == heads and x.stride(0) == 0 and x.stride(1) == 0:
        base = x._base  # the [D, N] matrix the stride 0 repeats, when x is an expanded view of it
        if base is not None and base.dim() == 2 and base.shape == x.shape[2:] and base.stride() == x.stride()[2:] \
                and base.storage_offset() == x.storage_offset():
            return base
        if batch and nodes:
            return x[0, 0]  # correct, but its backward sums a zero [B, L, D, N] tensor
        return x.as_strided((heads, dk), x.stride()[2:])  # nothing to index: the vectors the stride 0 repeats
    if groups == 0 or heads % groups:
        return None
    return x.squeeze(2).transpose(1, 2) if groups == 1 else x.permute(0, 2, 3, 1)


def _same_decay(gate: object, decay: ExponentialDecay) -> bool:
    return gate is decay or (isinstance(gate, ExponentialDecay) and gate.rate is decay.rate and gate.A is decay.A)


def selective_plan(
    structure: Lattice | DAG,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: object,
    transition: object,
    mark: object,
    direct: object,
    kind: str,
    initial_state: Tensor | None,
    boundary: object,
    return_state: bool,
    state_nodes: Tensor | None,
) -> SelectivePlan | None:
    """A :class:`SelectivePlan` when the operands are Mamba's factored form (module docstring)
    on paths, else None (the call then runs on a general execution)."""
    if kind != "elementwise" or initial_state is not None or not isinstance(transition, ExponentialDecay):
        return None
    rate, A = transition
    if not (isinstance(source, NodeWeight) and source.weight is rate and direct is rate and _same_decay(mark, transition)):
        return None
    if not all(isinstance(t, Tensor) for t in (q, k, v, rate, A)) or rate.dim() != 3 or A.dim() != 3 or v.dim() != 4:
        return None
    batch, nodes, heads = rate.shape
    dk = A.shape[1]
    if tuple(v.shape) != (batch, nodes, heads, 1) or tuple(A.shape) != (heads, dk, 1) or not v.dtype.is_floating_point:
        return None
    if len({t.dtype for t in (q, k, v, rate, A)}) != 1:  # the general path names the mismatch
        return None
    if return_state and (state_nodes is None or boundary is None or boundary.source is not rate
                         or not _same_decay(boundary.leave, transition)):
        return None
    chains = _chains(structure)
    if chains is None or _operand(q, batch, nodes, heads, dk) is None or _operand(k, batch, nodes, heads, dk) is None:
        return None
    reverse, cu_seqlens, ends = chains
    rows = None
    if return_state:
        wanted = state_nodes.detach().long().cpu().view(-1)
        rows = torch.searchsorted(ends, wanted).clamp(max=max(ends.numel() - 1, 0))
        if ends.numel() == 0 and wanted.numel():
            return None
        if wanted.numel() and not bool((ends[rows] == wanted).all()):  # only final states come from the kernels
            return None
    return SelectivePlan(reverse, cu_seqlens, rows)


def selective(
    plan: SelectivePlan, q: Tensor, k: Tensor, v: Tensor, transition: ExponentialDecay, return_state: bool, execution: str
) -> tuple[Tensor, Tensor | None]:
    """The recurrence on Mamba's kernels: ``h`` ``[B, L, D, 1]`` and, with ``return_state``,
    the states of the planned nodes ``[B, len(state_nodes), D, N, 1]``."""
    # the mamba package builds on scan, so it is imported on use; its exported names are looked
    # up at each call, where a test's spy finds them
    from .. import mamba

    if execution == "triton":
        from ..triton.selective_scan import selective_scan_triton as run
    else:
        run = mamba.selective_scan_fused if execution == "fused" else mamba.selective_scan_recurrent
    rate, A = transition
    batch, nodes, heads = rate.shape
    dk = A.shape[1]
    u, dt = v.squeeze(3).transpose(1, 2), rate.transpose(1, 2)  # [B, D, L]
    Bm, Cm = _operand(k, batch, nodes, heads, dk), _operand(q, batch, nodes, heads, dk)
    out = run(u, dt, A.squeeze(2), Bm, Cm, return_last_state=return_state, reverse=plan.reverse, cu_seqlens=plan.cu_seqlens)
    if not return_state:
        return out.transpose(1, 2).unsqueeze(3), None
    y, finals = out
    num_seqs = 1 if plan.cu_seqlens is None else plan.cu_seqlens.numel() - 1
    finals = finals.view(batch, num_seqs, heads, dk)[:, plan.rows.to(finals.device)]
    return y.transpose(1, 2).unsqueeze(3), finals.unsqueeze(4)


def default_selective_execution(*tensors: Tensor) -> str:
    """Where the factored form runs by default: the Triton kernels for CUDA tensors when
    ``triton`` is installed, the fused CPU kernel when numba is usable, else the PyTorch
    recurrence (the choice :func:`~everygraph.sequence.selective_scan` always made)."""
    from ..mamba.fused_cpu import fused_usable
    from ..triton._runtime import triton_runs_on

    device = tensors[0].device
    if device.type == "cuda" and triton_runs_on(device):
        return "triton"
    return "fused" if fused_usable(*tensors) else "recurrent"
