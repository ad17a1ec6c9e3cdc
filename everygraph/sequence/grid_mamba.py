r"""Mamba's selective scan on a 2D grid: a true 2D recurrence (two incoming states per pixel),
the ``elementwise`` kind of :func:`~everygraph.sequence.scan` on a
:class:`~everygraph.graphlib.Lattice`; on CPU with numba, by default, the compiled kernel of its
factored form (:mod:`~everygraph.sequence.executions.fused_grid_selective`)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..graphlib import Lattice, check_tensor
from .executions.fused_grid_selective import fused_grid_selective_runs, fused_grid_selective_scan
from .plstm.layout import lattice_gates
from .recurrence import scan


def grid_mamba_gates(dt: Tensor, A: Tensor, split: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    r"""Dense per-pixel gates (the layout of :func:`~everygraph.sequence.lattice_gates`, one
    head, ``dk = N``, ``dv = D``) of the 2D selective scan.

    The decay of pixel :math:`p` is :math:`a_p[n, d] = \exp(\Delta_{p,d} A_{d,n})`. With a
    ``split`` :math:`\pi_p \in [0, 1]^D` (the share of the state leaving :math:`p` downwards,
    axis 0; :math:`1 - \pi_p` goes right, axis 1):
    transition :math:`T_{ij} = a_p \pi_{p,i}` (any in-axis ``j``), source :math:`S_i = \pi_{p,i}`,
    mark :math:`M_j = a_p`. Without ``split`` (``None``) every out-edge gets the whole state:
    :math:`T_{ij} = a_p`, :math:`S_i = 1`.

    Args:
        dt: ``[B, X, Y, D]`` step sizes (after softplus); A: ``[D, N]``;
        split: ``[B, X, Y, D]`` in ``[0, 1]`` or None.

    Returns:
        ``source [B, X, Y, 1, 2, N, D]``, ``transition [B, X, Y, 1, 2, 2, N, D]``,
        ``mark [B, X, Y, 1, 2, N, D]``.
    """
    check_tensor(dt, "dt", "float", 4, shape="[B, X, Y, D]")
    check_tensor(A, "A", "float", 2, shape="[D, N]")
    if split is not None:
        check_tensor(split, "split", "float", 4, shape="[B, X, Y, D]")
    decay = torch.exp(dt[..., None, :] * A.t())  # [B, X, Y, N, D]
    N = A.shape[1]
    if split is None:
        share = torch.ones(*dt.shape[:3], 2, 1, dt.shape[-1], dtype=dt.dtype, device=dt.device)
    else:
        share = torch.stack([split, 1 - split], dim=3)[..., None, :]  # [B, X, Y, 2(out), 1, D]
    share = share.expand(*dt.shape[:3], 2, N, dt.shape[-1])
    source = share.unsqueeze(3)
    transition = (share[:, :, :, :, None] * decay[:, :, :, None, None]).unsqueeze(3)  # [B, X, Y, 1, 2, 2, N, D]
    transition = transition.expand(*dt.shape[:3], 1, 2, 2, N, dt.shape[-1])
    mark = decay[:, :, :, None, None].expand(*dt.shape[:3], 1, 2, N, dt.shape[-1])
    return source, transition, mark


def grid_selective_scan(
    u: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    split: Tensor | None,
    flip: tuple[bool, bool] = (False, False),
    execution: str | None = None,
) -> Tensor:
    r"""The selective scan on an image grid, in one of its four diagonal orientations.

    For pixel :math:`p` with predecessors :math:`p_0` (above; below when ``flip[0]``) and
    :math:`p_1` (left; right when ``flip[1]``), per channel ``d`` and state index ``n``:

    .. math::
        h_p &= a_p \odot \big(\pi_{p_0}\, h_{p_0} + (1 - \pi_{p_1})\, h_{p_1}\big)
               + \Delta_p u_p B_p, \qquad a_p = e^{\Delta_p A} \\
        y_p &= \langle C_p, h_p \rangle

    (a missing predecessor contributes 0). The split :math:`\pi` is the P-mode
    stabilisation: the state leaving a pixel is shared between its two successors, so a path
    sum over the grid never exceeds the inputs (at :math:`A = 0`, the critical decay budget
    of 1, :math:`\sum |h|` over an anti-diagonal is conserved). ``split=None`` sends the whole
    state both ways (:math:`h_p = a_p \odot (h_{p_0} + h_{p_1}) + \dots`), which at
    criticality grows with the number of lattice paths, exponentially.

    Args:
        u, dt: ``[B, X, Y, D]`` (``dt`` after softplus); A: ``[D, N]``;
        B, C: ``[B, X, Y, N]``; split: ``[B, X, Y, D]`` in ``[0, 1]`` or None.
        flip: the orientation (the lattice's ``flip``).
        execution: ``"fused"``: the compiled kernel of the factored form
            (:mod:`~everygraph.sequence.executions.fused_grid_selective`: numba, CPU, float32 or
            float64; decays formed in the kernel, nothing materialised); any execution of
            :func:`~everygraph.sequence.scan` (``"reference"``, ``"wavefront"``, ``"lattice"``,
            ``"fused_lattice"``, ...): that execution on the gates of :func:`grid_mamba_gates`.
            ``None`` (default): ``"fused"`` where it runs (numba installed, the JIT not
            disabled by ``EVERYGRAPH_DISABLE_JIT``, CPU tensors of one dtype, float32 or
            float64), else the default execution of :func:`~everygraph.sequence.scan`.

    Returns:
        ``y`` ``[B, X, Y, D]`` (without Mamba's ``D u`` skip and ``silu(z)`` gate).
    """
    for name, value in (("u", u), ("dt", dt), ("B", B), ("C", C)):
        check_tensor(value, name, "float", 4, shape="[B, X, Y, *]")
    check_tensor(A, "A", "float", 2, shape="[D, N]")
    if split is not None:
        check_tensor(split, "split", "float", 4, shape="[B, X, Y, D]")
    batch, X, Y, channels = u.shape
    if dt.shape != u.shape or (split is not None and split.shape != u.shape):
        raise ValueError(f"dt and split must have the shape of u {list(u.shape)}, got {list(dt.shape)}, "
                         f"{None if split is None else list(split.shape)}")
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A must have shape [D, N] with D = {channels}, got {list(A.shape)}")
    N = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if list(t.shape) != [batch, X, Y, N]:
            raise ValueError(f"{name} must have shape [B, X, Y, N] = {[batch, X, Y, N]}, got {list(t.shape)}")
    lattice = Lattice((X, Y), flip)
    if execution == "fused" or (execution is None and fused_grid_selective_runs(u, dt, A, B, C, split)):
        return fused_grid_selective_scan(u, dt, A, B, C, split, lattice.flip)
    source, transition, mark = lattice_gates(lattice, *grid_mamba_gates(dt, A, split))
    q = C.reshape(batch, X * Y, 1, N)
    k = B.reshape(batch, X * Y, 1, N)
    v = (dt * u).reshape(batch, X * Y, 1, channels)
    direct = u.new_ones(batch, X * Y, 1)
    h = scan(lattice, q, k, v, source, transition, mark, direct, kind="elementwise", scale=1.0, execution=execution)
    return h.view(batch, X, Y, channels)
