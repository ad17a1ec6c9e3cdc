"""Mamba on images: the selective scan as a 2D recurrence on the grid, four orientations."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graphlib import Lattice, check_size, check_tensor
from ..sequence import grid_selective_scan

__all__ = ["Mamba2d"]


class Mamba2d(nn.Module):
    r"""The Mamba block on an image grid, scanned as a 2D recurrence in the four diagonal
    orientations (not as a flattened sequence).

    From *Mamba: Linear-Time Sequence Modeling with Selective State Spaces* (Gu & Dao, 2023,
    https://arxiv.org/abs/2312.00752), with the grid as a lattice DAG as in *pLSTM:
    parallelizable Linear Source Transition Mark networks* (Poeppel et al., 2025,
    https://arxiv.org/abs/2506.11997). Per orientation ``o`` (a flip of the lattice) and pixel
    :math:`p` with predecessors :math:`p_0` (along axis 0) and :math:`p_1` (along axis 1):

    .. math::
        (x, z) &= W_{in}\, \mathrm{in}, \qquad x \leftarrow \mathrm{silu}(\mathrm{conv2d}(x)) \\
        (\delta, B, C) &= W^o_x x, \quad \Delta = \mathrm{softplus}(W^o_{dt} \delta + b^o_{dt}),
        \quad \pi = \sigma(W^o_\pi \delta + b^o_\pi) \\
        h_p &= e^{\Delta_p A^o} \odot \big(\pi_{p_0} h_{p_0} + (1 - \pi_{p_1}) h_{p_1}\big)
               + \Delta_p x_p B_p, \qquad y^o_p = \langle C_p, h_p \rangle + D^o x_p \\
        \mathrm{out} &= W_{out}\Big(\big(\textstyle\sum_o y^o\big) \odot \mathrm{silu}(z)\Big)

    The split :math:`\pi` is the stabilisation (pLSTM's P-mode idea): the state leaving a
    pixel is shared between its two successors (shares sum to 1), so the decay budget per
    state is at most 1 and sums over the exponentially many lattice paths cannot blow up even
    at criticality (:math:`A \to 0`). ``stable=False`` drops it (each successor receives the
    whole state), the naive 2D Mamba, which grows exponentially with the grid at criticality.
    The scan is :func:`~everygraph.sequence.grid_selective_scan` (the ``elementwise`` kind of
    :func:`~everygraph.sequence.scan`; on CPU with numba its compiled kernel of the factored form).

    Args:
        d_model: channels in and out.
        d_state: state size ``N`` per channel (16).
        d_conv: odd width of the depthwise 2D convolution (3).
        expand: ``d_inner = expand * d_model`` (2).
        dt_rank: rank of the step-size projection, ``"auto"`` = ``ceil(d_model / 16)``.
        dt_min, dt_max: the step-size initialisation range (as in Mamba).
        stable: use the split (default True).

    Shapes:
        ``forward(x [batch, height, width, d_model]) -> [batch, height, width, d_model]``
        (channels last, like :class:`~everygraph.nn.PLSTM2d`).

    Example:
        >>> layer = Mamba2d(d_model=16, d_state=4)
        >>> layer(torch.randn(2, 8, 8, 16)).shape
        torch.Size([2, 8, 8, 16])
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 3,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        stable: bool = True,
    ) -> None:
        d_model = check_size(d_model, "d_model", 1)
        d_state = check_size(d_state, "d_state", 1)
        d_conv = check_size(d_conv, "d_conv", 1)
        expand = check_size(expand, "expand", 1)
        super().__init__()
        if d_conv < 1 or d_conv % 2 == 0:
            raise ValueError(f"d_conv must be a positive odd number (a centred 2D convolution), got {d_conv}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.dt_min, self.dt_max, self.stable = dt_min, dt_max, stable
        orientations = len(Lattice.orientations(2))
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv2d = nn.Conv2d(self.d_inner, self.d_inner, d_conv, padding=d_conv // 2, groups=self.d_inner)
        self.x_proj_weight = nn.Parameter(torch.empty(orientations, self.dt_rank + 2 * d_state, self.d_inner))
        self.dt_proj_weight = nn.Parameter(torch.empty(orientations, self.d_inner, self.dt_rank))
        self.dt_proj_bias = nn.Parameter(torch.empty(orientations, self.d_inner))
        self.split_weight = nn.Parameter(torch.empty(orientations, self.d_inner, self.dt_rank))
        self.split_bias = nn.Parameter(torch.empty(orientations, self.d_inner))
        self.A_log = nn.Parameter(torch.empty(orientations, self.d_inner, d_state))
        self.D = nn.Parameter(torch.empty(orientations, self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Mamba's initialisation per orientation; the split starts even (:math:`\\pi = 1/2`)."""
        self.in_proj.reset_parameters()
        self.conv2d.reset_parameters()
        self.out_proj.reset_parameters()
        bound = self.d_inner ** -0.5
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj_weight, -std, std)
        nn.init.uniform_(self.split_weight, -std, std)
        self.split_bias.zero_()
        dt = torch.exp(
            torch.rand(self.dt_proj_bias.shape) * (math.log(self.dt_max) - math.log(self.dt_min)) + math.log(self.dt_min)
        ).clamp(min=1e-4)
        self.dt_proj_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^{-1}
        self.A_log.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).expand_as(self.A_log))
        self.D.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", "float", 4, shape=f"[batch, height, width, {self.d_model}]")
        if x.dim() != 4 or x.shape[-1] != self.d_model:
            raise ValueError(f"Mamba2d expects x of shape [batch, height, width, d_model={self.d_model}] (channels last), got {list(x.shape)}")
        if x.numel() == 0:
            return x.new_zeros(x.shape)
        u, z = self.in_proj(x).chunk(2, dim=-1)  # [B, X, Y, d_inner]
        u = F.silu(self.conv2d(u.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        y = 0
        for o, flip in enumerate(Lattice.orientations(2)):
            low, B, C = torch.split(u @ self.x_proj_weight[o].t(), [self.dt_rank, self.d_state, self.d_state], dim=-1)
            dt = F.softplus(low @ self.dt_proj_weight[o].t() + self.dt_proj_bias[o])
            split = torch.sigmoid(low @ self.split_weight[o].t() + self.split_bias[o]) if self.stable else None
            A = -torch.exp(self.A_log[o].to(u.dtype))
            y = y + grid_selective_scan(u, dt, A, B, C, split, flip) + self.D[o].to(u.dtype) * u
        return self.out_proj(y * F.silu(z))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, "
                f"expand={self.expand}, dt_rank={self.dt_rank}, stable={self.stable})")
