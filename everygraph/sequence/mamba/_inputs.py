"""Checking and normalising the arguments of the selective scan, written once for every
execution (reference loop and recurrent fast path), so both read the same semantics."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ...graphlib import check_ptr, compute_dtype


@dataclass
class ScanInputs:
    r"""The scan's arguments after checking, in the compute dtype and one broadcast layout.

    The channel dimension ``D`` is viewed as ``[groups, D // groups]`` so that grouped
    ``B``/``C`` (``[batch, groups, N, L]``) broadcast without being repeated per channel:

    - ``u``, ``delta`` (after ``delta_bias`` and softplus): ``[batch, groups, per_group, L]``
    - ``A``: ``[groups, per_group, N]``
    - ``B``, ``C``: ``[batch, groups, 1, L, N]`` (input-dependent) or
      ``[1, groups, per_group, 1, N]`` (fixed, one vector per channel)
    - ``keep``: ``[L]`` 0 where the state resets (a sequence start from ``cu_seqlens``), else 1;
      ``None`` without ``cu_seqlens``.
    """

    u: Tensor
    delta: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    keep: Tensor | None
    batch: int
    channels: int
    length: int
    state_size: int
    groups: int


class _Softplus(torch.autograd.Function):
    """``F.softplus`` (threshold 20) with its derivative written as ``sigmoid``: the same
    numbers, but torch's ``softplus_backward`` kernel costs ~40 ms on ``[2, 256, 4096]`` on one
    CPU thread, a tenth of the whole scan's backward pass, and ``sigmoid`` ~2 ms."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return F.softplus(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        slope = torch.sigmoid(x).masked_fill_(x > 20, 1.0)
        return grad * slope


def _shape(t: Tensor | None) -> list[int] | None:
    return None if t is None else list(t.shape)


#: The dtypes the scan computes with (half dtypes are computed in float32 and cast back).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_float_tensor(name: str, t: object, device: torch.device | None = None) -> None:
    """A real floating-point tensor (on ``device`` when given), else a clear error: integer,
    bool or complex inputs are refused rather than cast, since a cast would hide the mistake
    (an integer step size, a complex ``A`` whose imaginary part would be dropped)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        kind = "complex" if t.is_complex() else "integer" if t.dtype != torch.bool else "bool"
        raise ValueError(
            f"{name} must be a real floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got a {kind} tensor of dtype {t.dtype}; the scan does not cast it for you"
        )
    if device is not None and t.device != device:
        raise ValueError(f"{name} must be on the device of u ({device}), got a tensor on {t.device}")


def check_flag(name: str, value: object) -> None:
    """A Python ``bool``, else a ``TypeError`` (a string such as ``"False"`` would be truthy)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__} {value!r}")


def _check_bc(name: str, M: Tensor, batch: int, channels: int, length: int, state_size: int) -> int:
    """Validate ``B`` or ``C``; return its group count (1 when fixed or ungrouped)."""
    if M.dim() == 2:
        if tuple(M.shape) != (channels, state_size):
            raise ValueError(
                f"a fixed {name} must have shape [D, N] = [{channels}, {state_size}] like A, got {list(M.shape)}"
            )
        return 1
    if M.dim() == 3:
        if tuple(M.shape) != (batch, state_size, length):
            raise ValueError(
                f"an input-dependent {name} must have shape [batch, N, L] = [{batch}, {state_size}, {length}] "
                f"(u is [batch, D, L], A is [D, N]), got {list(M.shape)}"
            )
        return 1
    if M.dim() == 4:
        b, g, n, l = M.shape
        if (b, n, l) != (batch, state_size, length) or g < 1 or channels % g:
            raise ValueError(
                f"a grouped {name} must have shape [batch, G, N, L] = [{batch}, G, {state_size}, {length}] "
                f"with G dividing D = {channels}, got {list(M.shape)}"
            )
        return g
    raise ValueError(f"{name} must be [D, N], [batch, N, L] or [batch, G, N, L], got {list(M.shape)}")


def check_cu_seqlens(cu_seqlens: Tensor | None, length: int) -> Tensor | None:
    """Validate ``cu_seqlens`` and return the ``[L]`` keep mask (0 at each sequence start)."""
    if cu_seqlens is None:
        return None
    check_ptr(
        cu_seqlens, length, name="cu_seqlens", length_name="the sequence length L", count_name="num_seqs", min_segments=1
    )
    keep = torch.ones(length, dtype=torch.bool, device=cu_seqlens.device)
    starts = cu_seqlens[1:-1].long()
    keep[starts[starts < length]] = False
    return keep


def prepare(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    cu_seqlens: Tensor | None,
    softplus: Callable[[Tensor], Tensor] | None = None,
) -> ScanInputs:
    """Check every argument (shapes named on both sides) and bring them into the layout of
    :class:`ScanInputs`. Never modifies the caller's tensors. ``softplus`` replaces
    :class:`_Softplus` as the function applied with ``delta_softplus`` (the fused CPU
    kernels bring their own)."""
    check_float_tensor("u", u)
    for name, t in (("delta", delta), ("A", A), ("B", B), ("C", C)):
        check_float_tensor(name, t, u.device)
    for name, t in (("D", D), ("z", z), ("delta_bias", delta_bias)):
        if t is not None:
            check_float_tensor(name, t, u.device)
    check_flag("delta_softplus", delta_softplus)
    if u.dim() != 3:
        raise ValueError(f"u must have shape [batch, D, L], got {list(u.shape)}")
    batch, channels, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have the shape of u {list(u.shape)}, got {list(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A must have shape [D, N] with D = {channels} (u is {list(u.shape)}), got {list(A.shape)}")
    state_size = A.shape[1]
    g_b = _check_bc("B", B, batch, channels, length, state_size)
    g_c = _check_bc("C", C, batch, channels, length, state_size)
    if D is not None and tuple(D.shape) != (channels,):
        raise ValueError(f"D must have shape [D] = [{channels}] (u is {list(u.shape)}), got {list(D.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have the shape of u {list(u.shape)}, got {list(z.shape)}")
    if delta_bias is not None and tuple(delta_bias.shape) != (channels,):
        raise ValueError(f"delta_bias must have shape [D] = [{channels}] (u is {list(u.shape)}), got {list(delta_bias.shape)}")
    keep = check_cu_seqlens(cu_seqlens, length)
    if keep is not None:
        keep = keep.to(u.device)

    dtype = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    groups = g_b * g_c // math.gcd(g_b, g_c)
    per_group = channels // groups

    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = (softplus or _Softplus.apply)(dt)

    def layout_bc(M: Tensor) -> Tensor:
        M = M.to(dtype)
        if M.dim() == 2:
            return M.view(1, groups, per_group, 1, state_size)
        if M.dim() == 3:
            M = M.unsqueeze(1)
        if M.shape[1] != groups:  # only when B and C have different group counts
            M = M.repeat_interleave(groups // M.shape[1], dim=1)
        return M.transpose(-1, -2).unsqueeze(2)

    return ScanInputs(
        u=u.to(dtype).view(batch, groups, per_group, length),
        delta=dt.view(batch, groups, per_group, length),
        A=A.to(dtype).view(groups, per_group, state_size),
        B=layout_bc(B),
        C=layout_bc(C),
        keep=keep,
        batch=batch,
        channels=channels,
        length=length,
        state_size=state_size,
        groups=groups,
    )


def finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype_in: torch.dtype) -> Tensor:
    """``out = (y + u * D) * silu(z)``, cast back to the input dtype. ``y``, ``u``: ``[batch, D, L]``."""
    out = y
    if D is not None:
        out = out + u.to(y.dtype) * D.to(y.dtype)[:, None]
    if z is not None:
        out = out * F.silu(z.to(y.dtype))
    return out.to(dtype_in)


def flip_cu_seqlens(cu_seqlens: Tensor | None, length: int) -> Tensor | None:
    """Boundaries of the same packed sequences read right to left."""
    if cu_seqlens is None:
        return None
    return (length - cu_seqlens).flip(0)


def final_positions(cu_seqlens: Tensor | None, length: int, reverse: bool) -> tuple[list[int], list[int]]:
    """Where each non-empty sequence's final state is read: ``(positions, sequences)``, the
    position (in the input's own order) of the step after which sequence ``sequences[i]`` ends,
    its last position (its first when ``reverse``). Without ``cu_seqlens`` the whole input is one
    sequence. Empty sequences are left out: their final state is the zero initial state."""
    if cu_seqlens is None:
        return ([0 if reverse else length - 1], [0]) if length else ([], [])
    bounds = cu_seqlens.tolist()
    positions, sequences = [], []
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        if hi > lo:
            positions.append(lo if reverse else hi - 1)
            sequences.append(k)
    return positions, sequences


def assemble_final_states(
    finals: Tensor, sequences: list[int], cu_seqlens: Tensor | None, batch: int, channels: int, state_size: int
) -> Tensor:
    r"""The ``return_last_state`` result from the states read at :func:`final_positions`
    (``finals`` ``[len(sequences), batch, D, N]``): ``[batch, D, N]`` without ``cu_seqlens``,
    else one state per packed sequence, ``[batch * num_seqs, D, N]`` (row ``b * num_seqs + k``
    is sequence ``k`` of batch element ``b``; ``[num_seqs, D, N]`` for the usual packed batch of
    one), zeros for an empty sequence."""
    num_seqs = 1 if cu_seqlens is None else cu_seqlens.numel() - 1
    full = finals.new_zeros(num_seqs, batch, channels, state_size)
    if sequences:
        index = torch.tensor(sequences, device=finals.device)
        full = full.index_copy(0, index, finals) if len(sequences) < num_seqs else finals
    if cu_seqlens is None:
        return full[0]
    return full.transpose(0, 1).reshape(batch * num_seqs, channels, state_size)
