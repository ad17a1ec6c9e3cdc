"""The selective scan as a plain loop over positions: the readable reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...graphlib import compute_dtype
from ._inputs import (
    assemble_final_states,
    check_cu_seqlens,
    check_flag,
    final_positions,
    finish,
    prepare,
)


def _per_channel(M: Tensor, channels: int, dtype: torch.dtype) -> Tensor:
    """``B`` or ``C`` as ``[batch, D, N, L]`` (input-dependent) or ``[D, N]`` (fixed)."""
    M = M.to(dtype)
    if M.dim() == 3:
        return M.unsqueeze(1).expand(-1, channels, -1, -1)
    if M.dim() == 4:
        return M.repeat_interleave(channels // M.shape[1], dim=1)
    return M


def selective_scan_reference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    reverse: bool = False,
    cu_seqlens: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Mamba's selective scan, one position at a time (same arguments as
    :func:`~everygraph.sequence.selective_scan`; the semantics of ``selective_scan_ref`` in
    ``mamba_ssm/ops/selective_scan_interface.py``).

    .. math::
        \Delta = \mathrm{softplus}(\Delta + b_\Delta),\quad
        h_t = \exp(\Delta_t A) \odot h_{t-1} + \Delta_t u_t B_t,\quad
        y_t = \langle h_t, C_t\rangle + D u_t,\quad
        \mathrm{out}_t = y_t \cdot \mathrm{silu}(z_t)

    with :math:`h_{-1} = 0` and :math:`h_{t-1} := 0` at each sequence start in ``cu_seqlens``.
    Each step builds only its own ``[batch, D, N]`` state; slices come from ``unbind`` so the
    backward pass stays linear in ``L``. Returns ``out`` ``[batch, D, L]`` and, with
    ``return_last_state``, the state after the last step taken ``[batch, D, N]``; with
    ``cu_seqlens`` too, each packed sequence's own final state ``[batch * num_seqs, D, N]``
    (zeros for an empty sequence).
    """
    prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cu_seqlens)  # checks only
    check_flag("return_last_state", return_last_state)
    check_flag("reverse", reverse)
    dtype = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    batch, channels, length = u.shape
    keep = check_cu_seqlens(cu_seqlens, length)
    resets = set() if keep is None else set(torch.nonzero(~keep).view(-1).tolist())

    uc = u.to(dtype)
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Ac = A.to(dtype)
    Bc = _per_channel(B, channels, dtype)
    Cc = _per_channel(C, channels, dtype)

    dt_steps, u_steps = dt.unbind(-1), uc.unbind(-1)
    B_steps = Bc.unbind(-1) if Bc.dim() == 4 else None
    C_steps = Cc.unbind(-1) if Cc.dim() == 4 else None

    positions = range(length - 1, -1, -1) if reverse else range(length)
    x = torch.zeros(batch, channels, Ac.shape[1], dtype=dtype, device=u.device)
    ends, sequences = final_positions(cu_seqlens, length, reverse)
    final_of = dict(zip(ends, sequences))
    finals: dict[int, Tensor] = {}
    ys: list[Tensor] = [None] * length  # type: ignore[list-item]
    for i in positions:
        decay = torch.exp(dt_steps[i][..., None] * Ac)  # [batch, D, N]
        B_i = Bc if B_steps is None else B_steps[i]
        C_i = Cc if C_steps is None else C_steps[i]
        # With reverse, a sequence starts (going right to left) at its last position.
        start = (i + 1 in resets) if reverse else (i in resets)
        x_in = (dt_steps[i] * u_steps[i])[..., None] * B_i
        x = x_in if start else decay * x + x_in
        ys[i] = (x * C_i).sum(-1)
        if i in final_of:
            finals[final_of[i]] = x
    if length:
        y = torch.stack(ys, dim=-1)
    else:  # an empty [batch, D, 0], written as the terms of a step so that every input gets a gradient
        B_0 = Bc[:, None] if B_steps is None else Bc.transpose(-1, -2)
        C_0 = Cc[:, None] if C_steps is None else Cc.transpose(-1, -2)
        y = ((dt * uc)[..., None] * torch.exp(dt[..., None] * Ac[:, None]) * B_0 * C_0).sum(-1)
    out = finish(y, u, D, z, u.dtype)
    if not return_last_state:
        return out
    if finals:
        stacked = torch.stack([finals[k] for k in sorted(finals)])
    else:
        stacked = x.new_zeros(0, batch, channels, Ac.shape[1])
    return out, assemble_final_states(stacked, sorted(finals), cu_seqlens, batch, channels, Ac.shape[1])
